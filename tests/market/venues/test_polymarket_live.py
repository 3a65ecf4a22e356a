"""The live Polymarket connector against the fake venue (tests/venues/polymarket.py).

Every scenario runs a real uvicorn server on loopback and a real MarketService, and
ends with the service's books equal to the venue's: every level of every book in use,
the YES token and its NO mirror.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from sequence.market import MarketService
from sequence.market.book import Side
from sequence.market.clock import RealClock
from sequence.market.events import BookReset, LevelUpdate, TickSizeChange, Trade
from sequence.market.venues.live import LIVE_VENUES, LiveConfig, VenueError, live_venue
from sequence.market.venues.live.polymarket import (
    BOOK_TIER,
    GAMMA_TIER,
    PolymarketLive,
    _bucket,
    is_placeholder,
    parse_book,
    parse_gamma_event,
    parse_gamma_market,
    parse_message,
    parse_units,
)
from sequence.market.venues.sim_polymarket import SimPolymarket
from tests.venues.harness import FakeServer, eventually
from tests.venues.polymarket import INVALID, NO_BOOK, FakePolymarket

pytestmark = pytest.mark.anyio

# -- the venue's documented examples (docs.polymarket.com, market channel; VENUES.md) ---------------
DOC_BOOK = {
    "event_type": "book",
    "asset_id": "65818619657568813474341868652308942079804919287380422192892211131408793125422",
    "market": "0xbd31dc8a20211944f6b70f31557f1001557b59905b7738480ca09bd4532f84af",
    "bids": [{"price": ".48", "size": "30"}, {"price": ".49", "size": "20"}, {"price": ".50", "size": "15"}],
    "asks": [{"price": ".52", "size": "25"}, {"price": ".53", "size": "60"}, {"price": ".54", "size": "10"}],
    "timestamp": "123456789000",
    "hash": "0x0....",
}
DOC_PRICE_CHANGE = {
    "market": "0x5f65177b394277fd294cd75650044e32ba009a95022d88a0c1d565897d72f8f1",
    "price_changes": [
        {"asset_id": "71321045679252212594626385532706912750332728571942532289631379312455583992563",
         "price": "0.5", "size": "200", "side": "BUY", "hash": "56621a121a47ed9333273e21c83b660cff37ae50",
         "best_bid": "0.5", "best_ask": "1"},
        {"asset_id": "52114319501245915516055106046884209969926127482827954674443846427813813222426",
         "price": "0.5", "size": "200", "side": "SELL", "hash": "1895759e4df7a796bf4f1c5a5950b748306923e2",
         "best_bid": "0", "best_ask": "0.5"},
    ],
    "timestamp": "1757908892351",
    "event_type": "price_change",
}
DOC_TICK = {"event_type": "tick_size_change", "asset_id": DOC_BOOK["asset_id"], "market": DOC_BOOK["market"],
            "old_tick_size": "0.01", "new_tick_size": "0.001", "timestamp": "1757908892351"}
DOC_TRADE = {"asset_id": DOC_BOOK["asset_id"], "event_type": "last_trade_price", "fee_rate_bps": "0",
             "market": DOC_BOOK["market"], "price": "0.456", "side": "BUY", "size": "219.217767",
             "timestamp": "1750428146322", "transaction_hash": "0xeeefffggghhh"}
REST_BOOK = {"market": "0x1b6f76e5b8587ee896c35847e12d11e75290a8c3934c5952e8a9d6e4c6f03cfa",
             "asset_id": "1234567890", "timestamp": "1700000000000", "hash": "0xabc",
             "bids": [{"price": "0.47", "size": "100"}, {"price": "0.48", "size": "30"}],
             "asks": [{"price": "0.55", "size": "5"}, {"price": "0.52", "size": "25"}],
             "min_order_size": "5", "tick_size": "0.01", "neg_risk": False, "last_trade_price": "0.50"}


def gamma_market(**kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "253591", "question": "Will Spain win the 2026 FIFA World Cup?", "conditionId": "0xc0ffee",
        "slug": "will-spain-win-the-2026-fifa-world-cup", "endDate": "2026-07-19T23:59:00Z",
        "outcomes": '["Yes", "No"]', "outcomePrices": '["0.16", "0.84"]', "clobTokenIds": '["111", "222"]',
        "active": True, "closed": False, "acceptingOrders": True, "enableOrderBook": True,
        "volumeNum": 850000.5, "liquidityNum": 41000.25, "negRisk": True, "negRiskOther": False,
        "orderPriceMinTickSize": 0.01, "orderMinSize": 5, "bestBid": 0.15, "bestAsk": 0.17,
        "groupItemTitle": "Spain",
    }
    row.update(kw)
    return row


# -- pure parsers ---------------------------------------------------------------------------------
def test_units_exact_half_even() -> None:
    cases = ["0.48", ".48", "0.5", "1", "0", "30", "219.217767", "0.005", "0.0025", "12.345", "12.355", "0.00015"]
    for text in cases:
        for digits in (2, 4):
            want = int((Decimal(text) * 10**digits).to_integral_value(rounding=ROUND_HALF_EVEN))
            assert parse_units(text, digits) == want, (text, digits)
    assert parse_units(0.0025, 4) == 25  # Gamma's numbers (orderPriceMinTickSize) are JSON floats
    with pytest.raises(VenueError):
        parse_units("n/a", 4)


def test_book_from_the_docs_sorted_best_first() -> None:
    r = parse_book(DOC_BOOK)
    assert r == BookReset(123456789000, DOC_BOOK["asset_id"], ((5000, 1500), (4900, 2000), (4800, 3000)),
                          ((5200, 2500), (5300, 6000), (5400, 1000)), None)
    rest = parse_book(REST_BOOK)  # the REST order: both sides best last
    assert rest.bids == ((4800, 3000), (4700, 10000))
    assert rest.asks == ((5200, 2500), (5500, 500))
    assert rest.tick == 100 and rest.ts_ms == 1700000000000
    empty = parse_book({"asset_id": "1", "bids": [], "asks": [{"price": "0.9", "size": "0"}]}, 7)
    assert empty == BookReset(7, "1", (), (), None)


def test_price_change_from_the_docs_only_the_live_yes_token() -> None:
    yes, _no = (c["asset_id"] for c in DOC_PRICE_CHANGE["price_changes"])
    out = parse_message(DOC_PRICE_CHANGE, {yes: 0})
    assert out == [LevelUpdate(1757908892351, yes, Side.BID, 5000, 20000)]
    assert parse_message(DOC_PRICE_CHANGE, {}) == []  # no snapshot yet: deltas are not trusted
    assert parse_message(DOC_PRICE_CHANGE, {yes: 1757908892352}) == []  # older than the REST snapshot
    # the pre-2025-09 shape
    legacy = {"event_type": "price_change", "asset_id": yes, "market": "0x1", "timestamp": "5",
              "changes": [{"price": "0.4", "side": "SELL", "size": "0"}]}
    assert parse_message(legacy, {yes: 0}) == [LevelUpdate(5, yes, Side.ASK, 4000, 0)]


def test_tick_trade_and_arrays() -> None:
    a = DOC_BOOK["asset_id"]
    out = parse_message([DOC_TICK, DOC_TRADE, {"event_type": "best_bid_ask", "asset_id": a}], {a: 0})
    assert out == [TickSizeChange(1757908892351, a, 10), Trade(1750428146322, a, Side.ASK, 4560, 21922)]
    sell = {**DOC_TRADE, "side": "SELL"}
    assert parse_message(sell, {a: 0})[0].side == Side.BID  # type: ignore[union-attr]
    assert parse_message([DOC_BOOK, DOC_TICK], {})[0] == parse_book(DOC_BOOK)


def test_gamma_market_like_the_simulator() -> None:
    spec = parse_gamma_market(gamma_market(), {"slug": "2026-fifa-world-cup-winner", "markets": [{}, {}]})
    assert spec is not None
    assert (spec.book_symbol, spec.yes_token_id, spec.no_token_id) == ("111", "111", "222")
    assert spec.outcome_name == "Spain" and spec.event_slug == "2026-fifa-world-cup-winner"
    assert (spec.tick, spec.price_scale, spec.size_scale) == (100, 10_000, 100)
    assert (spec.min_notional, spec.min_order_size, spec.neg_risk) == (1.0, 5.0, True)
    assert (spec.volume, spec.listed_best_bid, spec.listed_best_ask, spec.listed_liquidity) == (
        850000.5, 0.15, 0.17, 41000.25)
    assert spec.active and not spec.is_placeholder_outcome
    sim = next(m for m in SimPolymarket(RealClock()).catalogue() if m.event_slug == "fifa-world-cup-2030-winner")
    assert set(spec.extra) == set(sim.extra)  # the same listing fields whatever the source
    # outcomes are paired by name, not position: Gamma's figures are of the first outcome
    rev = parse_gamma_market(gamma_market(outcomes='["No", "Yes"]', bestBid=0.83, bestAsk=0.85))
    assert rev is not None and (rev.yes_token_id, rev.no_token_id) == ("222", "111")
    assert (rev.listed_best_bid, rev.listed_best_ask) == (0.15, 0.17)
    game = parse_gamma_market(gamma_market(outcomes='["Lakers", "Celtics"]', groupItemTitle=""))
    assert game is not None and game.yes_token_id == "111" and game.outcome_name == "Lakers"
    assert game.extra["outcomes"] == ["Lakers", "Celtics"]
    for tick, units in ((0.1, 1000), (0.001, 10), (0.0001, 1), (0.005, 50), (0.0025, 25)):
        s = parse_gamma_market(gamma_market(orderPriceMinTickSize=tick))
        assert s is not None and s.tick == units
    assert parse_gamma_market(gamma_market(enableOrderBook=False)) is None
    assert parse_gamma_market(gamma_market(clobTokenIds="[]")) is None
    closed = parse_gamma_market(gamma_market(closed=True, acceptingOrders=False))
    assert closed is not None and not closed.active


def test_placeholders_follow_gamma() -> None:
    augmented = {"negRiskAugmented": True}
    assert is_placeholder(gamma_market(negRiskOther=True, groupItemTitle="Other"), augmented)
    assert is_placeholder(gamma_market(groupItemTitle="Person X"), augmented)
    assert is_placeholder(gamma_market(groupItemTitle="Team AF"), augmented)
    assert not is_placeholder(gamma_market(groupItemTitle="Spain"), augmented)
    assert not is_placeholder(gamma_market(groupItemTitle="Team AF"), {"negRiskAugmented": False})
    ev, specs = parse_gamma_event({"slug": "e", "title": "E", "negRisk": True, "negRiskAugmented": True,
                                   "tags": [{"label": "Sports"}], "markets": [
                                       gamma_market(), gamma_market(closed=True, clobTokenIds='["3", "4"]'),
                                       gamma_market(groupItemTitle="Person B", clobTokenIds='["5", "6"]',
                                                    slug="person-b")]})
    assert ev is not None and ev.multi_outcome and ev.neg_risk and ev.category == "Sports"
    assert [s.book_symbol for s in specs] == ["111", "5"] and ev.markets == (specs[0].slug, "person-b")
    assert [s.is_placeholder_outcome for s in specs] == [False, True]


def test_rate_buckets_stay_inside_the_documented_tiers() -> None:
    for n, per in (BOOK_TIER, GAMMA_TIER):
        b = _bucket((n, per))
        assert b.burst + b.rate * per <= n  # the most any window can see
    v = PolymarketLive(LiveConfig("polymarket", "http://x", "ws://x"), clock=RealClock())
    assert v.limiter.rate * 10 + v.limiter.burst <= 1500 and v.gamma_limiter.rate * 10 + v.gamma_limiter.burst <= 300
    assert isinstance(live_venue(LiveConfig("polymarket", "http://x", "ws://x"), RealClock()), PolymarketLive)
    assert LIVE_VENUES["polymarket"].endswith(":PolymarketLive")


# -- against the fake -------------------------------------------------------------------------------
def expected(levels: Iterable[tuple[str, str]]) -> list[dict[str, float]]:
    """The venue's levels as the service shows them (sizes to the cent, half to even; 0 is gone)."""
    out = []
    for price, size in levels:
        units = int((Decimal(size) * 100).to_integral_value(rounding=ROUND_HALF_EVEN))
        if units:
            out.append({"price": int(Decimal(price) * 10_000) / 10_000, "size": units / 100})
    return out


