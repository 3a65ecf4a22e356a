"""The engine over a fake market with real books and a real SQLite (or PostgreSQL) store."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sequence.execution.engine import TradingEngine
from sequence.market.book import Side
from sequence.market.events import TickSizeChange
from sequence.store.trading import IdempotencyConflict
from sequence.trading.graphs import Graph
from sequence.trading.validation import GraphError
from tests.execution.conftest import Env, async_test, settle
from tests.trading.fakes import KALSHI, KALSHI_NO, POLY, SPOT, FakeMarket, node

Q = 100_000_000


async def submit(engine: TradingEngine, env: Env, nodes: list[dict[str, Any]], edges: Any = None,
                 *, client_id: str | None = None, paper: bool | None = None, test_key: bool = False,
                 key: str | None = None) -> str:
    body: dict[str, Any] = {"nodes": nodes, "edges": edges or []}
    if paper is not None:
        body["sandbox"] = paper  # the wire's name for paper trading
    ack = await engine.submit(body, client_id=client_id or env.client_id, key_id="key", paper_only=test_key,
                              idempotency_key=key)
    assert ack["status"] == "active"
    return str(ack["graph_id"])


async def graph(engine: TradingEngine, env: Env, gid: str, client_id: str | None = None) -> dict[str, Any]:
    out = await engine.graph(client_id or env.client_id, gid)
    assert out is not None
    return out


def node_of(g: dict[str, Any], nid: str) -> dict[str, Any]:
    return next(n for n in g["nodes"] if n["node_id"] == nid)


def std_book(m: FakeMarket, symbol: str = KALSHI) -> None:
    m.ladder(symbol, bids={0.40: 100, 0.39: 200}, asks={0.42: 50, 0.43: 100, 0.45: 500})


# -- paper -----------------------------------------------------------------------------------


@async_test
async def test_paper_buy_walks_the_book_without_changing_it(any_env: Env) -> None:
    env = any_env
    m = env.market
    std_book(m)
    before = m.books[KALSHI].snapshot()
    engine = env.engine()
    await engine.start()
    gid = await submit(engine, env, [node(qty=120, limit_price=0.43, urgency="high")], paper=True)
    # Fills and status landed in the same commit, before the ack.
    g = await graph(engine, env, gid)
    fills = env.trading.list_fills(env.client_id, graph_id=gid)
    assert g["status"] == "completed" and node_of(g, "leg")["status"] == "filled"
    assert sorted((f["price_units"], f["qty_1e8"]) for f in fills) == [(4200, 50 * Q), (4300, 70 * Q)]
    assert all(f["sandbox"] and f["node_order_id"] == f"graph:{gid}:leg:1" for f in fills)
    assert node_of(g, "leg")["avg_fill_price"] == pytest.approx((0.42 * 50 + 0.43 * 70) / 120)
    assert m.books[KALSHI].snapshot() == before
    (pos,) = env.trading.positions(env.client_id)
    assert pos["sandbox"] is True and pos["net_1e8"] == 120 * Q
    await engine.stop()


@async_test
async def test_paper_rest_fills_when_the_book_crosses_its_limit(env: Env) -> None:
    m = env.market
    std_book(m)
    engine = env.engine()
    await engine.start()
    gid = await submit(engine, env, [node(qty=10, limit_price=0.41)], test_key=True)
    g = await graph(engine, env, gid)
    assert node_of(g, "leg")["status"] == "working" and g["sandbox"] is True
    m.venue(KALSHI, Side.ASK, 0.41, 4)  # the ask comes down to our limit
    await settle(engine)
    g = await graph(engine, env, gid)
    assert node_of(g, "leg")["status"] == "partially_filled" and node_of(g, "leg")["filled_qty"] == 4
    m.venue(KALSHI, Side.ASK, 0.40, 100)  # the venue book even crosses itself: paper does not care
    await settle(engine)
    g = await graph(engine, env, gid)
    assert g["status"] == "completed" and node_of(g, "leg")["status"] == "filled"
    assert [f["price_units"] for f in env.trading.list_fills(env.client_id)] == [4100, 4100]
    await engine.stop()


@async_test
async def test_no_token_orders_fill_against_the_mirrored_book(env: Env) -> None:
    m = env.market
    m.ladder(KALSHI, bids={0.72: 30}, asks={0.75: 30})  # NO ask = 1 - 0.72 = 0.28
    engine = env.engine()
    await engine.start()
    gid = await submit(engine, env, [node(symbol=KALSHI_NO, qty=10, limit_price=0.3)], paper=True)
    (f,) = env.trading.list_fills(env.client_id, graph_id=gid)
    assert (f["symbol"], f["side"], f["price_units"], f["qty_1e8"]) == (KALSHI_NO, "buy", 2800, 10 * Q)
    await engine.stop()


# -- venue orders on a simulated venue --------------------------------------------------------------


@async_test
async def test_live_order_takes_liquidity_and_rests_visibly(env: Env) -> None:
    m = env.market
    std_book(m)
    engine = env.engine()
    await engine.start()
    gid = await submit(engine, env, [node(qty=80, limit_price=0.42)])
    assert m.levels(KALSHI, Side.ASK)[0] == (0.43, 100)  # the 0.42 ask was taken
    assert m.levels(KALSHI, Side.BID)[0] == (0.42, 30)  # our remainder rests at the top
    assert [(t.price, t.size) for t in m.trades()] == [(4200, 5000)]
    g = await graph(engine, env, gid)
    assert node_of(g, "leg")["status"] == "partially_filled" and g["status"] == "active"
    # A venue update at our level is absolute: our size stays on top of it.
    m.venue(KALSHI, Side.BID, 0.42, 10)
    assert m.levels(KALSHI, Side.BID)[0] == (0.42, 40)
    m.venue(KALSHI, Side.BID, 0.42, 0)
    assert m.levels(KALSHI, Side.BID)[0] == (0.42, 30)
    g = await engine.cancel(env.client_id, gid)
    assert g is not None and g["status"] == "cancelled"
    assert node_of(g, "leg")["status"] == "cancelled" and node_of(g, "leg")["reason"] == "cancelled_by_user"
    assert m.levels(KALSHI, Side.BID)[0] == (0.40, 100)
    await engine.stop()


@async_test
async def test_live_resting_order_fills_as_maker_when_the_venue_crosses_it(env: Env) -> None:
    m = env.market
    std_book(m)
    engine = env.engine()
    await engine.start()
    gid = await submit(engine, env, [node(qty=20, limit_price=0.41)])
    m.venue(KALSHI, Side.ASK, 0.40, 15)
    await settle(engine)
    (f,) = env.trading.list_fills(env.client_id)
    assert (f["price_units"], f["qty_1e8"], f["liquidity"], f["fee_1e8"]) == (4100, 15 * Q, "maker", 0)
    assert m.books[KALSHI].size_at(Side.ASK, 4000) == 0
    assert m.books[KALSHI].size_at(Side.BID, 4100) == 500
    assert node_of(await graph(engine, env, gid), "leg")["filled_qty"] == 15
    await engine.stop()


@async_test
async def test_two_clients_trade_with_each_other_and_self_trades_are_prevented(env: Env) -> None:
    m = env.market
    m.ladder(KALSHI, bids={0.30: 10}, asks={0.70: 10})
    other = env.store.create_client("other")
    engine = env.engine()
    await engine.start()
    maker = await submit(engine, env, [node(side="sell", qty=5, limit_price=0.5)])
    taker = await submit(engine, env, [node(side="buy", qty=3, limit_price=0.55)], client_id=other)
    assert [f["price_units"] for f in env.trading.list_fills(other, graph_id=taker)] == [5000]
    (mf,) = env.trading.list_fills(env.client_id, graph_id=maker)
    assert (mf["liquidity"], mf["qty_1e8"]) == ("maker", 3 * Q)
    assert m.levels(KALSHI, Side.ASK)[0] == (0.5, 2)
    same = await submit(engine, env, [node(side="buy", qty=1, limit_price=0.6)])
    g = await graph(engine, env, same)
    assert node_of(g, "leg")["status"] == "cancelled" and node_of(g, "leg")["reason"] == "self_trade_prevented"
    await engine.stop()


@async_test
async def test_polymarket_under_one_dollar_is_accepted_active_and_never_crosses(env: Env) -> None:
    m = env.market
    m.ladder(POLY, bids={0.14: 100}, asks={0.16: 100})
    engine = env.engine()
    await engine.start()
    gid = await submit(engine, env, [node(symbol=POLY, qty=5, limit_price=0.15)])
    assert m.levels(POLY, Side.BID)[0] == (0.14, 100)  # the venue silently holds it
    m.venue(POLY, Side.ASK, 0.10, 1000)  # a book that crosses it by far
    await settle(engine)
    g = await graph(engine, env, gid)
    assert g["status"] == "active" and node_of(g, "leg")["status"] == "working"
    assert node_of(g, "leg")["never_crosses"] is True
    assert env.trading.list_fills(env.client_id) == []
    g2 = await engine.cancel(env.client_id, gid)
    assert g2 is not None and g2["status"] == "cancelled"
    await engine.stop()


@async_test
async def test_post_only_that_would_take_is_rejected_and_fails_the_graph(env: Env) -> None:
    std_book(env.market)
    engine = env.engine()
    await engine.start()
    gid = await submit(engine, env, [node(qty=1, limit_price=0.42, urgency="low")])
    g = await graph(engine, env, gid)
    assert g["status"] == "failed"
    assert node_of(g, "leg")["status"] == "rejected" and node_of(g, "leg")["reason"] == "post_only_would_take"
    await engine.stop()


@async_test
async def test_spot_market_order_takes_what_there_is(env: Env) -> None:
    m = env.market
    m.ladder(SPOT, bids={49_999.99: 1}, asks={50_000.00: 0.25, 50_000.5: 0.5})
    engine = env.engine()
    await engine.start()
    body = {"node_id": "m", "symbol": SPOT, "side": "buy", "qty": 1}
    gid = await submit(engine, env, [body])
    g = await graph(engine, env, gid)
    n = node_of(g, "m")
    assert n["status"] == "cancelled" and n["reason"] == "market_order_unfilled" and n["filled_qty"] == 0.75
    assert g["status"] == "completed"
    fees = [f["fee_1e8"] for f in env.trading.list_fills(env.client_id)]
    assert sum(fees) > 0  # Coinbase charges takers
    await engine.stop()


# -- graphs -----------------------------------------------------------------------------------------


@async_test
async def test_zero_edge_graph_fires_every_leg_on_submit(env: Env) -> None:
    m = env.market
    std_book(m)
    m.ladder(POLY, bids={0.15: 100}, asks={0.17: 100})
    engine = env.engine()
    await engine.start()
    gid = await submit(engine, env, [node("kalshi-leg", KALSHI, "buy", 1, 0.43, urgency="high"),
                                     node("polymarket-leg", POLY, "sell", 8, 0.14, urgency="high")])
    fills = env.trading.list_fills(env.client_id, graph_id=gid)
    assert {f["node_id"] for f in fills} == {"kalshi-leg", "polymarket-leg"}
    assert (await graph(engine, env, gid))["status"] == "completed"
    await engine.stop()


@async_test
async def test_hedge_fires_only_after_its_source_fills(env: Env) -> None:
    m = env.market
    std_book(m)
    m.ladder(POLY, bids={0.60: 100}, asks={0.62: 100})
    engine = env.engine()
    await engine.start()
    gid = await submit(engine, env, [node("spot", KALSHI, "buy", 10, 0.41), node("hedge", POLY, "sell", 10, 0.6)],
                       [{"from": "spot", "to": "hedge", "trigger": "filled"}], paper=True)
    g = await graph(engine, env, gid)
    assert node_of(g, "spot")["status"] == "working" and node_of(g, "hedge")["status"] == "pending"
    assert node_of(g, "hedge")["activation"] == "triggered"
    m.venue(KALSHI, Side.ASK, 0.41, 4)
    await settle(engine)
    assert node_of(await graph(engine, env, gid), "hedge")["status"] == "pending"  # partial: not yet
    m.venue(KALSHI, Side.ASK, 0.41, 50)
    await settle(engine)
    g = await graph(engine, env, gid)
    assert node_of(g, "spot")["status"] == "filled" and node_of(g, "hedge")["status"] == "filled"
    assert g["status"] == "completed"
    await engine.stop()


@async_test
async def test_graph_ends_and_untriggered_nodes_are_cancelled(env: Env) -> None:
    std_book(env.market)
    engine = env.engine()
    await engine.start()
    gid = await submit(engine, env, [node("a", qty=1, limit_price=0.3), node("b", qty=1, limit_price=0.3),
                                     node("c", qty=1, limit_price=0.3)],
                       [{"from": "a", "to": "b", "trigger": "filled"},
                        {"from": "a", "to": "c", "trigger": "cancelled"}], paper=True)
    g = await engine.cancel(env.client_id, gid)
    assert g is not None and g["status"] == "cancelled"
    # The user's cancel fires no 'cancelled' edge: c never ran.
    assert [(n["node_id"], n["status"], n["reason"]) for n in g["nodes"]] == [
        ("a", "cancelled", "cancelled_by_user"), ("b", "cancelled", "cancelled_by_user"),
        ("c", "cancelled", "cancelled_by_user")]
    again = await engine.cancel(env.client_id, gid)
    assert again is not None and again["status"] == "cancelled"
    assert await engine.cancel("someone-else", gid) is None
    await engine.stop()


@async_test
async def test_engine_cancellation_fires_cancelled_edges(env: Env) -> None:
    m = env.market
    m.ladder(KALSHI, bids={0.30: 10}, asks={0.70: 10})
    engine = env.engine()
    await engine.start()
    await submit(engine, env, [node("resting", side="sell", qty=5, limit_price=0.5)])
    gid = await submit(engine, env, [node("a", side="buy", qty=1, limit_price=0.55),
                                     node("fallback", side="buy", qty=1, limit_price=0.31)],
                       [{"from": "a", "to": "fallback", "trigger": "cancelled"}])
    g = await graph(engine, env, gid)
    assert node_of(g, "a")["reason"] == "self_trade_prevented"
    assert node_of(g, "fallback")["status"] == "working"
    await engine.stop()


@async_test
async def test_tick_change_cancels_off_grid_live_orders(env: Env) -> None:
    m = env.market
    m.books[POLY].set_tick(10)
    m.ladder(POLY, bids={0.03: 1000}, asks={0.05: 1000})
    engine = env.engine()
    await engine.start()
    gid = await submit(engine, env, [node(symbol=POLY, qty=100, limit_price=0.041)])
    assert m.levels(POLY, Side.BID)[0] == (0.041, 100)
    m.apply([TickSizeChange(0, POLY, 100)])
    await settle(engine)
    g = await graph(engine, env, gid)
    assert node_of(g, "leg")["status"] == "cancelled" and node_of(g, "leg")["reason"] == "tick_size_changed"
    await engine.stop()


@async_test
async def test_idempotent_submit_places_one_graph(env: Env) -> None:
    std_book(env.market)
    engine = env.engine()
    await engine.start()
    body = {"nodes": [node(qty=5, limit_price=0.3)], "edges": []}
    a = await engine.submit(body, client_id=env.client_id, key_id="k", idempotency_key="abc")
    b = await engine.submit(json.loads(json.dumps(body)), client_id=env.client_id, key_id="k",
                            idempotency_key="abc")
    assert a["graph_id"] == b["graph_id"] and b["idempotent_replay"] is True
    assert engine.working_orders == 1 and len(env.trading.list_graphs(env.client_id)) == 1
    assert env.market.levels(KALSHI, Side.BID)[2] == (0.3, 5)  # shown once, not twice
    with pytest.raises(IdempotencyConflict):
        await engine.submit({"nodes": [node(qty=6, limit_price=0.3)]}, client_id=env.client_id, key_id="k",
                            idempotency_key="abc")
    with pytest.raises(GraphError):
        await engine.submit({"nodes": []}, client_id=env.client_id, key_id="k")
    await engine.stop()


# -- restart -------------------------------------------------------------------------------------------


@async_test
async def test_restart_keeps_working_orders_working(any_env: Env) -> None:
    env = any_env
    std_book(env.market)
    engine = env.engine()
    await engine.start()
    live = await submit(engine, env, [node("bid", qty=20, limit_price=0.41)])
    paper = await submit(engine, env, [node("p", qty=10, limit_price=0.41)], paper=True)
    chain = await submit(engine, env, [node("a", qty=5, limit_price=0.42), node("b", qty=1, limit_price=0.2)],
                         [{"from": "a", "to": "b", "trigger": "filled"}], paper=True)
    assert node_of(await graph(engine, env, chain), "b")["status"] == "working"
    await engine.stop()

    fresh = FakeMarket()  # a new process: the simulator starts from scratch
    std_book(fresh)
    engine2 = env.engine(fresh)
    await engine2.start()
    assert sorted(engine2.active_graph_ids()) == sorted([live, paper, chain])
    assert fresh.levels(KALSHI, Side.BID)[0] == (0.41, 20)  # our bid is back in the book
    fresh.venue(KALSHI, Side.ASK, 0.41, 100)
    await settle(engine2)
    for gid in (live, paper):
        assert (await graph(engine2, env, gid))["status"] == "completed"
    assert (await graph(engine2, env, chain))["status"] == "active"
    await engine2.stop()


@async_test
async def test_restore_fires_roots_accepted_before_a_crash(env: Env) -> None:
    std_book(env.market)
    engine = env.engine()
    req = engine.validate({"nodes": [node(qty=5, limit_price=0.43)]}, force_paper=True)
    g = Graph.new("graph_crash", env.client_id, req.nodes, req.edges, paper=req.paper, now=1.0)
    row = g.row(key_id="k", run_id=None, idempotency_key=None, request_hash=None, now=1.0)
    assert row["sandbox"] is True and row["status"] == "active"
    env.trading.create_graph(row, [n.row(env.client_id) for n in req.nodes])  # accepted, never activated
    await engine.start()
    g = await graph(engine, env, "graph_crash")
    assert g["status"] == "completed" and len(env.trading.list_fills(env.client_id)) == 1
    await engine.stop()


# -- stream -------------------------------------------------------------------------------------------


@async_test
async def test_fills_and_graphs_reach_only_the_owning_client(env: Env) -> None:
    std_book(env.market)
    other = env.store.create_client("other")
    engine = env.engine()
    await engine.start()
    hub = env.market.hub
    mine, theirs = hub.open(env.client_id), hub.open(other)
    hub.subscribe(mine, ["fills", "graphs"])
    hub.subscribe(theirs, ["fills", "graphs"])
    gid = await submit(engine, env, [node(qty=1, limit_price=0.42)], paper=True)
    msgs = [json.loads(t) for t in mine.drain()]
    assert theirs.drain() == []
    by_channel = {m["channel"]: m["data"] for m in msgs}
    assert by_channel["fills"]["node_order_id"].startswith(f"graph:{gid}:")
    assert by_channel["fills"]["qty_1e8"] == Q and by_channel["fills"]["sandbox"] is True
    assert by_channel["graphs"]["graph_id"] == gid and by_channel["graphs"]["status"] == "completed"
    await engine.stop()


# -- fencing ----------------------------------------------------------------------------------------


@async_test
async def test_a_run_that_is_no_longer_current_places_nothing(env: Env) -> None:
    from sequence.store.store import ExitReport
    from sequence.store.trading import Fenced
    from tests.helpers import make_tar

    fields = {"name": "s1", "runtime": "python", "entrypoint": "main.py", "artifact_sha256": "a" * 64,
              "artifact_size": 10, "env": {}, "manifest": {}, "secret_names": [], "memory_mb": 512,
              "stop_timeout_s": 10.0, "placement": {}, "region": None, "api_key_id": None, "is_sandbox": False}
    env.store.deploy_strategy("sid-1", env.client_id, fields, make_tar({"main.py": "x"}), start=True)
    tid, _ = env.store.create_runner_token("r")
    runner = env.store.register_runner(tid, "r1", "us-east-1", 10, {})
    run = env.store.claim(runner, ["us-east-1"], 5)
    assert run is not None
    std_book(env.market)
    engine = env.engine()
    await engine.start()
    body = {"nodes": [node(qty=1, limit_price=0.3)]}
    ok = await engine.submit(body, client_id=env.client_id, key_id="k", run_id=run["run_id"])
    env.store.report_exit(run["run_id"], run["epoch"], runner, ExitReport(code=0))
    with pytest.raises(Fenced):
        await engine.submit(body, client_id=env.client_id, key_id="k", run_id=run["run_id"])
    assert [g["graph_id"] for g in env.trading.list_graphs(env.client_id)] == [ok["graph_id"]]
    assert engine.working_orders == 1
    await engine.stop()


@async_test
async def test_restore_survives_a_market_that_is_gone(env: Env) -> None:
    std_book(env.market)
    engine = env.engine()
    await engine.start()
    gid = await submit(engine, env, [node(qty=5, limit_price=0.3)])
    await engine.stop()
    gone = FakeMarket()
    for table in (gone.instruments, gone.views, gone.books):
        table.pop(KALSHI, None)
    engine2 = env.engine(gone)
    await engine2.start()
    g = await graph(engine2, env, gid)
    assert node_of(g, "leg")["status"] == "cancelled" and node_of(g, "leg")["reason"] == "market_unavailable"
    assert g["status"] == "completed" and engine2.working_orders == 0
    await engine2.stop()
