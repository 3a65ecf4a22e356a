"""The seed's trading scenarios through the real SDK against a real coordinator.

The coordinator runs the simulated Kalshi, Polymarket and Coinbase on the wall
clock, with the trading engine attached; the SDK talks HTTP and WebSocket to
it exactly as a hosted strategy would.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from sequence_markets import Sequence, SequenceError
from sequence_markets._exceptions import NotFoundError, ValidationError

# -- the seed's helpers, as written there ------------------------------------------------------


def _probe_two_sided(seq: Sequence, symbol: str) -> dict[str, Any] | None:
    try:
        q = seq.quote(symbol, depth=3)
    except SequenceError:
        return None
    bid = ((q or {}).get("nbbo") or {}).get("bid") or 0
    return q if bid > 0 else None


def find_kalshi_tradable(seq: Sequence) -> dict[str, Any] | None:
    r = seq.markets(venue="kalshi", limit=30, order="volume", active=True)
    for m in (r or {}).get("markets", []):
        if (m.get("liquidity") or 0) < 100:
            continue
        for side, token_field in (("yes", "yes_token_id"), ("no", "no_token_id")):
            tok = m.get(token_field)
            if tok and _probe_two_sided(seq, tok) is not None:
                return {**m, "_chosen_side": side, "_chosen_symbol": tok}
    return None


def find_polymarket_tradable(seq: Sequence) -> dict[str, Any] | None:
    r = seq.markets(venue="polymarket", limit=200, order="volume", active=True, expand="outcomes")
    for m in (r or {}).get("markets", []):
        if m.get("is_placeholder_outcome") or (m.get("liquidity") or 0) < 1000:
            continue
        tok = m.get("yes_token_id")
        if tok and _probe_two_sided(seq, tok) is not None:
            return {**m, "_chosen_side": "yes", "_chosen_symbol": tok}
    return None


def safe_resting_price(best_bid: float) -> float:
    if best_bid is None or best_bid <= 0:
        return 0.01
    half_cents = int(best_bid * 100 / 2)
    return max(0.01, half_cents / 100.0)


def submit_test_graph(seq: Sequence, venue: str, label: str, symbol: str, qty: float, best_bid: float) -> str:
    price = safe_resting_price(best_bid)
    node = seq.node(node_id="leg", symbol=symbol, side="buy", qty=qty, venue=venue,
                    instrument_type="prediction", limit_price=price)
    return str(seq.graph([node]).get("graph_id"))


def _venue_tick(venue: str) -> float:
    return 0.001 if venue == "polymarket" else 0.01


def force_cross_price(side: str, reference: float, tick: float) -> float:
    raw = reference + tick if side == "buy" else reference - tick
    return max(tick, round(raw / tick) * tick)


# -- helpers ---------------------------------------------------------------------------------------


def sdk(server: Any, key: str | None = None) -> Sequence:
    return Sequence(key or server.live_key, server.url, timeout=10)


def quote_tick(seq: Sequence, symbol: str) -> float:
    return float(seq.quote(symbol, depth=1)["tick_size"])


def cross(seq: Sequence, symbol: str, side: str, ticks: int = 3) -> float:
    """The seed's force-cross recipe with the quote's own tick; a few ticks through the touch
    (urgency high sweeps the levels in between) so the simulated book moving between the
    quote and the submit cannot make a test flaky."""
    q = seq.quote(symbol, depth=1)
    ref = q["nbbo"]["ask"] if side == "buy" else q["nbbo"]["bid"]
    tick = float(q["tick_size"])
    price = force_cross_price(side, ref, tick * ticks)
    return round(min(max(price, tick), 1 - tick), 6)


def new_fills(seq: Sequence, symbol: str, graph_id: str, timeout: float = 8.0) -> list[dict[str, Any]]:
    """The seed's 'detect fills via seq.fills()' loop."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        after = seq.fills(symbol=symbol, limit=10)
        after_list = after if isinstance(after, list) else after.get("fills", [])
        found = [f for f in (after_list or []) if f.get("node_order_id", "").startswith(f"graph:{graph_id}:")]
        if found:
            return found
        time.sleep(0.1)
    return []


