"""What every live venue connector shares: the push contract, the session, the limits.

A :class:`LiveVenue` is a venue adapter that *pushes* (the simulators are
pulled): once :meth:`LiveVenue.start` is called with the market service as
its sink, it

- lists the venue's markets in the background (:meth:`fetch_catalogue`, every
  ``catalogue_every_s``), emitting :class:`~sequence.market.events.MarketListed`
  for each market that is new or changed — never the whole catalogue on a
  request;
- keeps the books someone uses live: :meth:`ensure` / :meth:`release` edit
  :attr:`wanted` (the service calls them for quotes, streams and working
  orders), and the subclass's :meth:`feed` follows :attr:`wanted` —
  subscribing on the venue's WebSocket, starting each book with a snapshot
  (:class:`~sequence.market.events.BookReset`), applying deltas as absolute
  :class:`~sequence.market.events.LevelUpdate`\\ s, and re-snapshotting on a
  sequence gap or after a reconnect;
- survives as a long-lived process: :meth:`feed` and the catalogue loop run
  under a supervisor that restarts them with exponential backoff and jitter;
  a socket silent for ``stall_s`` is replaced (:meth:`recv`); REST calls go
  through a token bucket (the venue's documented tier) and survive a 429
  without ``Retry-After`` (:meth:`get_json`);
- reports its health (:meth:`status`): mode, connection state, age of the last
  message, resyncs, reconnects, stalls, errors — ``/v1/venues``,
  ``/v1/health`` and ``/metrics`` show it.

Every update reaches the service through :meth:`emit` on the event loop,
so the service applies it, publishes ``prices:``/``book:`` and records it in
one place. Prices and sizes are converted to the book's integer units with
:func:`units` (exact decimal arithmetic on the venue's strings).

A subclass (one per venue) implements :meth:`fetch_catalogue`,
:meth:`fetch_book` and :meth:`feed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Protocol

import httpx

from ...book import Book
from ...catalogue import Catalogue, EventSpec, MarketSpec
from ...clock import Clock, now_ms
from ...events import BookEvent, BookReset, MarketListed
from ..base import VenueAdapter

__all__ = [
    "Backoff",
    "LiveConfig",
    "LiveVenue",
    "Sink",
    "Stalled",
    "TokenBucket",
    "VenueError",
    "units",
]

log = logging.getLogger("sequence.market.live")


class Sink(Protocol):
    """Where a live venue's updates go (the market service)."""

    def apply(self, events: Sequence[BookEvent]) -> int: ...

    def unready(self, book_symbols: Iterable[str]) -> None:
        """These books went out of step with the venue (the feed dropped): until their next
        snapshot, quotes and orders wait for it instead of reading a stale book."""


class VenueError(Exception):
    """The venue answered something the connector cannot use (the text says what)."""


class Stalled(VenueError):
    """An open socket stayed silent past the venue's heartbeat: replace it."""


@dataclass(frozen=True)
class LiveConfig:
    """One live venue's settings. Every URL is a setting: tests point them at local servers."""

    venue: str
    api_url: str  # REST base, e.g. https://external-api.kalshi.com/trade-api/v2
    ws_url: str  # market-data WebSocket
    urls: Mapping[str, str] = field(default_factory=dict)  # venue-specific extras (Polymarket's Gamma)
    key_id: str | None = None  # market-data credentials where the venue needs them (Kalshi's WS)
    private_key_pem: str | None = field(default=None, repr=False)
    catalogue_every_s: float = 300.0
    stall_s: float = 30.0  # an open socket silent this long is replaced
    ping_s: float = 10.0  # client keep-alive where the venue wants one (Polymarket's text PING)
    poll_s: float = 2.0  # REST polling interval when there is no WebSocket (no Kalshi key)
    reads_per_s: float | None = None  # REST reads token bucket; None: the venue's documented tier
    burst: int | None = None
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_markets: int | None = None  # cap the catalogue (tests, small deployments)
    http_timeout_s: float = 10.0


