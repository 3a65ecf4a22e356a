"""The market service: venues → books → quotes, listings and stream channels.

:class:`MarketService` owns the venue adapters and one :class:`Book` per
market. Its loop (``await start()``) pulls events from every adapter as the
clock advances, applies them, and publishes ``prices:<symbol>`` (when the best
bid or ask moves) and ``book:<symbol>`` (on any change) on its :class:`Hub`.
Without the loop, :meth:`MarketService.pump` does one step by hand, which is
how tests drive a :class:`ManualClock`.

Symbols
-------
Binary markets own one book, keyed by the YES token; the NO token quotes the
same book mirrored (YES ask = 1 − best NO bid, always). Kalshi's bare ticker
is an alias of its YES token. Spot markets are quoted by product id.

Live venues
-----------
A :class:`~sequence.market.venues.live.LiveVenue` pushes instead of being
pulled: it lists markets as it discovers them (:class:`MarketListed`),
replaces a book from a venue snapshot (:class:`BookReset`) and applies
deltas, all through :meth:`MarketService.apply`. Books of a live venue are
kept live only while someone uses them — a quote (:meth:`ensure`), a stream
subscription, a working order (a *keeper*, :meth:`add_keeper`); a janitor
releases the ones idle for ``idle_s``. :meth:`venue_status` reports each
venue's mode and connection.

Everything runs on the event loop thread; the read methods are synchronous
and cheap (no I/O), so request handlers call them directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from sequence.echo import shown
from sequence.stream import ChannelError, Hub, channels
from sequence.venues import VENUES

from .book import Book, BookView, MirrorBook, Side
from .catalogue import Catalogue, EventSpec, MarketSpec
from .clock import Clock, ManualClock, RealClock, now_ms
from .cursor import decode_cursor, encode_cursor, fingerprint
from .errors import BadRequest, Unavailable, UnknownSymbol
from .events import BookEvent, BookReset, LevelUpdate, MarketListed, TickSizeChange, Trade
from .recording import Recorder
from .venues.base import VenueAdapter
from .venues.live import LiveVenue
from .venues.replay import ReplayVenue
from .venues.sim import SimConfig
from .venues.sim_coinbase import SimCoinbase
from .venues.sim_kalshi import SimKalshi
from .venues.sim_polymarket import SimPolymarket

log = logging.getLogger(__name__)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _check_depth(depth: int) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH:
        raise BadRequest("depth", f"depth must be an integer from 0 to {MAX_DEPTH}")


SIM_VENUES: Mapping[str, Callable[[Clock, SimConfig], VenueAdapter]] = {
    "kalshi": SimKalshi,
    "polymarket": SimPolymarket,
    "coinbase": SimCoinbase,
}
ORDERS = ("volume", "liquidity", "close_time")
EXPANDS = ("outcomes",)
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
DEFAULT_DEPTH = 10
MAX_DEPTH = 100
BOOK_CHANNEL_DEPTH = 10
QUOTE_CACHE_SIZE = 4096
#: A listing (``GET /v1/markets``) sorts the whole catalogue once per query and
#: serves its pages from that order for this long (real catalogues hold tens of
#: thousands of markets; paging through one must not re-sort it per page).
LISTING_TTL_S = 1.0
LISTING_CACHE_MIN = 2000
#: A live book nobody has used for this long (no quote, no stream subscriber,
#: no working order) is released: the venue stops sending it.
LIVE_IDLE_S = 300.0
#: How long a quote or an order waits for a live book's first snapshot before a 503.
LIVE_READY_TIMEOUT_S = 5.0
#: Venues whose ``volume`` is USD traded; elsewhere it is contracts (Kalshi) or base units (spot).
USD_VOLUME_VENUES = frozenset({"polymarket"})

Listener = Callable[[Sequence[BookEvent]], None]


@dataclass(frozen=True, slots=True)
class Instrument:
    """What order validation needs to know about a symbol, as of now."""

    symbol: str
    venue: str
    instrument_type: Literal["prediction", "spot"]
    market_slug: str
    book_symbol: str
    #: ``"yes"`` / ``"no"`` for binary tokens, ``None`` for spot.
    outcome: Literal["yes", "no"] | None
    #: The other token of a binary market.
    complement: str | None
    tick_size: float
    tick: int
    price_scale: int
    size_scale: int
    min_price: float
    max_price: float | None
    min_notional: float
    min_order_size: float
    active: bool
    #: Price bands with their own step, ``(start, end, step)`` in price units (Kalshi's
    #: ``price_ranges``: 0.001 below 0.10 and above 0.90, 0.01 between); empty = one tick.
    price_steps: tuple[tuple[int, int, int], ...] = ()
    #: Polymarket's neg-risk markets sign orders for another exchange contract.
    neg_risk: bool = False

    def aligned(self, price: float) -> bool:
        """Whether ``price`` lies on the current tick grid."""
        units = price * self.price_scale
        return abs(units - round(units)) < 1e-6 and round(units) % self.tick == 0

    def in_range(self, price: float) -> bool:
        return price >= self.min_price - 1e-12 and (
            self.max_price is None or price <= self.max_price + 1e-12
        )


def _price_steps(spec: MarketSpec, scale: int, *, mirrored: bool) -> tuple[tuple[int, int, int], ...]:
    """Kalshi's ``price_ranges`` as price-unit bands; for a NO token, mirrored (1 − p)."""
    ranges = spec.extra.get("price_ranges")
    if not ranges or not isinstance(ranges, list | tuple):
        return ()
    bands = []
    try:
        for r in ranges:
            start, end, step = (round(float(r[k]) * scale) for k in ("start", "end", "step"))
            if step > 0:
                bands.append((scale - end, scale - start, step) if mirrored else (start, end, step))
    except (KeyError, TypeError, ValueError):
        return ()
    if len({b[2] for b in bands}) <= 1:
        return ()  # one step everywhere: the tick says it all
    return tuple(sorted(bands))