def two_sided_kalshi(seq: Sequence) -> dict[str, Any]:
    m = find_kalshi_tradable(seq)
    assert m is not None, "the simulated Kalshi should have a two-sided market"
    return m


def two_sided_poly(seq: Sequence) -> dict[str, Any]:
    m = find_polymarket_tradable(seq)
    assert m is not None, "the simulated Polymarket should have a two-sided market"
    return m


# -- scenarios -------------------------------------------------------------------------------------


def test_half_bid_resting_buys_never_fill_and_cancel_cleanly(coord: Any) -> None:
    seq = sdk(coord)
    kalshi, poly = two_sided_kalshi(seq), two_sided_poly(seq)
    submitted = []
    for venue, mkt, qty in (("kalshi", kalshi, 1.0), ("polymarket", poly, 5.0)):
        q = seq.quote(mkt["_chosen_symbol"], depth=5)
        bid = (q.get("nbbo") or {}).get("bid") or 0
        assert bid > 0
        gid = submit_test_graph(seq, venue, mkt["slug"], mkt["_chosen_symbol"], qty, float(bid))
        assert gid.startswith("graph_")
        submitted.append((venue, gid, mkt["_chosen_symbol"]))
    time.sleep(1.0)
    for _venue, gid, _sym in submitted:
        status = seq.graph_status(gid)
        assert status["status"] == "active"
        assert status["nodes"][0]["status"] == "working"
    for _venue, gid, sym in submitted:
        out = seq.cancel(gid)
        assert out["status"] == "cancelled" and out["nodes"][0]["status"] == "cancelled"
        assert seq.fills(symbol=sym, graph_id=gid)["fills"] == []
    assert seq.cancel(submitted[0][1])["status"] == "cancelled"  # cancelling again is harmless


def test_force_crossed_high_urgency_buy_fills_and_is_found_by_prefix(coord: Any) -> None:
    seq = sdk(coord)
    m = two_sided_kalshi(seq)
    sym = m["_chosen_symbol"]
    before = seq.fills(symbol=sym, limit=10)["fills"]
    node = seq.node(node_id="leg", symbol=sym, side="buy", qty=1.0, venue="kalshi",
                    instrument_type="prediction", limit_price=cross(seq, sym, "buy"), urgency="high")
    resp = seq.graph([node], sandbox=False)
    assert resp["status"] == "active" and resp["node_count"] == 1 and resp["edge_count"] == 0
    fills = new_fills(seq, sym, resp["graph_id"])
    assert len(fills) >= 1 and before == []
    f = fills[0]
    assert f["node_order_id"] == f"graph:{resp['graph_id']}:leg:1"
    assert sum(x["qty_1e8"] for x in fills) == 100_000_000
    assert set(f) >= {"fill_id", "node_order_id", "graph_id", "node_id", "symbol", "venue", "side", "price",
                      "qty", "qty_1e8", "fee", "ts", "sandbox"}
    assert f["sandbox"] is False and f["venue"] == "kalshi" and f["side"] == "buy"
    assert seq.wait_for_fills(resp["graph_id"], symbol=sym, timeout=2)  # the SDK helper agrees
    pos = {p["symbol"]: p for p in seq.positions()["positions"] if not p["sandbox"]}
    assert pos[sym]["net_qty"] == 1.0


def test_two_leg_zero_edge_graph_fires_both_legs(coord: Any) -> None:
    seq = sdk(coord)
    k, p = two_sided_kalshi(seq), two_sided_poly(seq)
    ksym, psym = k["_chosen_symbol"], p["_chosen_symbol"]
    resp = seq.graph(
        nodes=[
            seq.node(node_id="kalshi-leg", symbol=ksym, side="buy", qty=1.0, venue="kalshi",
                     instrument_type="prediction", limit_price=cross(seq, ksym, "buy"), urgency="high"),
            seq.node(node_id="polymarket-leg", symbol=psym, side="sell", qty=8.0, venue="polymarket",
                     instrument_type="prediction", limit_price=cross(seq, psym, "sell"), urgency="high"),
        ],
        edges=[],
        sandbox=False,
    )
    assert (resp["node_count"], resp["edge_count"]) == (2, 0)
    gid = resp["graph_id"]
    assert new_fills(seq, ksym, gid) and new_fills(seq, psym, gid)
    assert {f["node_id"] for f in seq.fills(graph_id=gid)["fills"]} == {"kalshi-leg", "polymarket-leg"}


