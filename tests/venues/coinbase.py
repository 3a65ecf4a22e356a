"""A local Coinbase Advanced Trade (market data): REST products and books, the WebSocket feed.

Speaks the venue's documented shapes (docs.cdp.coinbase.com, Advanced Trade; see
/work/shared/docs/VENUES.md) on the venue's own paths, and checks what the venue checks:

REST (``app`` mounted at the root; the connector's ``api_url`` is ``url + API``):

- ``GET /api/v3/brokerage/market/products`` (public): ``limit``/``offset`` paging (a page holds
  at most ``max_page`` rows whatever ``limit`` asks, like a real venue's cap), ``product_type``
  (``SPOT``/``FUTURE``; anything else is a 400), ``product_ids``; answers ``{"products",
  "num_products"}`` (``num_products``: how many match, across pages) with every number a string.
- ``GET /api/v3/brokerage/market/products/{product_id}`` and
  ``GET /api/v3/brokerage/market/product_book?product_id=&limit=`` (bids and asks best first,
  ``limit`` levels per side; unknown product 404, missing ``product_id`` 400).
- Every other ``/api/v3/brokerage/…`` path needs a JWT: without ``Authorization: Bearer`` it is
  a 401 (this fake does not issue or verify JWTs; market data needs none).
- :meth:`FakeCoinbase.fail_next`: the next N REST calls answer 429 without ``Retry-After``.

WebSocket (``ws_url`` + ``/``):

- One channel per subscribe message: ``{"type": "subscribe"|"unsubscribe", "channel": …,
  "product_ids": [...]}`` (``jwt`` optional, a string). A message without ``channel``, with the
  legacy Exchange ``channels`` list, an unknown channel, or ``level2``/``market_trades`` without
  product ids or with an unknown product is answered ``{"type": "error", "message":
  "Failed to subscribe", "reason": …}`` and changes nothing; ``user`` without a ``jwt`` too.
  Each accepted request is answered with a ``subscriptions`` message listing everything the
  connection is subscribed to; requests are answered in order, one answer each. An error is
  not a channel message: it carries no ``sequence_num`` and uses none (unconfirmed).
- Every message sent carries the connection's ``sequence_num`` (0, 1, 2 … over every message:
  snapshots, updates, trades, heartbeats, acks). ``level2`` sends the whole book as one
  ``l2_data`` ``snapshot`` per product, then ``update``\\ s with absolute ``new_quantity``
  (``"0"`` removes); sides ``bid``/``offer``; numbers as trimmed decimal strings (``"21921.3"``).
  Subscribing to a product the connection already has sends no new snapshot (unconfirmed: the
  connector never relies on it; it unsubscribes first).
- ``heartbeats`` sends ``{"channel": "heartbeats", "events": [{"current_time",
  "heartbeat_counter"}]}`` every ``heartbeat_s``. A connection that has sent nothing for
  ``idle_close_s`` and is not subscribed to heartbeats is closed (the venue: 60–90 s).

Scenario controls (plain methods; run them on the server's loop with ``FakeServer.call/acall``):
:meth:`set_levels`/:meth:`set_level` (change the book and push an update), :meth:`lose_next`
(the next message to each connection is lost: a ``sequence_num`` gap), :meth:`stall` (open
sockets go silent, heartbeats too), :meth:`disconnect` (drop every socket without a close
frame), :meth:`fail_next` (429s), :meth:`set_increment` (a tick-size change: off-grid levels are
pulled and pushed as removals), :meth:`clear_side` (a one-sided book), :meth:`trade` (a
``market_trades`` print), :meth:`burst` (N deltas as fast as the socket takes them, for the
benchmark: returns ``[(send_monotonic_ns, price, size), ...]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

API = "/api/v3/brokerage"
#: Channels the venue knows (the fake serves data on level2, market_trades and heartbeats).
CHANNELS = frozenset({"heartbeats", "candles", "status", "ticker", "ticker_batch", "level2", "user",
                      "market_trades", "futures_balance_summary"})
PRODUCT_CHANNELS = frozenset({"level2", "market_trades", "ticker", "ticker_batch", "candles"})
AUTH_CHANNELS = frozenset({"user", "futures_balance_summary"})
SIDES = ("bid", "offer")


def fmt(d: Decimal) -> str:
    """A decimal as the venue prints it: plain, trailing zeros trimmed (``"21921.3"``, ``"1"``)."""
    text = f"{d:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def stamp() -> str:
    """The venue's message timestamp: RFC 3339 with nanoseconds."""
    ns = time.time_ns()
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z"


