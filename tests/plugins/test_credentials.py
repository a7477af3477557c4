"""The plugin reads a basic-auth header exactly as Flask reads it for MLflow's own check: whatever the header, both
name the same account (or neither does)."""
from __future__ import annotations

import base64

from flask import Flask, request
from hypothesis import given, settings
from hypothesis import strategies as st

from tfp_mlflow_plugins.credentials import basic_credentials

APP = Flask(__name__)


def _as_flask_reads(header: str) -> tuple[str, str] | None:
    with APP.test_request_context(headers={"Authorization": header}):
        try:
            auth = request.authorization
        except ValueError:   # werkzeug cannot decode it: nobody is named, the request is refused
            return None
        if auth is None or auth.type != "basic" or auth.username is None:
            return None
        return auth.username, auth.password or ""


def test_a_well_formed_header_names_its_account():
    header = "Basic " + base64.b64encode(b"alice:pa:ss word").decode()
    assert basic_credentials(header) == ("alice", "pa:ss word") == _as_flask_reads(header)
    assert basic_credentials(None) is None and basic_credentials("Bearer abc") is None


@given(st.one_of(
    st.text(max_size=40).map(lambda t: "Basic " + t),
    st.binary(max_size=30).map(lambda b: "Basic " + base64.b64encode(b).decode()),
    st.binary(max_size=30).map(lambda b: "bAsIc  " + base64.b64encode(b).decode() + " "),
    st.text(max_size=40)))
@settings(derandomize=True, max_examples=300)   # the same examples on every run: CI's verdict is reproducible
def test_any_header_is_read_as_flask_reads_it_for_mlflow(header):
    try:
        header.encode("latin-1")
    except UnicodeEncodeError:
        return   # not a header an HTTP server can receive
    if "\r" in header or "\n" in header or "\0" in header:
        return   # HTTP has no such header value: the server's request parser refuses it before any code runs
    assert basic_credentials(header) == _as_flask_reads(header)
