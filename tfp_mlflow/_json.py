"""Reading JSON that someone else wrote (results, policies, metadata, knowledge tables): bounded and one-line.

``json.loads`` alone turns hostile text into tracebacks (nesting 200,000 deep raises ``RecursionError``), accepts
``NaN``/``Infinity`` and reads ``1e400`` as infinity. :func:`loads` refuses all of these with a
:class:`~tfp_mlflow.errors.BadInputError` that says what is wrong.
"""
from __future__ import annotations

import json
import math
from typing import Any

from tfp_mlflow.errors import BadInputError

__all__ = ["loads", "MAX_DEPTH", "MAX_JSON_BYTES"]

#: Deepest nesting accepted (an albumentations policy nests about 6 levels).
MAX_DEPTH = 64
#: Largest JSON text accepted (a knowledge table of 10,000 rows is about 2 MB).
MAX_JSON_BYTES = 16 * 1024 * 1024


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def loads(text: str | bytes, what: str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``text`` as JSON: at most ``max_bytes`` long, ``max_depth`` deep, every number finite.

    ``what`` names the input in the error ("results file 'r.json'").
    """
    if len(text) > max_bytes:
        raise BadInputError(f"{what} is {len(text):,} bytes of JSON; at most {max_bytes:,} are accepted")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInputError(f"{what} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    depth = 0
    in_string = escaped = False
    for char in text:  # cheap pre-scan: the parser recurses once per level
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                raise BadInputError(f"{what} nests deeper than {max_depth} levels; it is not a tfp file")
        elif char in "]}":
            depth -= 1
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        where = f" at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise BadInputError(f"{what} is not valid JSON ({message}{where})") from None
    _check_finite(value, what)
    return value


def _check_finite(value: Any, what: str) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise BadInputError(f"{what} holds a number too large to represent (e.g. 1e400); give finite numbers")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
