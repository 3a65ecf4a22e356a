"""Coinbase Advanced Trade live connector against a local Coinbase (tests/venues/coinbase.py).

Every scenario ends with the service's book equal, level for level in integer units, to the
fake venue's own book.
"""

# mypy: disable-error-code="no-untyped-def"

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sequence.market import MarketService
from sequence.market.book import Side
from sequence.market.clock import RealClock
from sequence.market.events import BookReset, LevelUpdate, Trade
from sequence.market.venues.live import LiveConfig
from sequence.market.venues.live.coinbase import (
    CoinbaseLive,
    l2_snapshot,
    l2_updates,
    market_trades,
    parse_book,
    parse_product,
    parse_products,
)
from sequence.market.venues.sim_coinbase import build_coinbase
from tests.venues.coinbase import API, FakeCoinbase
from tests.venues.harness import FakeServer, eventually

BTC = "BTC-USD"


@dataclass
class Venue:
    fake: FakeCoinbase
    server: FakeServer

    def call(self, fn: Any, *args: Any) -> Any:
        return self.server.call(fn, *args)

    async def acall(self, fn: Any, *args: Any) -> Any:
        return await self.server.acall(fn, *args)

    def book(self, pid: str, ps: int, ss: int) -> Any:
        return self.call(self.fake.book_units, pid, ps, ss)

    def subscribed(self, channel: str = "level2") -> set[str]:
        return self.call(self.fake.subscribed, channel)  # type: ignore[no-any-return]


def _venue(**kw: Any) -> Iterator[Venue]:
    fake = FakeCoinbase(**{"heartbeat_s": 0.1, **kw})
    with FakeServer(fake.app) as server:
        yield Venue(fake, server)


@pytest.fixture
def venue() -> Iterator[Venue]:
    yield from _venue(max_page=4)


def config(v: Venue, **kw: Any) -> LiveConfig:
    # stall_s: long enough that a loaded machine never looks stalled (heartbeats every 0.1 s);
    # the stall test sets 0.5.
    base: dict[str, Any] = dict(venue="coinbase", api_url=v.server.url + API, ws_url=v.server.ws_url,
                                stall_s=3.0, backoff_initial_s=0.05, backoff_max_s=0.2,
                                catalogue_every_s=60.0, http_timeout_s=5.0)
    return LiveConfig(**{**base, **kw})


@contextlib.asynccontextmanager
async def running(v: Venue, **kw: Any) -> AsyncIterator[tuple[MarketService, CoinbaseLive]]:
    conn = CoinbaseLive(config(v, **kw), clock=RealClock())
    svc = MarketService([conn], clock=RealClock())
    await svc.start()
    try:
        await eventually(lambda: BTC in svc.symbols())
        yield svc, conn
    finally:
        await svc.stop()
        svc.close()


def ours(svc: MarketService, pid: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    view = svc.book(pid)
    return list(view.iter_levels(Side.BID)), list(view.iter_levels(Side.ASK))


def same(svc: MarketService, v: Venue, pid: str) -> bool:
    spec = svc.market(pid)
    return ours(svc, pid) == tuple(v.book(pid, spec.price_scale, spec.size_scale))


async def ready(svc: MarketService, *pids: str) -> None:
    for pid in pids:
        assert await svc.wait_ready(pid, 10), f"{pid} never became ready"


# -- parsers, on the documented examples ------------------------------------------------------------
DOC_L2 = {  # docs.cdp.coinbase.com, Advanced Trade WebSocket channels, level2
    "channel": "l2_data", "client_id": "", "timestamp": "2023-02-09T20:32:50.714964855Z", "sequence_num": 0,
    "events": [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
        {"side": "bid", "event_time": "1970-01-01T00:00:00Z", "price_level": "21921.73", "new_quantity": "0.06317902"},
        {"side": "bid", "event_time": "1970-01-01T00:00:00Z", "price_level": "21921.3", "new_quantity": "0.02"},
    ]}],
}
DOC_TRADES = {  # the same page, market_trades
    "channel": "market_trades", "client_id": "", "timestamp": "2023-02-09T20:19:35.39625135Z", "sequence_num": 0,
    "events": [{"type": "update", "trades": [{"trade_id": "000000000", "product_id": "ETH-USD", "price": "1260.01",
                                              "size": "0.3", "side": "BUY", "time": "2019-08-14T20:42:27.265Z"}]}],
}
BTC_ROW = {
    "product_id": "BTC-USD", "price": "95123.45", "volume_24h": "9512.34567891", "base_increment": "0.00000001",
    "quote_increment": "0.01", "quote_min_size": "1", "base_min_size": "0.00000001", "base_name": "Bitcoin",
    "quote_name": "US Dollar", "status": "online", "cancel_only": False, "limit_only": False, "post_only": False,
    "trading_disabled": False, "product_type": "SPOT", "quote_currency_id": "USD", "base_currency_id": "BTC",
    "price_increment": "0.01", "display_name": "BTC-USD", "mid_market_price": "",
}


