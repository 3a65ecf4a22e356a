"""Every error, on every kind of route, uses one envelope.

The operations come from the app's own ``/openapi.json``: a route added later is
covered without editing this file.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.helpers import LiveServer

CASES = [
    ("GET", "/v1/strategies", None, 401),
    ("GET", "/v1/strategies/nope", "key", 404),
    ("POST", "/v1/strategies/nope/start", "key", 404),
    ("POST", "/v1/strategies/nope/stop", "key", 404),
    ("DELETE", "/v1/strategies/nope", "key", 404),
    ("GET", "/v1/strategies/nope/logs", "key", 404),
    ("GET", "/v1/strategies/nope/runs", "key", 404),
    ("GET", "/v1/strategies/nope/logs?after_seq=-1", "key", 400),
    ("POST", "/v1/strategies", "key", 400),
    ("PUT", "/v1/strategies", "key", 405),
    ("GET", "/v1/nothing-here", "key", 404),
    ("DELETE", "/v1/keys/key_missing", "key", 404),
    ("POST", "/v1/keys", "key-badjson", 400),
    ("PUT", "/v1/venues/nasdaq/credentials", "key-json", 400),
    ("POST", "/v1/runners/register", None, 401),
    ("POST", "/v1/runners/register", "key", 401),
]


_HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


def _assert_envelope(r: httpx.Response, what: str) -> dict[str, Any]:
    assert r.headers.get("content-type", "").startswith("application/json"), (what, r.status_code, r.text[:200])
    body = r.json()
    assert set(body) == {"error"}, (what, body)
    err: dict[str, Any] = body["error"]
    assert set(err) == {"code", "message", "details"}, (what, body)
    assert isinstance(err["code"], str) and err["code"], (what, body)
    assert isinstance(err["message"], str) and err["message"], (what, body)
    assert isinstance(err["details"], dict), (what, body)
    assert r.headers.get("x-request-id"), what
    return err


def _operations(server: LiveServer) -> list[tuple[str, str, dict[str, Any]]]:
    doc = httpx.get(server.url + "/openapi.json").json()
    return [(method.upper(), path, op) for path, ops in doc["paths"].items()
            for method, op in ops.items() if method in _HTTP_METHODS]


def test_every_operation_answers_errors_in_the_envelope(server: LiveServer) -> None:
    """Each operation of /openapi.json, asked without a key, with bad input, and with
    ``limit=0`` where it pages: every 4xx is the envelope, and every list's bad
    page size is the same 400 naming ``limit``."""
    ops = _operations(server)
    assert len(ops) > 20, "the document lists the API"
    key = {"Authorization": f"Bearer {server.live_key}"}
    checked = 0
    for method, template, op in ops:
        path = re.sub(r"\{[^}]+\}", "nope", template)
        what = f"{method} {template}"
        # 4xx, and a documented 503 (GET /v1/layers/target before any runner registered).
        documented = {c for c in op.get("responses", {}) if c.startswith("4") or c == "503"}
        if template.startswith("/v1/") and template != "/v1/health":
            r = httpx.request(method, server.url + path)
            assert r.status_code == 401, (what, r.status_code, r.text[:200])
            assert "401" in documented, what
            _assert_envelope(r, what)
            checked += 1
        # Bad input: a body that is not JSON, and every integer parameter not a number.
        params = {p["name"]: "x1" for p in op.get("parameters", [])
                  if p.get("in") == "query" and p.get("schema", {}).get("type") == "integer"}
        kw: dict[str, Any] = {"params": params}
        if "requestBody" in op:
            kw.update(content=b"{", headers={**key, "Content-Type": "application/json"})
        else:
            kw["headers"] = key
        r = httpx.request(method, server.url + path, **kw)
        if r.status_code >= 400:
            _assert_envelope(r, what)
            assert str(r.status_code) in documented, (what, r.status_code, sorted(documented))
            checked += 1
        if method == "GET" and any(p["name"] == "limit" for p in op.get("parameters", [])):
            r = httpx.request(method, server.url + path, params={"limit": 0}, headers=key)
            assert r.status_code == 400, (what, r.status_code, r.text[:200])
            assert _assert_envelope(r, what)["details"].get("field") == "limit", (what, r.text[:200])
    assert checked >= len(ops)


@pytest.mark.parametrize(("method", "path", "auth", "status"), CASES, ids=[f"{m} {p}" for m, p, _a, _s in CASES])
def test_error_envelope(server: LiveServer, method: str, path: str, auth: str | None, status: int) -> None:
    headers = {}
    kw: dict[str, object] = {}
    if auth:
        headers["Authorization"] = f"Bearer {server.live_key}"
    if auth == "key-badjson" or (method == "POST" and path == "/v1/strategies"):
        kw["content"] = b"{"
        headers["Content-Type"] = "application/json"
    if auth == "key-json":
        kw["json"] = {"a": "b"}
    r = httpx.request(method, server.url + path, headers=headers, **kw)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    _assert_envelope(r, f"{method} {path}")


def test_websocket_with_a_bad_key_is_a_clean_401(server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    from sequence_markets import AuthenticationError, Sequence

    caplog.set_level("INFO", logger="uvicorn.error")
    with pytest.raises(AuthenticationError) as info:
        list(Sequence("seq_live_bad", server.url).stream(["prices:BTC-USD"], duration_s=2, max_msgs=1,
                                                          reconnect=False))
    assert info.value.status == 401
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/v1/strategies", "GET, HEAD, POST"),
    ("PATCH", "/v1/strategies/x", "DELETE, GET, HEAD"),
    ("GET", "/v1/strategies/x/stop", "POST"),
    ("POST", "/v1/graphs/g", "DELETE, GET, HEAD"),
    ("DELETE", "/v1/keys", "GET, HEAD, POST"),
])
def test_405_lists_every_method_the_path_supports(server: LiveServer, method: str, path: str, allow: str) -> None:
    r = httpx.request(method, server.url + path, headers={"Authorization": f"Bearer {server.live_key}"})
    assert r.status_code == 405 and r.headers["allow"] == allow
    assert r.json()["error"]["code"] == "method_not_allowed"