class _View:
    __slots__ = ("book_channel", "outcome", "prices_channel", "symbol", "view")

    def __init__(self, symbol: str, view: BookView, outcome: Literal["yes", "no"] | None):
        self.symbol = symbol
        self.view = view
        self.outcome = outcome
        self.prices_channel = f"prices:{symbol}"
        self.book_channel = f"book:{symbol}"


class _State:
    """One market: its spec, its book, every symbol that quotes it, running stats."""

    __slots__ = ("book", "last_top", "last_trade", "live", "ready", "search", "spec", "used_at", "views",
                 "volume")

    def __init__(self, spec: MarketSpec, book: Book, event_title: str | None, live: LiveVenue | None = None) -> None:
        self.spec = spec
        self.book = book
        self.views: list[_View] = []
        self.volume = float(spec.volume)
        self.last_trade: int | None = None
        self.last_top = book.top()
        #: The live venue that feeds this book (None: a simulator or a replay, always live).
        self.live = live
        #: A live book is ready once a venue snapshot was applied; ``used_at`` keeps it wanted.
        self.ready: asyncio.Event | None = None if live is None else asyncio.Event()
        self.used_at = 0.0
        self.search = ""
        self.describe(event_title)

    def describe(self, event_title: str | None) -> None:
        spec = self.spec
        parts = [spec.title, spec.slug, spec.event_slug, spec.outcome_name, event_title]
        self.search = " ".join(p for p in parts if p).lower()

    def liquidity(self) -> float:
        """USD value of resting orders: collateral for binaries, notional for spot."""
        b = self.book
        if self.spec.instrument_type == "prediction":
            units = (
                b.notional(Side.BID)
                + b.price_scale * b.total_size(Side.ASK)
                - b.notional(Side.ASK)
            )
        else:
            units = b.notional(Side.BID) + b.notional(Side.ASK)
        return units / (b.price_scale * b.size_scale)