async def books_equal(server: FakeServer, fake: FakePolymarket, svc: MarketService, tokens: Iterable[str],
                      timeout: float = 10.0) -> None:
    """Wait until every book of *tokens* (and each one's complement) equals the venue's."""
    tokens = list(tokens)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        diffs = []
        for t in tokens:
            m = fake.markets[t]
            for tok in (m.yes, m.no):
                bids, asks = await server.acall(fake.levels, tok)
                tick = float(Decimal(fake.markets[tok].book.tick))
                q = svc.quote(tok, depth=100)
                got = (q["bids"], q["asks"], q["tick_size"])
                want = (expected(bids), expected(asks), tick)
                if got != want:
                    diffs.append((tok[:8], got, want))
        if not diffs:
            return
        if loop.time() > deadline:
            raise AssertionError(f"books differ from the venue: {diffs}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def live(fake: FakePolymarket, *, refusals_ok: bool = False, tiers: dict[str, Any] | None = None,
               **cfg: Any) -> AsyncIterator[tuple[MarketService, PolymarketLive, FakeServer]]:
    server = fake.serve()
    svc: MarketService | None = None
    try:
        config = LiveConfig(**{
            "venue": "polymarket", "api_url": server.url, "ws_url": server.ws_url + "/ws/market",
            "urls": {"gamma": server.url + "/gamma"}, "stall_s": 0.5, "ping_s": 0.1,
            "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "catalogue_every_s": 60.0, **cfg})
        venue = PolymarketLive(config, clock=RealClock(), **(tiers or {}))
        svc = MarketService([venue], clock=RealClock())
        await svc.start()
        await eventually(lambda: venue.stats.catalogue_refreshed is not None)
        yield svc, venue, server
        if not refusals_ok:
            assert fake.refusals == []  # the connector never did anything the venue refuses
    finally:
        if svc is not None:
            await svc.stop()
            svc.close()
        server.stop()


async def ready(svc: MarketService, *tokens: str) -> None:
    for t in tokens:
        assert await svc.wait_ready(t, 10), f"no snapshot for {t}"


async def test_catalogue_paged_and_shaped_like_the_simulator() -> None:
    fake = FakePolymarket(gamma_page_cap=2)  # Gamma clamps limit silently: 100 asked, 2 served
    async with live(fake) as (svc, venue, _server):
        gamma_calls = [q for path, q in fake.requests if path == "/gamma/events"]
        assert len(gamma_calls) >= 4 and all(q["closed"] == "false" and q["active"] == "true" for q in gamma_calls)
        assert [int(q["offset"]) for q in gamma_calls] == sorted(int(q["offset"]) for q in gamma_calls)
        listed = {m.yes for ev in fake.events for m in ev.markets
                  if not ev.closed and not m.closed and m.enable_order_book}
        got = {spec.book_symbol for spec in svc.catalogue if spec.venue == "polymarket"}
        assert got == listed and len(got) == 17
        for name in ("Italy", "Team AH"):  # eliminated (closed) and not on the order book yet
            assert fake.market(name).yes not in svc.symbols()
        assert fake.market("Will Donald Trump win the 2024 US Presidential Election?").yes not in svc.symbols()
        england = fake.market("England")  # outcomes ["No", "Yes"]: tokens paired by name
        assert england.tokens[0] == england.no and svc.market(england.yes).yes_token_id == england.yes
        assert svc.book(england.no).best_bid() is None  # nothing live yet: demand-driven

        rows = svc.markets(venue="polymarket", limit=500)["markets"]
        wc = next(r for r in rows if r["slug"] == "2026-fifa-world-cup-winner")
        assert wc["neg_risk"] and wc["outcome_count"] == 9 and wc["title"] == "2026 FIFA World Cup Winner"
        flags = {o["outcome_name"]: o["is_placeholder_outcome"] for o in wc["outcomes"]}
        assert flags == {"Spain": False, "France": False, "Argentina": False, "Brazil": False, "Germany": False,
                         "England": False, "Other": True, "Team AF": True, "Team AG": True}
        spain = next(o for o in wc["outcomes"] if o["outcome_name"] == "Spain")
        sim_row = next(r for r in MarketService.simulated(venues=["polymarket"]).markets(
            venue="polymarket", expand="outcomes", limit=500)["markets"] if r["event_slug"] == "fifa-world-cup-2030-winner")
        assert set(spain) == set(sim_row)  # the same row shape as the simulator's
        assert (spain["best_bid"], spain["best_ask"], spain["tick_size"]) == (0.15, 0.17, 0.01)  # listed figures
        assert spain["volume"] == 850_000.0 and spain["liquidity"] > 0 and spain["min_notional"] == 1.0
        fed = {o["outcome_name"]: o["tick_size"] for o in next(
            r for r in rows if r["slug"] == "fed-decision-in-july")["outcomes"]}
        assert fed == {"No change": 0.005, "25 bps decrease": 0.0025, "50+ bps decrease": 0.001,
                       "25+ bps increase": 0.0001}
        game = svc.market(fake.market("Lakers vs. Celtics").tokens[0])
        assert game.outcome_name == "Lakers" and game.extra["outcomes"] == ["Lakers", "Celtics"]
        assert venue.status()["markets"] == 17


async def test_max_markets_caps_the_catalogue() -> None:
    async with live(FakePolymarket(gamma_page_cap=2), max_markets=5) as (svc, _venue, _server):
        assert len(svc.catalogue) == 5
        slugs = {m.slug for m in svc.catalogue}
        for ev in svc.catalogue.events:
            assert set(ev.markets) <= slugs


async def test_snapshots_then_deltas_equal_the_venue() -> None:
    fake = FakePolymarket()
    async with live(fake) as (svc, venue, server):
        names = ["Spain", "England", "US recession in 2026?", "No change", "25 bps decrease", "25+ bps increase",
                 "Lakers vs. Celtics"]
        tokens = [fake.market(n).yes for n in names]
        await ready(svc, *tokens)
        await books_equal(server, fake, svc, tokens)
        rec_bids = svc.quote(fake.market("US recession in 2026?").yes, depth=100)["bids"]
        assert {"price": 0.2, "size": 219.22} in rec_bids  # "219.217767" shares, to the cent
        spain, nochange, england = fake.market("Spain"), fake.market("No change"), fake.market("England")
        await server.acall(fake.set_levels, spain.yes, [("BUY", "0.15", "500"), ("SELL", "0.17", "0"),
                                                        ("SELL", "0.2", "77.77"), ("BUY", "0.01", "1000")])
        await server.acall(fake.set_levels, spain.no, [("BUY", "0.82", "42")])  # on the NO token: YES ask 0.18
        await server.acall(fake.set_level, nochange.yes, "BUY", "0.905", "9")  # inside the spread, 0.005 tick
        await server.acall(fake.set_level, england.no, "BUY", "0.85", "0")  # England's NO token comes first
        await books_equal(server, fake, svc, tokens)
        q = svc.quote(spain.yes)
        assert q["nbbo"]["bid"] == 0.15 and q["nbbo"]["bid_size"] == 500 and q["nbbo"]["ask"] == 0.18
        assert svc.quote(spain.no)["nbbo"]["bid"] == 0.82  # the NO token reads the YES book mirrored
        assert fake.subscribed() == set(tokens)  # the NO tokens were never subscribed
        assert svc.unknown_events == 0  # the NO token's mirrored entries were dropped, not sent on
        assert venue.stats.resyncs == 0 and venue.stats.reconnects == 0


async def test_trade_prints_and_the_book_that_follows() -> None:
    fake = FakePolymarket()
    async with live(fake) as (svc, _venue, server):
        rec = fake.market("US recession in 2026?")
        await ready(svc, rec.yes)
        before = svc.markets(venue="polymarket", q="recession")["markets"][0]["volume"]
        price, _size = await server.acall(fake.trade, rec.yes, "BUY", "50")
        await eventually(lambda: svc.quote(rec.yes)["last_trade_price"] == float(price))
        await books_equal(server, fake, svc, [rec.yes])
        after = svc.markets(venue="polymarket", q="recession")["markets"][0]["volume"]
        assert after == pytest.approx(before + 50 * float(price), abs=0.01)  # USD volume


async def test_tick_size_change_mid_session() -> None:
    fake = FakePolymarket()
    async with live(fake) as (svc, _venue, server):
        btc = fake.market("Will Bitcoin reach $150,000 by December 31, 2026?")
        await ready(svc, btc.yes)
        assert svc.quote(btc.yes)["tick_size"] == 0.01
        await server.acall(fake.change_tick, btc.yes, "0.001")
        await eventually(lambda: svc.quote(btc.yes)["tick_size"] == 0.001)
        assert svc.instrument(btc.no).tick_size == 0.001
        await server.acall(fake.set_levels, btc.yes, [("BUY", "0.043", "60"), ("SELL", "0.046", "25.5")])
        await books_equal(server, fake, svc, [btc.yes])
        assert svc.quote(btc.yes)["nbbo"]["bid"] == 0.043
        await server.acall(fake.change_tick, btc.yes, "0.01")  # back: the venue cancels off-grid levels
        await books_equal(server, fake, svc, [btc.yes])
        assert svc.quote(btc.yes)["nbbo"]["bid"] == 0.04


async def test_one_sided_books_and_placeholders() -> None:
    fake = FakePolymarket()
    async with live(fake) as (svc, _venue, server):
        kanye = fake.market("Will Kanye West win the 2028 US Presidential Election?")
        other, team = fake.market("Other"), fake.market("Team AF")
        await ready(svc, kanye.yes, other.yes, team.no)  # a NO token asks for its YES book
        await books_equal(server, fake, svc, [kanye.yes, other.yes, team.yes])
        q = svc.quote(kanye.yes)
        assert q["bids"] == [] and q["nbbo"]["bid"] is None and q["nbbo"]["ask"] == 0.004
        assert svc.quote(kanye.no)["asks"] == [] and svc.quote(kanye.no)["nbbo"]["bid"] == 0.996
        rows = svc.markets(venue="polymarket", expand="outcomes", q="world cup", limit=500)["markets"]
        live_rows = {r["outcome_name"]: r for r in rows}
        assert live_rows["Other"]["is_placeholder_outcome"] and live_rows["Team AF"]["is_placeholder_outcome"]
        assert live_rows["Team AF"]["best_bid"] is None and live_rows["Team AF"]["best_ask"] == 0.003
        assert fake.subscribed() == {kanye.yes, other.yes, team.yes}


async def test_silent_stall_is_detected_and_books_rebuilt() -> None:
    fake = FakePolymarket()
    async with live(fake) as (svc, venue, server):
        spain, rec = fake.market("Spain"), fake.market("US recession in 2026?")
        await ready(svc, spain.yes, rec.yes)
        await server.acall(fake.stall)  # open, silent: not even PONG
        await server.acall(fake.set_levels, spain.yes, [("BUY", "0.15", "999"), ("SELL", "0.17", "0")])
        await server.acall(fake.set_level, rec.yes, "BUY", "0.26", "0")
        await eventually(lambda: venue.stats.stalls >= 1 and fake.connections >= 2)
        await books_equal(server, fake, svc, [spain.yes, rec.yes])
        assert venue.stats.reconnects >= 1 and venue.stats.resyncs >= 2
        assert "Stalled" in (venue.stats.last_error or "")
        await eventually(lambda: venue.status()["state"] == "connected" and venue.stats.note is None)


async def test_abrupt_disconnect_reconnects_and_rebuilds() -> None:
    fake = FakePolymarket()
    async with live(fake) as (svc, venue, server):
        spain, kanye = fake.market("Spain"), fake.market("Will Kanye West win the 2028 US Presidential Election?")
        await ready(svc, spain.yes, kanye.yes)
        assert await server.acall(fake.disconnect) == 1
        await server.acall(fake.set_levels, spain.yes, [("BUY", "0.14", "0"), ("BUY", "0.12", "5")])
        await server.acall(fake.set_level, kanye.yes, "BUY", "0.001", "10000")  # no longer one-sided
        await eventually(lambda: venue.stats.reconnects >= 1 and fake.connections >= 2)
        await books_equal(server, fake, svc, [spain.yes, kanye.yes])
        assert venue.stats.resyncs >= 2
        # deltas after the rebuild still apply
        await server.acall(fake.set_level, spain.yes, "SELL", "0.16", "3")
        await books_equal(server, fake, svc, [spain.yes, kanye.yes])


async def test_rest_snapshot_when_the_socket_sends_none_and_stale_deltas_are_dropped() -> None:
    fake = FakePolymarket()
    async with live(fake) as (svc, _venue, server):
        rec = fake.market("US recession in 2026?")
        server.call(fake.hide_books, rec.yes)
        await ready(svc, rec.yes)
        assert ("/book", {"token_id": rec.yes}) in fake.requests
        await books_equal(server, fake, svc, [rec.yes])
        # a change stamped before that snapshot arrives late: it must not undo the snapshot
        stale = {"event_type": "price_change", "market": rec.condition, "timestamp": "1000",
                 "price_changes": [{"asset_id": rec.yes, "price": "0.26", "size": "1", "side": "BUY"}]}
        await server.acall(fake.send_raw, rec.yes, stale)
        await server.acall(fake.set_level, rec.yes, "SELL", "0.3", "3.5")
        await books_equal(server, fake, svc, [rec.yes])


async def test_a_book_the_venue_does_not_have_is_not_faked() -> None:
    fake = FakePolymarket()
    async with live(fake) as (svc, venue, server):
        spain = fake.market("Spain")
        venue.missing_retry_s = 0.2
        server.call(fake.remove_book, spain.yes)  # 404 "No orderbook exists …", no socket snapshot
        assert not svc.ensure(spain.yes)
        await eventually(lambda: "no order book at Polymarket" in (venue.stats.note or ""))
        assert not svc.ensure(spain.no)  # not ready: a quote or an order gets a 503 saying why
        with pytest.raises(VenueError, match=NO_BOOK):
            await venue.fetch_book(spain.yes)
        server.call(fake.missing.discard, spain.yes)  # the book appears: the next try finds it
        await ready(svc, spain.yes)
        await books_equal(server, fake, svc, [spain.yes])
        assert venue.stats.note is None


async def test_429_without_retry_after_and_throttling_are_survived() -> None:
    fake = FakePolymarket()
    server_calls_before = 0
    async with live(fake) as (_svc, venue, server):
        server_calls_before = len(fake.requests)
        spain = fake.market("Spain")
        server.call(fake.reject_next, 2)
        reset = await venue.fetch_book(spain.yes)
        assert venue.stats.throttled >= 2 and len(fake.requests) == server_calls_before + 3
        bids, _asks = server.call(fake.levels, spain.yes)
        assert [(p / 10_000, s / 100) for p, s in reset.bids] == [(d["price"], d["size"]) for d in expected(bids)]
        assert reset.tick == 100
        server.call(fake.throttle_next, 1, 0.3)  # the venue's way: a slow answer, not a refusal
        assert (await venue.fetch_book(spain.yes)).bids == reset.bids
        assert fake.throttled == 1
        server.call(fake.reject_next, 1)  # the catalogue refresh survives one too
        markets, events = await venue.fetch_catalogue()
        assert len(markets) == 17 and len(events) == 6


async def test_demand_subscribes_and_release_unsubscribes() -> None:
    fake = FakePolymarket()
    async with live(fake) as (svc, venue, server):
        a, b, c = fake.market("Spain"), fake.market("France"), fake.market("Brazil")
        await ready(svc, a.yes)
        assert fake.subscribed() == {a.yes}  # nothing else, and never a NO token
        await ready(svc, b.no)
        assert fake.subscribed() == {a.yes, b.yes}
        svc.idle_s = 0.0
        assert sorted(svc.sweep_idle()) == sorted([a.yes, b.yes])
        await eventually(lambda: fake.subscribed() == set())
        await ready(svc, c.yes)
        await eventually(lambda: fake.subscribed() == {c.yes})
        assert fake.received == [
            {"assets_ids": [a.yes], "type": "market"},
            {"assets_ids": [b.yes], "operation": "subscribe"},
            {"assets_ids": sorted([a.yes, b.yes]), "operation": "unsubscribe"},
            {"assets_ids": [c.yes], "operation": "subscribe"},
        ]
        await books_equal(server, fake, svc, [c.yes])
        assert venue.status()["subscribed"] == 1


async def test_keepalive_pings_hold_the_socket() -> None:
    fake = FakePolymarket(ping_timeout_s=0.3)
    async with live(fake) as (svc, venue, _server):
        await ready(svc, fake.market("Spain").yes)
        start = venue.stats.messages
        await eventually(lambda: venue.stats.messages >= start + 10)  # PONGs: well past the 0.3 s timeout
        assert fake.connections == 1 and venue.stats.reconnects == 0


async def test_catalogue_refresh_updates_and_relists_closed_markets() -> None:
    fake = FakePolymarket()
    async with live(fake, catalogue_every_s=0.1) as (svc, _venue, server):
        germany = fake.market("Germany")
        assert svc.market(germany.yes).active

        def close() -> None:
            germany.closed, germany.accepting_orders = True, False

        server.call(close)
        await eventually(lambda: not svc.market(germany.yes).active)
        assert germany.yes in svc.symbols()


async def test_blast_for_the_benchmark() -> None:
    fake = FakePolymarket()
    async with live(fake) as (svc, venue, server):
        rec = fake.market("US recession in 2026?")
        await ready(svc, rec.yes)
        stamps = await server.acall(fake.blast, rec.yes, 500, 7)
        assert len(stamps) == 500 and stamps == sorted(stamps, key=lambda s: s[0])
        await books_equal(server, fake, svc, [rec.yes])
        assert venue.stats.resyncs == 0


async def test_the_fake_refuses_what_the_venue_refuses() -> None:
    fake = FakePolymarket(ping_timeout_s=0.3, limits={"book": (12, 1.0)})
    async with live(fake, refusals_ok=True, tiers={"book_tier": (10, 1.0)}) as (_svc, venue, server):
        spain = fake.market("Spain")
        # the connector keeps inside the venue's limit: snapshot after snapshot, never slowed
        for _ in range(12):
            await venue.fetch_book(spain.yes)
        assert fake.throttled == 0
        url = server.ws_url + "/ws/market"
        async with connect(url) as ws:
            await ws.send(json.dumps({"asset_ids": [spain.yes], "type": "market"}))  # misspelt
            assert await ws.recv() == INVALID
            await ws.send(json.dumps({"assets_ids": [spain.yes], "operation": "subscribe"}))
            assert await ws.recv() == INVALID  # the first message must be the channel subscription
            await ws.send(json.dumps({"assets_ids": [spain.yes], "type": "market"}))
            books = json.loads(await ws.recv())
            assert isinstance(books, list) and books[0]["event_type"] == "book"
            await ws.send("ping")
            assert await ws.recv() == INVALID  # the keep-alive is the text PING
            with pytest.raises(Exception, match="PING timeout"):  # a client that never PINGs is closed
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
        assert any("no PING" in r for r in fake.refusals)
        async with httpx.AsyncClient() as http:
            # Gamma without closed=false lists closed events only
            rows = (await http.get(server.url + "/gamma/events", params={"limit": 50})).json()
            assert rows and all(r["closed"] for r in rows)
            assert (await http.get(server.url + "/book")).status_code == 400
            r = await http.get(server.url + "/book", params={"token_id": "123"})
            assert r.status_code == 404 and r.json() == {"error": NO_BOOK}
            # a client bursting past /book's limit is slowed down, not refused
            burst = await asyncio.gather(*(http.get(server.url + "/book", params={"token_id": spain.yes})
                                           for _ in range(16)))
            assert all(r.status_code == 200 for r in burst) and fake.throttled >= 4