def test_snapshot_and_update_parse_as_documented():
    reset = l2_snapshot(DOC_L2["events"][0], price_scale=100, size_scale=100_000_000, ts_ms=5, tick=1)
    assert reset == BookReset(5, "BTC-USD", ((2192173, 6317902), (2192130, 2000000)), (), 1)
    update = {"type": "update", "product_id": "BTC-USD", "updates": [
        {"side": "offer", "event_time": "2023-02-09T20:32:50.7Z", "price_level": "21922", "new_quantity": "1.5"},
        {"side": "bid", "event_time": "2023-02-09T20:32:50.7Z", "price_level": "21921.3", "new_quantity": "0"},
    ]}
    assert l2_updates(update, price_scale=100, size_scale=100_000_000, ts_ms=6) == [
        LevelUpdate(6, "BTC-USD", Side.ASK, 2192200, 150_000_000),
        LevelUpdate(6, "BTC-USD", Side.BID, 2192130, 0),
    ]


def test_market_trades_parse_maker_side():
    scales = {"ETH-USD": (100, 100_000_000, 1)}
    assert market_trades(DOC_TRADES["events"][0], scales, 7) == [Trade(7, "ETH-USD", Side.BID, 126001, 30_000_000)]
    assert market_trades(DOC_TRADES["events"][0], scales, 7, products=()) == []
    assert market_trades({**DOC_TRADES["events"][0], "type": "snapshot"}, scales, 7) == []  # history


def test_product_is_built_like_the_simulator():
    spec = parse_product(BTC_ROW)
    assert spec is not None
    sim = next(m for m in build_coinbase(0)[0] if m.book_symbol == "BTC-USD")
    for name in ("venue", "slug", "title", "instrument_type", "book_symbol", "symbol", "active", "tick",
                 "price_scale", "size_scale", "min_notional", "min_order_size", "event_slug", "aliases"):
        assert getattr(spec, name) == getattr(sim, name), name
    assert spec.extra == sim.extra
    assert spec.volume == 9512.34567891
    assert (spec.listed_best_bid, spec.listed_best_ask, spec.listed_liquidity) == (None, None, None)
    # units are the increments as powers of ten; the state decides "active"
    doge = parse_product({**BTC_ROW, "product_id": "DOGE-USD", "price_increment": "0.00001", "base_increment": "0.1"})
    assert doge is not None and (doge.price_scale, doge.size_scale, doge.tick) == (100_000, 10, 1)
    half = parse_product({**BTC_ROW, "price_increment": "0.5", "base_increment": "1"})
    assert half is not None and (half.price_scale, half.size_scale, half.tick) == (10, 1, 5)
    off = parse_product({**BTC_ROW, "status": "delisted", "trading_disabled": True})
    assert off is not None and not off.active and off.extra["trading_disabled"] is True
    assert parse_product({**BTC_ROW, "product_type": "FUTURE"}) is None
    assert [s.slug for s in parse_products({"products": [BTC_ROW, {**BTC_ROW, "product_type": "FUTURE"}]})] == ["BTC-USD"]