def units(text: str | float | int, scale: int) -> int:
    """A venue's decimal string (``"0.5600"``, ``"10.00"``) as integer units of *scale*, exactly
    (half to even past the scale's precision). Hot path: every level of every delta."""
    if type(text) is str and scale in _POW10:
        # Plain "123.4500" (the venues' format): integer arithmetic, ~5x faster than Decimal.
        whole, _, frac = text.partition(".")
        digits = _POW10[scale]
        if whole.isdigit() and (not frac or frac.isdigit()) and len(frac) <= digits:
            return int(whole) * scale + (int(frac) * 10 ** (digits - len(frac)) if frac else 0)
    try:
        d = Decimal(str(text))
    except InvalidOperation:
        raise VenueError(f"not a number: {text!r}") from None
    if not d.is_finite():
        raise VenueError(f"not a number: {text!r}")
    return int((d * scale).to_integral_value(rounding=ROUND_HALF_EVEN))


_POW10 = {10**k: k for k in range(19)}


class Backoff:
    """Exponential backoff with full jitter: 0.5 s, 1 s, 2 s … up to a cap."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial, self.cap = initial, cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        base = min(self.cap, self.initial * (2**self.attempt))
        self.attempt += 1
        return float(base / 2 + self._rng.uniform(0, base / 2))

    def reset(self) -> None:
        self.attempt = 0


class TokenBucket:
    """Client-side rate limit: *rate* requests a second, bursts of *burst*."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._at = clock()
        self._clock = clock
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Take one token, waiting for it if need be; returns the seconds waited."""
        waited = 0.0
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
                self._at = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                delay = (1 - self._tokens) / self.rate
                waited += delay
                await asyncio.sleep(delay)


@dataclass
class VenueStats:
    state: str = "stopped"  # stopped | connecting | connected | polling | reconnecting
    connected_since: float | None = None
    last_message: float | None = None
    messages: int = 0
    resyncs: int = 0  # book re-snapshots after a gap, a reconnect or a tick change
    reconnects: int = 0
    stalls: int = 0
    errors: int = 0
    throttled: int = 0  # 429s and rate-limit waits
    last_error: str | None = None
    catalogue_refreshed: float | None = None
    note: str | None = None


class LiveVenue(VenueAdapter):
    """Base of the live connectors; see the module docstring for the contract."""

    mode = "live"
    #: REST read limit when the config does not set one (each venue: its documented tier).
    reads_per_s: float = 10.0
    burst: int = 20

    def __init__(self, config: LiveConfig, *, clock: Clock, http: httpx.AsyncClient | None = None) -> None:
        self.name = config.venue
        self.config = config
        self.clock = clock
        #: Book symbols someone uses: :meth:`feed` keeps exactly these live.
        self.wanted: set[str] = set()
        self.stats = VenueStats()
        self.limiter = TokenBucket(config.reads_per_s or self.reads_per_s, config.burst or self.burst)
        self._http = http
        self._own_http = http is None
        self._sink: Sink | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._changed: asyncio.Event | None = None
        self._listed: dict[str, MarketSpec] = {}  # book symbol -> last listed spec
        self._events_listed: dict[str, EventSpec] = {}

    # -- the pull side of VenueAdapter: a live venue pushes instead ------------------------------
    def catalogue(self) -> Catalogue:
        return Catalogue(())

    def initial_books(self) -> Mapping[str, Book]:
        return {}

    def advance(self, until_ms: int) -> Iterable[BookEvent]:
        return ()

    def next_event_ms(self) -> int | None:
        return None

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.config.http_timeout_s,
                                           headers={"User-Agent": "sequence-market"})
        return self._http

    @property
    def changed(self) -> asyncio.Event:
        """Set when :attr:`wanted` changes; :meth:`feed` waits on it to (un)subscribe."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    async def start(self, sink: Sink) -> None:
        self._sink = sink
        self.stats.state = "connecting"
        self._tasks = [
            asyncio.create_task(self._supervise("catalogue", self._catalogue_loop),
                                name=f"sequence-{self.name}-catalogue"),
            asyncio.create_task(self._supervise("feed", self.feed), name=f"sequence-{self.name}-feed"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
        self.stats.state = "stopped"
        self.stats.connected_since = None

    def close(self) -> None:
        pass

    def ensure(self, book_symbol: str) -> None:
        if book_symbol not in self.wanted:
            self.wanted.add(book_symbol)
            self.changed.set()

    def release(self, book_symbol: str) -> None:
        if book_symbol in self.wanted:
            self.wanted.discard(book_symbol)
            self.changed.set()

    def status(self) -> dict[str, Any]:
        s = self.stats
        now = time.monotonic()
        return {
            "mode": self.mode,
            "state": s.state,
            "connected": s.state in ("connected", "polling"),
            "last_message_age_s": None if s.last_message is None else round(now - s.last_message, 3),
            "messages": s.messages,
            "resyncs": s.resyncs,
            "reconnects": s.reconnects,
            "stalls": s.stalls,
            "errors": s.errors,
            "throttled": s.throttled,
            "last_error": s.last_error,
            "subscribed": len(self.wanted),
            "markets": len(self._listed),
            "catalogue_age_s": None if s.catalogue_refreshed is None else round(now - s.catalogue_refreshed, 1),
            "note": s.note,
        }

    # -- for subclasses ------------------------------------------------------------------------
    def now_ms(self) -> int:
        return now_ms(self.clock)

    def emit(self, events: Sequence[BookEvent]) -> None:
        """Hand updates to the service (on the event loop thread)."""
        if events and self._sink is not None:
            self._sink.apply(events)

    def heard(self) -> None:
        """Call on every venue message: the stall watch and ``last_message_age_s`` read it."""
        self.stats.messages += 1
        self.stats.last_message = time.monotonic()

    def connected(self, state: str = "connected") -> None:
        self.stats.state = state
        self.stats.connected_since = time.monotonic()

    def reset_book(self, reset: BookReset, *, resync: bool = False) -> None:
        """Emit a snapshot; *resync*: it replaces a book that went out of step (counted)."""
        if resync:
            self.stats.resyncs += 1
        self.emit([reset])

    def list_markets(self, markets: Sequence[MarketSpec], events: Sequence[EventSpec] = ()) -> int:
        """Emit :class:`MarketListed` for markets that are new or changed; returns how many."""
        evs = {e.slug: e for e in events}
        out: list[BookEvent] = []
        ts = self.now_ms()
        for spec in markets:
            old = self._listed.get(spec.book_symbol)
            ev = evs.get(spec.event_slug or "")
            ev_changed = ev is not None and self._events_listed.get(ev.slug) != ev
            if old == spec and not ev_changed:
                continue
            self._listed[spec.book_symbol] = spec
            if ev is not None:
                self._events_listed[ev.slug] = ev
            out.append(MarketListed(ts, spec.book_symbol, spec, ev))
        self.emit(out)
        return len(out)

    async def recv(self, receive: Callable[[], Awaitable[Any]]) -> Any:
        """One message from *receive* (a socket's ``recv``), or :class:`Stalled` after
        ``stall_s`` of silence on an open socket."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for costs a task per message and can
        # swallow a cancel that arrives with a message (the feed would outlive stop()).
        try:
            async with asyncio.timeout(self.config.stall_s):
                msg = await receive()
        except TimeoutError:
            self.stats.stalls += 1
            raise Stalled(f"no message for {self.config.stall_s:g} s on an open socket") from None
        self.heard()
        return msg

    async def get_json(self, url: str, params: Mapping[str, Any] | None = None,
                       headers: Mapping[str, str] | None = None, *, attempts: int = 6) -> Any:
        """GET through the rate limiter; a 429 (with or without ``Retry-After``) and 5xx are
        retried with backoff; other 4xx raise :class:`VenueError` naming the status."""
        backoff = Backoff(self.config.backoff_initial_s, self.config.backoff_max_s)
        for attempt in range(attempts):
            if await self.limiter.acquire() > 0:
                self.stats.throttled += 1
            try:
                r = await self.http.get(url, params=params, headers=headers)
            except httpx.HTTPError as exc:
                if attempt == attempts - 1:
                    raise VenueError(f"GET {url}: {type(exc).__name__}") from exc
                await asyncio.sleep(backoff.next())
                continue
            if r.status_code == 429 or r.status_code >= 500:
                if r.status_code == 429:
                    self.stats.throttled += 1
                retry = r.headers.get("retry-after")
                delay = backoff.next()
                with contextlib.suppress(ValueError):
                    if retry is not None:
                        delay = max(0.0, float(retry))
                if attempt == attempts - 1:
                    raise VenueError(f"GET {url}: HTTP {r.status_code}")
                await asyncio.sleep(delay)
                continue
            if r.status_code >= 400:
                raise VenueError(f"GET {url}: HTTP {r.status_code}: {r.text[:200]}")
            try:
                return r.json()
            except ValueError as exc:
                raise VenueError(f"GET {url}: not JSON") from exc
        raise VenueError(f"GET {url}: gave up")  # pragma: no cover - the loop returns or raises

    # -- the subclass's part ----------------------------------------------------------------------
    @abstractmethod
    async def fetch_catalogue(self) -> tuple[list[MarketSpec], list[EventSpec]]:
        """Every open market (paged REST; at most ``max_markets``) and their events."""

    @abstractmethod
    async def fetch_book(self, book_symbol: str) -> BookReset:
        """One book's snapshot over REST."""

    @abstractmethod
    async def feed(self) -> None:
        """Keep :attr:`wanted` books live until cancelled. Raise to be restarted (after
        backoff); call :meth:`connected` once subscribed, :meth:`heard` (or use
        :meth:`recv`) per message, :meth:`reset_book` for snapshots, :meth:`emit` for deltas."""

    # -- loops --------------------------------------------------------------------------------------
    def delist_missing(self, markets: Sequence[MarketSpec]) -> int:
        """After a complete listing: markets listed before and absent now (settled, delisted)
        are listed again as inactive; returns how many."""
        present = {m.book_symbol for m in markets}
        gone = [replace(spec, active=False) for sym, spec in self._listed.items()
                if sym not in present and spec.active]
        return self.list_markets(gone) if gone else 0

    async def _catalogue_loop(self) -> None:
        while True:
            markets, events = await self.fetch_catalogue()
            n = self.list_markets(markets, events)
            cap = self.config.max_markets
            if cap is None or len(markets) < cap:  # a capped listing says nothing of the rest
                n += self.delist_missing(markets)
            self.stats.catalogue_refreshed = time.monotonic()
            log.info("%s: catalogue refreshed: %d markets (%d new or changed)", self.name, len(markets), n)
            await asyncio.sleep(self.config.catalogue_every_s)

    async def _supervise(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        backoff = Backoff(self.config.backoff_initial_s, self.config.backoff_max_s)
        while True:
            started = time.monotonic()
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.errors += 1
                self.stats.last_error = f"{what}: {type(exc).__name__}: {exc}"[:300]
                if what == "feed":
                    self.stats.state = "reconnecting"
                    self.stats.reconnects += 1
                    self.stats.connected_since = None
                    if self._sink is not None and self.wanted:
                        self._sink.unready(self.wanted)
                if time.monotonic() - started > 60:
                    backoff.reset()  # it ran healthy for a while: start the backoff over
                delay = backoff.next()
                log.warning("%s %s failed (%s); retrying in %.1fs", self.name, what, self.stats.last_error, delay)
                await asyncio.sleep(delay)