# product, base name, quote name, product type, status, trading_disabled, price, price increment,
# base increment, base min size, quote min size, 24h volume, ladder step, mean level size, levels
#   (bids, asks)
DEFAULT_PRODUCTS: tuple[tuple[Any, ...], ...] = (
    ("BTC-USD", "Bitcoin", "US Dollar", "SPOT", "online", False, "95000.00", "0.01", "0.00000001",
     "0.00000001", "1", "9512.34567891", "0.5", "0.35", (25, 25)),
    ("ETH-USD", "Ethereum", "US Dollar", "SPOT", "online", False, "3400.00", "0.01", "0.00000001",
     "0.00000001", "1", "160234.12345678", "0.1", "4", (25, 25)),
    ("SOL-USD", "Solana", "US Dollar", "SPOT", "online", False, "180.00", "0.01", "0.00000001",
     "0.00000001", "1", "2400123.5", "0.02", "60", (25, 25)),
    ("DOGE-USD", "Dogecoin", "US Dollar", "SPOT", "online", False, "0.17234", "0.00001", "0.1",
     "0.1", "1", "812345678.9", "0.00001", "25000", (20, 20)),
    # thin, far from the money: bids only
    ("ACS-USD", "Access Protocol", "US Dollar", "SPOT", "online", False, "0.0012", "0.000001", "1",
     "1", "1", "1234567", "0.000001", "500000", (6, 0)),
    # delisted: still in the listing, trading disabled, empty book
    ("RNDR-USD", "Render Token", "US Dollar", "SPOT", "delisted", True, "7.12", "0.001", "0.01",
     "0.01", "1", "0", "0.001", "10", (0, 0)),
    # not spot: filtered out by product_type=SPOT
    ("BIP-20DEC30-CDE", "BTC PERP", "US Dollar", "FUTURE", "online", False, "95100", "5", "1",
     "1", "1", "12345", "5", "3", (10, 10)),
)


@dataclass
class Conn:
    """One WebSocket connection as the venue keeps it."""

    ws: WebSocket
    seq: int = 0
    channels: dict[str, set[str]] = field(default_factory=dict)  # channel -> product ids
    heartbeats: bool = False
    stalled: bool = False
    lose: int = 0  # the next N messages are lost (sequence numbers consumed, nothing sent)
    closed: bool = False
    last_sent: float = field(default_factory=time.monotonic)
    heartbeat_counter: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def subscribed(self, channel: str) -> set[str]:
        return self.channels.get(channel, set())


