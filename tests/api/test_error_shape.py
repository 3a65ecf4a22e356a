"""Every error, on every kind of route, uses one envelope."""

from __future__ import annotations

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
    ("GET", "/v1/strategies/nope/logs?after_seq=-1", "key", 422),
    ("POST", "/v1/strategies", "key", 400),
    ("PUT", "/v1/strategies", "key", 405),
    ("GET", "/v1/nothing-here", "key", 404),
    ("DELETE", "/v1/keys/key_missing", "key", 404),
    ("POST", "/v1/keys", "key-badjson", 400),
    ("PUT", "/v1/venues/nasdaq/credentials", "key-json", 400),
    ("POST", "/v1/runners/register", None, 401),
    ("POST", "/v1/runners/register", "key", 401),
]


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
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert r.headers.get("x-request-id")


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
