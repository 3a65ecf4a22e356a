"""The dashboard's pieces without a browser: sessions, CSRF and origin checks, the P&L
series, embedded JSON, and the ``strategies`` channel of ``/v1/stream`` on an in-process
coordinator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from sequence.api.routes.dashboard import pnl_series, script_json
from sequence.api.services import dashboard as svc
from sequence.store.store import Principal
from sequence.stream import ChannelError
from tests.helpers import LiveServer, create_body, start_server


class FakeAuth:
    def __init__(self) -> None:
        self.valid: dict[str, Any] = {}

    def cached(self, key: str) -> Any:
        return None

    def resolve(self, key: str) -> Any:
        return self.valid.get(key)


class P:
    def __init__(self, run_id: str | None = None) -> None:
        self.client_id, self.run_id = "c1", run_id


def test_a_session_lives_while_its_key_does_and_expires_when_idle() -> None:
    now = [1000.0]
    auth = FakeAuth()
    auth.valid["k"] = P()
    sessions = svc.Sessions(auth, clock=lambda: now[0])  # type: ignore[arg-type]
    token, session = sessions.open("k")
    assert token not in repr(sessions._by_digest) and len(token) >= 40
    found = sessions.principal(token)
    assert found is not None and found[0] is session
    assert sessions.principal(token + "x") is None and sessions.principal(None) is None
    now[0] += svc.IDLE_SECONDS - 1
    assert sessions.principal(token) is not None  # use keeps it alive
    now[0] += svc.IDLE_SECONDS + 1
    assert sessions.principal(token) is None and len(sessions) == 0  # idle: gone
    token, _ = sessions.open("k")
    del auth.valid["k"]  # revoked
    assert sessions.principal(token) is None and len(sessions) == 0
    auth.valid["run"] = P(run_id="r1")
    token, _ = sessions.open("run")
    assert sessions.principal(token) is None  # a run-scoped key never holds a session
    token, _ = sessions.open("k")
    sessions.close(token)
    assert sessions.get(token) is None


def test_a_session_in_constant_use_still_ends_after_its_maximum_age() -> None:
    """A session used every hour (an open dashboard tab's stream) lived for ever."""
    now = [0.0]
    auth = FakeAuth()
    auth.valid["k"] = P()
    sessions = svc.Sessions(auth, clock=lambda: now[0])  # type: ignore[arg-type]
    token, _ = sessions.open("k")
    while now[0] + 3600 <= svc.MAX_AGE_SECONDS:
        now[0] += 3600
        assert sessions.principal(token) is not None
    now[0] = svc.MAX_AGE_SECONDS + 1
    assert sessions.principal(token) is None and len(sessions) == 0


def test_signing_in_again_and_again_pushes_out_only_that_clients_own_sessions() -> None:
    """Sessions were capped at 10,000 for everyone, oldest out first: one client signing in
    10,100 times signed every other client out."""
    auth = FakeAuth()
    auth.valid["a"] = auth.valid["b"] = P()
    now = [0.0]
    sessions = svc.Sessions(auth, clock=lambda: now[0])  # type: ignore[arg-type]
    victim, _ = sessions.open("b", "other-client")
    flood = []
    for _ in range(3 * svc.MAX_SESSIONS_PER_CLIENT):
        now[0] += 1
        flood.append(sessions.open("a", "c1")[0])
    assert sessions.get(victim) is not None  # another client's session is untouched
    assert len(sessions) == svc.MAX_SESSIONS_PER_CLIENT + 1
    assert sessions.get(flood[-1]) is not None and sessions.get(flood[0]) is None  # its own oldest went


def test_csrf_and_origin_checks() -> None:
    s = svc.Session(key="k", csrf="abc", created=0, seen=0)
    assert svc.csrf_ok(s, "abc")
    assert not svc.csrf_ok(s, "abd") and not svc.csrf_ok(s, "") and not svc.csrf_ok(s, None)
    assert svc.same_origin("http://127.0.0.1:8700", "127.0.0.1:8700")
    assert svc.same_origin("https://Example.com", "example.com")
    for origin in ("http://evil.example", "null", None, "http://127.0.0.1:8701", "file://", "http://127.0.0.1:8700.evil"):
        assert not svc.same_origin(origin, "127.0.0.1:8700"), origin
    assert not svc.same_origin("http://a", None)


def test_pnl_series_is_average_cost_net_of_fees() -> None:
    fills = [
        {"symbol": "X", "sandbox": True, "side": "buy", "qty": 2.0, "price": 100.0, "fee": 0.5, "ts": 1.0},
        {"symbol": "X", "sandbox": True, "side": "buy", "qty": 2.0, "price": 110.0, "fee": 0.0, "ts": 2.0},
        {"symbol": "X", "sandbox": True, "side": "sell", "qty": 1.0, "price": 120.0, "fee": 0.0, "ts": 3.0},
        {"symbol": "X", "sandbox": True, "side": "sell", "qty": 5.0, "price": 100.0, "fee": 0.0, "ts": 4.0},
        {"symbol": "X", "sandbox": True, "side": "buy", "qty": 2.0, "price": 90.0, "fee": 0.0, "ts": 5.0},
        {"symbol": "X", "sandbox": False, "side": "sell", "qty": 1.0, "price": 1.0, "fee": 0.0, "ts": 6.0},
    ]
    series = pnl_series(fills)
    assert [t for t, _ in series] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    pnl = [v for _, v in series]
    assert pnl[0] == -0.5  # the fee
    assert pnl[2] == pytest.approx(-0.5 + 15.0)  # sold 1 at 120 against an average of 105
    assert pnl[3] == pytest.approx(14.5 - 15.0)  # closed 3 more at 100 (−5 each), then short 2 at 100
    assert pnl[4] == pytest.approx(-0.5 + 20.0)  # covered the short 2 at 90 (+10 each)
    assert pnl[5] == pnl[4]  # another mode's book is apart: opening it realizes nothing


def test_embedded_json_cannot_close_its_script_element() -> None:
    text = script_json({"symbol": "</script><script>alert(1)</script>", "a": "&"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text)["symbol"] == "</script><script>alert(1)</script>"


# -- the strategies channel, in-process ----------------------------------------------------------

@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    srv = start_server(tmp_path / "data", environ={})
    try:
        yield srv
    finally:
        srv.stop()


def _ws(srv: LiveServer, key: str) -> ClientConnection:
    return connect(srv.url.replace("http://", "ws://") + "/v1/stream",
                   additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=10)


def _until(ws: ClientConnection, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if pred(msg):
            return msg  # type: ignore[no-any-return]
    raise AssertionError("no such message")


def test_the_strategies_channel_sends_a_snapshot_then_each_change(server: LiveServer) -> None:
    with server.client() as api:
        first = api.post("/v1/strategies", json=create_body("alpha")).json()
        with _ws(server, server.live_key) as ws:
            ws.send(json.dumps({"op": "subscribe", "channels": ["strategies"]}))
            snap = _until(ws, lambda m: m.get("channel") == "strategies")["data"]
            assert snap["snapshot"] is True
            assert [s["name"] for s in snap["strategies"]] == ["alpha"]
            row = snap["strategies"][0]
            assert row["strategy_id"] == first["strategy_id"] and row["status"] == "stopped"
            assert set(row) >= {"status", "restart_count", "last_exit", "current_run", "usage"}
            assert "env" not in row and "secret_names" not in row  # a summary, not the object

            beta = api.post("/v1/strategies", json=create_body("beta", start=True)).json()
            got = _until(ws, lambda m: any(s["strategy_id"] == beta["strategy_id"]
                                           for s in m.get("data", {}).get("strategies", [])))["data"]
            # A change, not a snapshot; it may carry alpha's row too (alpha's own creation was
            # marked before the subscription and can share beta's coalescing window): upserts.
            mine = [x for x in got["strategies"] if x["strategy_id"] == beta["strategy_id"]]
            assert "snapshot" not in got and mine[0]["status"] == "queued"

            api.post(f"/v1/strategies/{beta['strategy_id']}/stop")
            _until(ws, lambda m: any(s.get("status") == "stopped" and s["strategy_id"] == beta["strategy_id"]
                                     for s in m.get("data", {}).get("strategies", [])))
            api.delete(f"/v1/strategies/{beta['strategy_id']}")
            _until(ws, lambda m: {"strategy_id": beta["strategy_id"], "deleted": True}
                   in m.get("data", {}).get("strategies", []))


def test_the_strategies_channel_is_per_client_and_closed_to_run_keys(server: LiveServer) -> None:
    _cid, other_key = server.new_client()
    with server.client() as api, _ws(server, other_key) as ws:
        ws.send(json.dumps({"op": "subscribe", "channels": ["strategies"]}))
        assert _until(ws, lambda m: m.get("channel") == "strategies")["data"]["strategies"] == []
        api.post("/v1/strategies", json=create_body("mine", start=True))
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1.0)  # another client's change never arrives
    # A run-scoped key (a strategy's own) is refused the channel by the hub's guard.
    assert server.core.market is not None
    hub = server.core.market.hub
    assert hub.guard is not None
    with pytest.raises(ChannelError) as info:
        hub.guard("strategies", None, Principal(client_id="c", key_id="k", mode="live", run_id="r", strategy_id="s"))
    assert info.value.code == "forbidden"


def test_the_stream_takes_a_session_cookie_only_from_its_own_origin(server: LiveServer) -> None:
    import httpx

    with httpx.Client(base_url=server.url, follow_redirects=False) as c:
        assert c.post("/dashboard/login", data={"api_key": server.live_key}).status_code == 303
        cookie = f"seq_session={c.cookies['seq_session']}"
    url = server.url.replace("http://", "ws://") + "/v1/stream"
    host = server.url.removeprefix("http://")
    with pytest.raises(InvalidStatus):
        connect(url, additional_headers={"Cookie": cookie, "Origin": "http://evil.example"}, open_timeout=10)
    with connect(url, additional_headers={"Cookie": cookie, "Origin": f"http://{host}"}, open_timeout=10) as ws:
        ws.send(json.dumps({"op": "ping"}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong"}