def test_product_book_parses_best_first():
    payload = {"pricebook": {"product_id": "BTC-USD", "time": "2026-01-01T00:00:00Z",
                             "bids": [{"price": "100.5", "size": "1"}, {"price": "100.25", "size": "0.5"}],
                             "asks": [{"price": "100.75", "size": "2"}]},
               "last": "100.6", "mid_market": "100.625", "spread_bps": "24.8", "spread_absolute": "0.25"}
    reset = parse_book(payload, price_scale=100, size_scale=100_000_000, ts_ms=1, tick=1)
    assert reset.bids == ((10050, 100_000_000), (10025, 50_000_000))
    assert reset.asks == ((10075, 200_000_000),)
    empty = parse_book({"pricebook": {"product_id": "X-USD", "bids": [], "asks": []}}, price_scale=100,
                       size_scale=100, ts_ms=1)
    assert empty.bids == empty.asks == ()


# -- the connector against the fake ---------------------------------------------------------------------
@pytest.mark.anyio
async def test_catalogue_is_paged_spot_only(venue: Venue):
    async with running(venue) as (svc, conn):
        await eventually(lambda: len(svc.symbols("coinbase")) == 6)
        assert set(svc.symbols("coinbase")) == {"BTC-USD", "ETH-USD", "SOL-USD", "DOGE-USD", "ACS-USD", "RNDR-USD"}
        requests = [q for p, q in venue.call(lambda: list(venue.fake.requests)) if p.endswith("/market/products")]
        assert requests == ["product_type=SPOT&limit=250&offset=0", "product_type=SPOT&limit=250&offset=4"]
        rows = {r["slug"]: r for r in svc.markets(venue="coinbase")["markets"]}
        assert rows["RNDR-USD"]["active"] is False and rows["BTC-USD"]["active"] is True
        assert rows["BTC-USD"]["tick_size"] == 0.01 and rows["DOGE-USD"]["tick_size"] == 0.00001
        assert rows["BTC-USD"]["best_bid"] is None  # the listing has no bid/ask until the book is live
        assert rows["BTC-USD"]["volume"] == 9512.35 and rows["BTC-USD"]["min_notional"] == 1.0
        assert venue.subscribed() == set()  # nothing asked for, nothing subscribed
        await ready(svc, BTC)
        row = next(r for r in svc.markets(venue="coinbase")["markets"] if r["slug"] == BTC)
        assert row["best_bid"] == 94999.99 and row["best_ask"] == 95000.01
        assert conn.status()["state"] == "connected"


@pytest.mark.anyio
async def test_max_markets_caps_the_catalogue(venue: Venue):
    async with running(venue, max_markets=3) as (svc, _):
        await eventually(lambda: len(svc.symbols("coinbase")) == 3)
        assert set(svc.symbols("coinbase")) == {"BTC-USD", "ETH-USD", "SOL-USD"}


@pytest.mark.anyio
async def test_snapshot_then_deltas(venue: Venue):
    async with running(venue) as (svc, conn):
        await ready(svc, BTC)
        assert same(svc, venue, BTC)
        assert venue.subscribed() == {BTC} and venue.subscribed("market_trades") == {BTC}
        await venue.acall(venue.fake.set_levels, BTC, [
            ("bid", "94999.99", "0"), ("bid", "95000", "1.25"), ("offer", "95000.01", "0.00000001"),
            ("offer", "95001.5", "3"), ("bid", "94990.49", "0.5"),
        ])
        await venue.acall(venue.fake.set_level, BTC, "offer", "95000.01", "0.2")
        await eventually(lambda: same(svc, venue, BTC))
        q = svc.quote(BTC, depth=100)
        assert q["nbbo"]["bid"] == 95000.0 and q["nbbo"]["bid_size"] == 1.25
        assert q["nbbo"]["ask"] == 95000.01 and q["nbbo"]["ask_size"] == 0.2
        fake = venue.call(venue.fake.book_strings, BTC)
        assert [(lvl["price"], lvl["size"]) for lvl in q["bids"]] == [(float(p), float(s)) for p, s in fake["bids"]]
        assert [(lvl["price"], lvl["size"]) for lvl in q["asks"]] == [(float(p), float(s)) for p, s in fake["asks"]]
        assert conn.stats.resyncs == 0 and conn.stats.reconnects == 0
        # the connector spoke as the venue wants: one channel per message, heartbeats on
        sent = venue.call(lambda: list(venue.fake.received))
        assert all(isinstance(m, dict) and isinstance(m.get("channel"), str) and "channels" not in m for m in sent)
        assert {"type": "subscribe", "channel": "heartbeats"} in sent
        assert {"type": "subscribe", "channel": "level2", "product_ids": [BTC]} in sent
        assert venue.call(lambda: list(venue.fake.errors)) == []


