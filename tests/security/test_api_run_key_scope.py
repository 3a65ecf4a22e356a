"""A strategy's own SEQUENCE_API_KEY (a run-scoped key) against its siblings.

Before: with the injected key a strategy listed, inspected (env included),
stopped and deleted the client's other strategies and read their logs. Now a
run key sees only its own strategy; everything else is 404 (reads) or 403
(anything that manages).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.api.fake_runner import FakeRunner
from tests.helpers import LiveServer, create_body

SIBLING_ENV = {"SIBLING_ONLY": "do-not-leak"}


@pytest.fixture
def scene(server: LiveServer) -> Iterator[dict[str, Any]]:
    """Two strategies of one client; "mine" is running with a run key, "sibling" is not."""
    with server.client() as c:
        sib = c.post("/v1/strategies", json=create_body(name="sibling", env=SIBLING_ENV)).json()
        mine = c.post("/v1/strategies", json=create_body(name="mine", start=True)).json()
    runner = FakeRunner(server)
    spec = runner.claim_one()
    assert spec["strategy_id"] == mine["strategy_id"]
    runner.logs(spec, 1, ["mine says hi"])
    yield {"mine": mine["strategy_id"], "sibling": sib["strategy_id"], "spec": spec, "runner": runner,
           "key": spec["api_key"]}
    runner.close()


def _forbidden(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "forbidden" and "run-scoped keys cannot" in err["message"]


def test_run_key_sees_only_its_own_strategy(server: LiveServer, scene: dict[str, Any]) -> None:
    mine, sib = scene["mine"], scene["sibling"]
    with server.client(scene["key"]) as rk:
        listed = rk.get("/v1/strategies").json()
        assert [s["strategy_id"] for s in listed["strategies"]] == [mine] and listed["next_cursor"] is None
        for ident in (sib, "sibling"):
            for path in ("", "/logs", "/runs"):
                r = rk.get(f"/v1/strategies/{ident}{path}")
                assert r.status_code == 404, (path, r.text)
                assert "do-not-leak" not in r.text
        # Its own strategy: inspect, runs and logs work.
        assert rk.get(f"/v1/strategies/{mine}").json()["strategy_id"] == mine
        assert rk.get("/v1/strategies/mine").json()["strategy_id"] == mine
        assert [x["line"] for x in rk.get(f"/v1/strategies/{mine}/logs").json()["lines"]] == ["mine says hi"]
        assert len(rk.get(f"/v1/strategies/{mine}/runs").json()["runs"]) == 1


def test_run_key_cannot_start_stop_delete_or_deploy(server: LiveServer, scene: dict[str, Any]) -> None:
    mine, sib = scene["mine"], scene["sibling"]
    with server.client(scene["key"]) as rk:
        for target in (sib, mine, "no-such-strategy"):
            _forbidden(rk.post(f"/v1/strategies/{target}/stop"))
            _forbidden(rk.post(f"/v1/strategies/{target}/start"))
            _forbidden(rk.delete(f"/v1/strategies/{target}"))
        _forbidden(rk.post("/v1/strategies", json=create_body(name="sibling", start=True,
                                                              sequence_api_key=server.live_key)))
        _forbidden(rk.post("/v1/strategies", json=create_body(name="new-one")))
    with server.client() as c:
        s = c.get(f"/v1/strategies/{sib}").json()
        assert s["status"] == "stopped" and s["env"] == SIBLING_ENV and s["artifact_sha256"]
        assert c.get(f"/v1/strategies/{mine}").json()["status"] == "running"
        assert [x["name"] for x in c.get("/v1/strategies").json()["strategies"]] == ["sibling", "mine"]


def test_run_key_cannot_touch_keys_or_venue_credentials(server: LiveServer, scene: dict[str, Any]) -> None:
    with server.client(scene["key"]) as rk:
        _forbidden(rk.get("/v1/keys"))
        _forbidden(rk.post("/v1/keys", json={"mode": "live"}))
        _forbidden(rk.delete("/v1/keys/key_whatever"))
        _forbidden(rk.put("/v1/venues/kalshi/credentials", json={"api_key_id": "x"}))
        _forbidden(rk.delete("/v1/venues/kalshi/credentials"))
    with server.client() as c:
        assert not any(v["has_credentials"] for v in c.get("/v1/venues").json()["venues"])


def _graph(c: httpx.Client) -> str:
    body = {"nodes": [{"node_id": "a", "symbol": "BTC-USD", "side": "buy", "qty": 0.01, "urgency": "high"}],
            "sandbox": True}
    r = c.post("/v1/graphs", json=body)
    assert r.status_code == 201, r.text
    gid: str = r.json()["graph_id"]
    return gid


def _fills(c: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = c.get("/v1/fills", params=params).json()["fills"]
    return out


def test_run_key_trades_and_reads_only_its_strategys_graphs(server: LiveServer, scene: dict[str, Any]) -> None:
    with server.client() as c, server.client(scene["key"]) as rk:
        theirs = _graph(c)  # the client's own (e.g. from a terminal or another strategy)
        ours = _graph(rk)
        deadline = time.monotonic() + 10
        while not (_fills(c, graph_id=theirs) and _fills(c, graph_id=ours)):
            assert time.monotonic() < deadline, "market orders did not fill"
            time.sleep(0.05)
        assert [g["graph_id"] for g in rk.get("/v1/graphs").json()["graphs"]] == [ours]
        assert {g["graph_id"] for g in c.get("/v1/graphs").json()["graphs"]} == {ours, theirs}
        assert rk.get(f"/v1/graphs/{ours}").status_code == 200
        for r in (rk.get(f"/v1/graphs/{theirs}"), rk.post(f"/v1/graphs/{theirs}/cancel"),
                  rk.delete(f"/v1/graphs/{theirs}")):
            assert r.status_code == 404, r.text
        assert {f["graph_id"] for f in _fills(rk)} == {ours}
        assert _fills(rk, graph_id=theirs) == []
        mine_qty = sum(f["qty"] for f in _fills(rk))
        all_qty = sum(f["qty"] for f in _fills(c))
        pos = rk.get("/v1/positions").json()["positions"]
        assert [p["symbol"] for p in pos] == ["BTC-USD"]
        assert pos[0]["net_qty"] == pytest.approx(mine_qty) and mine_qty < all_qty


def _ws(server: LiveServer, key: str, channels: list[str], errors: int) -> list[dict[str, Any]]:
    """Subscribe; return the ``subscribed`` answer and the ``errors`` error answers."""
    url = server.url.replace("http://", "ws://") + "/v1/stream"
    with connect(url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=10) as ws:
        ws.send(json.dumps({"op": "subscribe", "channels": channels}))
        out = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=5))
            if msg.get("type") in ("subscribed", "error"):
                out.append(msg)
            if sum(m["type"] == "error" for m in out) == errors and any(m["type"] == "subscribed" for m in out):
                break
        return out


def test_run_key_streams_market_data_and_its_own_logs_only(server: LiveServer, scene: dict[str, Any]) -> None:
    mine, sib = scene["mine"], scene["sibling"]
    got = _ws(server, scene["key"], ["prices:BTC-USD", f"logs:{mine}", f"logs:{sib}", "fills"], errors=1)
    subscribed = [m for m in got if m["type"] == "subscribed"]
    assert subscribed and set(subscribed[0]["channels"]) == {"prices:BTC-USD", f"logs:{mine}", "fills"}
    errors = {m["code"]: m["channels"] for m in got if m["type"] == "error"}
    assert errors == {"not_found": [f"logs:{sib}"]}
    # The client's own key still subscribes to all of them.
    got = _ws(server, server.live_key, [f"logs:{sib}", "fills"], errors=0)
    assert [m["channels"] for m in got if m["type"] == "subscribed"] == [[f"logs:{sib}", "fills"]]


def _fill_events(key: str, server: LiveServer, act: Any, want: int) -> list[dict[str, Any]]:
    url = server.url.replace("http://", "ws://") + "/v1/stream"
    out: list[dict[str, Any]] = []
    with connect(url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=10) as ws:
        ws.send(json.dumps({"op": "subscribe", "channels": ["fills", "graphs"]}))
        assert json.loads(ws.recv(timeout=5))["type"] == "subscribed"
        act()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                msg = json.loads(ws.recv(timeout=0.5))
            except TimeoutError:
                if len(out) >= want:
                    break
                continue
            if msg.get("channel") in ("fills", "graphs"):
                out.append(msg)
    return out


def test_run_key_streams_only_its_strategys_fills_and_graphs(server: LiveServer, scene: dict[str, Any]) -> None:
    """The client-wide fills/graphs channels, scoped: a run key gets its own strategy's only."""
    graphs: dict[str, str] = {}

    def trade() -> None:
        with server.client() as c, server.client(scene["key"]) as rk:
            graphs["theirs"] = _graph(c)
            graphs["ours"] = _graph(rk)

    seen = _fill_events(scene["key"], server, trade, want=2)
    ids = {m["data"]["graph_id"] for m in seen}
    assert ids == {graphs["ours"]}, (ids, graphs)
    assert any(m["channel"] == "fills" for m in seen) and any(m["channel"] == "graphs" for m in seen)
    # the client's own key sees both strategies' activity
    seen = _fill_events(server.live_key, server, trade, want=4)
    assert {graphs["ours"], graphs["theirs"]} <= {m["data"]["graph_id"] for m in seen}


