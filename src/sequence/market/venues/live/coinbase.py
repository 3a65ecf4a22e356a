"""Coinbase Advanced Trade market data, live: products over REST, books over the WebSocket.

Wire formats (docs.cdp.coinbase.com, Advanced Trade API; see /work/shared/docs/VENUES.md):

- ``GET {api_url}/market/products?product_type=SPOT&limit=&offset=`` (public, no JWT) →
  ``{"products": [{product_id, price, volume_24h, base_increment, quote_increment,
  price_increment, base_min_size, quote_min_size, status, trading_disabled, cancel_only,
  product_type, base_name, quote_name, base_currency_id, quote_currency_id, …}],
  "num_products": N}``; every number is a string. Paged by ``offset``.
- ``GET {api_url}/market/product_book?product_id=&limit=`` →
  ``{"pricebook": {"product_id", "bids": [{"price", "size"}], "asks": [...], "time"},
  "last", "mid_market", "spread_bps", "spread_absolute"}``; both sides best first.
- WebSocket ``wss://advanced-trade-ws.coinbase.com``: one channel per subscribe message,
  ``{"type": "subscribe", "product_ids": [...], "channel": "level2"}`` (a ``jwt`` is optional
  for the public channels and not sent). Every message carries ``sequence_num``, counted per
  *connection* over every message on it (heartbeats, acks and trades too). ``l2_data``
  events are a ``snapshot`` (the whole book) and then ``update``\\ s whose ``new_quantity``
  is the level's absolute size (``"0"`` removes it); sides ``bid`` and ``offer``.
  ``market_trades`` carries prints (``side`` is the maker's side). ``heartbeats`` (once a
  second) keeps the connection open: without it the venue closes idle channels after 60–90 s.

Units: the book's price unit is the product's ``price_increment`` rounded up to a power of
ten (``0.01`` → cents, ``price_scale=100``), sizes likewise from ``base_increment``
(``0.00000001`` → ``size_scale=100_000_000``), exactly as the simulator keeps BTC-USD,
ETH-USD and SOL-USD. A product's units are fixed the first time it is listed (its book
lives in them); a later ``price_increment`` change becomes a :class:`TickSizeChange`.

Resync rules: a ``sequence_num`` that is not the previous one plus one means a message on
the connection was lost, so every subscribed book is suspect: the connector unsubscribes
and resubscribes ``level2`` for all of them on the same connection, drops their updates
until each new snapshot arrives, and replaces each book from it (a counted resync). A
reconnect (stall, disconnect, error) rebuilds every wanted book the same way.

Stalls: the venue sends a heartbeat every second, so a socket silent for ``stall_s`` is dead
though open. A watchdog task checks the time of the last message four times per ``stall_s``
and drops such a socket; the feed then raises :class:`Stalled` (counted) and the supervisor
reconnects. (No timer per message: re-arming one cost about 40% of the handling of a
one-update message, and ``LiveVenue.recv``'s ``asyncio.wait_for`` can swallow the feed's
cancellation on Python 3.11 when a message lands at the same moment.) Hot path: the socket
does not offer permessage-deflate (inflating every frame cost more than parsing it), and an
update costs two integer conversions of decimal strings and one ``LevelUpdate``.

A refused subscription (``{"type": "error", …}``; the venue answers requests in order) for
several products is retried one product at a time; a product refused alone is left out and
``status()["note"]`` says so until it is released or the connection is renewed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Container, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ...book import Side
from ...catalogue import EventSpec, MarketSpec
from ...events import BookEvent, BookReset, LevelUpdate, TickSizeChange, Trade
from .base import LiveVenue, Stalled, VenueError, units

__all__ = [
    "CoinbaseLive",
    "l2_snapshot",
    "l2_updates",
    "market_trades",
    "parse_book",
    "parse_product",
    "parse_products",
    "product_units",
]

log = logging.getLogger("sequence.market.live.coinbase")

VENUE = "coinbase"
#: Products asked for per page of ``GET /market/products``.
PAGE_SIZE = 250
#: Levels asked for per side by :meth:`CoinbaseLive.fetch_book` (the WS snapshot is the whole book).
BOOK_LIMIT = 1000
#: A full BTC-USD level2 snapshot runs to megabytes; the official client allows 10 MiB.
WS_MAX_SIZE = 64 * 1024 * 1024

#: ``l2_data`` sides (``offer`` on the wire; ``ask`` accepted too).
L2_SIDES = {"bid": Side.BID, "offer": Side.ASK, "ask": Side.ASK}
#: ``market_trades`` side is the maker's: a BUY maker rested on the bid, which was hit.
TRADE_SIDES = {"BUY": Side.BID, "SELL": Side.ASK}


# -- pure parsers: venue JSON -> our specs and events ------------------------------------------
def _decimal(text: Any) -> Decimal | None:
    if text is None or text == "":
        return None
    try:
        d = Decimal(str(text))
    except InvalidOperation:
        return None
    return d if d.is_finite() and d > 0 else None


def _scale_for(increment: Decimal) -> int:
    """The smallest power of ten that makes *increment* a whole number of units."""
    exponent = increment.normalize().as_tuple().exponent
    return 10 ** max(0, -exponent) if isinstance(exponent, int) else 1


def product_units(row: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(price_scale, size_scale, tick)`` of a product row: the increments as powers of ten."""
    pinc = _decimal(row.get("price_increment")) or _decimal(row.get("quote_increment")) or Decimal("0.01")
    binc = _decimal(row.get("base_increment")) or Decimal("0.00000001")
    price_scale = _scale_for(pinc)
    return price_scale, _scale_for(binc), int(pinc * price_scale)