class MarketService:
    """Books, quotes, listings and stream channels over a set of venue adapters."""

    def __init__(
        self,
        adapters: Sequence[VenueAdapter],
        *,
        clock: Clock | None = None,
        hub: Hub | None = None,
        pump_interval: tuple[float, float] = (0.005, 0.1),
    ) -> None:
        if not adapters:
            raise ValueError("a market service needs at least one venue adapter")
        self.clock: Clock = clock or adapters[0].clock
        self.hub = hub or Hub()
        self.adapters = tuple(adapters)
        self._pump_interval = pump_interval
        self._realtime = not isinstance(self.clock, ManualClock)
        self._states: dict[str, _State] = {}  # book symbol -> state
        self._symbols: dict[str, tuple[_State, _View]] = {}
        self._events: dict[tuple[str, str], EventSpec] = {}
        self._listeners: list[Listener] = []
        self._recorders: list[Recorder] = []
        self._task: asyncio.Task[None] | None = None
        self._janitor: asyncio.Task[None] | None = None
        self._quote_cache: dict[tuple[str, int], tuple[tuple[int, int], bytes]] = {}
        self._instruments: dict[str, tuple[MarketSpec, int, Instrument]] = {}
        self._listings: dict[bytes, tuple[float, int, list[dict[str, Any]]]] = {}
        self._version = 0  # bumped when the catalogue changes (listings re-sort)
        self._keepers: list[Callable[[], Iterable[str]]] = []
        self._slugs: dict[tuple[str, str], _State] = {}
        self.live: dict[str, LiveVenue] = {a.name: a for a in self.adapters if isinstance(a, LiveVenue)}
        self.idle_s = LIVE_IDLE_S
        self.ready_timeout_s = LIVE_READY_TIMEOUT_S
        self.unknown_events = 0
        self.events_applied = 0
        markets: list[MarketSpec] = []
        events: list[EventSpec] = []
        start = now_ms(self.clock)
        for adapter in self.adapters:
            cat = adapter.catalogue()
            books = adapter.initial_books()
            for ev in cat.events:
                self._events[(ev.venue, ev.slug)] = ev
            for spec in cat:
                book = books.get(spec.book_symbol)
                if book is None:
                    book = Book(
                        spec.book_symbol,
                        tick=spec.tick,
                        price_scale=spec.price_scale,
                        size_scale=spec.size_scale,
                    )
                if book.ts_ms == 0:
                    book.touch(start)
                self._add(spec, book)
            markets.extend(cat.markets)
            events.extend(cat.events)
        self.venues: tuple[str, ...] = tuple(
            dict.fromkeys([*(m.venue for m in markets), *self.live])
        )
        self.hub.register(channels.prices(self._validate_channel, self._prices_snapshot))
        self.hub.register(channels.book(self._validate_channel, self._book_snapshot))

    @property
    def catalogue(self) -> Catalogue:
        """Every market and event known now (live venues add to it as they discover)."""
        return Catalogue(tuple(st.spec for st in self._states.values()), tuple(self._events.values()))

    def _add(self, spec: MarketSpec, book: Book) -> None:
        if spec.book_symbol in self._states:
            raise ValueError(f"duplicate book symbol {spec.book_symbol!r}")
        ev = self._events.get((spec.venue, spec.event_slug or ""))
        st = _State(spec, book, ev.title if ev else None, self.live.get(spec.venue))
        views: list[_View] = []
        if spec.instrument_type == "prediction":
            if spec.yes_token_id:
                views.append(_View(spec.yes_token_id, book, "yes"))
            if spec.no_token_id:
                views.append(_View(spec.no_token_id, MirrorBook(book, spec.no_token_id), "no"))
            views.extend(_View(alias, book, "yes") for alias in spec.aliases)
        else:
            views.append(_View(spec.symbol or spec.book_symbol, book, None))
            views.extend(_View(alias, book, None) for alias in spec.aliases)
        # Check every symbol before registering any: a clash leaves nothing half-added.
        taken = [v.symbol for v in views if v.symbol in self._symbols]
        if taken or len({v.symbol for v in views}) != len(views):
            raise ValueError(f"duplicate symbol {(taken or [views[0].symbol])[0]!r}")
        self._states[spec.book_symbol] = st
        for v in views:
            self._symbols[v.symbol] = (st, v)
        st.views = views
        self._slugs[(spec.venue, spec.slug)] = st
        self._version += 1

    def _list(self, ev: MarketListed) -> None:
        """A live venue listed (or relisted) a market: add it, or update what it says."""
        if ev.event is not None:
            self._events[(ev.event.venue, ev.event.slug)] = ev.event
        spec = ev.spec
        st = self._states.get(spec.book_symbol)
        if st is None:
            try:
                self._add(spec, Book(spec.book_symbol, tick=spec.tick, price_scale=spec.price_scale,
                                     size_scale=spec.size_scale))
            except ValueError:  # a symbol clash between two listings: keep the first
                log.warning("market %s/%s not added: a symbol is already taken", spec.venue, spec.slug)
                return
            st = self._states[spec.book_symbol]
            st.book.touch(ev.ts_ms)
        elif st.spec != spec:
            st.spec = spec
            if not st.ready or not st.ready.is_set():
                st.volume = float(spec.volume)
            self._version += 1
        if spec.venue not in self.venues:
            self.venues = (*self.venues, spec.venue)
        evspec = self._events.get((spec.venue, spec.event_slug or ""))
        st.describe(evspec.title if evspec else None)

    # -- construction helpers ---------------------------------------------------------
    @classmethod
    def simulated(
        cls,
        *,
        seed: int | None = None,
        clock: Clock | None = None,
        venues: Iterable[str] = VENUES,
        config: SimConfig | None = None,
        hub: Hub | None = None,
        pump_interval: tuple[float, float] = (0.005, 0.1),
    ) -> MarketService:
        """The simulated Kalshi, Polymarket and Coinbase. ``seed`` overrides ``config.seed``."""
        clock = clock or RealClock()
        config = config or SimConfig()
        if seed is not None:
            config = replace(config, seed=seed)
        adapters = []
        for name in venues:
            factory = SIM_VENUES.get(name)
            if factory is None:
                raise ValueError(f"unknown simulated venue {name!r}; expected one of {sorted(SIM_VENUES)}")
            adapters.append(factory(clock, config))
        return cls(adapters, clock=clock, hub=hub, pump_interval=pump_interval)

    @classmethod
    def from_recording(
        cls,
        path: str | Path,
        *,
        clock: Clock | None = None,
        speed: float = 1.0,
        hub: Hub | None = None,
        pump_interval: tuple[float, float] = (0.005, 0.1),
    ) -> MarketService:
        """Books driven by a recording made with :meth:`record` (``sequence up --replay``)."""
        clock = clock or RealClock()
        return cls(
            [ReplayVenue(path, clock=clock, speed=speed)],
            clock=clock,
            hub=hub,
            pump_interval=pump_interval,
        )

    # -- lifecycle -------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Run the simulation loop (and the live venues) on the current event loop until :meth:`stop`."""
        if self.running:
            return
        self.pump()
        self._task = asyncio.create_task(self._run(), name="sequence-market-service")
        for venue in self.live.values():
            await venue.start(self)
        if self.live:
            self._janitor = asyncio.create_task(self._sweep_idle(), name="sequence-market-janitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        janitor, self._janitor = self._janitor, None
        for t in (task, janitor):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        for venue in self.live.values():
            await venue.stop()
        for rec in self._recorders:
            rec.close()
        self._recorders.clear()

    def close(self) -> None:
        """Release adapter resources (a replay's file). Call after :meth:`stop`."""
        for rec in self._recorders:
            rec.close()
        self._recorders.clear()
        for adapter in self.adapters:
            adapter.close()

    async def _run(self) -> None:
        lo, hi = self._pump_interval
        while True:
            try:
                self.pump()
            except Exception:  # keep serving quotes even if one batch is bad
                log.exception("market service: pump failed")
            delay = hi
            if self._realtime:
                due = self.next_event_ms()
                if due is not None:
                    delay = min(max((due - now_ms(self.clock)) / 1000, lo), hi)
            await asyncio.sleep(delay)

    def next_event_ms(self) -> int | None:
        due = [t for a in self.adapters if (t := a.next_event_ms()) is not None]
        return min(due) if due else None

    # -- applying events ----------------------------------------------------------------
    def pump(self) -> int:
        """Apply every event due by the clock's now; returns how many were applied."""
        until = now_ms(self.clock)
        batches = []
        for adapter in self.adapters:
            evs = adapter.advance(until)
            if evs:
                batches.append(evs if isinstance(evs, list) else list(evs))
        if not batches:
            return 0
        if len(batches) == 1:
            events: Sequence[BookEvent] = batches[0]
        else:
            events = list(heapq.merge(*batches, key=lambda e: e.ts_ms))
        return self.apply(events)

    def apply(self, events: Sequence[BookEvent]) -> int:
        """Apply book events (from adapters, or pushed by a connector), then publish changes."""
        states = self._states
        changed: dict[str, _State] = {}
        n = 0
        for ev in events:
            if isinstance(ev, MarketListed):
                self._list(ev)
                n += 1
                continue
            st = states.get(ev.symbol)
            if st is None:
                self.unknown_events += 1
                continue
            book = st.book
            if isinstance(ev, BookReset):
                book.clear()
                if ev.tick is not None and ev.tick != book.tick:
                    book.set_tick(ev.tick)
                for side, levels in ((Side.BID, ev.bids), (Side.ASK, ev.asks)):
                    for price, qty in levels:
                        if qty > 0 and not price % book.tick:
                            book.set_level(side, price, qty)
                if st.ready is not None:
                    st.ready.set()
            elif isinstance(ev, LevelUpdate):
                if ev.size > 0 and ev.price % book.tick:
                    log.warning("off-tick level %s for %s ignored", ev.price, ev.symbol)
                    continue
                book.set_level(ev.side, ev.price, ev.size)
            elif isinstance(ev, Trade):
                size = ev.size / book.size_scale
                if st.spec.venue in USD_VOLUME_VENUES:
                    size *= ev.price / book.price_scale
                st.volume += size
                st.last_trade = ev.price
            elif isinstance(ev, TickSizeChange):
                book.set_tick(ev.tick)
            book.touch(ev.ts_ms)
            changed[ev.symbol] = st
            n += 1
        self.events_applied += n
        for rec in self._recorders:
            rec.write(events)
        for listener in self._listeners:
            try:
                listener(events)
            except Exception:
                log.exception("market service: listener failed")
        if changed:
            self._publish(changed.values())
        return n

    def _publish(self, states: Iterable[_State]) -> None:
        hub = self.hub
        for st in states:
            top = st.book.top()
            moved = top != st.last_top
            if moved:
                st.last_top = top
            for v in st.views:
                if moved and hub.has_subscribers(v.prices_channel):
                    hub.publish(v.prices_channel, self._prices(v))
                if hub.has_subscribers(v.book_channel):
                    hub.publish(v.book_channel, self._quote(st, v, BOOK_CHANNEL_DEPTH))

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(events)`` after every applied batch; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- recording ------------------------------------------------------------------------
    def record(self, path: str | Path, *, meta: Mapping[str, Any] | None = None,
               symbols: Iterable[str] | None = None) -> Recorder:
        """Record from now on into ``path`` (JSONL, ``.gz`` compresses); close the result to stop.

        ``symbols``: record only these markets (any symbol of each; a live catalogue holds
        tens of thousands of markets); by default every market, and any listed later."""
        if symbols is None:
            states = list(self._states.values())
            only = None
        else:
            states = list({id(st): st for st in (self._lookup(s)[0] for s in symbols)}.values())
            only = {st.spec.book_symbol for st in states}
        keys = {(st.spec.venue, st.spec.event_slug or "") for st in states}
        catalogue = Catalogue(tuple(st.spec for st in states),
                              tuple(ev for key, ev in self._events.items() if key in keys))
        rec = Recorder(
            path,
            catalogue=catalogue,
            books={st.spec.book_symbol: st.book for st in states},
            volumes={st.spec.book_symbol: st.volume for st in states},
            start_ms=now_ms(self.clock),
            meta={"venues": list(self.venues), **(meta or {})},
            only=only,
        )
        self._recorders = [r for r in self._recorders if not r.closed]
        self._recorders.append(rec)
        return rec

    # -- live books: demand ------------------------------------------------------------------
    def unready(self, book_symbols: Iterable[str]) -> None:
        """A live venue's feed dropped: its books wait for their next snapshot (quotes and
        orders wait for it, then 503) rather than being read stale."""
        for sym in book_symbols:
            st = self._states.get(sym)
            if st is not None and st.ready is not None:
                st.ready.clear()

    def ensure(self, symbol: str) -> bool:
        """Note that *symbol* is being used; a live venue starts (or keeps) sending its book.
        True when the book is ready to read (always, for simulated and replayed venues)."""
        st = self._lookup(symbol)[0]
        if st.live is None:
            return True
        st.used_at = time.monotonic()
        assert st.ready is not None
        if not st.ready.is_set():
            st.live.ensure(st.spec.book_symbol)
            return False
        return True

    async def wait_ready(self, symbol: str, timeout: float) -> bool:
        """:meth:`ensure`, then wait up to *timeout* for a live book's first snapshot."""
        if self.ensure(symbol):
            return True
        ready = self._lookup(symbol)[0].ready
        assert ready is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), timeout)
        return ready.is_set()

    async def require_ready(self, symbol: str, timeout: float | None = None) -> None:
        """:meth:`wait_ready` (up to ``ready_timeout_s``), or :class:`Unavailable` (503) saying
        what the venue is doing."""
        if await self.wait_ready(symbol, self.ready_timeout_s if timeout is None else timeout):
            return
        st = self._lookup(symbol)[0]
        status = st.live.status() if st.live is not None else {}
        why = status.get("note") or status.get("last_error") or "waiting for the venue's snapshot"
        raise Unavailable(
            f"no order book for {shown(symbol)} from {st.spec.venue} yet "
            f"(connection {status.get('state', 'unknown')}: {why}); retry shortly",
            symbol=symbol, venue=st.spec.venue, state=status.get("state"),
        )

    def add_keeper(self, keeper: Callable[[], Iterable[str]]) -> Callable[[], None]:
        """*keeper()* names symbols whose books must stay live (the engine: open graphs)."""
        self._keepers.append(keeper)
        return lambda: self._keepers.remove(keeper)

    def _kept(self) -> set[str]:
        """Book symbols the keepers hold (any symbol of a market names its book)."""
        out = set()
        for keeper in self._keepers:
            for sym in keeper():
                hit = self._symbols.get(sym)
                if hit is not None:
                    out.add(hit[0].spec.book_symbol)
        return out

    def _wanted(self, st: _State, now: float) -> bool:
        if now - st.used_at < self.idle_s:
            return True
        hub = self.hub
        return any(hub.has_subscribers(v.prices_channel) or hub.has_subscribers(v.book_channel)
                   for v in st.views)

    def sweep_idle(self) -> list[str]:
        """Release live books nobody uses any more; returns their book symbols."""
        now = time.monotonic()
        kept = self._kept()
        released = []
        for venue in self.live.values():
            for sym in list(venue.wanted):
                st = self._states.get(sym)
                if st is None or sym in kept or self._wanted(st, now):
                    continue
                venue.release(sym)
                if st.ready is not None:
                    st.ready.clear()
                released.append(sym)
        return released

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, max(1.0, self.idle_s / 4)))
            try:
                # Books kept by an order are asked for again (cheap if held).
                for sym in self._kept():
                    st = self._states[sym]
                    if st.live is not None:
                        st.live.ensure(sym)
                released = self.sweep_idle()
                if released:
                    log.info("market: released %d idle live book(s)", len(released))
            except Exception:
                log.exception("market: idle sweep failed")

    def venue_status(self) -> dict[str, dict[str, Any]]:
        """Each venue's mode and, for live venues, the connection (``/v1/venues``, health, metrics)."""
        out: dict[str, dict[str, Any]] = {}
        for adapter in self.adapters:
            if isinstance(adapter, LiveVenue):
                out[adapter.name] = adapter.status()
            elif adapter.name == "replay":
                for venue in dict.fromkeys(st.spec.venue for st in self._states.values()):
                    out.setdefault(venue, {"mode": "replay", "state": "replaying"})
            else:
                out.setdefault(adapter.name, {"mode": "sim", "state": "running"})
        return out

    # -- lookups -------------------------------------------------------------------------
    def symbols(self, venue: str | None = None) -> list[str]:
        return [s for s, (st, _) in self._symbols.items() if venue is None or st.spec.venue == venue]

    def _lookup(self, symbol: str) -> tuple[_State, _View]:
        try:
            return self._symbols[symbol]
        except (KeyError, TypeError):
            raise UnknownSymbol(str(symbol)) from None

    def book(self, symbol: str) -> BookView:
        """The live book for ``symbol`` (a :class:`MirrorBook` for a NO token)."""
        return self._lookup(symbol)[1].view

    def market(self, symbol: str) -> MarketSpec:
        return self._lookup(symbol)[0].spec

    def instrument(self, symbol: str) -> Instrument:
        st, v = self._lookup(symbol)
        spec = st.spec
        tick, ps = v.view.tick, v.view.price_scale
        # Built once per (market spec, tick): every order is validated against it.
        hit = self._instruments.get(symbol)
        if hit is not None and hit[0] is spec and hit[1] == tick:
            return hit[2]
        inst = self._instrument(symbol, st, v, spec, tick, ps)
        if len(self._instruments) > 100_000:
            self._instruments.clear()
        self._instruments[symbol] = (spec, tick, inst)
        return inst

    def _instrument(self, symbol: str, st: _State, v: _View, spec: MarketSpec, tick: int, ps: int) -> Instrument:
        complement = None
        if v.outcome is not None:
            complement = spec.no_token_id if v.outcome == "yes" else spec.yes_token_id
        return Instrument(
            symbol=symbol,
            venue=spec.venue,
            instrument_type=spec.instrument_type,
            market_slug=spec.slug,
            book_symbol=spec.book_symbol,
            outcome=v.outcome,
            complement=complement,
            tick_size=tick / ps,
            tick=tick,
            price_scale=ps,
            size_scale=v.view.size_scale,
            min_price=tick / ps,
            max_price=(ps - tick) / ps if spec.instrument_type == "prediction" else None,
            min_notional=spec.min_notional,
            min_order_size=spec.min_order_size,
            active=spec.active,
            price_steps=_price_steps(spec, ps, mirrored=v.outcome == "no"),
            neg_risk=bool(spec.neg_risk),
        )

    # -- quotes -------------------------------------------------------------------------------
    def quote(self, symbol: str, depth: int = DEFAULT_DEPTH) -> dict[str, Any]:
        """API.md quote: NBBO plus ``depth`` levels per side, best first; ``None`` for an empty side."""
        _check_depth(depth)
        st, v = self._lookup(symbol)
        return self._quote(st, v, depth)

    def quote_json(self, symbol: str, depth: int = DEFAULT_DEPTH) -> bytes:
        """:meth:`quote` serialised as compact JSON, cached until the book next changes.

        Quote traffic is far heavier than book traffic (thousands of requests a
        second against a few changes per book), so most requests are a dict hit.
        """
        _check_depth(depth)
        st, v = self._lookup(symbol)
        view = v.view
        stamp = (view.seq, view.ts_ms)
        key = (symbol, depth)
        hit = self._quote_cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        body = _dumps(self._quote(st, v, depth)).encode()
        if len(self._quote_cache) >= QUOTE_CACHE_SIZE:
            self._quote_cache.clear()
        self._quote_cache[key] = (stamp, body)
        return body

    def _quote(self, st: _State, v: _View, depth: int) -> dict[str, Any]:
        view = v.view
        ps, ss = view.price_scale, view.size_scale
        b = view.best(Side.BID)
        a = view.best(Side.ASK)
        last = st.last_trade
        if last is not None and v.outcome == "no":
            last = ps - last
        return {
            "symbol": v.symbol,
            "venue": st.spec.venue,
            "instrument_type": st.spec.instrument_type,
            "tick_size": view.tick / ps,
            "ts": view.ts_ms / 1000,
            "nbbo": {
                "bid": None if b is None else b[0] / ps,
                "ask": None if a is None else a[0] / ps,
                "mid": None if b is None or a is None else (b[0] + a[0]) / (2 * ps),
                "bid_size": None if b is None else b[1] / ss,
                "ask_size": None if a is None else a[1] / ss,
            },
            "bids": view.levels_json(Side.BID, depth),
            "asks": view.levels_json(Side.ASK, depth),
            "market": st.spec.slug,
            "outcome": v.outcome,
            "active": st.spec.active,
            "last_trade_price": None if last is None else last / ps,
            "sequence": view.seq,
        }

    def prices(self, symbol: str) -> dict[str, Any]:
        """The ``prices:<symbol>`` payload: ``{symbol, bid, ask, mid, ts}``."""
        return self._prices(self._lookup(symbol)[1])

    @staticmethod
    def _prices(v: _View) -> dict[str, Any]:
        view = v.view
        ps = view.price_scale
        bid, ask = view.top()
        return {
            "symbol": v.symbol,
            "bid": None if bid is None else bid / ps,
            "ask": None if ask is None else ask / ps,
            "mid": None if bid is None or ask is None else (bid + ask) / (2 * ps),
            "ts": view.ts_ms / 1000,
        }

    # -- stream channels ------------------------------------------------------------------------
    def _validate_channel(self, arg: str | None, client_id: str | None) -> None:
        if arg not in self._symbols:
            raise ChannelError(str(arg), f"unknown symbol {shown(arg)}", code="unknown_symbol")
        self.ensure(arg)  # a live book is fed while the subscription lasts

    def _prices_snapshot(self, arg: str | None, client_id: str | None) -> dict[str, Any]:
        return self._prices(self._symbols[arg or ""][1])

    def _book_snapshot(self, arg: str | None, client_id: str | None) -> dict[str, Any]:
        st, v = self._symbols[arg or ""]
        return self._quote(st, v, BOOK_CHANNEL_DEPTH)

    # -- listings -----------------------------------------------------------------------------
    def markets(
        self,
        venue: str | None = None,
        limit: int = DEFAULT_LIMIT,
        order: str = "volume",
        active: bool | None = None,
        expand: str | None = None,
        q: str | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """API.md ``GET /v1/markets``: ``{"markets": [...], "next_cursor": str | None}``."""
        if venue is not None and venue not in self.venues:
            raise BadRequest(
                "venue", f"unknown venue {shown(venue)}; expected one of: {', '.join(self.venues)}"
            )
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise BadRequest("limit", f"limit must be an integer from 1 to {MAX_LIMIT}")
        if order not in ORDERS:
            raise BadRequest("order", f"order must be one of: {', '.join(ORDERS)}")
        if expand is not None and expand not in EXPANDS:
            raise BadRequest("expand", "expand must be 'outcomes' or omitted")
        needle = (q or "").strip().lower()
        query = fingerprint(("markets", venue, order, active, expand, needle))
        offset = 0 if cursor is None else decode_cursor(cursor, query)
        rows = self._listing(query, venue, order, active, expand == "outcomes", needle)
        page = rows[offset : offset + limit]
        more = offset + limit < len(rows)
        return {
            "markets": page,
            "next_cursor": encode_cursor(offset + limit, query) if more else None,
        }

    def _listing(self, query: bytes, venue: str | None, order: str, active: bool | None, expand: bool,
                 needle: str) -> list[dict[str, Any]]:
        """The sorted rows of one listing query, cached for :data:`LISTING_TTL_S`."""
        now = time.monotonic()
        cache = len(self._states) > LISTING_CACHE_MIN  # small catalogues: exact, re-sorted per request
        hit = self._listings.get(query) if cache else None
        if hit is not None and hit[0] > now and hit[1] == self._version:
            return hit[2]
        rows = [
            row
            for row, text in self._rows(venue, expand)
            if (active is None or row["active"] is active) and (not needle or needle in text)
        ]
        if order == "close_time":
            rows.sort(key=lambda r: (r["close_time"] is None, r["close_time"] or "", r["venue"], r["slug"]))
        else:
            rows.sort(key=lambda r: (-r[order], r["venue"], r["slug"]))
        if cache:
            if len(self._listings) > 256:
                self._listings.clear()
            self._listings[query] = (now + LISTING_TTL_S, self._version, rows)
        return rows

    def _rows(self, venue: str | None, expand: bool) -> Iterator[tuple[dict[str, Any], str]]:
        grouped: set[str] = set()
        for st in self._states.values():
            spec = st.spec
            if venue is not None and spec.venue != venue:
                continue
            ev = self._events.get((spec.venue, spec.event_slug or ""))
            if spec.venue == "polymarket" and not expand and ev is not None and ev.multi_outcome:
                if ev.slug in grouped:
                    continue
                grouped.add(ev.slug)
                yield self._event_row(ev)
                continue
            yield self._market_row(st), st.search

    def _market_row(self, st: _State) -> dict[str, Any]:
        spec = st.spec
        book = st.book
        ps = book.price_scale
        if st.ready is not None and not st.ready.is_set():
            # A live market whose book nobody has asked for yet: the venue's listing figures.
            liquidity = spec.listed_liquidity or 0.0
            best_bid, best_ask = spec.listed_best_bid, spec.listed_best_ask
        else:
            bid, ask = book.top()
            liquidity = st.liquidity()
            best_bid = None if bid is None else bid / ps
            best_ask = None if ask is None else ask / ps
        row: dict[str, Any] = {
            "venue": spec.venue,
            "slug": spec.slug,
            "title": spec.title,
            "event_slug": spec.event_slug,
            "outcome_name": spec.outcome_name,
            "instrument_type": spec.instrument_type,
            "yes_token_id": spec.yes_token_id,
            "no_token_id": spec.no_token_id,
            "symbol": spec.symbol,
            "active": spec.active,
            "volume": round(st.volume, 2),
            "liquidity": round(liquidity, 2),
            "close_time": spec.close_time,
            "tick_size": book.tick / ps,
            "min_notional": spec.min_notional,
            "is_placeholder_outcome": spec.is_placeholder_outcome,
            "min_order_size": spec.min_order_size,
            "best_bid": best_bid,
            "best_ask": best_ask,
        }
        if spec.neg_risk is not None:
            row["neg_risk"] = spec.neg_risk
        for k, val in spec.extra.items():
            row.setdefault(k, val)
        return row

    def _event_row(self, ev: EventSpec) -> tuple[dict[str, Any], str]:
        outcomes = []
        texts = [ev.title.lower(), ev.slug]
        for slug in ev.markets:
            st = self._by_slug(ev.venue, slug)
            if st is None:
                continue
            outcomes.append(self._market_row(st))
            texts.append(st.search)
        row: dict[str, Any] = {
            "venue": ev.venue,
            "slug": ev.slug,
            "title": ev.title,
            "event_slug": ev.slug,
            "outcome_name": None,
            "instrument_type": "prediction",
            "yes_token_id": None,
            "no_token_id": None,
            "symbol": None,
            "active": any(o["active"] for o in outcomes),
            "volume": round(sum(o["volume"] for o in outcomes), 2),
            "liquidity": round(sum(o["liquidity"] for o in outcomes), 2),
            "close_time": ev.close_time,
            "tick_size": min((o["tick_size"] for o in outcomes), default=None),
            "min_notional": max((o["min_notional"] for o in outcomes), default=0.0),
            "is_placeholder_outcome": False,
            "neg_risk": ev.neg_risk,
            "outcome_count": len(outcomes),
            "outcomes": outcomes,
        }
        return row, " ".join(texts)

    def _by_slug(self, venue: str, slug: str) -> _State | None:
        return self._slugs.get((venue, slug))
