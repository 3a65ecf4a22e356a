"""Polymarket market data, live: Gamma for the catalogue, the CLOB for books.

Three hosts, each a setting (``LiveConfig``):

* Gamma (``config.urls["gamma"]``, default ``https://gamma-api.polymarket.com``):
  ``GET /events?active=true&closed=false&limit=&offset=`` lists open events with
  their markets. Gamma answers ``closed=true`` rows when ``closed`` is omitted,
  so it is always sent; it silently clamps ``limit``, so paging advances by the
  rows received and stops at an empty page.
* CLOB REST (``config.api_url``, default ``https://clob.polymarket.com``):
  ``GET /book?token_id=`` — one token's book (404 "No orderbook exists for the
  requested token id"). Its sides come in no dependable order: best bid =
  max(bids), best ask = min(asks).
* Market WebSocket (``config.ws_url``, default
  ``wss://ws-subscriptions-clob.polymarket.com/ws/market``): the first message
  subscribes (``{"assets_ids": [...], "type": "market"}``), later ones add or
  drop assets (``{"assets_ids": [...], "operation": "subscribe"|"unsubscribe"}``).
  Events: ``book`` (a full snapshot; sent on subscribe and after trades),
  ``price_change`` (the absolute new size of levels, ``"0"`` removes; since
  2025-09 a ``price_changes`` array that may cover several assets),
  ``tick_size_change``, ``last_trade_price``; a frame may be a JSON array of
  events. The client sends the text ``PING`` every ``ping_s`` (the venue closes
  sockets that stop) and the venue answers ``PONG``.

Our model: one book per market, keyed by the YES token (``book_symbol``); the
service mirrors it for the NO token. Only YES tokens are subscribed. Entries
for any other asset (Polymarket repeats each change on the NO token, mirrored,
in the same ``price_change``) are ignored, so the NO side is always the
service's mirror of the YES book, never a second, possibly diverging copy.

No sequence numbers (hashes only): a delta is applied only once its book had a
snapshot on the current connection, and a reconnect rebuilds every book from
the venue's next ``book``. A book the venue does not snapshot over the socket
within ``snapshot_wait_s`` is fetched over REST instead (deltas older than that
snapshot's timestamp are dropped).

Rate limits are throttles (the venue delays, it does not refuse): the client
keeps under the documented tiers with two token buckets, ``/book`` 1,500 per
10 s and Gamma 300 per 10 s, sized so that no 10 s window ever exceeds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from ...book import Side
from ...catalogue import PREDICTION_PRICE_SCALE, EventSpec, MarketSpec
from ...clock import Clock
from ...events import BookEvent, BookReset, LevelUpdate, TickSizeChange, Trade
from .base import LiveConfig, LiveVenue, Stalled, TokenBucket, VenueError, units

__all__ = [
    "CLOB_URL",
    "GAMMA_URL",
    "WS_URL",
    "PolymarketLive",
    "is_placeholder",
    "parse_book",
    "parse_gamma_event",
    "parse_gamma_market",
    "parse_message",
    "parse_units",
]

GAMMA_URL = "https://gamma-api.polymarket.com"
CLOB_URL = "https://clob.polymarket.com"
WS_URL = "wss://ws-subscriptions-clob.polymarket.com/ws/market"

PRICE_SCALE = PREDICTION_PRICE_SCALE  # 10_000: ticks 0.1 … 0.0001, 0.005 and 0.0025 are whole units
SIZE_SCALE = 100  # as the simulator: shares to the cent (finer venue sizes round half to even)
MIN_NOTIONAL = 1.0  # a marketable BUY needs $1 (VENUES.md)
GAMMA_PAGE = 100
NO_BOOK = "No orderbook exists for the requested token id"
#: Documented tiers: (requests, per seconds).
BOOK_TIER = (1500, 10.0)
GAMMA_TIER = (300, 10.0)

_BID, _ASK = Side.BID, Side.ASK
_PRICE_DIGITS = 4
_SIZE_DIGITS = 2
_POW10: list[int] = [10**k for k in range(40)]

#: Unnamed placeholder outcomes of an augmented neg-risk event ("Person X", "Team AF").
_PLACEHOLDER_TITLE = re.compile(
    r"(?:person|team|player|candidate|option|company|country|club|driver|party|nominee|outcome)\s+[a-z]{1,2}",
    re.IGNORECASE,
)


# -- units ----------------------------------------------------------------------------------------
def parse_units(text: Any, digits: int) -> int:
    """A venue decimal string (``"0.48"``, ``".48"``, ``"219.217767"``) as integer units of
    ``10**digits``, rounded half to even past that precision. Hot path: no Decimal for plain
    decimal strings (the venue's format); anything else goes through :func:`units`."""
    if type(text) is str:
        whole: str
        frac: str
        whole, _, frac = text.partition(".")
        if (whole.isdigit() or (not whole and frac)) and (not frac or frac.isdigit()):
            w = int(whole) if whole else 0
            n = len(frac)
            if n <= digits:
                return w * _POW10[digits] + (int(frac) * _POW10[digits - n] if n else 0)
            q, r = divmod(int(frac), _POW10[n - digits])
            half = _POW10[n - digits]
            if 2 * r > half or (2 * r == half and q & 1):
                q += 1
            return w * _POW10[digits] + q
    return units(str(text) if isinstance(text, float) else text, _POW10[digits])


def _price(text: Any) -> int:
    return parse_units(text, _PRICE_DIGITS)


def _size(text: Any) -> int:
    return parse_units(text, _SIZE_DIGITS)


def _ms(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# -- Gamma -> MarketSpec / EventSpec ----------------------------------------------------------------
def _json_list(value: Any) -> list[Any]:
    """Gamma's ``outcomes``/``outcomePrices``/``clobTokenIds``: JSON-encoded strings (a list is
    accepted too)."""
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value.strip():
        try:
            out = json.loads(value)
        except ValueError:
            return []
        return out if isinstance(out, list) else []
    return []


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def is_placeholder(market: Mapping[str, Any], event: Mapping[str, Any] | None = None) -> bool:
    """Whether a Gamma market is a placeholder outcome of a multi-outcome event.

    Gamma has one explicit flag, ``negRiskOther`` (the "Other" market of an augmented
    neg-risk event). Unnamed placeholders ("Person X", "Team AF") carry no flag of their
    own: they exist only in events with ``negRiskAugmented`` and are recognised by their
    ``groupItemTitle``. Either makes ``is_placeholder_outcome`` true.
    """
    if market.get("negRiskOther"):
        return True
    augmented = bool(market.get("negRiskAugmented") or (event or {}).get("negRiskAugmented"))
    title = str(market.get("groupItemTitle") or "").strip()
    return augmented and (title.lower() == "other" or _PLACEHOLDER_TITLE.fullmatch(title) is not None)


def parse_gamma_market(market: Mapping[str, Any], event: Mapping[str, Any] | None = None) -> MarketSpec | None:
    """One Gamma market as a :class:`MarketSpec` shaped like the simulator's, or ``None`` when it
    has no order book to follow (``enableOrderBook`` false, no two CLOB tokens).

    Tokens pair with outcomes by index; the YES token is the one whose outcome is "Yes"
    (whatever its position). A two-outcome market without Yes/No ("Lakers"/"Celtics")
    books its first outcome as YES and lists the outcome names in ``extra["outcomes"]``.
    ``active`` is ``active and not closed and acceptingOrders``.
    """
    if not market.get("enableOrderBook"):
        return None
    tokens = [str(t) for t in _json_list(market.get("clobTokenIds"))]
    outcomes = [str(o) for o in _json_list(market.get("outcomes"))]
    if len(tokens) != 2 or len(outcomes) != 2 or not all(tokens):
        return None
    names = [o.strip().lower() for o in outcomes]
    extra: dict[str, Any] = {
        "condition_id": market.get("conditionId"),
        "question": market.get("question"),
        "accepting_orders": bool(market.get("acceptingOrders")),
        "enable_order_book": True,
    }
    if sorted(names) == ["no", "yes"]:
        yes_i = names.index("yes")
    else:
        yes_i = 0
        extra["outcomes"] = outcomes
    yes, no = tokens[yes_i], tokens[1 - yes_i]
    slug = str(market.get("slug") or market.get("conditionId") or yes)
    ev = event or {}
    multi = len(ev.get("markets") or ()) > 1
    outcome_name = str(market.get("groupItemTitle") or "") if multi else ""
    if not outcome_name:
        outcome_name = outcomes[yes_i]
    tick_size = market.get("orderPriceMinTickSize")
    try:
        tick = units(str(tick_size), PRICE_SCALE) if tick_size not in (None, "") else 100
    except VenueError:
        tick = 100
    if tick <= 0:
        tick = 100
    bid, ask = _float(market.get("bestBid")), _float(market.get("bestAsk"))
    if yes_i == 1:  # Gamma quotes the first outcome: mirror it onto the YES token
        bid, ask = (None if ask is None else round(1 - ask, 6)), (None if bid is None else round(1 - bid, 6))
    min_size = _float(market.get("orderMinSize"))
    return MarketSpec(
        venue="polymarket",
        slug=slug,
        title=str(market.get("question") or slug),
        instrument_type="prediction",
        book_symbol=yes,
        event_slug=str(ev.get("slug") or slug),
        outcome_name=outcome_name,
        yes_token_id=yes,
        no_token_id=no,
        active=bool(market.get("active")) and not market.get("closed") and bool(market.get("acceptingOrders")),
        close_time=market.get("endDate") or ev.get("endDate"),
        tick=tick,
        price_scale=PRICE_SCALE,
        size_scale=SIZE_SCALE,
        min_notional=MIN_NOTIONAL,
        min_order_size=5.0 if min_size is None else min_size,
        is_placeholder_outcome=is_placeholder(market, event),
        neg_risk=bool(market.get("negRisk")),
        volume=round(_float(market.get("volumeNum")) or _float(market.get("volume")) or 0.0, 2),
        listed_best_bid=bid,
        listed_best_ask=ask,
        listed_liquidity=_float(market.get("liquidityNum")) or _float(market.get("liquidity")),
        extra=extra,
    )


def _category(event: Mapping[str, Any]) -> str | None:
    if event.get("category"):
        return str(event["category"])
    for tag in event.get("tags") or ():
        if isinstance(tag, Mapping) and tag.get("label"):
            return str(tag["label"])
    return None


def parse_gamma_event(
    event: Mapping[str, Any], keep: Callable[[Mapping[str, Any]], bool] | None = None
) -> tuple[EventSpec | None, list[MarketSpec]]:
    """A Gamma event and its open markets (closed ones too where ``keep(market)`` says so,
    listed inactive). ``None`` for an event with no market to list."""
    specs = []
    for m in event.get("markets") or ():
        if m.get("closed") and not (keep and keep(m)):
            continue
        spec = parse_gamma_market(m, event)
        if spec is not None:
            specs.append(spec)
    if not specs:
        return None, []
    slug = str(event.get("slug") or specs[0].event_slug)
    ev = EventSpec(
        venue="polymarket",
        slug=slug,
        title=str(event.get("title") or slug),
        markets=tuple(s.slug for s in specs),
        close_time=event.get("endDate"),
        neg_risk=bool(event.get("negRisk") or event.get("enableNegRisk")),
        multi_outcome=len(event.get("markets") or ()) > 1,
        category=_category(event),
    )
    return ev, specs


# -- books and socket messages ---------------------------------------------------------------------
def _levels(rows: Iterable[Mapping[str, Any]] | None, best_high: bool) -> tuple[tuple[int, int], ...]:
    book: dict[int, int] = {}
    for row in rows or ():
        size = _size(row["size"])
        if size > 0:
            book[_price(row["price"])] = size
    return tuple(sorted(book.items(), reverse=best_high))


def parse_book(msg: Mapping[str, Any], ts_ms: int = 0) -> BookReset:
    """A REST ``/book`` answer or a WS ``book`` event as a :class:`BookReset` of its token, sides
    best first whatever order the venue sent (best bid = max, best ask = min); the tick when
    the message carries ``tick_size``; the venue's ``timestamp`` (else *ts_ms*)."""
    tick = msg.get("tick_size")
    return BookReset(
        _ms(msg.get("timestamp"), ts_ms),
        str(msg["asset_id"]),
        _levels(msg.get("bids") or msg.get("buys"), True),
        _levels(msg.get("asks") or msg.get("sells"), False),
        None if tick in (None, "") else _price(str(tick)),
    )


def parse_message(
    data: Any, books: Mapping[str, int], ts_ms: int = 0, trades: Iterable[str] | None = None
) -> list[BookEvent]:
    """A decoded WS frame (one event or a list of them) as book events, for tests and tools.

    *books* maps the YES tokens whose book is live to the timestamp below which deltas are
    stale (0: none); other assets' deltas are dropped. ``book`` events become
    :class:`BookReset` whatever *books* says. The connector runs the same code
    (:meth:`PolymarketLive.on_event`)."""
    out: list[BookEvent] = []
    tradable = set(books if trades is None else trades)
    for ev in data if isinstance(data, list) else [data]:
        if ev.get("event_type") == "book":
            out.append(parse_book(ev, ts_ms))
        else:
            _deltas(ev, books, tradable, ts_ms, out)
    return out


def _deltas(ev: Mapping[str, Any], live: Mapping[str, int], subscribed: Any, now: int,
            out: list[BookEvent]) -> None:
    """Append the events of one non-``book`` WS event to *out*. Hot path."""
    kind = ev.get("event_type")
    if kind == "price_change":
        ts = _ms(ev.get("timestamp"), now)
        changes = ev.get("price_changes")
        if changes is None:  # the pre-2025-09 shape: one asset, "changes": [{price, side, size}]
            asset = ev.get("asset_id")
            since = live.get(asset)  # type: ignore[arg-type]
            if since is None or ts < since:
                return
            changes = [{**c, "asset_id": asset} for c in ev.get("changes") or ()]
        append = out.append
        get = live.get
        for c in changes:
            asset = c["asset_id"]
            since = get(asset)
            if since is None or ts < since:
                continue
            append(LevelUpdate(ts, asset, _BID if c["side"] == "BUY" else _ASK, _price(c["price"]),
                               _size(c["size"])))
    elif kind == "tick_size_change":
        asset = str(ev.get("asset_id"))
        if asset in subscribed:
            out.append(TickSizeChange(_ms(ev.get("timestamp"), now), asset, _price(ev["new_tick_size"])))
    elif kind == "last_trade_price":
        asset = str(ev.get("asset_id"))
        if asset in subscribed:
            # side is the taker's: a BUY lifted the asks, a SELL hit the bids.
            side = _ASK if ev.get("side") == "BUY" else _BID
            out.append(Trade(_ms(ev.get("timestamp"), now), asset, side, _price(ev["price"]), _size(ev["size"])))
    # best_bid_ask, new_market, market_resolved (custom features, not asked for): ignored


# -- the connector ------------------------------------------------------------------------------
def _bucket(tier: tuple[int, float]) -> TokenBucket:
    """A bucket that never lets more than ``n`` requests into any ``per``-second window:
    burst b plus rate r over the window stays ≤ n."""
    n, per = tier
    burst = max(1, n // 10)
    return TokenBucket(max(n - burst, 1) / per, burst)


class _Session:
    """One WebSocket connection's subscription state."""

    __slots__ = ("live", "pending", "sent_first", "subscribed")

    def __init__(self) -> None:
        self.subscribed: set[str] = set()
        #: YES token -> timestamp below which deltas are stale; only these books take deltas.
        self.live: dict[str, int] = {}
        #: YES token -> monotonic deadline for its socket snapshot (then REST).
        self.pending: dict[str, float] = {}
        self.sent_first = False


class PolymarketLive(LiveVenue):
    """Polymarket's public market data (Gamma + CLOB + market WebSocket); see the module doc."""

    #: permessage-deflate on the market socket: off, since inflating a frame costs more CPU than
    #: parsing it (≈ half the throughput); ``"deflate"`` trades that CPU for bandwidth.
    compression: str | None = None

    def __init__(self, config: LiveConfig, *, clock: Clock, http: Any = None,
                 book_tier: tuple[int, float] = BOOK_TIER, gamma_tier: tuple[int, float] = GAMMA_TIER) -> None:
        super().__init__(config, clock=clock, http=http)
        if config.reads_per_s is None and config.burst is None:
            self.limiter = _bucket(book_tier)  # the CLOB's /book tier unless the config sets one
        self.gamma_limiter = _bucket(gamma_tier)
        #: Seconds to wait for a subscribed book's socket snapshot before asking REST.
        self.snapshot_wait_s = min(5.0, config.stall_s)
        #: Seconds between asking again for a book the venue says does not exist (404).
        self.missing_retry_s = 60.0
        self._had_book: set[str] = set()  # books that had a snapshot on an earlier connection
        self._rebuilding: set[str] = set()
        self._missing: set[str] = set()  # 404: no order book at the venue
        self._wake: asyncio.Event | None = None

    # -- REST ---------------------------------------------------------------------------------
    @property
    def gamma_url(self) -> str:
        return self.config.urls.get("gamma", GAMMA_URL).rstrip("/")

    async def _gamma(self, path: str, params: Mapping[str, Any]) -> Any:
        if await self.gamma_limiter.acquire() > 0:
            self.stats.throttled += 1
        return await self.get_json(self.gamma_url + path, params)

    async def fetch_catalogue(self) -> tuple[list[MarketSpec], list[EventSpec]]:
        cap = self.config.max_markets
        markets: dict[str, MarketSpec] = {}
        events: dict[str, EventSpec] = {}
        seen: set[str] = set()
        offset = 0

        def keep(m: Mapping[str, Any]) -> bool:  # a listed market that closed: relist it inactive
            tokens = _json_list(m.get("clobTokenIds"))
            return any(str(t) in self._listed for t in tokens)

        while cap is None or len(markets) < cap:
            page = await self._gamma("/events", {"active": "true", "closed": "false", "limit": GAMMA_PAGE,
                                                 "offset": offset, "order": "volume", "ascending": "false"})
            if not isinstance(page, list):
                raise VenueError("Gamma /events: expected a list of events")
            new = [e for e in page if str(e.get("id") or e.get("slug")) not in seen]
            if not new:
                break  # an empty page (the end), or one that repeats (offset ignored)
            for e in new:
                seen.add(str(e.get("id") or e.get("slug")))
                ev, specs = parse_gamma_event(e, keep)
                if ev is None:
                    continue
                if cap is not None:
                    specs = specs[: cap - len(markets)]
                    if not specs:
                        break
                    ev = replace(ev, markets=tuple(s.slug for s in specs))
                for s in specs:
                    markets[s.book_symbol] = s
                events[ev.slug] = ev
                if cap is not None and len(markets) >= cap:
                    break
            offset += len(page)
        return list(markets.values()), list(events.values())

    async def fetch_book(self, book_symbol: str) -> BookReset:
        data = await self.get_json(self.config.api_url.rstrip("/") + "/book", {"token_id": book_symbol})
        if not isinstance(data, Mapping) or "asset_id" not in data:
            raise VenueError("CLOB /book: not a book")
        return parse_book(data, self.now_ms())

    # -- the socket ---------------------------------------------------------------------------
    async def recv(self, receive: Callable[[], Any]) -> Any:
        """:meth:`LiveVenue.recv` without a timer per message (one costs as much as parsing the
        frame): :meth:`_watch` raises the same :class:`Stalled` after ``stall_s`` of silence."""
        msg = await receive()
        stats = self.stats
        stats.messages += 1
        stats.last_message = time.monotonic()
        return msg

    async def _watch(self) -> None:
        """Raise :class:`Stalled` once the socket has been silent for ``stall_s`` (PONGs count)."""
        stall = self.config.stall_s
        opened = time.monotonic()
        while True:
            idle = time.monotonic() - max(opened, self.stats.last_message or 0.0)
            if idle >= stall:
                self.stats.stalls += 1
                raise Stalled(f"no message for {stall:g} s on an open socket")
            await asyncio.sleep(stall - idle)

    async def feed(self) -> None:
        session = _Session()
        self._wake = asyncio.Event()
        self._rebuilding = set(self._had_book & self.wanted)
        self.changed.clear()
        async with connect(self.config.ws_url, ping_interval=None, max_size=2**24, close_timeout=2,
                           compression=self.compression, open_timeout=self.config.http_timeout_s,
                           user_agent_header="sequence-market") as ws:
            await self._sync(ws, session)
            self.connected()
            self._update_note()
            tasks = [
                asyncio.create_task(self._read(ws, session), name="polymarket-read"),
                asyncio.create_task(self._watch(), name="polymarket-watch"),
                asyncio.create_task(self._ping(ws), name="polymarket-ping"),
                asyncio.create_task(self._follow(ws, session), name="polymarket-follow"),
                asyncio.create_task(self._snapshots(session), name="polymarket-snapshots"),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for t in tasks:
                if t in done and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            raise VenueError("market socket ended")

    async def _sync(self, ws: ClientConnection, s: _Session) -> None:
        """Bring the socket's subscription to :attr:`wanted`: subscribe additions (the first
        message is the channel subscription), unsubscribe removals."""
        want = set(self.wanted)
        add, drop = sorted(want - s.subscribed), sorted(s.subscribed - want)
        if drop:
            await ws.send(json.dumps({"assets_ids": drop, "operation": "unsubscribe"}))
            for a in drop:
                s.subscribed.discard(a)
                s.live.pop(a, None)
                s.pending.pop(a, None)
                self._had_book.discard(a)  # a later subscription starts afresh, not a resync
                self._rebuilding.discard(a)
                self._missing.discard(a)
        if add:
            if s.sent_first:
                await ws.send(json.dumps({"assets_ids": add, "operation": "subscribe"}))
            else:
                await ws.send(json.dumps({"assets_ids": add, "type": "market"}))
                s.sent_first = True
            s.subscribed.update(add)
            deadline = time.monotonic() + self.snapshot_wait_s
            for a in add:
                s.pending[a] = deadline
            assert self._wake is not None
            self._wake.set()
        if add or drop:
            self._update_note()

    async def _follow(self, ws: ClientConnection, s: _Session) -> None:
        changed = self.changed
        while True:
            await changed.wait()
            changed.clear()
            await self._sync(ws, s)

    async def _ping(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.config.ping_s)
            await ws.send("PING")

    async def _read(self, ws: ClientConnection, s: _Session) -> None:
        recv, on_frame = ws.recv, self.on_frame
        while True:
            on_frame(await self.recv(recv), s)

    def on_frame(self, raw: str | bytes, s: _Session) -> None:
        """One socket frame: PONG, or JSON events; deltas go out in one :meth:`emit`."""
        if raw == "PONG":
            return
        try:
            data = json.loads(raw)
        except ValueError:
            text = raw if isinstance(raw, str) else raw.decode(errors="replace")
            raise VenueError(f"the venue answered {text[:100]!r}") from None
        out: list[BookEvent] = []
        now = self.now_ms()  # for an event without a timestamp
        if type(data) is dict:
            if data.get("event_type") == "book":
                self._snapshot(data, s)
            else:
                _deltas(data, s.live, s.subscribed, now, out)
        elif type(data) is list:
            for ev in data:
                if ev.get("event_type") == "book":
                    if out:
                        self.emit(out)  # keep the order: deltas before this snapshot go first
                        out = []
                    self._snapshot(ev, s)
                else:
                    _deltas(ev, s.live, s.subscribed, now, out)
        if out:
            self.emit(out)

    def _snapshot(self, msg: Mapping[str, Any], s: _Session) -> None:
        asset = msg.get("asset_id")
        if asset not in s.subscribed:
            return  # the NO token's, or an asset just unsubscribed
        reset = parse_book(msg, self.now_ms())
        self._reset(reset, s, since=0)

    def _reset(self, reset: BookReset, s: _Session, since: int) -> None:
        sym = reset.symbol
        resync = sym in self._had_book and sym not in s.live
        s.live[sym] = since
        s.pending.pop(sym, None)
        self._had_book.add(sym)
        self.reset_book(reset, resync=resync)
        if sym in self._rebuilding or sym in self._missing:
            self._rebuilding.discard(sym)
            self._missing.discard(sym)
            self._update_note()

    async def _snapshots(self, s: _Session) -> None:
        """REST snapshots for subscribed books the socket did not snapshot in time."""
        assert self._wake is not None
        wake = self._wake
        while True:
            waiting = {a: d for a, d in s.pending.items() if a not in s.live}
            if not waiting:
                wake.clear()
                await wake.wait()
                continue
            delay = min(waiting.values()) - time.monotonic()
            if delay > 0:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)
                continue
            now = time.monotonic()
            for asset in [a for a, d in waiting.items() if d <= now]:
                await self._rest_snapshot(asset, s)

    async def _rest_snapshot(self, asset: str, s: _Session) -> None:
        try:
            reset = await self.fetch_book(asset)
        except VenueError as exc:
            if asset not in s.pending or asset in s.live:
                return
            if "HTTP 404" in str(exc):  # "No orderbook exists for the requested token id"
                # Not an empty book: there is none to trade against. The book stays not ready (a
                # quote answers 503 with the note) and is asked for again now and then.
                self._missing.add(asset)
                s.pending[asset] = time.monotonic() + self.missing_retry_s
                self._update_note()
                return
            self.stats.errors += 1
            self.stats.last_error = f"snapshot: {exc}"[:300]
            s.pending[asset] = time.monotonic() + self.snapshot_wait_s
            return
        if asset in s.pending and asset not in s.live:  # the socket's book may have come meanwhile
            self._reset(reset, s, since=reset.ts_ms)

    def _update_note(self) -> None:
        parts = []
        if self._rebuilding:
            parts.append(f"reconnected: rebuilding {len(self._rebuilding)} book(s) from the venue's next "
                         "snapshot (deltas are held back until then)")
        missing = self._missing & self.wanted
        if missing:
            parts.append(f"{len(missing)} book(s) have no order book at Polymarket (it answers 404: "
                         f"\"{NO_BOOK}\"); asked again every {self.missing_retry_s:g} s")
        self.stats.note = "; ".join(parts) or None