@pytest.mark.anyio
async def test_trades_count_and_set_the_last_price(venue: Venue):
    async with running(venue) as (svc, _):
        await ready(svc, BTC)
        before = svc.markets(venue="coinbase")["markets"]
        vol = next(r["volume"] for r in before if r["slug"] == BTC)
        await eventually(lambda: venue.subscribed("market_trades") == {BTC})
        await venue.acall(venue.fake.trade, BTC, "SELL", "95000.01", "0.5")
        await eventually(lambda: svc.quote(BTC)["last_trade_price"] == 95000.01)
        row = next(r for r in svc.markets(venue="coinbase")["markets"] if r["slug"] == BTC)
        assert row["volume"] == round(vol + 0.5, 2)


@pytest.mark.anyio
async def test_sequence_gap_resubscribes_and_rebuilds(venue: Venue):
    async with running(venue) as (svc, conn):
        await ready(svc, BTC, "ETH-USD")
        await venue.acall(lambda: venue.fake.set_levels(BTC, [("bid", "94999.99", "7")], lost=True))  # never arrives
        await eventually(lambda: conn.stats.resyncs == 2)  # both books on the connection
        await eventually(lambda: same(svc, venue, BTC) and same(svc, venue, "ETH-USD"))
        assert svc.quote(BTC)["nbbo"]["bid_size"] == 7.0
        assert conn.stats.reconnects == 0 and venue.call(lambda: venue.fake.connections) == 1
        sent = venue.call(lambda: list(venue.fake.received))
        assert {"type": "unsubscribe", "channel": "level2", "product_ids": [BTC, "ETH-USD"]} in sent
        # still live after the rebuild
        await venue.acall(venue.fake.set_level, "ETH-USD", "offer", "3400.5", "2")
        await eventually(lambda: same(svc, venue, "ETH-USD"))


@pytest.mark.anyio
async def test_silent_stall_is_detected_and_reconnected(venue: Venue):
    async with running(venue, stall_s=0.5) as (svc, conn):
        await ready(svc, BTC)
        venue.call(venue.fake.stall)
        await venue.acall(venue.fake.set_level, BTC, "offer", "95000.01", "9")  # unseen on the stalled socket
        await eventually(lambda: conn.stats.stalls >= 1 and conn.stats.reconnects >= 1)
        await eventually(lambda: same(svc, venue, BTC) and conn.stats.state == "connected")
        assert conn.stats.resyncs >= 1
        assert venue.call(lambda: venue.fake.connections) >= 2
        assert "Stalled: no message for 0.5 s" in (conn.stats.last_error or "")


@pytest.mark.anyio
async def test_abrupt_disconnect_reconnects_and_rebuilds(venue: Venue):
    async with running(venue) as (svc, conn):
        await ready(svc, BTC, "SOL-USD")
        assert venue.call(venue.fake.disconnect) == 1
        await venue.acall(venue.fake.set_levels, "SOL-USD", [("bid", "179.99", "0"), ("offer", "180.05", "12.5")])
        await eventually(lambda: conn.stats.reconnects >= 1 and conn.stats.resyncs >= 2)
        await eventually(lambda: same(svc, venue, BTC) and same(svc, venue, "SOL-USD"))
        assert venue.subscribed() == {BTC, "SOL-USD"}
        assert "no close frame" in (conn.stats.last_error or "")  # dropped, not closed
        assert conn.stats.stalls == 0


