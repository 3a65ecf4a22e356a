"""The engine on the real MarketService (seeded simulators, manual clock): a soak of invariants."""

from __future__ import annotations

import asyncio
from typing import Any

from sequence.execution.engine import TradingEngine
from sequence.market import ManualClock, MarketService, Side
from tests.execution.conftest import Env, async_test, settle


def two_sided(service: MarketService, venue: str) -> str:
    for m in service.markets(venue=venue, limit=100, active=True, expand="outcomes")["markets"]:
        tok = m.get("yes_token_id")
        if not tok:
            continue
        bid, ask = service.book(tok).top()
        if bid and ask and 1500 < bid < 8500:
            return str(tok)
    raise AssertionError(f"no two-sided {venue} market")


@async_test
async def test_orders_on_the_simulated_venues_keep_their_invariants(env: Env) -> None:
    clock = ManualClock()
    service = MarketService.simulated(seed=11, clock=clock)
    engine = TradingEngine(env.trading, service)
    await engine.start()
    k = two_sided(service, "kalshi")
    book = service.book(k)
    bid, ask = book.top()
    assert bid is not None and ask is not None
    px = bid / book.price_scale
    base: dict[str, Any] = {"symbol": k, "venue": "kalshi", "instrument_type": "prediction"}
    gids = []
    # Live: join the best bid, and sit one tick above it; paper: a bid and an ask near the touch.
    for i, (price, paper, side) in enumerate([(px, False, "buy"), (round(px + 0.01, 2), False, "buy"),
                                                (px, True, "buy"), (ask / book.price_scale, True, "sell")]):
        node = {**base, "node_id": f"n{i}", "side": side, "qty": 3, "limit_price": price}
        ack = await engine.submit({"nodes": [node], "sandbox": paper}, client_id=env.client_id, key_id="k")
        gids.append(ack["graph_id"])
    ours = engine._cores[service.instrument(k).book_symbol]
    for _ in range(600):  # two minutes of simulated market
        clock.advance(0.2)
        service.pump()
        await settle(engine)
        for side in (Side.BID, Side.ASK):  # the book always shows at least our resting size
            for price, size in ours.own_levels(side).items():
                assert book.size_at(side, price) >= size
        _bid, ask_now = book.top()
        own_b = ours.own_levels(Side.BID)
        if own_b and ask_now is not None:  # once re-matched, the venue never crosses our bids
            assert max(own_b) < ask_now
    await engine.flush()
    for gid in gids:
        g = await engine.graph(env.client_id, gid)
        assert g is not None
        n = g["nodes"][0]
        fills = env.trading.list_fills(env.client_id, graph_id=gid, limit=500)
        assert sum(f["qty_1e8"] for f in fills) == n["filled_qty_1e8"] <= n["qty_1e8"]
        for f in fills:
            limit = n["limit_price"]
            assert f["price_units"] / f["price_scale"] <= limit + 1e-9 if n["side"] == "buy" \
                else f["price_units"] / f["price_scale"] >= limit - 1e-9
        if n["status"] == "filled":
            assert g["status"] == "completed"
    for gid in gids:
        await engine.cancel(env.client_id, gid)
    for side in (Side.BID, Side.ASK):
        assert ours.own_levels(side) == {}
    await engine.stop()
    await asyncio.sleep(0)