def test_polymarket_order_under_one_dollar_is_accepted_and_rests_forever(coord: Any) -> None:
    seq = sdk(coord)
    p = two_sided_poly(seq)
    sym = p["_chosen_symbol"]
    price = cross(seq, sym, "buy")  # marketable: it would fill at once if it were over $1
    qty = 1.0
    assert qty * price < 1.0
    resp = seq.graph([seq.node(node_id="leg", symbol=sym, side="buy", qty=qty, venue="polymarket",
                               instrument_type="prediction", limit_price=price, urgency="high")])
    assert resp["status"] == "active"
    time.sleep(1.0)
    g = seq.graph_status(resp["graph_id"])
    assert g["status"] == "active" and g["nodes"][0]["status"] == "working"
    assert seq.fills(graph_id=resp["graph_id"])["fills"] == []
    assert seq.cancel(resp["graph_id"])["status"] == "cancelled"


def test_a_test_key_forces_sandbox_even_with_sandbox_false(coord: Any) -> None:
    seq = sdk(coord, coord.test_key)
    m = two_sided_kalshi(seq)
    sym = m["_chosen_symbol"]
    resp = seq.graph([seq.node(node_id="leg", symbol=sym, side="buy", qty=2.0, venue="kalshi",
                               instrument_type="prediction", limit_price=cross(seq, sym, "buy"),
                               urgency="high")], sandbox=False)
    assert resp["sandbox"] is True
    fills = new_fills(seq, sym, resp["graph_id"])
    assert fills and all(f["sandbox"] is True for f in fills)
    assert seq.graph_status(resp["graph_id"])["sandbox"] is True
    assert all(p["sandbox"] for p in seq.positions()["positions"])
    # (Sandbox fills never touch the book: the live book moves on its own here, so that is
    # checked against a still book in test_engine and by the matching core's properties.)


def test_conditional_hedge_fires_only_after_its_source_fills(coord: Any) -> None:
    seq = sdk(coord)
    k, p = two_sided_kalshi(seq), two_sided_poly(seq)
    ksym, psym = k["_chosen_symbol"], p["_chosen_symbol"]
    kq = seq.quote(ksym, depth=1)["nbbo"]
    hedge = seq.node(node_id="hedge", symbol=psym, side="sell", qty=8.0, venue="polymarket",
                     instrument_type="prediction", limit_price=cross(seq, psym, "sell"), urgency="high")
    # A source that rests: the hedge waits.
    resting = seq.node(node_id="spot", symbol=ksym, side="buy", qty=1.0, venue="kalshi",
                       instrument_type="prediction", limit_price=safe_resting_price(kq["bid"]))
    g1 = seq.graph([resting, hedge], edges=[{"from": "spot", "to": "hedge", "trigger": "filled"}], sandbox=True)
    st = seq.graph_status(g1["graph_id"])
    assert [n["status"] for n in st["nodes"]] == ["working", "pending"]
    assert [n["activation"] for n in st["nodes"]] == ["root", "triggered"]
    cancelled = seq.cancel(g1["graph_id"])
    assert [n["status"] for n in cancelled["nodes"]] == ["cancelled", "cancelled"]
    assert seq.fills(graph_id=g1["graph_id"])["fills"] == []
    # A source that fills: the hedge fires.
    filling = dict(resting, limit_price=cross(seq, ksym, "buy"), urgency="high")
    g2 = seq.graph([filling, hedge], edges=[{"from": "spot", "to": "hedge", "trigger": "filled"}], sandbox=True)
    fills = seq.wait_for_fills(g2["graph_id"], timeout=5)
    deadline = time.time() + 5
    while {f["node_id"] for f in fills} != {"spot", "hedge"} and time.time() < deadline:
        time.sleep(0.1)
        fills = seq.fills(graph_id=g2["graph_id"])["fills"]
    assert {f["node_id"] for f in fills} == {"spot", "hedge"}
    spot_ts = min(f["fill_ts"] for f in fills if f["node_id"] == "spot")
    assert all(f["fill_ts"] >= spot_ts for f in fills if f["node_id"] == "hedge")