def _float(text: Any) -> float:
    try:
        return float(text) if text not in (None, "") else 0.0
    except (TypeError, ValueError):
        return 0.0


def parse_product(row: Mapping[str, Any]) -> MarketSpec | None:
    """One ``/market/products`` row as the simulator builds a Coinbase :class:`MarketSpec`;
    ``None`` for what is not a spot book (futures, perpetuals) or has no id."""
    pid = row.get("product_id")
    if not isinstance(pid, str) or not pid:
        return None
    if (row.get("product_type") or "SPOT") != "SPOT":
        return None
    price_scale, size_scale, tick = product_units(row)
    base, _, quote = pid.partition("-")
    base_ccy = row.get("base_currency_id") or row.get("base_display_symbol") or base
    quote_ccy = row.get("quote_currency_id") or row.get("quote_display_symbol") or quote
    base_name, quote_name = row.get("base_name"), row.get("quote_name")
    title = f"{base_name} / {quote_name}" if base_name and quote_name else (row.get("display_name") or pid)
    trading_disabled = bool(row.get("trading_disabled"))
    status = str(row.get("status") or "")
    active = status == "online" and not trading_disabled and not bool(row.get("cancel_only"))
    return MarketSpec(
        venue=VENUE,
        slug=pid,
        title=title,
        instrument_type="spot",
        book_symbol=pid,
        symbol=pid,
        active=active,
        tick=tick,
        price_scale=price_scale,
        size_scale=size_scale,
        min_notional=_float(row.get("quote_min_size")),
        min_order_size=_float(row.get("base_min_size")),
        volume=round(_float(row.get("volume_24h")), 8),
        # The products listing has no best bid/ask or depth (only the last price).
        listed_best_bid=None,
        listed_best_ask=None,
        listed_liquidity=None,
        extra={
            "product_id": pid,
            "base_currency": base_ccy,
            "quote_currency": quote_ccy,
            "price_increment": row.get("price_increment") or row.get("quote_increment"),
            "quote_increment": row.get("quote_increment"),
            "base_increment": row.get("base_increment"),
            "base_min_size": row.get("base_min_size"),
            "quote_min_size": row.get("quote_min_size"),
            "status": status,
            "trading_disabled": trading_disabled,
        },
    )


