"""A local Coinbase Advanced Trade: market data (REST products and books, the WebSocket feed) and
one account's order side (JWT auth, accounts, orders matched against the books, fills, the
``user`` channel).

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
- Every other ``/api/v3/brokerage/…`` path needs a JWT (``Authorization: Bearer``), verified
  as the venue does (:meth:`FakeCoinbase.verify_jwt`): ES256 signature (EdDSA for an Ed25519
  key) against the public key registered under the header's ``kid`` (:meth:`new_key` /
  :meth:`add_key`), a ``nonce`` header, ``sub`` = the key name, ``iss`` ``cdp`` (or the
  official Python client's ``coinbase-cloud``), ``nbf`` not in the future, ``exp`` not past
  and at most 120 s after ``nbf``, and ``uri`` = ``"METHOD host/path"`` of the request (the
  ``Host`` header, the path without the query). Anything else is a 401 and the reason is
  appended to :attr:`auth_failures`. Paths not served below answer 404 after the JWT check.
- :meth:`FakeCoinbase.fail_next`: the next N REST calls answer 429 without ``Retry-After``
  (or the status given: a 5xx), before the JWT is looked at and before anything is done.

The order side (one account; the venue's shapes, numbers as strings):

- ``GET /accounts?limit=&cursor=`` → ``{"accounts": [{uuid, currency, available_balance:
  {value, currency}, hold, retail_portfolio_id, …}], "has_next", "cursor", "size"}``
  (``account_page`` rows a page at most). Balances: ``balances=`` (default
  :data:`DEFAULT_BALANCES`), :meth:`set_balance`, :meth:`balance`.
- ``POST /orders {client_order_id, product_id, side, order_configuration}`` with one of
  ``limit_limit_gtc`` (``post_only``), ``sor_limit_ioc``, ``limit_limit_fok``,
  ``market_market_ioc`` (``base_size``, or ``quote_size`` for a buy); sizes and prices must be
  strings (a number is a 400). A client order id already used answers ``success: true`` with
  the existing order and creates nothing (the documented behaviour; :attr:`duplicates`).
  Business rejects are HTTP 200 ``{"success": false, "failure_reason", "order_id": "",
  "error_response": {error, message, error_details, preview_failure_reason,
  new_order_failure_reason}}`` (:attr:`rejects`): ``INSUFFICIENT_FUND`` ("Insufficient
  balance in source account"; a buy holds size × limit × (1 + taker fee)),
  ``INVALID_LIMIT_PRICE_POST_ONLY`` (a post-only order that would cross),
  ``INVALID_PRICE_PRECISION`` / ``INVALID_SIZE_PRECISION`` (off ``price_increment`` /
  ``base_increment``), ``PREVIEW_INVALID_BASE_SIZE_TOO_SMALL`` / ``…_QUOTE_SIZE_TOO_SMALL``
  (under ``base_min_size`` / ``quote_min_size``), ``ORDER_ENTRY_DISABLED``,
  ``INVALID_PRODUCT_ID``, ``INVALID_NO_LIQUIDITY`` (a market order on an empty side). The
  messages are this fake's words (unconfirmed).
- An accepted order takes the opposite side of the product's book level by level up to its
  limit (taker fills at each level's price, ``taker_fee`` commission in the quote currency;
  the book shrinks and ``level2`` subscribers get the update); the rest of a GTC order rests
  (``OPEN``; resting orders are not shown in the public book), the rest of an IOC/market
  order is ``CANCELLED``, a FOK that cannot fill in full is ``CANCELLED`` with no fill.
  :meth:`fill_resting` fills a resting order as the maker at its limit (``maker_fee``).
- ``POST /orders/batch_cancel {order_ids}`` (≤ 100) → ``{"results": [{success,
  failure_reason, order_id}]}``: ``UNKNOWN_CANCEL_ORDER``, ``ORDER_IS_FILLED``,
  ``DUPLICATE_CANCEL_REQUEST`` (already done) — unconfirmed which reasons the venue uses.
- ``GET /orders/historical/{order_id}`` → ``{"order": {…}}`` (404 unknown);
  ``GET /orders/historical/batch?order_status=&product_ids=&order_ids=&start_date=&end_date=
  &limit=&cursor=`` → ``{"orders", "sequence", "has_next", "cursor"}``, newest first, no
  client-order-id filter (as the venue); ``GET /orders/historical/fills?order_ids=&trade_ids=
  &product_ids=&start_sequence_timestamp=&end_sequence_timestamp=&limit=&cursor=`` →
  ``{"fills": [{entry_id, trade_id, order_id, trade_time, price, size, commission,
  liquidity_indicator, side, …}], "cursor"}``, newest first, ``cursor`` empty on the last
  page (``order_page`` / ``fill_page`` rows a page at most).
- Controls: :meth:`drop_next_reply` (the next ``POST /orders`` is taken but answered after
  ``reply_delay_s``: past a client timeout), :meth:`fill_resting`, :meth:`cancel_order` (the
  venue cancels), :meth:`duplicate_user_messages`.

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
- ``user`` (a valid JWT without ``uri`` in the subscribe message, else an error "authentication
  failure: …"; ``product_ids`` optional) sends a ``snapshot`` event of the open orders, then an
  ``update`` per order change (placed, filled, cancelled): ``{"channel": "user", "events":
  [{"type", "orders": [{order_id, client_order_id, cumulative_quantity, leaves_quantity,
  avg_price, total_fees, status, product_id, creation_time, order_side, order_type,
  cancel_reason, reject_reason, …}]}]}`` — no trade ids (fills are read over REST).
  :meth:`duplicate_user_messages` sends each such message twice with one ``sequence_num``.
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
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
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
#: ``iss`` claims accepted: the CDP docs' "cdp" and the official Python client's "coinbase-cloud".
JWT_ISSUERS = frozenset({"cdp", "coinbase-cloud"})
JWT_MAX_LIFETIME_S = 120
USER_ID = "fake-user-0001"
PORTFOLIO_ID = "5b7f3c2e-0000-4000-8000-00000000f001"
#: Order configurations this fake executes (the venue has more: gtd, stop-limit, brackets, twap …).
CONFIGS = {
    "limit_limit_gtc": ("LIMIT", "GOOD_UNTIL_CANCELLED"),
    "sor_limit_ioc": ("LIMIT", "IMMEDIATE_OR_CANCEL"),
    "limit_limit_fok": ("LIMIT", "FILL_OR_KILL"),
    "market_market_ioc": ("MARKET", "IMMEDIATE_OR_CANCEL"),
}
LIVE = frozenset({"PENDING", "OPEN"})
DEFAULT_BALANCES = {"USD": "100000", "USDC": "0", "BTC": "2", "ETH": "20", "SOL": "500", "DOGE": "100000",
                    "ACS": "0", "RNDR": "0"}


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
    user: bool = False  # subscribed to the user channel (with a valid JWT)
    user_products: set[str] = field(default_factory=set)  # empty: every product

    def subscribed(self, channel: str) -> set[str]:
        return self.channels.get(channel, set())


@dataclass
class FakeOrder:
    """One order of the account, in the venue's own terms."""

    order_id: str
    client_order_id: str
    product_id: str
    side: str  # BUY | SELL
    kind: str  # the order_configuration key
    config: dict[str, Any]  # the order_configuration as sent
    size: Decimal | None  # base size (None: a market order by quote size)
    quote_size: Decimal | None
    limit: Decimal | None
    post_only: bool
    order_type: str  # LIMIT | MARKET
    tif: str  # GOOD_UNTIL_CANCELLED | IMMEDIATE_OR_CANCEL | FILL_OR_KILL
    created: str
    created_ns: int
    status: str = "PENDING"
    filled: Decimal = Decimal(0)
    filled_value: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    number_of_fills: int = 0
    last_fill_time: str | None = None
    reserved: Decimal = Decimal(0)  # on hold: quote for a buy, base for a sell
    cancel_message: str = ""
    spent_quote: Decimal = Decimal(0)  # a market buy by quote size: quote used so far

    @property
    def remaining(self) -> Decimal:
        if self.size is None:
            return Decimal(0)
        return max(self.size - self.filled, Decimal(0))

    @property
    def live(self) -> bool:
        return self.status in LIVE