def test_an_off_tick_price_is_rounded_and_a_missing_instrument_type_is_rejected_clearly(coord: Any) -> None:
    seq = sdk(coord)
    m = two_sided_kalshi(seq)
    sym = m["_chosen_symbol"]
    # The product document's own helper aligns to 0.001 "to be safe": on a 0.01 market
    # the price is rounded to the tick's decimals, and the graph shows the price used.
    ack = seq.graph([seq.node(node_id="leg", symbol=sym, side="buy", qty=1, venue="kalshi",
                              instrument_type="prediction", limit_price=0.011)])
    got = seq.graph_status(ack["graph_id"])
    assert [n["limit_price"] for n in got["nodes"]] == [0.01]
    seq.cancel(ack["graph_id"])
    with pytest.raises(ValidationError) as info:
        seq.graph([seq.node(node_id="leg", symbol=sym, side="buy", qty=1, venue="kalshi", limit_price=0.2)])
    assert info.value.code == "instrument_type_required"
    assert 'instrument_type must be "prediction"' in info.value.message
    assert info.value.details["field"] == "nodes[0].instrument_type"
    assert seq.fills(symbol=sym)["fills"] == []


def test_the_same_idempotency_key_twice_places_one_graph(coord: Any) -> None:
    seq = sdk(coord)
    m = two_sided_kalshi(seq)
    sym = m["_chosen_symbol"]
    node = seq.node(node_id="leg", symbol=sym, side="buy", qty=1, venue="kalshi", instrument_type="prediction",
                    limit_price=0.01)
    a = seq.graph([node], idempotency_key="seed-retry-1")
    b = seq.graph([node], idempotency_key="seed-retry-1")
    assert a["graph_id"] == b["graph_id"]
    with coord.client() as http:
        graphs = http.get("/v1/graphs").json()["graphs"]
        assert [g["graph_id"] for g in graphs] == [a["graph_id"]]
        r = http.post("/v1/graphs", headers={"Idempotency-Key": "seed-retry-1"},
                      json={"nodes": [dict(node, qty=2)]})
        assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_conflict"
    seq.cancel(a["graph_id"])


def test_status_never_lags_fills(coord: Any) -> None:
    """Read fills, then the graph, in one go after each fill: the status always covers them."""
    seq = sdk(coord, coord.test_key)
    m = two_sided_kalshi(seq)
    sym = m["_chosen_symbol"]
    for _ in range(5):
        resp = seq.graph([seq.node(node_id="leg", symbol=sym, side="buy", qty=3.0, venue="kalshi",
                                   instrument_type="prediction", limit_price=cross(seq, sym, "buy"),
                                   urgency="high")])
        gid = resp["graph_id"]
        fills = seq.fills(graph_id=gid)["fills"]
        g = seq.graph_status(gid)
        got = sum(f["qty_1e8"] for f in fills)
        assert got > 0, "a marketable sandbox order fills before the ack"
        assert g["nodes"][0]["filled_qty_1e8"] >= got
        if got == g["nodes"][0]["qty_1e8"]:
            assert g["status"] == "completed" and g["nodes"][0]["status"] == "filled"


def test_another_clients_graph_is_404(coord: Any) -> None:
    seq = sdk(coord)
    m = two_sided_kalshi(seq)
    gid = seq.graph([seq.node(node_id="leg", symbol=m["_chosen_symbol"], side="buy", qty=1, venue="kalshi",
                              instrument_type="prediction", limit_price=0.01)])["graph_id"]
    _cid, other_key = coord.new_client("intruder")
    other = sdk(coord, other_key)
    with pytest.raises(NotFoundError):
        other.graph_status(gid)
    with pytest.raises(NotFoundError):
        other.cancel(gid)
    assert other.fills(graph_id=gid)["fills"] == []
    assert seq.graph_status(gid)["status"] == "active"


