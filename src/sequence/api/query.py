"""Query strings of the hand-parsed routes: read fast, checked strictly, documented by hand.

The market and trading routes read their query string themselves — FastAPI's
per-request parameter solving costs more than a whole cached quote — so their
parameters are documented in ``openapi_extra`` with :func:`param`. Every bad
value is a 400 ``bad_request`` naming the field (never FastAPI's 422), and an
empty optional parameter means "not given".
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Depends, Query, Request

from sequence.api.errors import bad_request
from sequence.echo import shown


def query(request: Request) -> dict[str, str]:
    """The query string's first value per name.

    Starlette's ``query_params`` costs more than a cached quote; this is the
    same parse for the plain ``name=value&...`` strings clients send.
    """
    raw: bytes = request.scope.get("query_string", b"")
    if not raw:
        return {}
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return dict(reversed(parse_qsl(text, keep_blank_values=True, encoding="utf-8")))
    out: dict[str, str] = {}
    for part in text.split("&"):
        name, _, value = part.partition("=")
        if name and name not in out:
            out[name] = value
    return out


def param(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    """An OpenAPI query parameter, for ``openapi_extra={"parameters": [...]}``."""
    out = {"name": name, "in": "query", "required": required, "schema": schema, "description": description}
    if not required:
        out["allowEmptyValue"] = True  # an empty optional parameter means "not given"
    return out


def int_param(field: str, raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"{field} must be an integer, got {shown(raw)}", field) from None


def limit_param(raw: str | None, default: int, maximum: int) -> int:
    """A page size from 1 to ``maximum``."""
    if raw is None or raw == "":
        return default
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= maximum:
        raise bad_request(f"limit must be an integer from 1 to {maximum}", "limit")
    return n


def limit_doc(default: int, maximum: int) -> dict[str, Any]:
    """The OpenAPI parameter of a page size (every list route documents it so)."""
    return param("limit", {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}, "page size")


def limit_query(default: int, maximum: int) -> Any:
    """``limit`` for a FastAPI-parsed route, read like the hand-parsed ones read it
    (:func:`limit_param`: a 400 naming ``limit`` outside 1..``maximum``), so that
    every list answers a bad page size alike. Document it with :func:`limit_doc`."""

    def limit(limit: str | None = Query(None, include_in_schema=False)) -> int:
        return limit_param(limit, default, maximum)

    return Depends(limit)


def bool_param(field: str, raw: str | None) -> bool | None:
    if raw is None or raw == "":
        return None
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise bad_request(f"{field} must be true or false, got {shown(raw)}", field)


def time_param(field: str, raw: str | None) -> float | None:
    """Epoch seconds (``1767225600.5``) or ISO-8601 with a timezone (``2026-01-01T00:00:00Z``)."""
    if raw is None or raw == "":
        return None
    try:
        v = float(raw)
        if math.isfinite(v):
            return v
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"{field} must be epoch seconds or an ISO-8601 time like 2026-01-01T00:00:00Z",
                          field) from None
    if dt.tzinfo is None:
        raise bad_request(f"{field} needs a timezone (end it with Z for UTC)", field)
    return dt.timestamp()


__all__ = ["bool_param", "int_param", "limit_doc", "limit_param", "limit_query", "param", "query", "time_param"]
