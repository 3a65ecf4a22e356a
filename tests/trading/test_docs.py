"""docs/trading.md covers every trading route and error code, and its examples parse."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from fastapi.routing import APIRoute

import sequence.api.cursor as cursor_mod
import sequence.api.errors as errors_mod
import sequence.api.query as query_mod
import sequence.api.routes.trading as routes_mod
import sequence.trading.validation as validation_mod
from sequence.api.routes.trading import router

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "trading.md").read_text(encoding="utf-8")


def test_every_route_is_documented() -> None:
    for route in router.routes:
        assert isinstance(route, APIRoute)
        for method in route.methods:
            assert re.search(rf"{method}\s*\|\s*`{re.escape(route.path)}`", DOC) or (
                f"{method} {route.path}" in DOC), f"{method} {route.path}"


def _helper_codes() -> dict[str, str]:
    """api/errors.py's helpers (``def unavailable(…)`` → ``ApiError(503, "unavailable", …)``)."""
    src = Path(errors_mod.__file__ or "").read_text(encoding="utf-8")
    return dict(re.findall(r'^def (\w+)\(.*?\n(?:.*\n)*?\s+return ApiError\(\d+, "(\w+)"', src, re.M))


def test_every_error_code_is_documented() -> None:
    codes = set()
    helpers = _helper_codes()
    assert helpers.get("unavailable") == "unavailable" and helpers.get("bad_request") == "bad_request"
    for mod in (validation_mod, routes_mod, query_mod, cursor_mod):
        src = Path(mod.__file__ or "").read_text(encoding="utf-8")
        codes |= set(re.findall(r'code="(\w+)"', src))
        codes |= set(re.findall(r'ApiError\(\d+, "(\w+)"', src))
        # The routes raise through errors.py's helpers: each names its code there.
        codes |= {code for name, code in helpers.items() if re.search(rf"\b{name}\(", src)}
    codes.add("invalid_graph")  # GraphError's default
    assert {"bad_request", "bad_cursor", "unavailable", "idempotency_conflict", "cycle"} <= codes
    missing = sorted(c for c in codes if f"`{c}`" not in DOC)
    assert missing == []


def test_examples_parse() -> None:
    for block in re.findall(r"```python\n(.*?)```", DOC, re.DOTALL):
        ast.parse(block)
    for block in re.findall(r"```json\n(.*?)```", DOC, re.DOTALL):
        json.loads(block)