def test_fills_stream_delivers_own_fills(coord: Any) -> None:
    seq = sdk(coord, coord.test_key)
    m = two_sided_kalshi(seq)
    sym = m["_chosen_symbol"]
    stream = seq.open_stream(["fills", "graphs", f"prices:{sym}"])
    try:
        stream.connect(timeout=5)
        first = stream.recv(timeout=5)  # the prices snapshot: subscriptions are live
        assert first is not None and first["channel"] == f"prices:{sym}"
        resp = seq.graph([seq.node(node_id="leg", symbol=sym, side="buy", qty=1.0, venue="kalshi",
                                   instrument_type="prediction", limit_price=cross(seq, sym, "buy"),
                                   urgency="high")])
        got: dict[str, dict[str, Any]] = {}
        deadline = time.time() + 5
        while time.time() < deadline and not {"fills", "graphs"} <= set(got):
            msg = stream.recv(timeout=1)
            if msg and msg["channel"] in ("fills", "graphs"):
                got.setdefault(msg["channel"], msg["data"])
        assert got["fills"]["node_order_id"].startswith(f"graph:{resp['graph_id']}:")
        assert got["graphs"]["graph_id"] == resp["graph_id"]
    finally:
        stream.close()


def test_restart_keeps_working_orders_working(tmp_path: Any) -> None:
    from tests.api.conftest import start_trading_server

    srv = start_trading_server(tmp_path / "data")
    try:
        seq = sdk(srv)
        m = two_sided_kalshi(seq)
        sym = m["_chosen_symbol"]
        q = seq.quote(sym, depth=100)
        taken = {round(lv["price"], 6) for lv in q["bids"]}
        # Far below the market, at a price the venue itself does not bid: ours alone.
        price = next(p / 100 for p in range(1, 100) if round(p / 100, 6) not in taken)
        assert price < q["nbbo"]["bid"] / 2
        gid = seq.graph([seq.node(node_id="leg", symbol=sym, side="buy", qty=7, venue="kalshi",
                                  instrument_type="prediction", limit_price=price)])["graph_id"]
        paper = seq.graph([seq.node(node_id="leg", symbol=sym, side="buy", qty=2, venue="kalshi",
                                    instrument_type="prediction", limit_price=price)], sandbox=True)["graph_id"]
    finally:
        srv.stop()
    srv = start_trading_server(tmp_path / "data")
    try:
        seq = sdk(srv)
        for g in (gid, paper):
            st = seq.graph_status(g)
            assert st["status"] == "active" and st["nodes"][0]["status"] == "working"
        # The live order is back in the simulated venue's book, visible in /v1/quotes.
        levels = seq.quote(sym, depth=100)["bids"]
        at = [lv for lv in levels if abs(lv["price"] - price) < 1e-9]
        assert at and at[0]["size"] == 7
        assert sorted(srv.core.trading.active_graph_ids()) == sorted([gid, paper])
        assert seq.cancel(gid)["status"] == "cancelled" and seq.cancel(paper)["status"] == "cancelled"
        levels = seq.quote(sym, depth=100)["bids"]
        assert not [lv for lv in levels if abs(lv["price"] - price) < 1e-9]
    finally:
        srv.stop()