class FakeCoinbase:
    """The venue's state (products, books in its own decimal strings, one account's balances,
    orders and fills) and its app."""

    def __init__(self, *, products: Iterable[tuple[Any, ...]] = DEFAULT_PRODUCTS, seed: int = 7,
                 max_page: int = 250, heartbeat_s: float = 1.0, idle_close_s: float = 75.0,
                 balances: Mapping[str, str | Decimal] | None = None, maker_fee: str = "0.004",
                 taker_fee: str = "0.006", order_page: int = 1000, fill_page: int = 100,
                 account_page: int = 250, reply_delay_s: float = 1.0) -> None:
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
        # -- the order side --
        self._ids = random.Random(seed + 1)  # order, trade and account ids (the books keep _rng)
        #: API key name -> public key (verified on every private request and user subscription).
        self.keys: dict[str, Any] = {}
        #: currency -> [available, hold]
        self.accounts: dict[str, list[Decimal]] = {
            ccy: [Decimal(str(v)), Decimal(0)] for ccy, v in (balances or DEFAULT_BALANCES).items()}
        self.maker_fee, self.taker_fee = Decimal(maker_fee), Decimal(taker_fee)
        self.order_page, self.fill_page, self.account_page = order_page, fill_page, account_page
        self.reply_delay_s = reply_delay_s
        self.orders: dict[str, FakeOrder] = {}  # order id -> order, in creation order
        self.by_client: dict[str, str] = {}  # client order id -> order id
        self.fills: list[tuple[int, dict[str, Any]]] = []  # (trade time ns, fill row), oldest first
        #: Every POST /orders body received; business rejects sent; duplicate client ids answered.
        self.posted: list[dict[str, Any]] = []
        self.rejects: list[dict[str, Any]] = []
        self.duplicates: list[str] = []
        #: Why a JWT was refused, one line per refusal (REST and WebSocket).
        self.auth_failures: list[str] = []
        self.jwt_accepted = 0
        self._delays: list[float] = []
        self._dup_user = False
        self.app = Starlette(routes=[
            Route(f"{API}/market/products", self._products),
            Route(f"{API}/market/products/{{product_id}}", self._product),
            Route(f"{API}/market/product_book", self._product_book),
            Route(f"{API}/accounts", self._accounts, methods=["GET"]),
            Route(f"{API}/orders", self._create_order, methods=["POST"]),
            Route(f"{API}/orders/batch_cancel", self._batch_cancel, methods=["POST"]),
            Route(f"{API}/orders/historical/batch", self._list_orders, methods=["GET"]),
            Route(f"{API}/orders/historical/fills", self._list_fills, methods=["GET"]),
            Route(f"{API}/orders/historical/{{order_id}}", self._get_order, methods=["GET"]),
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

    async def _send_raw(self, conn: Conn, build: Any, repeat: int = 1) -> None:
        """Send one message (*repeat* > 1: the same text, same ``sequence_num``, again)."""
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
                text = build(seq)
                for _ in range(repeat):
                    await conn.ws.send_text(text)
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
        if conn.user:
            subs["user"] = sorted(conn.user_products)
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
        if channel in AUTH_CHANNELS and kind == "subscribe":
            assert isinstance(jwt, str)
            problem = self.verify_jwt(jwt)
            if problem is not None:
                await self._error(conn, f"authentication failure: {problem}", fail)
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
        if channel == "user":
            if kind == "unsubscribe":
                conn.user = False
                conn.user_products = set()
            else:
                conn.user = True
                conn.user_products = set(ids)
                await self._send(conn, {"channel": "user", "client_id": "", "timestamp": stamp(), "events": [{
                    "type": "snapshot",
                    "orders": [self.ws_row(o) for o in self.orders.values()
                               if o.live and (not conn.user_products or o.product_id in conn.user_products)],
                    "positions": {"perpetual_futures_positions": [], "expiring_futures_positions": []}}]})
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
        hit = self._gate(request)
        if hit is not None:
            return hit
        return self._bad(404, "NOT_FOUND", "not served by this fake")

    # == the order side ==========================================================================
    # -- keys and JWTs ---------------------------------------------------------------------------
    def add_key(self, name: str, public_key: Any) -> None:
        """Register an API key: *public_key* a PEM string or a cryptography public key."""
        if isinstance(public_key, str | bytes):
            text = public_key.encode() if isinstance(public_key, str) else public_key
            public_key = serialization.load_pem_public_key(text)
        self.keys[name] = public_key

    def new_key(self, name: str | None = None, *, ed25519_key: bool = False) -> dict[str, str]:
        """Generate and register a key (EC P-256 unless *ed25519_key*); returns the credentials as
        Sequence stores them (``api_key_name``, ``private_key_pem``)."""
        name = name or f"organizations/{self._uuid()}/apiKeys/{self._uuid()}"
        if ed25519_key:
            private: Any = ed25519.Ed25519PrivateKey.generate()
            pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        else:
            private = ec.generate_private_key(ec.SECP256R1())
            pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption())
        self.add_key(name, private.public_key())
        return {"api_key_name": name, "private_key_pem": pem.decode()}

    def verify_jwt(self, token: str, *, method: str | None = None, host: str | None = None,
                   path: str | None = None) -> str | None:
        """Why the venue refuses *token*, or None. Checks the signature (ES256 for an EC key,
        EdDSA for Ed25519) against the key named by ``kid``, a ``nonce`` header, ``sub`` = the key
        name, ``iss``, ``nbf`` not in the future, ``exp`` not past and at most 120 s after ``nbf``,
        and for REST (*method* given) ``uri`` = ``"METHOD host/path"``."""
        problem = self._jwt_problem(token, method, host, path)
        if problem is None:
            self.jwt_accepted += 1
        else:
            self.auth_failures.append(problem)
        return problem

    def _jwt_problem(self, token: str, method: str | None, host: str | None, path: str | None) -> str | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            return f"malformed JWT: {e}"
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            return f"unknown API key {kid!r}"
        want = "EdDSA" if isinstance(key, ed25519.Ed25519PublicKey) else "ES256"
        if header.get("alg") != want:
            return f"alg {header.get('alg')!r}: this key signs {want}"
        if not header.get("nonce"):
            return "no nonce in the JWT header"
        try:
            claims = jwt.decode(token, key, algorithms=[want], leeway=0,
                                options={"require": ["sub", "iss", "nbf", "exp"], "verify_aud": False})
        except jwt.ExpiredSignatureError:
            return "JWT expired"
        except jwt.ImmatureSignatureError:
            return "JWT not yet valid (nbf)"
        except jwt.PyJWTError as e:
            return f"invalid JWT: {e}"
        if claims.get("sub") != kid:
            return "sub is not the key name"
        if claims.get("iss") not in JWT_ISSUERS:
            return f"iss {claims.get('iss')!r}"
        nbf, exp = claims.get("nbf"), claims.get("exp")
        if not isinstance(nbf, int) or not isinstance(exp, int) or exp - nbf > JWT_MAX_LIFETIME_S:
            return f"JWT lifetime over {JWT_MAX_LIFETIME_S} s"
        if method is not None:
            want_uri = f"{method} {host}{path}"
            if claims.get("uri") != want_uri:
                return f"uri claim {claims.get('uri')!r} is not {want_uri!r}"
        return None

    def _gate(self, request: Request) -> JSONResponse | None:
        """429s first (``fail_next``), then the JWT: a refusal is a 401."""
        hit = self._throttled(request)
        if hit is not None:
            return hit
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return JSONResponse({"error": "UNAUTHENTICATED", "error_details": "missing JWT",
                                 "message": "Unauthorized"}, status_code=401)
        problem = self.verify_jwt(auth[len("Bearer "):], method=request.method,
                                  host=request.headers.get("host", ""), path=request.url.path)
        if problem is not None:
            return JSONResponse({"error": "UNAUTHENTICATED", "error_details": problem, "message": "Unauthorized"},
                                status_code=401)
        return None

    # -- scenario controls -----------------------------------------------------------------------
    def drop_next_reply(self, delay_s: float | None = None) -> None:
        """The next ``POST /orders`` is taken (matched, pushed on the user channel) but its reply
        waits *delay_s* (default ``reply_delay_s``): past the client's timeout."""
        self._delays.append(self.reply_delay_s if delay_s is None else delay_s)

    def duplicate_user_messages(self, on: bool = True) -> None:
        """Every user-channel message is sent twice (same text, same ``sequence_num``)."""
        self._dup_user = on

    def set_balance(self, currency: str, available: str | Decimal) -> None:
        self.accounts.setdefault(currency, [Decimal(0), Decimal(0)])[0] = Decimal(str(available))

    def balance(self, currency: str) -> tuple[Decimal, Decimal]:
        """(available, hold) of one currency."""
        a = self.accounts.get(currency, [Decimal(0), Decimal(0)])
        return a[0], a[1]

    async def fill_resting(self, order_id: str, qty: str | Decimal | None = None) -> str:
        """Someone trades against our resting order: *qty* (default all that is left) at its limit
        price, we are the maker. Returns the trade id; pushes the update on the user channel."""
        o = self.orders[order_id]
        if not o.live or o.limit is None:
            raise ValueError(f"order {order_id} is {o.status}, not resting")
        q = o.remaining if qty is None else Decimal(str(qty))
        if q <= 0 or q > o.remaining:
            raise ValueError(f"cannot fill {q} of {o.remaining}")
        trade_id = self._fill(o, o.limit, q, maker=True)
        if o.remaining <= 0:
            o.status = "FILLED"
            self._release(o)
        await self._push_user(o)
        return trade_id

    async def cancel_order(self, order_id: str, message: str = "Venue cancelled") -> None:
        """The venue cancels a live order on its own (pushed on the user channel)."""
        o = self.orders[order_id]
        if o.live:
            o.status, o.cancel_message = "CANCELLED", message
            self._release(o)
            await self._push_user(o)

    def order_by_client(self, client_order_id: str) -> FakeOrder | None:
        oid = self.by_client.get(client_order_id)
        return self.orders.get(oid) if oid else None

    # -- rows as the venue prints them -------------------------------------------------------------
    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    @staticmethod
    def _avg(o: FakeOrder) -> Decimal:
        return o.filled_value / o.filled if o.filled else Decimal(0)

    def _total_after_fees(self, o: FakeOrder) -> Decimal:
        return o.filled_value + o.fees if o.side == "BUY" else o.filled_value - o.fees

    def order_row(self, o: FakeOrder) -> dict[str, Any]:
        """``GET /orders/historical/{id}``'s ``order``."""
        size = o.size if o.size is not None else Decimal(0)
        return {
            "order_id": o.order_id, "product_id": o.product_id, "user_id": USER_ID,
            "order_configuration": o.config, "side": o.side, "client_order_id": o.client_order_id,
            "status": o.status, "time_in_force": o.tif, "created_time": o.created,
            "completion_percentage": fmt((o.filled / size * 100).quantize(Decimal("0.01"))) if size else "0",
            "filled_size": fmt(o.filled), "average_filled_price": fmt(self._avg(o)), "fee": "",
            "number_of_fills": str(o.number_of_fills), "filled_value": fmt(o.filled_value),
            "pending_cancel": False, "size_in_quote": o.size is None, "total_fees": fmt(o.fees),
            "size_inclusive_of_fees": False, "total_value_after_fees": fmt(self._total_after_fees(o)),
            "trigger_status": "INVALID_ORDER_TYPE", "order_type": o.order_type,
            "reject_reason": "REJECT_REASON_UNSPECIFIED", "settled": not o.live, "product_type": "SPOT",
            "reject_message": "", "cancel_message": o.cancel_message,
            "order_placement_source": "RETAIL_ADVANCED", "outstanding_hold_amount": fmt(o.reserved),
            "is_liquidation": False, "last_fill_time": o.last_fill_time, "edit_history": [], "leverage": "",
            "margin_type": "UNKNOWN_MARGIN_TYPE", "retail_portfolio_id": PORTFOLIO_ID,
        }

    def ws_row(self, o: FakeOrder) -> dict[str, Any]:
        """One ``orders[]`` row of a ``user`` channel event."""
        size = o.size if o.size is not None else Decimal(0)
        return {
            "order_id": o.order_id, "client_order_id": o.client_order_id,
            "cumulative_quantity": fmt(o.filled), "leaves_quantity": fmt(o.remaining if o.live else Decimal(0)),
            "avg_price": fmt(self._avg(o)), "total_fees": fmt(o.fees), "status": o.status,
            "product_id": o.product_id, "product_type": "SPOT", "creation_time": o.created,
            "order_side": o.side, "order_type": "Limit" if o.order_type == "LIMIT" else "Market",
            "cancel_reason": o.cancel_message, "reject_reason": "", "time_in_force": o.tif,
            "limit_price": fmt(o.limit) if o.limit is not None else "", "post_only": o.post_only,
            "number_of_fills": str(o.number_of_fills), "filled_value": fmt(o.filled_value),
            "outstanding_hold_amount": fmt(o.reserved), "total_value_after_fees": fmt(self._total_after_fees(o)),
            "completion_percentage": fmt((o.filled / size * 100).quantize(Decimal("0.01"))) if size else "0",
            "trigger_status": "INVALID_ORDER_TYPE", "contract_expiry_type": "UNKNOWN_CONTRACT_EXPIRY_TYPE",
            "risk_managed_by": "UNKNOWN_RISK_MANAGEMENT_TYPE", "stop_price": "", "start_time": "", "end_time": "",
        }

    def _account_row(self, ccy: str) -> dict[str, Any]:
        available, hold = self.accounts[ccy]
        fiat = ccy in ("USD", "EUR", "GBP")
        return {
            "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-coinbase/{ccy}")), "name": f"{ccy} Wallet",
            "currency": ccy, "available_balance": {"value": fmt(available), "currency": ccy},
            "default": ccy == "USD", "active": True, "created_at": "2024-01-01T00:00:00.000Z",
            "updated_at": stamp(), "deleted_at": None, "type": "ACCOUNT_TYPE_FIAT" if fiat else "ACCOUNT_TYPE_CRYPTO",
            "ready": True, "hold": {"value": fmt(hold), "currency": ccy}, "retail_portfolio_id": PORTFOLIO_ID,
            "platform": "ACCOUNT_PLATFORM_CONSUMER",
        }

    # -- money -----------------------------------------------------------------------------------
    def _currencies(self, pid: str) -> tuple[str, str]:
        row = self.products[pid]
        return str(row["base_currency_id"]), str(row["quote_currency_id"])

    def _acct(self, ccy: str) -> list[Decimal]:
        return self.accounts.setdefault(ccy, [Decimal(0), Decimal(0)])

    def _reserve(self, o: FakeOrder, amount: Decimal) -> None:
        base, quote = self._currencies(o.product_id)
        acct = self._acct(quote if o.side == "BUY" else base)
        acct[0] -= amount
        acct[1] += amount
        o.reserved = amount

    def _release(self, o: FakeOrder) -> None:
        """The order is done: what is still on hold goes back."""
        base, quote = self._currencies(o.product_id)
        acct = self._acct(quote if o.side == "BUY" else base)
        acct[0] += o.reserved
        acct[1] -= o.reserved
        o.reserved = Decimal(0)

    def _fill(self, o: FakeOrder, price: Decimal, qty: Decimal, *, maker: bool) -> str:
        """Book one execution of *o*: balances, the order's totals, a fill row. Returns its trade id."""
        base, quote = self._currencies(o.product_id)
        value = price * qty
        commission = value * (self.maker_fee if maker else self.taker_fee)
        if o.side == "BUY":
            # what this quantity held: at the limit (or the cost itself for a market order)
            held = qty * o.limit * (1 + self.taker_fee) if o.limit is not None else value + commission
            held = min(held, o.reserved)
            qa = self._acct(quote)
            qa[1] -= held
            qa[0] += held - value - commission
            o.reserved -= held
            self._acct(base)[0] += qty
        else:
            held = min(qty, o.reserved)
            ba = self._acct(base)
            ba[1] -= held
            ba[0] -= qty - held
            o.reserved -= held
            self._acct(quote)[0] += value - commission
        o.filled += qty
        o.filled_value += value
        o.fees += commission
        o.number_of_fills += 1
        ts = stamp()
        o.last_fill_time = ts
        trade_id = self._uuid()
        self.fills.append((time.time_ns(), {
            "entry_id": self._uuid(), "trade_id": trade_id, "order_id": o.order_id, "trade_time": ts,
            "trade_type": "FILL", "price": fmt(price), "size": fmt(qty), "commission": fmt(commission),
            "product_id": o.product_id, "sequence_timestamp": ts,
            "liquidity_indicator": "MAKER" if maker else "TAKER", "size_in_quote": False, "user_id": USER_ID,
            "side": o.side, "retail_portfolio_id": PORTFOLIO_ID,
        }))
        return trade_id

    # -- matching --------------------------------------------------------------------------------
    def _opposite(self, pid: str, side: str) -> list[tuple[Decimal, Decimal]]:
        """The levels a *side* order takes from, best first."""
        book = self.books[pid]
        if side == "BUY":
            return [(p, book["offer"][p]) for p in sorted(book["offer"])]
        return [(p, book["bid"][p]) for p in sorted(book["bid"], reverse=True)]

    @staticmethod
    def _reaches(side: str, price: Decimal, limit: Decimal | None) -> bool:
        return limit is None or (price <= limit if side == "BUY" else price >= limit)

    def _walk(self, pid: str, side: str, size: Decimal | None, limit: Decimal | None,
              quote_size: Decimal | None = None) -> list[tuple[Decimal, Decimal]]:
        """What an order would take, level by level: ``[(price, qty)]``."""
        binc = Decimal(self.products[pid]["base_increment"])
        out = []
        left, budget = size, quote_size
        for price, avail in self._opposite(pid, side):
            if not self._reaches(side, price, limit):
                break
            if left is not None:
                if left <= 0:
                    break
                q = min(left, avail)
                left -= q
            else:
                assert budget is not None
                q = min(avail, (budget / price / binc).to_integral_value(rounding="ROUND_DOWN") * binc)
                if q <= 0:
                    break
                budget -= q * price
            out.append((price, q))
        return out

    async def _execute(self, o: FakeOrder) -> None:
        """Take liquidity for *o* (unless post-only), then rest it, fill it or cancel what is left."""
        plan = [] if o.post_only else self._walk(o.product_id, o.side, o.size, o.limit, o.quote_size)
        if o.tif == "FILL_OR_KILL" and sum((q for _, q in plan), Decimal(0)) < (o.size or 0):
            plan = []
            o.cancel_message = "Fill-or-kill order could not be filled in full"
        side = "offer" if o.side == "BUY" else "bid"
        changes = []
        for price, qty in plan:
            self._fill(o, price, qty, maker=False)
            if o.size is None:
                o.spent_quote += price * qty
            changes.append((side, price, self.books[o.product_id][side][price] - qty))
        if changes:
            await self.set_levels(o.product_id, changes)
        if o.size is None or o.remaining <= 0:
            o.status = "FILLED" if o.filled > 0 else "CANCELLED"
            self._release(o)
        elif o.tif != "GOOD_UNTIL_CANCELLED":
            o.status = "CANCELLED"
            o.cancel_message = o.cancel_message or "IOC order remainder cancelled"
            self._release(o)
        else:
            o.status = "OPEN"

    async def _push_user(self, o: FakeOrder) -> None:
        payload = {"channel": "user", "client_id": "", "timestamp": stamp(),
                   "events": [{"type": "update", "orders": [self.ws_row(o)]}]}
        for conn in [c for c in self.conns if not c.closed and c.user]:
            if conn.user_products and o.product_id not in conn.user_products:
                continue

            def text(seq: int, payload: dict[str, Any] = payload) -> str:
                return json.dumps({**payload, "sequence_num": seq}, separators=(",", ":"))

            await self._send_raw(conn, text, repeat=2 if self._dup_user else 1)

    # -- REST: the order side --------------------------------------------------------------------
    @staticmethod
    def _reject(config: Any, error: str, message: str, preview: str = "", new_reason: str = "") -> JSONResponse:
        return JSONResponse({
            "success": False, "failure_reason": "UNKNOWN_FAILURE_REASON", "order_id": "",
            "error_response": {"error": error, "message": message, "error_details": "",
                               "preview_failure_reason": preview or f"PREVIEW_{error}",
                               "new_order_failure_reason": new_reason or error},
            "order_configuration": config,
        })

    async def _accounts(self, request: Request) -> JSONResponse:
        hit = self._gate(request)
        if hit is not None:
            return hit
        q = request.query_params
        limit = self._int(q, "limit", 49)
        if limit is None:
            return self._bad(400, "INVALID_ARGUMENT", "limit must be a non-negative integer")
        try:
            offset = int(q.get("cursor") or 0)
        except ValueError:
            return self._bad(400, "INVALID_ARGUMENT", "invalid cursor")
        rows = [self._account_row(c) for c in sorted(self.accounts)]
        page = min(limit or 49, self.account_page, 250)
        chunk = rows[offset:offset + page]
        more = offset + page < len(rows)
        return JSONResponse({"accounts": chunk, "has_next": more, "cursor": str(offset + page) if more else "",
                             "size": len(chunk)})

    async def _create_order(self, request: Request) -> JSONResponse:
        hit = self._gate(request)
        if hit is not None:
            return hit
        try:
            body = await request.json()
        except ValueError:
            return self._bad(400, "INVALID_ARGUMENT", "body is not JSON")
        if not isinstance(body, dict):
            return self._bad(400, "INVALID_ARGUMENT", "body is not a JSON object")
        self.posted.append(body)
        answer = await self._take_order(body)
        if self._delays:
            await asyncio.sleep(self._delays.pop(0))
        return answer

    async def _take_order(self, body: dict[str, Any]) -> JSONResponse:
        cid = body.get("client_order_id")
        if not isinstance(cid, str) or not cid:
            return self._bad(400, "INVALID_ARGUMENT", "client_order_id is required")
        config = body.get("order_configuration")
        existing = self.order_by_client(cid)
        if existing is not None:
            # Not unique: no new order; the existing one is answered (the documented behaviour).
            self.duplicates.append(cid)
            return JSONResponse({"success": True, "success_response": {
                "order_id": existing.order_id, "product_id": existing.product_id, "side": existing.side,
                "client_order_id": cid, "attached_order_id": ""}, "order_configuration": existing.config})
        pid, side = body.get("product_id"), body.get("side")
        if not isinstance(config, dict) or len(config) != 1:
            return self._bad(400, "INVALID_ARGUMENT", "order_configuration must hold exactly one configuration")
        (kind, spec), = config.items()
        if kind not in CONFIGS or not isinstance(spec, dict):
            out = self._reject(config, "UNSUPPORTED_ORDER_CONFIGURATION", f"{kind} is not supported")
        elif side not in ("BUY", "SELL"):
            out = self._reject(config, "INVALID_SIDE", f"invalid side {side!r}")
        elif not isinstance(pid, str) or pid not in self.products:
            out = self._reject(config, "INVALID_PRODUCT_ID", "ProductID is invalid")
        else:
            bad = [k for k in ("base_size", "quote_size", "limit_price") if k in spec and not isinstance(spec[k], str)]
            if bad or ("post_only" in spec and not isinstance(spec["post_only"], bool)):
                return self._bad(400, "INVALID_ARGUMENT", f"{', '.join(bad) or 'post_only'}: wrong type")
            return await self._new_order(cid, pid, side, kind, spec, config)
        self.rejects.append(json.loads(bytes(out.body)))
        return out

    async def _new_order(self, cid: str, pid: str, side: str, kind: str, spec: dict[str, Any],
                         config: dict[str, Any]) -> JSONResponse:
        row = self.products[pid]
        order_type, tif = CONFIGS[kind]

        def num(key: str) -> Decimal | None:
            raw = spec.get(key)
            if raw in (None, ""):
                return None
            try:
                d = Decimal(raw)
            except InvalidOperation:
                return Decimal("NaN")
            return d

        size, quote_size, limit = num("base_size"), num("quote_size"), num("limit_price")
        post_only = bool(spec.get("post_only", False))

        def reject(error: str, message: str, preview: str = "") -> JSONResponse:
            out = self._reject(config, error, message, preview)
            self.rejects.append(json.loads(bytes(out.body)))
            return out

        if row["trading_disabled"] or row["status"] != "online" or row.get("cancel_only"):
            return reject("ORDER_ENTRY_DISABLED", f"trading is disabled for {pid}")
        if order_type == "LIMIT" and (limit is None or not limit.is_finite() or limit <= 0):
            return reject("INVALID_LIMIT_PRICE", "limit_price is required and must be positive")
        if size is None and (order_type == "LIMIT" or quote_size is None or side == "SELL"):
            return reject("INVALID_ORDER_CONFIG", "base_size is required", "PREVIEW_INVALID_ORDER_CONFIG")
        if size is not None and (not size.is_finite() or size <= 0):
            return reject("INVALID_SIZE_PRECISION", "base_size must be a positive number")
        if quote_size is not None and (not quote_size.is_finite() or quote_size <= 0):
            return reject("INVALID_QUOTE_SIZE_PRECISION", "quote_size must be a positive number")
        binc, pinc = Decimal(row["base_increment"]), Decimal(row["price_increment"])
        if size is not None and size % binc:
            return reject("INVALID_SIZE_PRECISION", f"base_size {fmt(size)} is not a multiple of {row['base_increment']}")
        if limit is not None and limit % pinc:
            return reject("INVALID_PRICE_PRECISION",
                          f"limit_price {fmt(limit)} is not a multiple of {row['price_increment']}")
        if size is not None and size < Decimal(row["base_min_size"]):
            return reject("UNKNOWN_FAILURE_REASON", f"Order size is below the minimum of {row['base_min_size']}",
                          "PREVIEW_INVALID_BASE_SIZE_TOO_SMALL")
        if size is not None and size > Decimal(row["base_max_size"]):
            return reject("UNKNOWN_FAILURE_REASON", f"Order size is above the maximum of {row['base_max_size']}",
                          "PREVIEW_INVALID_BASE_SIZE_TOO_LARGE")
        plan = self._walk(pid, side, size, limit, quote_size)
        if order_type == "MARKET" and not plan:
            return reject("INVALID_NO_LIQUIDITY", "no liquidity for a market order", "PREVIEW_INVALID_NO_LIQUIDITY")
        notional = (size * limit if limit is not None and size is not None
                    else quote_size if quote_size is not None else sum((p * q for p, q in plan), Decimal(0)))
        if notional < Decimal(row["quote_min_size"]):
            return reject("UNKNOWN_FAILURE_REASON", f"Order value is below the minimum of {row['quote_min_size']}",
                          "PREVIEW_INVALID_QUOTE_SIZE_TOO_SMALL")
        if post_only and plan:
            return reject("INVALID_LIMIT_PRICE_POST_ONLY", "Limit price would cross the book for a post-only order")
        base, quote = self._currencies(pid)
        if side == "BUY":
            need = (size * limit if limit is not None and size is not None else notional) * (1 + self.taker_fee)
            have = self._acct(quote)[0]
        else:
            assert size is not None
            need, have = size, self._acct(base)[0]
        if need > have:
            return reject("INSUFFICIENT_FUND", "Insufficient balance in source account")
        now = stamp()
        o = FakeOrder(order_id=self._uuid(), client_order_id=cid, product_id=pid, side=side, kind=kind,
                      config=config, size=size, quote_size=quote_size, limit=limit, post_only=post_only,
                      order_type=order_type, tif=tif, created=now, created_ns=time.time_ns())
        self.orders[o.order_id] = o
        self.by_client[cid] = o.order_id
        self._reserve(o, need)
        await self._execute(o)
        await self._push_user(o)
        return JSONResponse({"success": True, "success_response": {
            "order_id": o.order_id, "product_id": pid, "side": side, "client_order_id": cid,
            "attached_order_id": ""}, "order_configuration": config})

    async def _batch_cancel(self, request: Request) -> JSONResponse:
        hit = self._gate(request)
        if hit is not None:
            return hit
        try:
            body = await request.json()
        except ValueError:
            return self._bad(400, "INVALID_ARGUMENT", "body is not JSON")
        ids = body.get("order_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            return self._bad(400, "INVALID_ARGUMENT", "order_ids must be a non-empty list of strings")
        if len(ids) > 100:
            return self._bad(400, "INVALID_ARGUMENT", "at most 100 order_ids per request")
        results = []
        for oid in ids:
            o = self.orders.get(oid)
            if o is None:
                reason, ok = "UNKNOWN_CANCEL_ORDER", False
            elif o.status == "FILLED":
                reason, ok = "ORDER_IS_FILLED", False
            elif not o.live:
                reason, ok = "DUPLICATE_CANCEL_REQUEST", False
            else:
                o.status, o.cancel_message = "CANCELLED", "User requested cancel"
                self._release(o)
                await self._push_user(o)
                reason, ok = "UNKNOWN_CANCEL_FAILURE_REASON", True
            results.append({"success": ok, "failure_reason": reason, "order_id": oid})
        return JSONResponse({"results": results})

    async def _get_order(self, request: Request) -> JSONResponse:
        hit = self._gate(request)
        if hit is not None:
            return hit
        o = self.orders.get(request.path_params["order_id"])
        if o is None:
            return self._bad(404, "NOT_FOUND", "order with this orderID was not found")
        return JSONResponse({"order": self.order_row(o)})

    @staticmethod
    def _ns(text: str | None) -> int | None:
        if not text:
            return None
        s = text.replace("Z", "+00:00")
        head, dot, rest = s.partition(".")
        frac, tail = rest, ""
        for i, ch in enumerate(rest):
            if not ch.isdigit():
                frac, tail = rest[:i], rest[i:]
                break
        try:
            dt = datetime.fromisoformat(head + tail if not dot else f"{head}.{frac[:6].ljust(6, '0')}{tail}")
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp()) * 1_000_000_000 + int(frac[:9].ljust(9, "0") if dot else 0)

    def _page(self, q: Any, default: int, cap: int) -> tuple[int, int] | None:
        limit = self._int(q, "limit", default)
        try:
            offset = int(q.get("cursor") or 0)
        except ValueError:
            return None
        if limit is None or offset < 0:
            return None
        return min(limit or default, cap), offset

    async def _list_orders(self, request: Request) -> JSONResponse:
        hit = self._gate(request)
        if hit is not None:
            return hit
        q = request.query_params
        paging = self._page(q, 100, self.order_page)
        if paging is None:
            return self._bad(400, "INVALID_ARGUMENT", "bad limit or cursor")
        limit, offset = paging
        statuses = set(q.getlist("order_status"))
        products = set(q.getlist("product_ids"))
        ids = set(q.getlist("order_ids"))
        start, end = self._ns(q.get("start_date")), self._ns(q.get("end_date"))
        rows = [o for o in reversed(list(self.orders.values()))  # newest first
                if (not statuses or o.status in statuses) and (not products or o.product_id in products)
                and (not ids or o.order_id in ids) and (start is None or o.created_ns >= start)
                and (end is None or o.created_ns <= end)]
        chunk = rows[offset:offset + limit]
        more = offset + limit < len(rows)
        return JSONResponse({"orders": [self.order_row(o) for o in chunk], "sequence": "0", "has_next": more,
                             "cursor": str(offset + limit) if more else ""})

    async def _list_fills(self, request: Request) -> JSONResponse:
        hit = self._gate(request)
        if hit is not None:
            return hit
        q = request.query_params
        paging = self._page(q, 100, self.fill_page)
        if paging is None:
            return self._bad(400, "INVALID_ARGUMENT", "bad limit or cursor")
        limit, offset = paging
        orders = set(q.getlist("order_ids")) | set(q.getlist("order_id"))
        trades = set(q.getlist("trade_ids"))
        products = set(q.getlist("product_ids"))
        start = self._ns(q.get("start_sequence_timestamp"))
        end = self._ns(q.get("end_sequence_timestamp"))
        rows = [f for ns, f in reversed(self.fills)  # newest first
                if (not orders or f["order_id"] in orders) and (not trades or f["trade_id"] in trades)
                and (not products or f["product_id"] in products) and (start is None or ns >= start)
                and (end is None or ns <= end)]
        chunk = rows[offset:offset + limit]
        more = offset + limit < len(rows)
        return JSONResponse({"fills": chunk, "cursor": str(offset + limit) if more else ""})
