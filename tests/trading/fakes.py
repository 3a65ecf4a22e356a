"""A small market for engine tests: real ``Book`` objects behind the engine's ``MarketPort``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sequence.market import Book, BookView, ManualClock, MirrorBook, Side, UnknownSymbol
from sequence.market.events import BookEvent, LevelUpdate, TickSizeChange, Trade
from sequence.market.service import Instrument
from sequence.stream import Hub
from sequence.venues import VENUES

KALSHI = "KX-TEST-YES"
KALSHI_NO = "KX-TEST-NO"
POLY = "PM-TEST-YES"
POLY_NO = "PM-TEST-NO"
SPOT = "BTC-USD"
CLOSED = "KX-CLOSED-YES"


def _inst(symbol: str, venue: str, book_symbol: str, outcome: str | None, *, tick: int, scale: int,
          size_scale: int, min_notional: float = 0.0, min_order_size: float = 1.0,
          active: bool = True) -> Instrument:
    prediction = outcome is not None
    return Instrument(
        symbol=symbol, venue=venue, instrument_type="prediction" if prediction else "spot",
        market_slug=book_symbol, book_symbol=book_symbol, outcome=outcome,  # type: ignore[arg-type]
        complement=None, tick_size=tick / scale, tick=tick, price_scale=scale, size_scale=size_scale,
        min_price=tick / scale, max_price=(scale - tick) / scale if prediction else None,
        min_notional=min_notional, min_order_size=min_order_size, active=active,
    )


class FakeMarket:
    """Three venues, one book each (plus a closed Kalshi market). Prices/sizes in book units."""

    venues = VENUES

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.hub = Hub()
        self.listeners: list[Callable[[Sequence[BookEvent]], None]] = []
        self.books: dict[str, Book] = {
            KALSHI: Book(KALSHI, tick=100),
            POLY: Book(POLY, tick=100),
            SPOT: Book(SPOT, tick=1, price_scale=100, size_scale=100_000_000),
            CLOSED: Book(CLOSED, tick=100),
        }
        self.views: dict[str, BookView] = dict(self.books)
        self.views[KALSHI_NO] = MirrorBook(self.books[KALSHI], KALSHI_NO)
        self.views[POLY_NO] = MirrorBook(self.books[POLY], POLY_NO)
        self.instruments = {
            KALSHI: _inst(KALSHI, "kalshi", KALSHI, "yes", tick=100, scale=10_000, size_scale=100),
            KALSHI_NO: _inst(KALSHI_NO, "kalshi", KALSHI, "no", tick=100, scale=10_000, size_scale=100),
            POLY: _inst(POLY, "polymarket", POLY, "yes", tick=100, scale=10_000, size_scale=100,
                        min_notional=1.0, min_order_size=5.0),
            POLY_NO: _inst(POLY_NO, "polymarket", POLY, "no", tick=100, scale=10_000, size_scale=100,
                           min_notional=1.0, min_order_size=5.0),
            SPOT: _inst(SPOT, "coinbase", SPOT, None, tick=1, scale=100, size_scale=100_000_000,
                        min_notional=1.0, min_order_size=0.00000001),
            CLOSED: _inst(CLOSED, "kalshi", CLOSED, "yes", tick=100, scale=10_000, size_scale=100,
                          active=False),
        }
        self.applied: list[BookEvent] = []
        self.keepers: list[Callable[[], Iterable[str]]] = []

    # -- MarketPort -------------------------------------------------------------
    def instrument(self, symbol: str) -> Instrument:
        try:
            inst = self.instruments[symbol]
        except KeyError:
            raise UnknownSymbol(symbol) from None
        book = self.books[inst.book_symbol]
        if book.tick != inst.tick:
            from dataclasses import replace

            inst = replace(inst, tick=book.tick, tick_size=book.tick / inst.price_scale)
        return inst

    def book(self, symbol: str) -> BookView:
        try:
            return self.views[symbol]
        except KeyError:
            raise UnknownSymbol(symbol) from None

    def apply(self, events: Sequence[BookEvent]) -> int:
        for ev in events:
            book = self.books[ev.symbol]
            if isinstance(ev, LevelUpdate):
                book.set_level(ev.side, ev.price, ev.size)
            elif isinstance(ev, TickSizeChange):
                book.set_tick(ev.tick)
            self.applied.append(ev)
        for listener in list(self.listeners):
            listener(events)
        return len(events)

    def add_listener(self, listener: Callable[[Sequence[BookEvent]], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def ensure(self, symbol: str) -> bool:
        return True  # every fake book is ready

    async def require_ready(self, symbol: str) -> None:
        self.instrument(symbol)  # simulated books are always ready; unknown symbols still raise

    def add_keeper(self, keeper: Callable[[], Iterable[str]]) -> Callable[[], None]:
        self.keepers.append(keeper)
        return lambda: self.keepers.remove(keeper)

    # -- test helpers ---------------------------------------------------------------
    def venue(self, symbol: str, side: Side, price: float, size: float) -> None:
        """A venue level update in display units (what a simulator would emit)."""
        book = self.books[symbol]
        ev = LevelUpdate(int(self.clock.now() * 1000), symbol, side, book.price_units(price),
                         book.size_units(size))
        self.apply([ev])

    def ladder(self, symbol: str, bids: dict[float, float], asks: dict[float, float]) -> None:
        book = self.books[symbol]
        ts = int(self.clock.now() * 1000)
        evs: list[BookEvent] = [LevelUpdate(ts, symbol, Side.BID, book.price_units(p), book.size_units(s))
                                for p, s in bids.items()]
        evs += [LevelUpdate(ts, symbol, Side.ASK, book.price_units(p), book.size_units(s))
                for p, s in asks.items()]
        self.apply(evs)

    def levels(self, symbol: str, side: Side) -> list[tuple[float, float]]:
        view = self.views[symbol]
        return [(view.to_price(p), view.to_size(s)) for p, s in view.iter_levels(side)]

    def trades(self) -> list[Trade]:
        return [e for e in self.applied if isinstance(e, Trade)]


def node(node_id: str = "leg", symbol: str = KALSHI, side: str = "buy", qty: Any = 1.0,
         limit_price: Any = 0.5, **extra: Any) -> dict[str, Any]:
    venue = {KALSHI: "kalshi", KALSHI_NO: "kalshi", CLOSED: "kalshi", POLY: "polymarket",
             POLY_NO: "polymarket", SPOT: "coinbase"}.get(symbol)
    out: dict[str, Any] = {"node_id": node_id, "symbol": symbol, "side": side, "qty": qty}
    if venue:
        out["venue"] = venue
    if venue in ("kalshi", "polymarket"):
        out["instrument_type"] = "prediction"
    if limit_price is not None:
        out["limit_price"] = limit_price
    out.update(extra)
    return out