def test_graphs_routes_on_both_backends(any_coord: Any) -> None:
    """The HTTP surface on SQLite and PostgreSQL: submit, read, list, fills paging, cancel."""
    seq = sdk(any_coord, any_coord.test_key)
    m = two_sided_kalshi(seq)
    sym = m["_chosen_symbol"]
    gids = []
    for _ in range(3):
        resp = seq.graph([seq.node(node_id="leg", symbol=sym, side="buy", qty=1.0, venue="kalshi",
                                   instrument_type="prediction", limit_price=cross(seq, sym, "buy"),
                                   urgency="high")])
        gids.append(resp["graph_id"])
    with any_coord.client(any_coord.test_key) as http:
        page = http.get("/v1/fills", params={"limit": 2}).json()
        assert len(page["fills"]) == 2 and page["next_cursor"]
        rest = http.get("/v1/fills", params={"limit": 50, "cursor": page["next_cursor"]}).json()
        ids = [f["fill_id"] for f in page["fills"] + rest["fills"]]
        assert len(ids) == len(set(ids)) >= 3
        since = page["fills"][0]["ts"]
        assert [f["fill_id"] for f in http.get("/v1/fills", params={"since": since}).json()["fills"]][:1] == ids[:1]
        listed = http.get("/v1/graphs", params={"limit": 2}).json()
        assert [g["graph_id"] for g in listed["graphs"]] == gids[::-1][:2] and listed["next_cursor"]
        r = http.delete(f"/v1/graphs/{gids[0]}")
        assert r.status_code == 200 and r.json()["status"] in ("completed", "cancelled")
        pos = http.get("/v1/positions").json()["positions"]
        assert pos and all(p["sandbox"] for p in pos) and pos[0]["net_qty"] >= 3


def test_http_errors_use_the_envelope(coord: Any) -> None:
    with coord.client() as http:
        for method, path, kw in (
            ("post", "/v1/graphs", {"content": b"{not json"}),
            ("post", "/v1/graphs", {"json": {"nodes": []}}),
            ("get", "/v1/graphs/graph_nope", {}),
            ("post", "/v1/graphs/graph_nope/cancel", {}),
            ("get", "/v1/fills", {"params": {"limit": "lots"}}),
            ("get", "/v1/fills", {"params": {"since": "yesterday"}}),
            ("get", "/v1/fills", {"params": {"cursor": "!!"}}),
            ("get", "/v1/graphs", {"params": {"status": "sleeping"}}),
            ("get", "/v1/positions", {"params": {"sandbox": "maybe"}}),
        ):
            r = getattr(http, method)(path, **kw)
            body = r.json()
            assert r.status_code in (400, 404), (path, r.status_code, body)
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
            if r.status_code == 400:
                assert body["error"]["details"]["field"]
    r = httpx.post(coord.url + "/v1/graphs", json={"nodes": []})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_a_stale_run_key_places_nothing(coord: Any) -> None:
    from sequence.store.store import ExitReport
    from sequence_markets._exceptions import AuthenticationError
    from tests.helpers import make_tar

    store = coord.core.store
    fields = {"name": "s1", "runtime": "python", "entrypoint": "main.py", "artifact_sha256": "a" * 64,
              "artifact_size": 10, "env": {}, "manifest": {}, "secret_names": [], "memory_mb": 512,
              "stop_timeout_s": 10.0, "placement": {}, "region": None, "api_key_id": None, "is_sandbox": False}
    store.deploy_strategy("sid-1", coord.client_id, fields, make_tar({"main.py": "x"}), start=True)
    tid, _ = store.create_runner_token("r")
    runner = store.register_runner(tid, "r1", "us-east-1", 10, {})
    run = store.claim(runner, ["us-east-1"], 5)
    assert run is not None
    _row, run_key = store.create_api_key(coord.client_id, "live", "run", run_id=run["run_id"])
    seq = sdk(coord, run_key)
    m = two_sided_kalshi(seq)
    node = seq.node(node_id="leg", symbol=m["_chosen_symbol"], side="buy", qty=1, venue="kalshi",
                    instrument_type="prediction", limit_price=0.01)
    first = seq.graph([node])["graph_id"]
    store.report_exit(run["run_id"], run["epoch"], runner, ExitReport(code=0))
    # Whether the auth cache still knows the key (then the in-transaction fence answers)
    # or not (then auth does), the answer is 401 and nothing is placed.
    with pytest.raises(AuthenticationError) as info:
        seq.graph([node])
    assert info.value.status == 401
    with coord.client() as http:
        assert [g["graph_id"] for g in http.get("/v1/graphs").json()["graphs"]] == [first]