def parse_products(payload: Mapping[str, Any]) -> list[MarketSpec]:
    """Every spot product of one ``/market/products`` page."""
    out = []
    for row in payload.get("products") or ():
        spec = parse_product(row)
        if spec is not None:
            out.append(spec)
    return out


def _levels(rows: Any, price_scale: int, size_scale: int, *, descending: bool) -> tuple[tuple[int, int], ...]:
    levels = {}
    for row in rows or ():
        size = units(row["size"], size_scale)
        if size > 0:
            levels[units(row["price"], price_scale)] = size
    return tuple(sorted(levels.items(), reverse=descending))


def parse_book(payload: Mapping[str, Any], *, price_scale: int, size_scale: int, ts_ms: int,
               tick: int | None = None) -> BookReset:
    """A ``/market/product_book`` answer as a :class:`BookReset` (sides best first)."""
    book = payload.get("pricebook")
    if not isinstance(book, Mapping) or not book.get("product_id"):
        raise VenueError("product_book: no pricebook in the answer")
    return BookReset(
        ts_ms,
        str(book["product_id"]),
        _levels(book.get("bids"), price_scale, size_scale, descending=True),
        _levels(book.get("asks"), price_scale, size_scale, descending=False),
        tick,
    )


def l2_snapshot(event: Mapping[str, Any], *, price_scale: int, size_scale: int, ts_ms: int,
                tick: int | None = None) -> BookReset:
    """An ``l2_data`` ``snapshot`` event as a :class:`BookReset` (sides best first)."""
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    for u in event.get("updates") or ():
        size = units(u["new_quantity"], size_scale)
        if size <= 0:
            continue
        side = L2_SIDES[u["side"]]
        (bids if side is Side.BID else asks)[units(u["price_level"], price_scale)] = size
    return BookReset(ts_ms, event["product_id"], tuple(sorted(bids.items(), reverse=True)),
                     tuple(sorted(asks.items())), tick)


def l2_updates(event: Mapping[str, Any], *, price_scale: int, size_scale: int, ts_ms: int,
               out: list[BookEvent] | None = None) -> list[BookEvent]:
    """An ``l2_data`` ``update`` event as absolute :class:`LevelUpdate`\\ s (appended to *out*)."""
    if out is None:
        out = []
    pid = event["product_id"]
    sides = L2_SIDES
    append = out.append
    for u in event["updates"]:
        append(LevelUpdate(ts_ms, pid, sides[u["side"]], units(u["price_level"], price_scale),
                           units(u["new_quantity"], size_scale)))
    return out


def market_trades(event: Mapping[str, Any], scales: Mapping[str, tuple[int, int, int]], ts_ms: int,
                  out: list[BookEvent] | None = None, *,
                  products: Container[str] | None = None) -> list[BookEvent]:
    """A ``market_trades`` ``update`` event as :class:`Trade`\\ s for the products in *scales*
    (and *products*, if given); a ``snapshot`` is past prints, already in the listed volume:
    nothing."""
    if out is None:
        out = []
    if event.get("type") != "update":
        return out
    for t in event.get("trades") or ():
        pid = t.get("product_id")
        sc = scales.get(pid) if isinstance(pid, str) else None
        side = TRADE_SIDES.get(t.get("side"))
        if sc is None or side is None or (products is not None and pid not in products):
            continue
        out.append(Trade(ts_ms, pid, side, units(t["price"], sc[0]), units(t["size"], sc[1])))
    return out


# -- the connector --------------------------------------------------------------------------------
class _Session:
    """One WebSocket connection's state (``sequence_num`` is per connection)."""

    __slots__ = ("gaps", "next_seq", "opened", "pending", "requests", "stalled", "subs")

    def __init__(self) -> None:
        self.opened = time.monotonic()
        self.stalled = False
        self.next_seq = 0  # Coinbase numbers each connection's messages from 0
        self.subs: set[str] = set()  # products subscribed (level2 and market_trades) on this socket
        self.pending: set[str] = set()  # subscribed, waiting for a snapshot: their updates are dropped
        #: Sent subscribe/unsubscribe requests, oldest first; each ``subscriptions`` ack or
        #: ``error`` answers the oldest.
        self.requests: deque[tuple[str, str, tuple[str, ...]]] = deque()
        self.gaps = 0


