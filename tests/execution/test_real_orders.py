"""Real orders through the engine and the router, against a scripted venue adapter.

The adapter here is an in-memory :class:`OrderVenue` whose answers each test
scripts (the venues' wire formats are tested in tests/execution/venues/ against
the local venue servers): what matters is the engine's side — an order is sent
once, after its client order id is stored; the venue's acks, rejects, cancels
and fills drive the node; a fill reported twice counts once; risk limits and
the kill switch stop an order before it leaves; paper never reaches a venue; a
restart reconciles instead of re-sending.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from sequence.execution.engine import TradingEngine
from sequence.execution.router import OrderRouter
from sequence.execution.venues.base import (
    AccountInfo,
    OrderConfig,
    OrderRejected,
    OrderRequest,
    OrderVenue,
    OutcomeUnknown,
    VenueFill,
    VenueOrder,
)
from sequence.store.controls import ControlsStore
from tests.execution.conftest import Env, async_test, settle
from tests.execution.test_engine import graph, node_of, std_book, submit
from tests.trading.fakes import KALSHI, KALSHI_NO, SPOT, node


class ScriptedVenue(OrderVenue):
    """Takes orders into a dict; each test scripts refusals, lost replies and fills."""

    venue = "kalshi"

    def __init__(self, credentials: Any, config: OrderConfig, *, http: Any = None) -> None:
        super().__init__(credentials, config, http=http)
        self.placed: list[OrderRequest] = []
        self.orders: dict[str, VenueOrder] = {}  # client order id -> order
        self.reject_next: str | None = None
        self.lose_next_reply = False
        self.cancelled: list[str] = []
        self.queue: asyncio.Queue[VenueOrder | VenueFill | Exception] = asyncio.Queue()
        self.fill_log: list[VenueFill] = []

    async def check(self) -> AccountInfo:
        return AccountInfo("acct")

    async def place(self, req: OrderRequest) -> VenueOrder:
        self.placed.append(req)
        if req.client_order_id in self.orders:
            raise OrderRejected("duplicate client_order_id", "duplicate_order")
        if self.reject_next:
            reason, self.reject_next = self.reject_next, None
            raise OrderRejected(reason, "insufficient_balance")
        order = VenueOrder(req.client_order_id, f"v-{len(self.orders) + 1}", "open", req.symbol,
                           remaining_qty=req.qty)
        self.orders[req.client_order_id] = order
        if self.lose_next_reply:
            self.lose_next_reply = False
            raise OutcomeUnknown("timed out")
        return order

    async def cancel(self, venue_order_id: str) -> VenueOrder:
        for coid, o in self.orders.items():
            if o.venue_order_id == venue_order_id:
                self.cancelled.append(venue_order_id)
                self.orders[coid] = VenueOrder(coid, venue_order_id, "cancelled", o.symbol, reason="cancelled")
                return self.orders[coid]
        raise OrderRejected("no such order", "not_found")

    async def lookup(self, client_order_id: str) -> VenueOrder | None:
        return self.orders.get(client_order_id)

    async def open_orders(self) -> list[VenueOrder]:
        return [o for o in self.orders.values() if o.status == "open"]

    async def fills(self, since_ms: int) -> list[VenueFill]:
        return [f for f in self.fill_log if f.ts_ms >= since_ms]

    async def events(self) -> AsyncIterator[VenueOrder | VenueFill]:
        while True:
            item = await self.queue.get()
            if isinstance(item, Exception):
                raise item  # the adapter gave up on its user channel
            yield item

    def fill(self, req: OrderRequest, qty: str, price: str, fill_id: str, *, push: bool = True) -> VenueFill:
        order = self.orders[req.client_order_id]
        f = VenueFill(fill_id, order.venue_order_id, req.client_order_id, req.symbol, req.side, Decimal(price),
                      Decimal(qty), fee=Decimal("0.02"), is_taker=False, ts_ms=1_800_000_000_000,
                      outcome=req.outcome)
        self.fill_log.append(f)
        if push:
            self.queue.put_nowait(f)
        return f


class Rig:
    """An engine whose Kalshi orders go to a ScriptedVenue (one per client)."""

    def __init__(self, env: Env, *, credentials: bool = True) -> None:
        self.env = env
        self.venues: dict[str, ScriptedVenue] = {}
        self.router = OrderRouter({"kalshi": OrderConfig("kalshi", "http://unused")},
                                  lambda client, venue: {"api_key_id": "k"} if credentials else None,
                                  factory=self._make)
        self.router.backfill_s = 0.05
        self.controls = ControlsStore(env.db)
        self.engine = TradingEngine(env.trading, env.market, router=self.router, controls=self.controls)

    def _make(self, creds: Any, cfg: OrderConfig) -> ScriptedVenue:
        v = ScriptedVenue(creds, cfg)
        self.venues[cfg.venue] = v
        return v

    @property
    def kalshi(self) -> ScriptedVenue:
        return self.venues["kalshi"]

    async def until(self, check: Any, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.01)
        await settle(self.engine)


@async_test
async def test_a_real_order_is_sent_once_after_its_client_order_id_is_stored(env: Env) -> None:
    std_book(env.market)
    before = env.market.books[KALSHI].snapshot()
    rig = Rig(env)
    await rig.engine.start()
    gid = await submit(rig.engine, env, [node(qty=3, limit_price=0.30)])
    await rig.until(lambda: "kalshi" in rig.venues and rig.kalshi.placed)
    (req,) = rig.kalshi.placed
    g = await graph(rig.engine, env, gid)
    row = env.trading.load_active()[0]["nodes"][0]
    assert req.client_order_id == row["client_order_id"] and row["venue_order_id"] == "v-1"
    assert (req.symbol, req.side, req.outcome, req.qty, req.price) == (KALSHI, "buy", "yes", Decimal(3),
                                                                       Decimal("0.3"))
    assert node_of(g, "leg")["status"] == "working"
    # The venue matches real orders on live venues: our book copy is not touched.
    assert env.market.books[KALSHI].snapshot() == before and env.trading.list_fills(env.client_id) == []
    await rig.engine.stop()


@async_test
async def test_venue_fills_drive_the_node_and_a_fill_reported_twice_counts_once(env: Env) -> None:
    std_book(env.market)
    rig = Rig(env)
    await rig.engine.start()
    gid = await submit(rig.engine, env, [node(node_id="a", symbol=KALSHI_NO, qty=4, limit_price=0.55),
                                         node(node_id="b", qty=1, limit_price=0.10)],
                       edges=[{"from": "a", "to": "b", "trigger": "filled"}])
    await rig.until(lambda: "kalshi" in rig.venues and rig.kalshi.placed)
    (req,) = rig.kalshi.placed
    assert req.outcome == "no" and req.symbol == KALSHI  # the market's ticker, the NO outcome
    rig.kalshi.fill(req, "1", "0.55", "f-1")
    rig.kalshi.fill(req, "1", "0.55", "f-1")  # the same fill again (a reconnect)
    rig.kalshi.fill(req, "3", "0.54", "f-2")
    await rig.until(lambda: len(rig.kalshi.placed) == 2)  # the edge fired on the real fill
    fills = sorted(env.trading.list_fills(env.client_id, graph_id=gid), key=lambda f: f["venue_fill_id"])
    assert [(f["venue_fill_id"], f["qty_1e8"], f["price_units"], f["sandbox"]) for f in fills] == [
        ("f-1", 100_000_000, 5500, False), ("f-2", 300_000_000, 5400, False)]
    assert fills[0]["fee_1e8"] == 2_000_000 and fills[0]["liquidity"] == "maker"
    g = await graph(rig.engine, env, gid)
    assert node_of(g, "a")["status"] == "filled" and node_of(g, "b")["status"] == "working"
    (pos,) = env.trading.positions(env.client_id, paper=False)
    assert pos["net_1e8"] == 400_000_000
    await rig.engine.stop()


@async_test
async def test_a_venue_reject_fails_the_node_with_the_venues_reason(env: Env) -> None:
    std_book(env.market)
    rig = Rig(env)
    await rig.engine.start()
    await rig.router.session(env.client_id, "kalshi")
    rig.kalshi.reject_next = "Insufficient balance: 0.00 available"
    gid = await submit(rig.engine, env, [node(qty=2, limit_price=0.30)])
    await rig.until(lambda: env.trading.get_graph(env.client_id, gid)["status"] != "active")
    g = await graph(rig.engine, env, gid)
    n = node_of(g, "leg")
    assert n["status"] == "rejected" and g["status"] == "failed"
    assert "insufficient_balance" in n["reason"] and "0.00 available" in n["reason"]
    assert rig.engine.exposure(env.client_id).open_orders == 0
    await rig.engine.stop()


@async_test
async def test_a_lost_reply_is_looked_up_and_never_becomes_a_second_order(env: Env) -> None:
    std_book(env.market)
    rig = Rig(env)
    await rig.engine.start()
    await rig.router.session(env.client_id, "kalshi")
    rig.kalshi.lose_next_reply = True
    gid = await submit(rig.engine, env, [node(qty=2, limit_price=0.30)])
    await rig.until(lambda: env.trading.load_active() and env.trading.load_active()[0]["nodes"][0]["venue_order_id"])
    assert len(rig.kalshi.placed) == 1 and len(rig.kalshi.orders) == 1
    assert node_of(await graph(rig.engine, env, gid), "leg")["status"] == "working"
    await rig.engine.stop()


@async_test
async def test_no_credentials_rejects_the_node_and_says_how_to_connect(env: Env) -> None:
    std_book(env.market)
    rig = Rig(env, credentials=False)
    await rig.engine.start()
    gid = await submit(rig.engine, env, [node(qty=2, limit_price=0.30)])
    await rig.until(lambda: env.trading.get_graph(env.client_id, gid)["status"] != "active")
    n = node_of(await graph(rig.engine, env, gid), "leg")
    assert n["status"] == "rejected" and "no_venue_credentials" in n["reason"] and "sequence connect kalshi" in n["reason"]
    await rig.engine.stop()


@async_test
async def test_paper_orders_never_reach_a_venue(env: Env) -> None:
    std_book(env.market)
    rig = Rig(env)
    await rig.engine.start()
    gid = await submit(rig.engine, env, [node(qty=120, limit_price=0.43, urgency="high")], paper=True)
    await settle(rig.engine)
    assert rig.venues == {}  # no adapter was even made
    assert (await graph(rig.engine, env, gid))["status"] == "completed"  # filled on paper as before
    await rig.engine.stop()


@async_test
async def test_a_risk_breach_rejects_the_node_before_it_leaves(env: Env) -> None:
    std_book(env.market)
    rig = Rig(env)
    rig.controls.put_risk_limits(env.client_id, None, {"max_order_notional": 1.0})
    await rig.engine.start()
    gid = await submit(rig.engine, env, [node(qty=3, limit_price=0.50)])  # 1.50 > 1.00
    await settle(rig.engine)
    n = node_of(await graph(rig.engine, env, gid), "leg")
    assert n["status"] == "rejected" and n["reason"].startswith("risk_max_order_notional: ")
    assert rig.venues == {} or not rig.kalshi.placed
    gid2 = await submit(rig.engine, env, [node(qty=2, limit_price=0.50)])  # 1.00: allowed
    await rig.until(lambda: "kalshi" in rig.venues and rig.kalshi.placed)
    assert node_of(await graph(rig.engine, env, gid2), "leg")["status"] == "working"
    await rig.engine.stop()


@async_test
async def test_the_kill_switch_cancels_at_the_venue_and_refuses_real_orders_until_released(env: Env) -> None:
    std_book(env.market)
    rig = Rig(env)
    await rig.engine.start()
    gids = [await submit(rig.engine, env, [node(qty=1, limit_price=0.10 + i / 100)]) for i in range(3)]
    paper = await submit(rig.engine, env, [node(symbol=SPOT, qty=0.01, limit_price=200.0)], paper=True)
    await rig.until(lambda: "kalshi" in rig.venues and len(rig.kalshi.placed) == 3
                    and all(o.venue_order_id for o in rig.kalshi.orders.values()))
    await rig.until(lambda: all(n["venue_order_id"] for g in env.trading.load_active() for n in g["nodes"]
                                if not g["sandbox"]))
    report = await rig.engine.kill(env.client_id)
    assert report["real_orders_cancelled"] == 3 and report["not_cancelled"] == []
    assert report["orders_cancelled"] == 4  # and the paper one
    assert sorted(rig.kalshi.cancelled) == ["v-1", "v-2", "v-3"]
    for gid in [*gids, paper]:
        assert (await graph(rig.engine, env, gid))["status"] == "cancelled"
    refused = await submit(rig.engine, env, [node(qty=1, limit_price=0.10)])
    n = node_of(await graph(rig.engine, env, refused), "leg")
    assert n["status"] == "rejected" and n["reason"].startswith("kill_switch_engaged")
    assert len(rig.kalshi.placed) == 3
    assert set(rig.controls.kill_switches()) == {(env.client_id, "")}  # survives a restart
    assert await rig.engine.release(env.client_id) is True
    await submit(rig.engine, env, [node(qty=1, limit_price=0.10)])
    await rig.until(lambda: len(rig.kalshi.placed) == 4)
    await rig.engine.stop()


@async_test
async def test_after_a_restart_working_orders_are_reconciled_not_resent(env: Env) -> None:
    std_book(env.market)
    rig = Rig(env)
    await rig.engine.start()
    gid = await submit(rig.engine, env, [node(qty=5, limit_price=0.30)])
    await rig.until(lambda: "kalshi" in rig.venues and rig.kalshi.placed
                    and env.trading.load_active()[0]["nodes"][0]["venue_order_id"])
    venue = rig.kalshi
    (req,) = venue.placed
    await rig.engine.stop()
    # While we were down: two contracts filled at the venue.
    venue.fill(req, "2", "0.30", "f-down", push=False)
    rig2 = Rig(env)
    rig2.venues["kalshi"] = venue
    rig2.router._factory = lambda creds, cfg: venue
    await rig2.engine.start()
    await settle(rig2.engine)
    assert len(venue.placed) == 1  # looked up, not sent again
    g = await graph(rig2.engine, env, gid)
    n = node_of(g, "leg")
    assert n["status"] == "partially_filled" and n["filled_qty"] == 2
    (f,) = env.trading.list_fills(env.client_id, graph_id=gid)
    assert f["venue_fill_id"] == "f-down"
    venue.fill(req, "3", "0.30", "f-after")
    await rig2.until(lambda: node_of_row(env, gid)["status"] == "filled")
    await rig2.engine.stop()


def node_of_row(env: Env, gid: str) -> dict[str, Any]:
    g = env.trading.get_graph(env.client_id, gid)
    assert g is not None
    return g["nodes"][0]  # type: ignore[no-any-return]


@async_test
async def test_when_a_run_ends_its_real_orders_are_cancelled(env: Env) -> None:
    std_book(env.market)
    rig = Rig(env)
    await rig.engine.start()
    gid = await submit(rig.engine, env, [node(qty=1, limit_price=0.20)])
    await rig.until(lambda: "kalshi" in rig.venues and rig.kalshi.placed
                    and env.trading.load_active()[0]["nodes"][0]["venue_order_id"])
    rig.engine._graphs[gid].run_id = "run_x"
    assert await rig.engine.cancel_run("run_other") == 0
    assert await rig.engine.cancel_run("run_x") == 1
    await settle(rig.engine)
    assert rig.kalshi.cancelled == ["v-1"]
    n = node_of(await graph(rig.engine, env, gid), "leg")
    assert n["status"] == "cancelled" and "venue_cancelled" in n["reason"]
    await rig.engine.stop()


@async_test
async def test_when_the_venue_session_is_lost_the_runs_real_orders_there_are_cancelled(env: Env) -> None:
    std_book(env.market)
    rig = Rig(env)
    await rig.engine.start()
    mine = await submit(rig.engine, env, [node(qty=1, limit_price=0.20)])
    by_hand = await submit(rig.engine, env, [node(qty=1, limit_price=0.21)])  # a client key's, no run
    await rig.until(lambda: "kalshi" in rig.venues and len(rig.kalshi.placed) == 2
                    and all(n["venue_order_id"] for g in env.trading.load_active() for n in g["nodes"]))
    rig.engine._graphs[mine].run_id = "run_x"
    rig.kalshi.queue.put_nowait(ConnectionError("user channel closed"))
    await rig.until(lambda: rig.kalshi.cancelled == ["v-1"])
    assert node_of(await graph(rig.engine, env, mine), "leg")["status"] == "cancelled"
    assert node_of(await graph(rig.engine, env, by_hand), "leg")["status"] == "working"
    await rig.engine.stop()


@async_test
async def test_cancel_on_stop_can_be_turned_off_for_a_strategy(env: Env) -> None:
    std_book(env.market)
    rig = Rig(env)
    rig.controls.put_risk_limits(env.client_id, "strat_keep", {"cancel_on_stop": False})
    await rig.engine.start()
    gid = await submit(rig.engine, env, [node(qty=1, limit_price=0.20)])
    await rig.until(lambda: "kalshi" in rig.venues and rig.kalshi.placed
                    and env.trading.load_active()[0]["nodes"][0]["venue_order_id"])
    g = rig.engine._graphs[gid]
    g.run_id, g.strategy_id = "run_k", "strat_keep"
    assert rig.engine.cancel_on_stop(env.client_id, "strat_keep") is False
    assert rig.engine.cancel_on_stop(env.client_id, "other") is True  # the default
    assert await rig.engine.cancel_run("run_k") == 0
    assert rig.kalshi.cancelled == []
    await rig.engine.stop()


@async_test
async def test_a_fill_reported_after_its_graph_was_cancelled_is_still_recorded(env: Env) -> None:
    std_book(env.market)
    rig = Rig(env)
    await rig.engine.start()
    gid = await submit(rig.engine, env, [node(qty=2, limit_price=0.30)])
    await rig.until(lambda: "kalshi" in rig.venues and rig.kalshi.placed
                    and env.trading.load_active()[0]["nodes"][0]["venue_order_id"])
    (req,) = rig.kalshi.placed
    g = await rig.engine.cancel(env.client_id, gid)
    assert g is not None and g["status"] == "cancelled" and gid not in rig.engine.active_graph_ids()
    rig.kalshi.fill(req, "1", "0.30", "f-late")  # it traded at the venue before the cancel landed
    await rig.until(lambda: env.trading.list_fills(env.client_id, graph_id=gid))
    (f,) = env.trading.list_fills(env.client_id, graph_id=gid)
    assert f["venue_fill_id"] == "f-late" and f["qty_1e8"] == 100_000_000 and f["sandbox"] is False
    (pos,) = env.trading.positions(env.client_id, paper=False)
    assert pos["net_1e8"] == 100_000_000
    n = node_of(await graph(rig.engine, env, gid), "leg")
    assert n["status"] == "cancelled" and n["filled_qty"] == 1  # the status stands; the totals follow
    await rig.engine.stop()


# -- the WASM algos' path (TradingEngine.submit_now): the same routing, risk and paper rules ----


def _now(rig: Rig, env: Env, nodes: list[dict[str, Any]], *, paper: bool = False) -> tuple[str, list[Any]]:
    seen: list[Any] = []
    req = rig.engine.validate({"nodes": nodes, "edges": [], "sandbox": paper}, force_paper=False)
    g = rig.engine.submit_now(req, client_id=env.client_id, key_id="key", deployment_id="dep_test",
                              observer=lambda channel, data: seen.append((channel, data)))
    return g.graph_id, seen


@async_test
async def test_an_algos_real_order_leaves_once_after_its_graph_is_stored(env: Env) -> None:
    std_book(env.market)
    rig = Rig(env)
    sent_after_stored: list[bool] = []
    await rig.engine.start()
    real_send = rig.router.send

    def send(order: Any) -> None:  # the graph row must already hold the order's client order id
        rows = env.trading.load_active()
        sent_after_stored.append(any(n.get("client_order_id") == order.client_order_id
                                     for r in rows for n in r["nodes"]))
        real_send(order)

    rig.router.send = send  # type: ignore[method-assign]
    gid, _seen = _now(rig, env, [node(qty=3, limit_price=0.30)])
    await rig.until(lambda: "kalshi" in rig.venues and rig.kalshi.placed)
    assert sent_after_stored == [True]
    (req,) = rig.kalshi.placed
    assert (req.symbol, req.side, req.qty, req.price) == (KALSHI, "buy", Decimal(3), Decimal("0.3"))
    row = env.trading.get_graph(env.client_id, gid)
    assert row is not None and row["deployment_id"] == "dep_test"
    assert node_of(await graph(rig.engine, env, gid), "leg")["status"] == "working"
    await rig.engine.stop()


@async_test
async def test_an_algos_orders_meet_the_risk_limits_and_paper_never_leaves(env: Env) -> None:
    std_book(env.market)
    rig = Rig(env)
    rig.controls.put_risk_limits(env.client_id, None, {"max_order_notional": 1.0})
    await rig.engine.start()
    gid, seen = _now(rig, env, [node(qty=3, limit_price=0.50)])  # 1.50 > 1.00
    await settle(rig.engine)
    n = node_of(await graph(rig.engine, env, gid), "leg")
    assert n["status"] == "rejected" and n["reason"].startswith("risk_max_order_notional: ")
    assert [c for c, d in seen if c == "graphs" and d["status"] == "failed"], seen  # the algo hears it ended
    paper, seen = _now(rig, env, [node(qty=120, limit_price=0.43, urgency="high")], paper=True)
    await settle(rig.engine)
    assert rig.venues == {}  # neither order made an adapter
    assert (await graph(rig.engine, env, paper))["status"] == "completed"
    assert [d for c, d in seen if c == "fills"], seen  # its paper fills reached the algo
    await rig.engine.stop()