@pytest.mark.anyio
async def test_429_without_retry_after_is_retried(venue: Venue):
    venue.call(venue.fake.fail_next, 2)
    async with running(venue) as (svc, conn):
        assert conn.stats.throttled >= 2
        venue.call(venue.fake.fail_next, 1)
        reset = await conn.fetch_book(BTC)
        spec = svc.market(BTC)
        bids, asks = venue.book(BTC, spec.price_scale, spec.size_scale)
        assert list(reset.bids) == bids and list(reset.asks) == asks and reset.tick == 1
        assert conn.stats.throttled >= 3
        conn.book_limit = 5
        short = await conn.fetch_book(BTC)
        assert list(short.bids) == bids[:5] and list(short.asks) == asks[:5]


@pytest.mark.anyio
async def test_tick_size_change(venue: Venue):
    async with running(venue, catalogue_every_s=0.1) as (svc, conn):
        await ready(svc, BTC)
        await venue.acall(venue.fake.set_increment, BTC, "0.05")
        await eventually(lambda: svc.book(BTC).tick == 5 and svc.market(BTC).tick == 5)
        await venue.acall(venue.fake.set_levels, BTC, [("bid", "94999.95", "1"), ("offer", "95000.05", "2")])
        await eventually(lambda: same(svc, venue, BTC))
        assert svc.quote(BTC)["tick_size"] == 0.05 and svc.instrument(BTC).tick_size == 0.05
        assert (svc.market(BTC).price_scale, svc.market(BTC).size_scale) == (100, 100_000_000)
        assert conn.stats.note is None
        # finer than the book's units (cents): kept, and said so
        await venue.acall(venue.fake.set_increment, "SOL-USD", "0.001")
        await eventually(lambda: "SOL-USD" in (conn.stats.note or ""))
        assert svc.market("SOL-USD").price_scale == 100 and svc.book("SOL-USD").tick == 1


@pytest.mark.anyio
async def test_one_sided_books(venue: Venue):
    async with running(venue) as (svc, _):
        await ready(svc, "ACS-USD", BTC)
        assert same(svc, venue, "ACS-USD")
        q = svc.quote("ACS-USD")
        assert q["nbbo"]["ask"] is None and q["asks"] == [] and q["nbbo"]["bid"] == 0.001199
        await venue.acall(venue.fake.clear_side, BTC, "offer")
        await eventually(lambda: same(svc, venue, BTC))
        assert svc.quote(BTC)["nbbo"]["ask"] is None and svc.quote(BTC)["nbbo"]["bid"] is not None
        await ready(svc, "RNDR-USD")  # delisted: an empty book, still a book
        assert ours(svc, "RNDR-USD") == ([], [])


@pytest.mark.anyio
async def test_demand_subscribes_and_release_unsubscribes(venue: Venue):
    async with running(venue) as (svc, conn):
        await ready(svc, BTC, "ETH-USD")
        assert venue.subscribed() == {BTC, "ETH-USD"} and conn.wanted == {BTC, "ETH-USD"}
        svc.idle_s = 0
        assert sorted(svc.sweep_idle()) == [BTC, "ETH-USD"]
        await eventually(lambda: venue.subscribed() == set() and venue.subscribed("market_trades") == set())
        await venue.acall(venue.fake.set_level, BTC, "bid", "94999.99", "3")  # not sent any more
        svc.idle_s = 300
        await ready(svc, BTC)  # asked again: a fresh snapshot
        assert venue.subscribed() == {BTC} and same(svc, venue, BTC)


