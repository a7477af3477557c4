"""Errors are one line: another library's message is quoted by its first line, shortened at a word, never cut in
the middle of one."""
from __future__ import annotations

from tfp_mlflow.errors import BadInputError, CloudError, first_line


def test_first_line_keeps_short_lines_and_shortens_long_ones_at_a_word():
    assert first_line(ValueError("connection refused\nTraceback ...")) == "connection refused"
    assert first_line("") == "" and first_line(KeyError()) == ""
    long = "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: " + "segment/" * 40
    short = first_line(long, 80)
    assert len(short) <= 80 and short.endswith(" ...") and long.startswith(short.removesuffix(" ..."))
    assert first_line("word " * 50, 30) == "word word word word word ..."


def test_every_error_knows_its_exit_code():
    assert BadInputError("x").exit_code == 2 and CloudError("x").exit_code == 1
