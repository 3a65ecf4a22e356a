"""Hostile input against every kind of route, on SQLite and PostgreSQL: never a 500.

Before: deeply nested JSON on POST /v1/strategies, a cursor that is valid
base64 of a JSON object, and a huge ``after_seq`` were 500s; a cursor of NaN
was accepted. Now each is a 4xx in the one error envelope, with a request id.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.fake_runner import FakeRunner
from tests.helpers import LiveServer, create_body

DEEP = "[" * 100_000 + "]" * 100_000
HUGE = "9" * 30


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


BAD_CURSORS = [
    b64('{"a": 1}'), b64("NaN"), b64('[NaN, "x"]'), b64('[1e999, "x"]'), b64('[1e300, "x"]'), b64('[1.0, "x", 3]'),
    b64('[1.0, "\\u0000"]'), b64("[" * 150 + "]" * 150), b64(f"[{HUGE}]"), b64("[true]"), "!!!", "é",
]
LONG_CURSORS = [b64("[" * 3000 + "]" * 3000), "A" * 600]


@pytest.fixture
def world(any_server: LiveServer) -> Iterator[dict[str, Any]]:
    with any_server.client() as c:
        sid = c.post("/v1/strategies", json=create_body(name="s", start=True)).json()["strategy_id"]
    runner = FakeRunner(any_server)
    spec = runner.claim_one()
    yield {"sid": sid, "runner": runner, "spec": spec}
    runner.close()


def _refused(r: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert 400 <= r.status_code < 500, (r.request.method, str(r.request.url)[:200], r.status_code, r.text[:300])
    if statuses:
        assert r.status_code in statuses, (str(r.request.url)[:200], r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert r.headers.get("x-request-id")
    err: dict[str, Any] = body["error"]
    return err


def _not_500(r: httpx.Response) -> None:
    """For input that may match nothing (200 with an empty list) or be refused."""
    if r.status_code >= 400:
        _refused(r)


def _raw(c: httpx.Client, method: str, path: str, text: str) -> httpx.Response:
    return c.request(method, path, content=text.encode(), headers={"Content-Type": "application/json"})


def test_create_refuses_hostile_bodies(any_server: LiveServer) -> None:
    good = create_body(name="x")
    art, sha = json.dumps(good["artifact_base64"]), json.dumps(good["artifact_sha256"])
    head = f'{{"name": "x", "artifact_base64": {art}, "artifact_sha256": {sha}'
    deep_manifest = {"a": 1}
    for _ in range(100):
        deep_manifest = {"a": deep_manifest}
    with any_server.client() as c:
        assert _refused(_raw(c, "POST", "/v1/strategies", DEEP), 400)["code"] == "invalid_json"
        for extra, field in [
            (', "manifest": {"x": NaN}}', "body"), (', "manifest": {"x": Infinity}}', "body"),
            (', "manifest": {"x": 1e999}}', "body"), (', "env": {"A": "\\ud800"}}', "env"),
            (', "manifest": {"k": "\\udfff"}}', "manifest"), (', "entrypoint": "ma\\u0000in.py"}', "entrypoint"),
            (', "name": "\\u0000"}', "name"), (f', "memory_mb": {HUGE}}}', "memory_mb"),
            (', "stop_timeout_s": 1e999}', "body"), (f', "manifest": {json.dumps(deep_manifest)}}}', "manifest"),
            (', "manifest": ' + "[" * 5000 + "]" * 5000 + "}", "body"),
        ]:
            err = _refused(_raw(c, "POST", "/v1/strategies", head + extra))
            fields = [err["details"].get("field")] + [e["field"] for e in err["details"].get("errors", [])]
            assert field in fields, (extra[:60], err)
        spec = json.dumps({"name": "x", "artifact_sha256": json.loads(sha)})
        files = {"artifact": ("a.tgz", base64.b64decode(good["artifact_base64"]), "application/gzip")}
        _refused(c.post("/v1/strategies", files=files, data={"spec": DEEP}), 400)
        _refused(c.post("/v1/strategies", files=files, data={"spec": spec[:-1] + ', "env": {"A": "\\u0000"}}'}), 400)
        assert c.get("/v1/strategies").json()["strategies"] == []


def test_cursors_and_numbers_are_checked(any_server: LiveServer, world: dict[str, Any]) -> None:
    sid = world["sid"]
    with any_server.client() as c:
        for cursor in BAD_CURSORS:
            for path in ("/v1/strategies", f"/v1/strategies/{sid}/runs", "/v1/graphs", "/v1/fills", "/v1/markets"):
                err = _refused(c.get(path, params={"cursor": cursor}), 400)
                assert err["code"] == "bad_cursor" and err["details"]["field"] == "cursor", (path, cursor, err)
        for cursor in LONG_CURSORS:
            for path in ("/v1/strategies", f"/v1/strategies/{sid}/runs", "/v1/graphs", "/v1/fills", "/v1/markets"):
                _refused(c.get(path, params={"cursor": cursor}), 400, 422)
        for params in ({"after_seq": HUGE}, {"after_seq": "1e3"}, {"after_seq": "-1"}, {"limit": "NaN"},
                       {"limit": HUGE}):
            # A bad query parameter is bad input: 400 naming it (a 422 is a body off its schema).
            err = _refused(c.get(f"/v1/strategies/{sid}/logs", params=params), 400)
            assert err["details"]["field"] == next(iter(params)), err
        for path, params in (("/v1/strategies", {"limit": HUGE}), ("/v1/fills", {"limit": HUGE}),
                             ("/v1/fills", {"since": "NaN"}), ("/v1/fills", {"since": "1e999"}),
                             ("/v1/markets", {"limit": HUGE}), ("/v1/quotes", {"symbol": "BTC-USD", "depth": HUGE})):
            _refused(c.get(path, params=params))
        # The good page still works.
        assert c.get(f"/v1/strategies/{sid}/logs", params={"after_seq": 2**63 - 1}).json()["lines"] == []


def test_nul_bytes_and_odd_ids_in_paths_are_not_found(any_server: LiveServer, world: dict[str, Any]) -> None:
    sid = world["sid"]
    with any_server.client() as c:
        for path in ("/v1/strategies/%00", "/v1/strategies/a%00b/logs", f"/v1/strategies/{'x' * 5000}",
                     "/v1/strategies/%ED%A0%80"):
            _refused(c.get(path), 404)
        _refused(c.get("/v1/graphs/graph_%00"), 400, 404)
        _refused(c.get(f"/v1/strategies/{sid}/logs", params={"run_id": "\x00"}), 404)
        _refused(c.delete("/v1/keys/key_%00"), 404)
        _refused(c.post("/v1/graphs/graph_%00/cancel"), 400, 404)
        _not_500(c.get("/v1/fills", params={"symbol": "\x00", "graph_id": "\x00"}))


def test_client_bodies_elsewhere_are_checked(any_server: LiveServer) -> None:
    with any_server.client() as c:
        for method, path in (("POST", "/v1/keys"), ("PUT", "/v1/venues/kalshi/credentials"), ("POST", "/v1/graphs")):
            _refused(_raw(c, method, path, DEEP), 400)
        _refused(_raw(c, "POST", "/v1/graphs", '{"nodes": [{"node_id": "a", "symbol": "BTC-USD", "side": "buy", '
                                               '"qty": NaN}]}'), 400)
        _refused(_raw(c, "PUT", "/v1/venues/kalshi/credentials", '{"k": "\\ud800"}'), 400)


def test_runner_bodies_are_checked(any_server: LiveServer, world: dict[str, Any]) -> None:
    runner, spec = world["runner"], world["spec"]
    rid, run = runner.runner_id, spec["run_id"]
    h = runner.http
    for path, body in (
        (f"/v1/runners/{rid}/heartbeat", {"runs": [{"run_id": run, "epoch": 2**70}]}),
        (f"/v1/runners/{rid}/heartbeat", {"runs": [{"run_id": "\x00" * 100, "epoch": 1}]}),
        (f"/v1/runners/{rid}/runs/{run}/started", {"epoch": 2**70}),
        (f"/v1/runners/{rid}/runs/{run}/exit", {"epoch": spec["epoch"], "peak_rss_bytes": 2**70}),
        (f"/v1/runners/{rid}/runs/{run}/exit", {"epoch": spec["epoch"], "code": 2**40}),
        (f"/v1/runners/{rid}/runs/{run}/logs", {"epoch": 2**70, "first_seq": 1, "ts": [], "streams": "",
                                                "lines": []}),
        (f"/v1/runners/{rid}/runs/{run}/logs", {"epoch": spec["epoch"], "first_seq": 2**63, "ts": [1.0],
                                                "streams": "o", "lines": ["x"]}),
        (f"/v1/runners/{rid}/runs/{run}/logs", {"epoch": spec["epoch"], "lines": [{"seq": 2**63, "ts": 1.0,
                                                                                  "stream": "stdout", "line": "x"}]}),
        ("/v1/runners/register", {"name": "x", "region": "r", "capacity": 2**70}),
    ):
        _refused(h.post(path, json=body), 422)
    for path in (f"/v1/runners/{rid}/runs/{run}/logs", "/v1/runners/register", f"/v1/runners/{rid}/poll"):
        _refused(_raw(h, "POST", path, DEEP), 400)
    assert _refused(h.get(f"/v1/runners/{rid}/runs/{run}/artifact", params={"epoch": HUGE}), 400)["details"][
        "field"] == "epoch"
    _refused(h.post("/v1/runners/%00/heartbeat", json={"runs": []}), 404)
    # A strategy printing NUL bytes or broken surrogates still gets its lines stored (on
    # PostgreSQL too, whose text cannot hold NUL), as U+FFFD.
    r = _raw(h, "POST", f"/v1/runners/{rid}/runs/{run}/logs",
             json.dumps({"epoch": spec["epoch"], "first_seq": 1, "ts": [1.0, 2.0], "streams": "os",
                         "lines": ["a\x00b", "c\ud800d"]}))
    assert r.status_code == 200, r.text
    lines = any_server.core.store.read_logs(run, 0, 10)
    assert [(x["line"], x["stream"]) for x in lines] == [("a\ufffdb", "stdout"), ("c\ufffdd", "system")]
    # The exit reason may quote the strategy: stored the same way.
    _refused(_raw(h, "POST", f"/v1/runners/{rid}/runs/{run}/exit",
                  json.dumps({"epoch": spec["epoch"], "code": 1, "reason": "bad\ud800"})), 422)
    r = h.post(f"/v1/runners/{rid}/runs/{run}/exit", json={"epoch": spec["epoch"], "code": 1, "reason": "bad\x00"})
    assert r.status_code == 200, r.text
    assert any_server.core.store.get_run(run)["reason"] == "bad\ufffd"  # type: ignore[index]


def test_a_price_or_notional_beyond_what_the_store_keeps_is_a_400(any_server: LiveServer) -> None:
    """Coinbase has no maximum price: a limit of 1e19 passed validation and overflowed the
    store's 64-bit insert (a 500; through an algo, the loss of its turn's whole commit)."""
    def order(qty: Any, price: Any) -> dict[str, Any]:
        return {"nodes": [{"node_id": "leg", "symbol": "BTC-USD", "side": "buy", "qty": qty, "venue": "coinbase",
                           "limit_price": price}], "sandbox": True}

    with any_server.client() as c:
        for qty, price in (("0.001", "10000000000000000000"), (0.001, 1e19), ("0.001", "9" * 40),
                           ("20000", "100000"), ("2000000000", "1")):
            err = _refused(c.post("/v1/graphs", json=order(qty, price)), 400)
            assert err["details"]["field"] == "nodes[0].limit_price", err
            assert err["code"] == "notional_out_of_range" and "$1000000000" in err["message"], err
        ok = c.post("/v1/graphs", json=order("0.001", "100000"))  # $100 of notional: fine
        assert ok.status_code == 201, ok.text


@pytest.mark.parametrize("shape", ["long url", "long header", "many headers"])
def test_an_oversized_websocket_upgrade_is_answered_and_closed(server: LiveServer, shape: str) -> None:
    """uvicorn hands an upgrade to the WebSocket library as text, whose parser refuses a line
    over 8,190 bytes or over 128 headers; such a connection was never answered nor closed (a
    client could hold thousands). Now it is a 400, and the connection closes."""
    host, _, port = server.url.removeprefix("http://").partition(":")
    path, extra = "/v1/stream", ""
    if shape == "long url":
        path += "?x=" + "a" * 9000
    elif shape == "long header":
        extra = "X-Big: " + "b" * 9000 + "\r\n"
    else:
        extra = "".join(f"X-H{i}: v\r\n" for i in range(150))
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request.encode())
        got = b""
        while chunk := s.recv(4096):  # until the server closes (a timeout fails the test)
            got += chunk
    assert got.startswith(b"HTTP/1.1 400 "), got[:100]