class CoinbaseLive(LiveVenue):
    """Coinbase Advanced Trade market data (see the module docstring)."""

    page_size = PAGE_SIZE
    book_limit = BOOK_LIMIT
    #: Channels kept per wanted product (``level2`` books, ``market_trades`` prints).
    channels: tuple[str, ...] = ("level2", "market_trades")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: product -> (price_scale, size_scale, tick) of its book, fixed at first listing.
        self._units: dict[str, tuple[int, int, int]] = {}
        #: Books that had a snapshot: the next one is a resync.
        self._synced: set[str] = set()
        #: Products whose level2 subscription the venue refused -> its words.
        self._refused: dict[str, str] = {}
        #: Products whose new price increment does not fit their book's units.
        self._coarse: dict[str, str] = {}

    # -- REST ------------------------------------------------------------------------------------
    @property
    def _base(self) -> str:
        return self.config.api_url.rstrip("/")

    async def fetch_catalogue(self) -> tuple[list[MarketSpec], list[EventSpec]]:
        cap = self.config.max_markets
        out: list[MarketSpec] = []
        seen: set[str] = set()
        offset = 0
        while cap is None or len(out) < cap:
            data = await self.get_json(f"{self._base}/market/products",
                                       {"product_type": "SPOT", "limit": self.page_size, "offset": offset})
            rows = data.get("products") if isinstance(data, Mapping) else None
            if not rows:
                break
            fresh = 0
            for row in rows:
                pid = row.get("product_id")
                if pid in seen:
                    continue
                seen.add(pid)
                fresh += 1
                spec = parse_product(row)
                if spec is not None and (cap is None or len(out) < cap):
                    out.append(spec)
            offset += len(rows)
            total = data.get("num_products")
            more = len(rows) >= self.page_size or (isinstance(total, int) and offset < total)
            if not fresh or not more:
                break
        return out, []

    async def fetch_book(self, book_symbol: str) -> BookReset:
        scales = self._units.get(book_symbol)
        if scales is None:
            raise VenueError(f"{book_symbol}: not a listed Coinbase product")
        data = await self.get_json(f"{self._base}/market/product_book",
                                   {"product_id": book_symbol, "limit": self.book_limit})
        if not isinstance(data, Mapping):
            raise VenueError("product_book: not an object")
        return parse_book(data, price_scale=scales[0], size_scale=scales[1], ts_ms=self.now_ms(),
                          tick=scales[2])

    def list_markets(self, markets: Sequence[MarketSpec], events: Sequence[EventSpec] = ()) -> int:
        """List as the base does, keeping each book's units; a changed price increment also
        emits a :class:`TickSizeChange` for the book."""
        fixed: list[MarketSpec] = []
        ticks: list[BookEvent] = []
        ts = self.now_ms()
        for spec in markets:
            sym = spec.book_symbol
            old = self._listed.get(sym)
            if old is not None and (old.price_scale, old.size_scale) != (spec.price_scale, spec.size_scale):
                spec = self._in_units(spec, old.price_scale, old.size_scale)
            else:
                self._coarse.pop(sym, None)
            if old is not None and old.tick != spec.tick:
                ticks.append(TickSizeChange(ts, sym, spec.tick))
            self._units[sym] = (spec.price_scale, spec.size_scale, spec.tick)
            fixed.append(spec)
        n = super().list_markets(fixed, events)
        if ticks:
            self.emit(ticks)
        self._note()
        return n

    def _in_units(self, spec: MarketSpec, price_scale: int, size_scale: int) -> MarketSpec:
        """*spec* in a book's existing units (a product's increments changed under it)."""
        inc = _decimal(spec.extra.get("price_increment")) or Decimal(spec.tick) / spec.price_scale
        exact = inc * price_scale
        tick = int(exact)
        binc = _decimal(spec.extra.get("base_increment"))
        if tick < 1 or exact != tick or (binc is not None and binc * size_scale != int(binc * size_scale)):
            tick = max(1, tick)
            self._coarse[spec.book_symbol] = (
                f"{spec.book_symbol}: the venue's increments changed to price {spec.extra.get('price_increment')}"
                f" / size {spec.extra.get('base_increment')}, finer than its book keeps; prices and sizes"
                " are rounded until the market service restarts")
        else:
            self._coarse.pop(spec.book_symbol, None)
        return replace(spec, price_scale=price_scale, size_scale=size_scale, tick=tick)

    def _note(self) -> None:
        parts = []
        if self._refused:
            syms = ", ".join(sorted(self._refused))
            why = next(iter(self._refused.values()))
            parts.append(f"Coinbase refused the order book subscription for {syms} ({why}); "
                         "those quotes are unavailable")
        parts.extend(self._coarse[s] for s in sorted(self._coarse))
        self.stats.note = "; ".join(parts) or None

    # -- WebSocket ---------------------------------------------------------------------------------
    async def feed(self) -> None:
        async with connect(self.config.ws_url, max_size=WS_MAX_SIZE,
                           open_timeout=self.config.http_timeout_s,
                           user_agent_header="sequence-market", compression=None) as ws:
            session = _Session()
            self._refused.clear()  # a new connection tries them again
            self._synced &= self.wanted
            self._note()
            await self._request(ws, session, "subscribe", "heartbeats", ())
            self.changed.clear()
            await self._follow_wanted(ws, session)
            helpers = [asyncio.create_task(self._follow(ws, session), name=f"sequence-{self.name}-subscriber"),
                       asyncio.create_task(self._watch(ws, session), name=f"sequence-{self.name}-watchdog")]
            try:
                await self._read(ws, session)
            except ConnectionClosed:
                if session.stalled:
                    raise Stalled(f"no message for {self.config.stall_s:g} s on an open socket") from None
                raise
            finally:
                for task in helpers:
                    task.cancel()
                for task in helpers:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _watch(self, ws: ClientConnection, session: _Session) -> None:
        """The stall watch: a socket silent for ``stall_s`` (heartbeats come every second) is
        dropped; the reader then raises :class:`Stalled` (see the module docstring)."""
        stall = self.config.stall_s
        while True:
            await asyncio.sleep(stall / 4)
            if time.monotonic() - max(self.stats.last_message or 0.0, session.opened) > stall:
                session.stalled = True
                self.stats.stalls += 1
                ws.transport.abort()
                return

    async def _request(self, ws: ClientConnection, session: _Session, kind: str, channel: str,
                       products: Sequence[str]) -> None:
        msg: dict[str, Any] = {"type": kind, "channel": channel}
        if products:
            msg["product_ids"] = list(products)
        session.requests.append((kind, channel, tuple(products)))
        await ws.send(json.dumps(msg, separators=(",", ":")))

    async def _follow(self, ws: ClientConnection, session: _Session) -> None:
        """(Un)subscribe as :attr:`wanted` changes, until the connection ends."""
        try:
            while True:
                await self.changed.wait()
                self.changed.clear()
                await self._follow_wanted(ws, session)
        except asyncio.CancelledError:
            raise
        except Exception:
            await ws.close()  # the reader sees the connection end and the supervisor reconnects
            raise

    async def _follow_wanted(self, ws: ClientConnection, session: _Session) -> None:
        wanted = self.wanted
        gone = sorted(session.subs - wanted)
        for sym in list(self._refused):
            if sym not in wanted:
                del self._refused[sym]
        new = sorted(s for s in wanted - session.subs if s in self._units and s not in self._refused)
        if gone:
            session.subs.difference_update(gone)
            session.pending.difference_update(gone)
            self._synced.difference_update(gone)
            for channel in self.channels:
                await self._request(ws, session, "unsubscribe", channel, gone)
        if new:
            session.subs.update(new)
            session.pending.update(new)
            for channel in self.channels:
                await self._request(ws, session, "subscribe", channel, new)
        self._note()

    async def _resubscribe(self, ws: ClientConnection, session: _Session) -> None:
        """A message was lost: every book on this connection starts again from a snapshot."""
        books = sorted(session.subs)
        if not books:
            return
        session.pending.update(books)
        await self._request(ws, session, "unsubscribe", "level2", books)
        await self._request(ws, session, "subscribe", "level2", books)

    async def _read(self, ws: ClientConnection, session: _Session) -> None:
        loads = json.loads
        recv = ws.recv
        stats = self.stats
        clock = time.monotonic
        while True:
            raw = await recv()
            stats.messages += 1
            stats.last_message = clock()
            msg = loads(raw)
            seq = msg.get("sequence_num")
            if seq is not None:
                if seq != session.next_seq:
                    session.gaps += 1
                    log.info("%s: sequence_num %s, expected %s: resubscribing %d book(s)",
                             self.name, seq, session.next_seq, len(session.subs))
                    session.next_seq = seq + 1
                    await self._resubscribe(ws, session)
                else:
                    session.next_seq = seq + 1
            channel = msg.get("channel")
            if channel == "l2_data":
                self._on_l2(msg, session)
            elif channel == "heartbeats":
                pass
            elif channel == "market_trades":
                self._on_trades(msg, session)
            elif channel == "subscriptions":
                if session.requests:
                    session.requests.popleft()
                if self.stats.state != "connected":
                    self.connected()
            elif msg.get("type") == "error":
                await self._on_error(ws, msg, session)

    def _on_l2(self, msg: Mapping[str, Any], session: _Session) -> None:
        ts = self.now_ms()
        out: list[BookEvent] = []
        subs, pending, scales = session.subs, session.pending, self._units
        for event in msg["events"]:
            pid = event["product_id"]
            if pid not in subs:
                continue  # released: in flight before the unsubscribe
            sc = scales[pid]
            kind = event["type"]
            if kind == "update":
                if pid not in pending:
                    l2_updates(event, price_scale=sc[0], size_scale=sc[1], ts_ms=ts, out=out)
            elif kind == "snapshot":
                if out:
                    self.emit(out)
                    out = []
                reset = l2_snapshot(event, price_scale=sc[0], size_scale=sc[1], ts_ms=ts, tick=sc[2])
                pending.discard(pid)
                resync = pid in self._synced
                self._synced.add(pid)
                self.reset_book(reset, resync=resync)
        if out:
            self.emit(out)

    def _on_trades(self, msg: Mapping[str, Any], session: _Session) -> None:
        out: list[BookEvent] = []
        ts = self.now_ms()
        live = session.subs - session.pending if session.pending else session.subs
        for event in msg.get("events") or ():
            market_trades(event, self._units, ts, out, products=live)
        if out:
            self.emit(out)

    async def _on_error(self, ws: ClientConnection, msg: Mapping[str, Any], session: _Session) -> None:
        """The venue refused a request (it answers requests in order). A refused subscription
        for several products is retried one product at a time, so one bad product does not
        keep the others' books away; a refused single ``level2`` product is noted."""
        words = " ".join(str(msg[k]) for k in ("message", "reason") if msg.get(k)) or "error"
        self.stats.errors += 1
        self.stats.last_error = f"feed: venue said: {words}"[:300]
        log.warning("%s: the venue answered an error: %s", self.name, words)
        request = session.requests.popleft() if session.requests else None
        if request is None or request[0] != "subscribe" or request[1] not in self.channels:
            return
        kind, channel, products = request
        live = [p for p in products if p in session.subs]
        if len(products) > 1:
            for pid in live:
                await self._request(ws, session, kind, channel, (pid,))
        elif live and channel == "level2":
            pid = live[0]
            self._refused[pid] = words
            session.subs.discard(pid)
            session.pending.discard(pid)
            self._note()
