"""How the market service drives a live venue: listings as they are discovered,
books only while someone uses them, a 503 while a book has not come.

The venue here is an in-process LiveVenue (no sockets): these tests are about
the service's demand logic. The connectors themselves run against real local
venue servers in tests/market/venues/.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sequence.market import BookReset, MarketService, RealClock, Unavailable
from sequence.market.catalogue import EventSpec, MarketSpec
from sequence.market.venues.live import LiveConfig, LiveVenue
from tests.venues.harness import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def spec(ticker: str, **kw: Any) -> MarketSpec:
    return MarketSpec(venue="kalshi", slug=ticker, title=f"Market {ticker}", instrument_type="prediction",
                      book_symbol=f"{ticker}-YES", yes_token_id=f"{ticker}-YES", no_token_id=f"{ticker}-NO",
                      aliases=(ticker,), event_slug="EV", **kw)


class ScriptedVenue(LiveVenue):
    """Lists two markets; sends a book when asked unless told to hold it back."""

    def __init__(self) -> None:
        super().__init__(LiveConfig(venue="kalshi", api_url="http://unused", ws_url="ws://unused",
                                    catalogue_every_s=3600), clock=RealClock())
        self.subscribed: set[str] = set()
        self.unsubscribed: list[str] = []
        self.withhold: set[str] = set()

    async def fetch_catalogue(self) -> tuple[list[MarketSpec], list[EventSpec]]:
        markets = [spec("A", listed_best_bid=0.41, listed_best_ask=0.44, listed_liquidity=1234.5, volume=99.0),
                   spec("B")]
        return markets, [EventSpec("kalshi", "EV", "Event", ("A", "B"))]

    async def fetch_book(self, book_symbol: str) -> BookReset:
        return BookReset(self.now_ms(), book_symbol, bids=((4200, 1000),), asks=((4500, 700),))

    async def feed(self) -> None:
        self.connected()
        while True:
            await self.changed.wait()
            self.changed.clear()
            for sym in self.wanted - self.subscribed:
                if sym not in self.withhold:
                    self.reset_book(await self.fetch_book(sym))
                    self.subscribed.add(sym)
            for sym in self.subscribed - self.wanted:
                self.subscribed.discard(sym)
                self.unsubscribed.append(sym)


async def started() -> tuple[MarketService, ScriptedVenue]:
    venue = ScriptedVenue()
    svc = MarketService([venue])
    await svc.start()
    await eventually(lambda: "A" in svc.symbols())
    return svc, venue


async def test_listed_markets_show_the_venue_listing_until_someone_asks_for_the_book() -> None:
    svc, venue = await started()
    try:
        row = svc.markets(venue="kalshi", limit=10)["markets"]
        a = next(r for r in row if r["slug"] == "A")
        assert (a["best_bid"], a["best_ask"], a["liquidity"], a["volume"]) == (0.41, 0.44, 1234.5, 99.0)
        assert venue.wanted == set()  # listing never subscribes

        await svc.require_ready("A")  # the bare ticker names the YES book
        assert venue.wanted == {"A-YES"}
        q = svc.quote("A-NO")
        assert q["bids"][0]["price"] == 0.55 and q["asks"][0]["price"] == 0.58  # the mirror
        a = next(r for r in svc.markets(venue="kalshi", limit=10)["markets"] if r["slug"] == "A")
        assert (a["best_bid"], a["best_ask"]) == (0.42, 0.45)  # now the book's own
        assert svc.venue_status()["kalshi"]["mode"] == "live"
        assert svc.venue_status()["kalshi"]["subscribed"] == 1
    finally:
        await svc.stop()


async def test_idle_books_are_released_but_kept_for_streams_and_keepers() -> None:
    svc, venue = await started()
    try:
        for sym in ("A", "B"):
            await svc.require_ready(sym)
        sub = svc.hub.open()
        svc.hub.subscribe(sub, ["prices:A-NO"])  # a stream subscriber holds A
        keep = {"B-NO"}
        svc.add_keeper(lambda: keep)  # an open graph holds B (any of its symbols)
        svc.idle_s = 0.0
        assert svc.sweep_idle() == []
        assert venue.wanted == {"A-YES", "B-YES"}

        svc.hub.close(sub)
        keep.clear()
        assert sorted(svc.sweep_idle()) == ["A-YES", "B-YES"]
        await eventually(lambda: sorted(venue.unsubscribed) == ["A-YES", "B-YES"])
        # Released books are re-fetched on the next use, not served stale.
        row = next(r for r in svc.markets(venue="kalshi", limit=10)["markets"] if r["slug"] == "A")
        assert row["best_bid"] == 0.41  # back to the listing's figure
        await svc.require_ready("A")
        assert "A-YES" in venue.subscribed
    finally:
        await svc.stop()


async def test_a_book_that_does_not_come_is_a_503_naming_the_venue_state() -> None:
    svc, venue = await started()
    venue.withhold.add("B-YES")
    try:
        with pytest.raises(Unavailable) as err:
            await svc.require_ready("B", timeout=0.2)
        assert err.value.status == 503
        assert "kalshi" in err.value.message and "connected" in err.value.message
        assert err.value.details["venue"] == "kalshi"
    finally:
        await svc.stop()


async def test_a_stream_subscription_asks_for_the_book() -> None:
    svc, venue = await started()
    try:
        sub = svc.hub.open()
        svc.hub.subscribe(sub, ["prices:A"])
        await eventually(lambda: "A-YES" in venue.subscribed)
        await asyncio.sleep(0)
        assert svc.quote("A")["bids"][0]["price"] == 0.42
        svc.hub.close(sub)
    finally:
        await svc.stop()


async def test_a_dropped_feed_makes_its_books_wait_for_the_next_snapshot() -> None:
    svc, venue = await started()
    try:
        await svc.require_ready("A")
        venue.withhold.add("A-YES")  # the reconnect will not bring A back (yet)
        svc.unready(venue.wanted)  # what the supervisor does when the feed raises
        venue.subscribed.clear()
        venue.changed.set()
        with pytest.raises(Unavailable):
            await svc.require_ready("A", timeout=0.1)
        venue.withhold.clear()
        venue.changed.set()
        await svc.require_ready("A", timeout=2)
        assert svc.quote("A")["bids"][0]["price"] == 0.42
    finally:
        await svc.stop()


async def test_a_market_missing_from_a_full_listing_is_relisted_inactive() -> None:
    svc, venue = await started()
    try:
        assert svc.market("B").active
        venue.delist_missing([spec("A")])
        assert not svc.market("B").active and svc.market("A").active
        rows = svc.markets(venue="kalshi", active=True, limit=10)["markets"]
        assert [r["slug"] for r in rows] == ["A"]
    finally:
        await svc.stop()


async def test_the_feed_supervisor_marks_books_stale_and_reconnects() -> None:
    class Flaky(ScriptedVenue):
        """The first connection drops once A is served; the second notes what it found."""

        def __init__(self) -> None:
            super().__init__()
            self.runs = 0
            self.drop = asyncio.Event()
            self.ready_on_reconnect: bool | None = None

        async def feed(self) -> None:
            self.runs += 1
            if self.runs == 1:
                self.connected()
                await self.changed.wait()
                self.changed.clear()
                for sym in self.wanted:
                    self.reset_book(await self.fetch_book(sym))
                await self.drop.wait()
                raise ConnectionResetError("dropped")
            self.ready_on_reconnect = svc.ensure("A")
            self.subscribed.clear()
            self.changed.set()
            await super().feed()

    venue = Flaky()
    venue.config = LiveConfig(venue="kalshi", api_url="x", ws_url="x", catalogue_every_s=3600,
                              backoff_initial_s=0.01, backoff_max_s=0.02)
    svc = MarketService([venue])
    await svc.start()
    try:
        await eventually(lambda: "A" in svc.symbols())
        await svc.require_ready("A")
        venue.drop.set()
        await eventually(lambda: venue.runs == 2)
        assert venue.ready_on_reconnect is False  # stale until the new snapshot
        assert venue.stats.reconnects == 1 and "dropped" in (venue.stats.last_error or "")
        await svc.require_ready("A", timeout=2)
        assert venue.status()["state"] == "connected"
    finally:
        await svc.stop()


async def test_quotes_over_http_wait_for_a_live_book_then_answer_503_in_the_error_envelope() -> None:
    import httpx

    from sequence.api.standalone import build_app

    class Who:
        client_id, key_id, mode, is_sandbox, run_id, strategy_id = "c", "k", "live", False, None, None

    svc, venue = await started()
    svc.ready_timeout_s = 0.3
    venue.withhold.add("B-YES")
    app = build_app(svc, principal=Who(), manage_service=False)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            ok = await http.get("/v1/quotes", params={"symbol": "A-NO"})  # asks for the book, waits, answers
            assert ok.status_code == 200, ok.text
            assert ok.json()["nbbo"]["bid"] == pytest.approx(0.55)  # the NO side of the 0.42/0.45 book
            down = await http.get("/v1/quotes", params={"symbol": "B"})
            assert down.status_code == 503, down.text
            err = down.json()["error"]
            assert err["code"] == "market_unavailable" and "kalshi" in err["message"], err
            assert err["details"]["venue"] == "kalshi" and err["details"]["state"] == "connected", err
            unknown = await http.get("/v1/quotes", params={"symbol": "NOPE"})
            assert unknown.status_code == 404  # an unknown symbol is still a 404, at once
    finally:
        await svc.stop()