@pytest.mark.anyio
async def test_a_refused_product_does_not_block_the_others(venue: Venue):
    async with running(venue) as (svc, conn):
        await eventually(lambda: "SOL-USD" in svc.symbols())
        venue.call(lambda: venue.fake.products.pop("SOL-USD"))  # delisted after our listing
        svc.ensure("SOL-USD")
        svc.ensure("ETH-USD")  # the same subscribe message as SOL-USD
        await ready(svc, "ETH-USD")
        await eventually(lambda: "SOL-USD" in (conn.stats.note or ""))
        assert "refused" in (conn.stats.note or "") and not await svc.wait_ready("SOL-USD", 0.05)
        assert venue.subscribed() == {"ETH-USD"} and same(svc, venue, "ETH-USD")
        svc.idle_s = 0
        svc.sweep_idle()
        await eventually(lambda: conn.stats.note is None)


@pytest.mark.anyio
async def test_burst_for_the_benchmark(venue: Venue):
    async with running(venue) as (svc, _):
        await ready(svc, BTC)
        sent = await venue.acall(venue.fake.burst, BTC, 3000, 20)
        assert len(sent) == 3000 and all(a[0] <= b[0] for a, b in pairwise(sent))
        await eventually(lambda: same(svc, venue, BTC))
        price, size = sent[-1][1], sent[-1][2]
        spec = svc.market(BTC)
        assert svc.book(BTC).size_at(Side.BID, int(Decimal(price) * spec.price_scale)) == int(
            Decimal(size) * spec.size_scale)


# -- what the fake refuses ------------------------------------------------------------------------------
async def _answer(ws: Any) -> dict[str, Any]:
    return json.loads(await ws.recv())  # type: ignore[no-any-return]


@pytest.mark.anyio
async def test_fake_refuses_what_coinbase_refuses(venue: Venue):
    wrong = [
        {"type": "subscribe", "product_ids": [BTC], "channels": ["level2", "heartbeats"]},  # Exchange-style
        {"type": "subscribe", "product_ids": [BTC], "channel": "level3"},
        {"type": "subscribe", "channel": "level2"},
        {"type": "subscribe", "product_ids": ["NOPE-USD"], "channel": "level2"},
        {"type": "subscribe", "channel": "user"},  # needs a jwt
        {"type": "hello"},
    ]
    async with connect(venue.server.ws_url) as ws:
        for msg in wrong:
            await ws.send(json.dumps(msg))
            answer = await _answer(ws)
            assert answer["type"] == "error" and answer["message"].startswith("Failed"), (msg, answer)
        assert venue.subscribed() == set()
        await ws.send(json.dumps({"type": "subscribe", "product_ids": [BTC], "channel": "level2"}))
        snap, ack = await _answer(ws), await _answer(ws)
        assert snap["channel"] == "l2_data" and snap["events"][0]["type"] == "snapshot" and snap["sequence_num"] == 0
        assert ack == {**ack, "channel": "subscriptions", "sequence_num": 1,
                       "events": [{"subscriptions": {"level2": [BTC]}}]}
        sides = {u["side"] for u in snap["events"][0]["updates"]}
        assert sides == {"bid", "offer"}
    async with httpx.AsyncClient() as http:
        r = await http.get(venue.server.url + API + "/products")  # the authenticated listing, no JWT
        assert r.status_code == 401
        r = await http.get(venue.server.url + API + "/market/products", params={"product_type": "SPOTS"})
        assert r.status_code == 400
        r = await http.get(venue.server.url + API + "/market/product_book", params={"product_id": "NOPE-USD"})
        assert r.status_code == 404


@pytest.fixture
def idle_venue() -> Iterator[Venue]:
    yield from _venue(idle_close_s=0.3)


@pytest.mark.anyio
async def test_idle_channels_close_without_heartbeats(idle_venue: Venue):
    v = idle_venue
    async with connect(v.server.ws_url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "product_ids": [BTC], "channel": "level2"}))
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
    # the connector subscribes to heartbeats: its connection outlives the idle limit
    async with running(v) as (svc, conn):
        await ready(svc, BTC)

        def beats() -> int:
            return max((c.heartbeat_counter for c in v.fake.conns if not c.closed), default=0)

        await eventually(lambda: v.call(beats) >= 8)  # 0.8 s of heartbeats > 0.3 s idle limit
        assert conn.stats.reconnects == 0 and v.call(v.fake.open_connections) == 1
