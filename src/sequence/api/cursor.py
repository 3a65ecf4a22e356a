"""Keyset list cursors: base64url of a short JSON array of typed keyset values.

One scheme for every store-backed list (strategies, runs, graphs, fills); the
market listing's signed offsets are the other scheme, and both share one text
encoding (:mod:`sequence.market.cursor`). A cursor is a client-held value, so
decoding trusts nothing: any text that is not exactly what :func:`encode`
could have produced answers 400 ``bad_cursor`` naming the field — never a
500, never a NaN or an out-of-range number reaching SQL.
"""

from __future__ import annotations

import binascii
import json
import math
from typing import Any

from sequence.api.errors import ApiError
from sequence.market.cursor import b64url, unb64url

MAX_CURSOR_CHARS = 512
INT64_MAX = 2**63 - 1
_MAX_STR = 200


def encode(*values: Any) -> str:
    return b64url(json.dumps(list(values), separators=(",", ":"), allow_nan=False).encode())


def _bad(field: str) -> ApiError:
    return ApiError(400, "bad_cursor", f"{field} is not valid: pass next_cursor from the previous page unchanged",
                    {"field": field})


def _reject_constant(_name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _ok(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value) and abs(value) < 1e15
    if kind is int:
        return isinstance(value, int) and -INT64_MAX <= value <= INT64_MAX
    if kind is str:
        return isinstance(value, str) and len(value) <= _MAX_STR and value.isprintable()
    return False


def decode(raw: str | None, kinds: tuple[type, ...], field: str = "cursor") -> tuple[Any, ...] | None:
    """The values of a cursor made by :func:`encode` with these types, or None for no cursor."""
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_CURSOR_CHARS or not raw.isascii():
        raise _bad(field)
    try:
        text = unb64url(raw)
        values = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, binascii.Error, RecursionError):
        raise _bad(field) from None
    if not isinstance(values, list) or len(values) != len(kinds) or not all(
            _ok(v, k) for v, k in zip(values, kinds, strict=True)):
        raise _bad(field)
    return tuple(float(v) if k is float else v for v, k in zip(values, kinds, strict=True))