class FakeCoinbase:
    """The venue's state (products, books in its own decimal strings) and its app."""

    def __init__(self, *, products: Iterable[tuple[Any, ...]] = DEFAULT_PRODUCTS, seed: int = 7,
                 max_page: int = 250, heartbeat_s: float = 1.0, idle_close_s: float = 75.0) -> None:
        self.max_page = max_page
        self.heartbeat_s = heartbeat_s
        self.idle_close_s = idle_close_s
        self.products: dict[str, dict[str, Any]] = {}
        #: product -> side ("bid"/"offer") -> price -> size (Decimals; printed with :func:`fmt`).
        self.books: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
        self.conns: list[Conn] = []
        #: Every client WebSocket message, parsed (or the raw text if it was not JSON).
        self.received: list[Any] = []
        #: Every error message sent.
        self.errors: list[dict[str, Any]] = []
        #: REST requests: (path, query string).
        self.requests: list[tuple[str, str]] = []
        self.connections = 0  # WebSocket connections accepted so far
        self._fail: list[int] = []
        self._rng = random.Random(seed)
        for spec in products:
            self._add_product(*spec)
        self.app = Starlette(routes=[
            Route(f"{API}/market/products", self._products),
            Route(f"{API}/market/products/{{product_id}}", self._product),
            Route(f"{API}/market/product_book", self._product_book),
            Route(f"{API}/{{rest:path}}", self._private, methods=["GET", "POST", "DELETE", "PUT"]),
            WebSocketRoute("/", self._ws),
        ])

    # -- state ---------------------------------------------------------------------------------
    def _add_product(self, pid: str, base_name: str, quote_name: str, ptype: str, status: str,
                     disabled: bool, price: str, pinc: str, binc: str, bmin: str, qmin: str,
                     volume: str, step: str, size: str, levels: tuple[int, int]) -> None:
        base, _, quote = pid.partition("-")
        self.products[pid] = {
            "product_id": pid,
            "price": price,
            "price_percentage_change_24h": "1.25",
            "volume_24h": volume,
            "volume_percentage_change_24h": "-3.5",
            "base_increment": binc,
            "quote_increment": pinc,
            "quote_min_size": qmin,
            "quote_max_size": "150000000",
            "base_min_size": bmin,
            "base_max_size": "100000000",
            "base_name": base_name,
            "quote_name": quote_name,
            "watched": False,
            "is_disabled": False,
            "new": False,
            "status": status,
            "cancel_only": False,
            "limit_only": False,
            "post_only": False,
            "trading_disabled": disabled,
            "auction_mode": False,
            "product_type": ptype,
            "quote_currency_id": quote.split("-")[0] if ptype == "SPOT" else "USD",
            "base_currency_id": base,
            "fcm_trading_session_details": None,
            "mid_market_price": "",
            "alias": "",
            "alias_to": [],
            "base_display_symbol": base,
            "quote_display_symbol": quote.split("-")[0] if ptype == "SPOT" else "USD",
            "view_only": False,
            "price_increment": pinc,
            "display_name": pid,
            "product_venue": "CBE" if ptype == "SPOT" else "FCM",
            "approximate_quote_24h_volume": fmt(Decimal(volume) * Decimal(price)),
        }
        book: dict[str, dict[Decimal, Decimal]] = {"bid": {}, "offer": {}}
        mid, tick, ladder = Decimal(price), Decimal(pinc), Decimal(step)
        mean = float(size)
        bq = Decimal(binc)
        for side, n, sign in (("bid", levels[0], -1), ("offer", levels[1], 1)):
            for i in range(n):
                px = ((mid + sign * (tick + ladder * i)) / tick).to_integral_value() * tick
                qty = (Decimal(str(round(mean * self._rng.uniform(0.2, 2.0), 8))) / bq).to_integral_value() * bq
                if px > 0 and qty > 0:
                    book[side][px] = qty
        self.books[pid] = book

    def book_strings(self, pid: str) -> dict[str, list[tuple[str, str]]]:
        """The venue's book, best first, as the strings it sends."""
        book = self.books[pid]
        return {
            "bids": [(fmt(p), fmt(book["bid"][p])) for p in sorted(book["bid"], reverse=True)],
            "asks": [(fmt(p), fmt(book["offer"][p])) for p in sorted(book["offer"])],
        }

    def book_units(self, pid: str, price_scale: int, size_scale: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The venue's book in a book's integer units, best first (for comparing with ours)."""
        book = self.books[pid]
        bids = [(int(p * price_scale), int(book["bid"][p] * size_scale)) for p in sorted(book["bid"], reverse=True)]
        asks = [(int(p * price_scale), int(book["offer"][p] * size_scale)) for p in sorted(book["offer"])]
        return bids, asks

    def subscribed(self, channel: str = "level2") -> set[str]:
        """Products some open connection is subscribed to on *channel*."""
        return {p for c in self.conns if not c.closed for p in c.subscribed(channel)}

    def open_connections(self) -> int:
        return sum(1 for c in self.conns if not c.closed)

    # -- scenario controls (run on the server's loop) ----------------------------------------
    async def set_levels(self, pid: str, changes: Iterable[tuple[str, str | Decimal, str | Decimal]], *,
                         lost: bool = False) -> None:
        """Set absolute sizes (``(side, price, size)``, size 0 removes) and push one update;
        *lost*: the update is lost on the way (its ``sequence_num`` is used, nothing arrives)."""
        book = self.books[pid]
        updates = []
        ts = stamp()
        for side, price, size in changes:
            if side not in SIDES:
                raise ValueError(f"side must be bid or offer, not {side!r}")
            p, q = Decimal(price), Decimal(size)
            if q > 0:
                book[side][p] = q
            else:
                book[side].pop(p, None)
            updates.append({"side": side, "event_time": ts, "price_level": fmt(p), "new_quantity": fmt(q)})
        if updates:
            await self._push_l2(pid, "update", updates, lost=lost)

    async def set_level(self, pid: str, side: str, price: str | Decimal, size: str | Decimal) -> None:
        await self.set_levels(pid, [(side, price, size)])

    async def clear_side(self, pid: str, side: str) -> None:
        """Pull every level of one side (a one-sided book)."""
        await self.set_levels(pid, [(side, p, "0") for p in list(self.books[pid][side])])

    async def set_increment(self, pid: str, price_increment: str) -> None:
        """A tick-size change: the product's price increment changes and resting levels off the
        new grid are pulled (pushed as removals)."""
        row = self.products[pid]
        row["price_increment"] = row["quote_increment"] = price_increment
        inc = Decimal(price_increment)
        book = self.books[pid]
        await self.set_levels(pid, [(side, p, "0") for side in SIDES for p in list(book[side]) if p % inc])

    async def trade(self, pid: str, side: str, price: str, size: str) -> None:
        """A ``market_trades`` print (``side`` is the maker's: BUY or SELL)."""
        self.products[pid]["price"] = price
        event = {"type": "update", "trades": [{
            "trade_id": str(self._rng.randrange(10**9)), "product_id": pid, "price": price, "size": size,
            "side": side, "time": stamp()}]}
        for conn in self._subscribers("market_trades", pid):
            await self._send(conn, {"channel": "market_trades", "client_id": "", "timestamp": stamp(),
                                    "events": [event]})

    def lose_next(self, n: int = 1) -> None:
        """The next *n* messages to each open connection are lost (a ``sequence_num`` gap)."""
        for conn in self.conns:
            conn.lose += n

    def stall(self) -> None:
        """Every open connection goes silent (heartbeats too); new connections are healthy."""
        for conn in self.conns:
            conn.stalled = True

    def disconnect(self) -> int:
        """Drop every open connection abruptly (no close frame); returns how many."""
        n = 0
        for conn in self.conns:
            if conn.closed:
                continue
            conn.closed = True
            n += 1
            protocol = getattr(conn.ws._receive, "__self__", None)  # uvicorn's protocol object
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.abort()
        return n

    def fail_next(self, n: int, status: int = 429) -> None:
        """The next *n* REST calls answer *status* (429: without ``Retry-After``)."""
        self._fail.extend([status] * n)

    async def burst(self, pid: str, n: int, per_message: int = 1, side: str = "bid",
                    levels: int = 10) -> list[tuple[int, str, str]]:
        """Push *n* level updates for *pid* as fast as the sockets take them, *per_message* to a
        message, cycling over *levels* prices behind the best of *side* (the book stays
        uncrossed). Returns ``(send_monotonic_ns, price, size)`` per update, stamped just before
        its message is written (``time.monotonic_ns``: the same clock in every thread)."""
        book = self.books[pid][side]
        inc = Decimal(self.products[pid]["price_increment"])
        best = max(book) if side == "bid" else min(book)
        sign = -1 if side == "bid" else 1
        prices = [best + sign * inc * (i + 1) for i in range(levels)]
        texts = [fmt(p) for p in prices]
        binc = Decimal(self.products[pid]["base_increment"])
        sizes = [(binc * u, fmt(binc * u)) for u in range(1, 1001)]  # no Decimal work per delta
        conns = self._subscribers("level2", pid)
        out: list[tuple[int, str, str]] = []
        i = 0
        while i < n:
            batch = []
            for _ in range(min(per_message, n - i)):
                k = i % levels
                size, text = sizes[(i * 7919) % 1000]
                book[prices[k]] = size
                batch.append((texts[k], text))
                i += 1
            ts = stamp()
            body = ",".join(f'{{"side":"{side}","event_time":"{ts}","price_level":"{p}","new_quantity":"{q}"}}'
                            for p, q in batch)
            head = f'{{"channel":"l2_data","client_id":"","timestamp":"{ts}","sequence_num":'
            tail = f',"events":[{{"type":"update","product_id":"{pid}","updates":[{body}]}}]}}'
            sent = time.monotonic_ns()
            for conn in conns:
                await self._send_raw(conn, lambda seq, head=head, tail=tail: f"{head}{seq}{tail}")
            out.extend((sent, p, q) for p, q in batch)
        return out

    # -- sending -----------------------------------------------------------------------------
    def _subscribers(self, channel: str, pid: str) -> list[Conn]:
        return [c for c in self.conns if not c.closed and pid in c.subscribed(channel)]

    async def _push_l2(self, pid: str, kind: str, updates: list[dict[str, str]], *, lost: bool = False) -> None:
        for conn in self._subscribers("level2", pid):
            if lost:
                conn.seq += 1  # sequence number spent, message never arrives
                continue
            await self._send(conn, {"channel": "l2_data", "client_id": "", "timestamp": stamp(),
                                    "events": [{"type": kind, "product_id": pid, "updates": updates}]})

    async def _send(self, conn: Conn, payload: dict[str, Any]) -> None:
        """Send one message with the connection's next ``sequence_num``."""
        def text(seq: int) -> str:
            payload["sequence_num"] = seq
            return json.dumps(payload, separators=(",", ":"))
        await self._send_raw(conn, text)

    async def _send_raw(self, conn: Conn, build: Any) -> None:
        async with conn.lock:
            if conn.closed:
                return
            seq = conn.seq
            conn.seq += 1
            if conn.stalled:
                return
            if conn.lose:
                conn.lose -= 1
                return
            conn.last_sent = time.monotonic()
            try:
                await conn.ws.send_text(build(seq))
            except Exception:
                conn.closed = True

    async def _error(self, conn: Conn, reason: str, message: str = "Failed to subscribe") -> None:
        """An error answer: not a channel message, so no ``sequence_num`` (unconfirmed)."""
        err = {"type": "error", "message": message, "reason": reason}
        self.errors.append(err)
        async with conn.lock:
            if conn.closed or conn.stalled:
                return
            conn.last_sent = time.monotonic()
            try:
                await conn.ws.send_text(json.dumps(err, separators=(",", ":")))
            except Exception:
                conn.closed = True

    async def _ack(self, conn: Conn) -> None:
        subs: dict[str, list[str]] = {ch: sorted(ps) for ch, ps in conn.channels.items() if ps}
        if conn.heartbeats:
            subs["heartbeats"] = ["heartbeats"]
        await self._send(conn, {"channel": "subscriptions", "client_id": "", "timestamp": stamp(),
                                "events": [{"subscriptions": subs}]})

    async def _snapshot(self, conn: Conn, pid: str) -> None:
        book = self.book_strings(pid)
        updates = [{"side": "bid", "event_time": "1970-01-01T00:00:00Z", "price_level": p, "new_quantity": q}
                   for p, q in book["bids"]]
        updates += [{"side": "offer", "event_time": "1970-01-01T00:00:00Z", "price_level": p, "new_quantity": q}
                    for p, q in book["asks"]]
        await self._send(conn, {"channel": "l2_data", "client_id": "", "timestamp": stamp(),
                                "events": [{"type": "snapshot", "product_id": pid, "updates": updates}]})

    # -- WebSocket -----------------------------------------------------------------------------
    async def _ws(self, ws: WebSocket) -> None:
        await ws.accept()
        conn = Conn(ws)
        self.conns.append(conn)
        self.connections += 1
        tasks = [asyncio.create_task(self._heartbeats(conn)), asyncio.create_task(self._idle(conn))]
        try:
            while not conn.closed:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    await self._error(conn, "binary frames are not accepted", "Failed to parse")
                    continue
                await self._on_client(conn, text)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            conn.closed = True
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    async def _heartbeats(self, conn: Conn) -> None:
        while not conn.closed:
            await asyncio.sleep(self.heartbeat_s)
            if conn.heartbeats and not conn.stalled:
                conn.heartbeat_counter += 1
                now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f000 +0000 UTC")
                await self._send(conn, {"channel": "heartbeats", "client_id": "", "timestamp": stamp(),
                                        "events": [{"current_time": now,
                                                    "heartbeat_counter": str(conn.heartbeat_counter)}]})

    async def _idle(self, conn: Conn) -> None:
        """Close a connection with nothing sent for ``idle_close_s`` unless it has heartbeats."""
        while not conn.closed:
            await asyncio.sleep(min(self.idle_close_s / 4, 1.0))
            if conn.heartbeats or conn.stalled:
                continue
            if time.monotonic() - conn.last_sent > self.idle_close_s:
                conn.closed = True
                with contextlib.suppress(Exception):
                    await conn.ws.close(1000, "idle channel")
                return

    async def _on_client(self, conn: Conn, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            self.received.append(text)
            await self._error(conn, "message is not JSON", "Failed to parse")
            return
        self.received.append(msg)
        if not isinstance(msg, dict):
            await self._error(conn, "message is not a JSON object", "Failed to parse")
            return
        kind = msg.get("type")
        if kind not in ("subscribe", "unsubscribe"):
            await self._error(conn, f"unknown message type {kind!r}")
            return
        fail = "Failed to subscribe" if kind == "subscribe" else "Failed to unsubscribe"
        if "channels" in msg:
            await self._error(conn, "one channel per message: use \"channel\", not \"channels\"", fail)
            return
        channel = msg.get("channel")
        if not isinstance(channel, str) or not channel:
            await self._error(conn, "no channel provided", fail)
            return
        if channel not in CHANNELS:
            await self._error(conn, f"{channel} is not a valid channel", fail)
            return
        jwt = msg.get("jwt")
        if jwt is not None and not isinstance(jwt, str):
            await self._error(conn, "jwt must be a string", fail)
            return
        if channel in AUTH_CHANNELS and not jwt:
            await self._error(conn, f"authentication failure: {channel} needs a jwt", fail)
            return
        raw_ids = msg.get("product_ids", [])
        if not isinstance(raw_ids, list) or not all(isinstance(p, str) for p in raw_ids):
            await self._error(conn, "product_ids must be a list of strings", fail)
            return
        ids: list[str] = raw_ids
        if channel in PRODUCT_CHANNELS:
            if not ids:
                await self._error(conn, f"You need to specify at least one product ID for channel {channel}", fail)
                return
            unknown = [p for p in ids if p not in self.products]
            if unknown:
                await self._error(conn, f"{', '.join(unknown)} is not a valid product", fail)
                return
        if channel == "heartbeats":
            conn.heartbeats = kind == "subscribe"
            await self._ack(conn)
            return
        current = conn.channels.setdefault(channel, set())
        if kind == "unsubscribe":
            current.difference_update(ids)
            await self._ack(conn)
            return
        new = [p for p in dict.fromkeys(ids) if p not in current]
        current.update(new)
        if channel == "level2":
            for pid in new:
                await self._snapshot(conn, pid)
        elif channel == "market_trades":
            for _ in new:
                await self._send(conn, {"channel": "market_trades", "client_id": "", "timestamp": stamp(),
                                        "events": [{"type": "snapshot", "trades": []}]})
        await self._ack(conn)

    # -- REST ----------------------------------------------------------------------------------
    def _throttled(self, request: Request) -> JSONResponse | None:
        self.requests.append((request.url.path, request.url.query))
        if self._fail:
            status = self._fail.pop(0)
            body = {"error": "RATE_LIMIT_EXCEEDED" if status == 429 else "INTERNAL",
                    "error_details": "Too many requests" if status == 429 else "internal error",
                    "message": "Too many requests" if status == 429 else "internal error"}
            return JSONResponse(body, status_code=status)  # no Retry-After
        return None

    @staticmethod
    def _bad(status: int, error: str, message: str) -> JSONResponse:
        return JSONResponse({"error": error, "error_details": message, "message": message}, status_code=status)

    @staticmethod
    def _int(params: Mapping[str, str], name: str, default: int) -> int | None:
        raw = params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            return None
        return value if value >= 0 else None

    async def _products(self, request: Request) -> JSONResponse:
        hit = self._throttled(request)
        if hit is not None:
            return hit
        q = request.query_params
        limit, offset = self._int(q, "limit", 0), self._int(q, "offset", 0)
        if limit is None or offset is None:
            return self._bad(400, "INVALID_ARGUMENT", "limit and offset must be non-negative integers")
        ptype = q.get("product_type")
        if ptype not in (None, "", "SPOT", "FUTURE"):
            return self._bad(400, "INVALID_ARGUMENT", f"invalid product_type {ptype!r}")
        ids = set(q.getlist("product_ids"))
        rows = [r for r in self.products.values()
                if (not ptype or r["product_type"] == ptype) and (not ids or r["product_id"] in ids)]
        page = min(limit or self.max_page, self.max_page)
        return JSONResponse({"products": rows[offset:offset + page], "num_products": len(rows)})

    async def _product(self, request: Request) -> JSONResponse:
        hit = self._throttled(request)
        if hit is not None:
            return hit
        row = self.products.get(request.path_params["product_id"])
        if row is None:
            return self._bad(404, "NOT_FOUND", "ProductID is invalid")
        return JSONResponse(row)

    async def _product_book(self, request: Request) -> JSONResponse:
        hit = self._throttled(request)
        if hit is not None:
            return hit
        q = request.query_params
        pid = q.get("product_id")
        if not pid:
            return self._bad(400, "INVALID_ARGUMENT", "product_id is required")
        if pid not in self.products:
            return self._bad(404, "NOT_FOUND", "ProductID is invalid")
        limit = self._int(q, "limit", 0)
        if limit is None:
            return self._bad(400, "INVALID_ARGUMENT", "limit must be a non-negative integer")
        book = self.book_strings(pid)
        bids = book["bids"][:limit] if limit else book["bids"]
        asks = book["asks"][:limit] if limit else book["asks"]
        body: dict[str, Any] = {
            "pricebook": {"product_id": pid, "bids": [{"price": p, "size": s} for p, s in bids],
                          "asks": [{"price": p, "size": s} for p, s in asks], "time": stamp()},
            "last": self.products[pid]["price"],
        }
        if bids and asks:
            b, a = Decimal(bids[0][0]), Decimal(asks[0][0])
            mid = (a + b) / 2
            body.update(mid_market=fmt(mid), spread_absolute=fmt(a - b),
                        spread_bps=fmt(((a - b) / mid * 10000).quantize(Decimal("0.0001"))))
        else:
            body.update(mid_market="", spread_absolute="", spread_bps="")
        return JSONResponse(body)

    async def _private(self, request: Request) -> JSONResponse:
        hit = self._throttled(request)
        if hit is not None:
            return hit
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return JSONResponse({"error": "UNAUTHENTICATED", "error_details": "missing JWT",
                                 "message": "Unauthorized"}, status_code=401)
        return self._bad(404, "NOT_FOUND", "not served by this fake")