def test_run_key_gets_every_price_update_and_its_own_log_lines(server: LiveServer, scene: dict[str, Any]) -> None:
    """Scoping private channels must not silence public ones (a regression: a run key got
    only the first prices: message)."""
    url = server.url.replace("http://", "ws://") + "/v1/stream"
    mine = scene["mine"]
    with connect(url, additional_headers={"Authorization": f"Bearer {scene['key']}"}, open_timeout=10) as ws:
        ws.send(json.dumps({"op": "subscribe", "channels": ["prices:BTC-USD", f"logs:{mine}"]}))
        assert json.loads(ws.recv(timeout=5))["type"] == "subscribed"
        scene["runner"].logs(scene["spec"], 2, ["second line"])
        prices, logs = 0, []
        deadline = time.monotonic() + 10
        while (prices < 4 or not logs) and time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=5))
            if msg.get("channel") == "prices:BTC-USD":
                prices += 1
            elif msg.get("channel") == f"logs:{mine}":
                logs.append(msg["data"]["line"])
    assert prices >= 4 and "second line" in logs, (prices, logs)


def test_run_key_cannot_change_risk_limits_or_pull_the_kill_switch(server: LiveServer,
                                                                   scene: dict[str, Any]) -> None:
    with server.client(scene["key"]) as rk:
        _forbidden(rk.put("/v1/risk", json={"max_order_notional": 1e9}))
        _forbidden(rk.put("/v1/risk", params={"strategy": "sibling"}, json={"max_order_notional": 1e9}))
        _forbidden(rk.delete("/v1/risk"))
        _forbidden(rk.post("/v1/kill", json={"strategy": "sibling"}))
        _forbidden(rk.delete("/v1/kill"))
        # Reading: never a sibling's.
        assert rk.get("/v1/risk", params={"strategy": "sibling"}).status_code in (404, 503)
