"""A fake Kalshi (trade-api v2) on loopback: the REST paths and the signed WebSocket, answering
as the venue does (``docs/VENUES.md``, Kalshi; ``docs.kalshi.com/asyncapi.yaml``).

Serve it with :class:`tests.venues.harness.FakeServer`::

    fake = FakeKalshi(ping_s=0.1)
    fake.add_key("key-1", private_key.public_key())
    with FakeServer(fake.app) as server:
        api_url = server.url + "/trade-api/v2"
        ws_url = server.ws_url + "/trade-api/ws/v2"

State lives on the server's loop: reach it with ``server.call(fake.method, …)`` /
``await server.acall(…)``.

What it checks, as the venue does
    * The WebSocket upgrade needs ``KALSHI-ACCESS-KEY``, ``-TIMESTAMP`` (ms) and
      ``-SIGNATURE`` = base64 RSA-PSS (SHA-256, MGF1-SHA-256, salt = digest length) over
      ``ts + "GET" + path`` — the path without the query; a missing or bad signature, one
      that covers the query string, an unknown key or a timestamp more than
      ``max_skew_ms`` away is answered HTTP 401 at the upgrade (:attr:`ws_refused` says
      why). REST requests that carry the headers are checked the same way;
      ``/portfolio/balance`` needs them.
    * ``GET /markets``: ``limit`` 1–1000, ``status`` a *filter* status (``unopened``,
      ``open``, ``paused``, ``closed``, ``settled``; a returned status such as ``active``
      is a 400), ``mve_filter`` ``only|exclude`` (without it the listing starts with
      :attr:`combos` auto-generated ``KXMVE…`` combo markets), opaque ``cursor`` (an empty
      one ends the listing). ``GET /events``: ``limit`` 1–200, same cursor and status
      filter, combo events left out. ``GET /markets/{ticker}/orderbook?depth=`` 0–100
      (0 or none: every level): ``orderbook_fp`` with ``yes_dollars`` / ``no_dollars``,
      bids only, ascending, best last, an empty side ``[]``.
    * REST reads go through a token bucket (``reads_per_s``, ``burst``: Kalshi Basic,
      20/s): beyond it, and for the next N calls after :meth:`throttle`, a 429 *without*
      ``Retry-After``.
    * WebSocket commands ``subscribe`` / ``update_subscription`` (``add_markets``,
      ``delete_markets``, ``get_snapshot``; exactly one sid) / ``unsubscribe`` /
      ``list_subscriptions`` with the documented error codes (2 params, 3 channels,
      4 sids, 5 command, 7 sid, 8 channel, 12 one sid, 13 action, 14 market, 15 action
      required, 16 market not found). ``orderbook_delta`` starts each market with an
      ``orderbook_snapshot`` (a side with no bids is left out of the snapshot) and then
      sends ``orderbook_delta`` with a signed ``delta_fp``; ``seq`` counts per
      subscription; replies (``ok``, ``unsubscribed``) carry the subscription's current
      ``seq`` without taking a number. ``market_lifecycle_v2`` takes no market filter.
      Ping frames (body ``heartbeat``) every ``ping_s``.

Scenario controls: :meth:`set_level`, :meth:`move`, :meth:`gap` (a change whose delta is
lost), :meth:`stall` (open sockets go silent, pings too), :meth:`disconnect` (abrupt, no
close frame), :meth:`throttle`, :meth:`set_structure` (tick change), :meth:`trade`,
:meth:`clear_side` (one-sided book), :meth:`blast` (many deltas, stamped, for benchmarks).

The order side (one account: :attr:`FakeKalshi.balance`, dollars)
    * ``POST /portfolio/events/orders`` (V2), signed, a write: ``ticker``, ``side``
      (``bid``/``ask`` of the YES leg), ``count`` (a fixed-point *string*, whole contracts, ≥ 1),
      ``price`` (a dollar *string*, on the market's ``price_ranges`` grid), ``time_in_force``
      (``fill_or_kill``/``good_till_canceled``/``immediate_or_cancel``),
      ``self_trade_prevention_type`` (``taker_at_cross``/``maker``), optional ``post_only`` and
      ``client_order_id`` (a second order with the same id is refused, 409
      ``order_already_exists``). A bid crosses the YES asks (1 − NO bids), an ask the YES bids,
      best level first, each fill at the level's price (taker fee ``ceil(0.07·C·P·(1−P))`` to the
      cent); what is left rests in the book at its limit (a bid as a YES bid, an ask as a NO bid
      at 1 − p), or is cancelled (IOC; FOK fills all or nothing). Our own resting orders are
      never matched: ``taker_at_cross`` cancels the taker there, ``maker`` cancels the resting
      one. The account must cover every resting order plus the new one at its limit
      (bid p, ask 1 − p a contract), else 400 ``insufficient_balance``. 201
      ``{order_id, client_order_id, fill_count, remaining_count, ts_ms}``. Errors are
      ``{code, message, details, service}``.
    * ``DELETE /portfolio/events/orders/{id}`` → ``{order_id, client_order_id, reduced_by, ts_ms}``;
      an order not resting any more is 404. ``DELETE /portfolio/events/orders/batched``
      (``{"orders": [{"order_id"}]}``, ≤ 20, billed 2 tokens an order against 10 a write) →
      ``{"orders": [{order_id, reduced_by, …} | {order_id, error}]}``. ``GET /portfolio/orders`` (``ticker``, ``status``,
      ``min_ts`` seconds, ``limit`` ≤ 1000, ``cursor``; newest first) and
      ``GET /portfolio/orders/{id}``. ``GET /portfolio/fills`` (``ticker``, ``order_id``,
      ``min_ts``, ``limit`` ≤ 200, ``cursor``; newest first). ``GET /portfolio/balance``
      (cents). The legacy ``POST /portfolio/orders`` answers 410 (counted: :attr:`legacy_calls`).
    * Writes have their own bucket (``writes_per_s``, Basic 10/s): beyond it, 429 without
      ``Retry-After``; :meth:`throttle` applies to writes too.
    * WebSocket ``fill`` (``trade_id`` = the REST ``fill_id``) and ``user_orders``
      (``user_order`` messages, an order row) go to the subscribed signed sessions after every
      match, cancel and rest.

    Order scenario controls: :meth:`drop_next_reply` (the venue takes the next write but answers
    only after ``drop_delay_s``, past the client's timeout), :meth:`duplicate_fills` (every fill
    message sent twice), :meth:`reject_next` (the next create refused with a reason),
    :meth:`fill_resting` (a counterparty takes part of a resting order); a :meth:`set_level` /
    :meth:`move` that adds a bid crossing one of our resting orders fills it at its price, and a
    :meth:`trade` that eats into a level holding our order fills it (ours is last in the queue).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import random
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_UP, Decimal
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

D = Decimal
ONE = D(1)
ZERO = D(0)
CENT = D("0.01")
API = "/trade-api/v2"
WS_PATH = "/trade-api/ws/v2"
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
CHANNELS = frozenset({
    "orderbook_delta", "ticker", "trade", "fill", "market_positions", "market_lifecycle_v2",
    "multivariate_market_lifecycle", "communications", "order_group_updates", "user_orders",
})
#: filter status (query) -> market statuses it returns
FILTER_STATUS = {
    "unopened": ("initialized",),
    "open": ("active",),
    "paused": ("inactive",),
    "closed": ("closed",),
    "settled": ("determined", "finalized"),
}
STRUCTURES = {
    "linear_cent": [("0.0000", "1.0000", "0.0100")],
    "deci_cent": [("0.0000", "1.0000", "0.0010")],
    "tapered_deci_cent": [("0.0000", "0.1000", "0.0010"), ("0.1000", "0.9000", "0.0100"),
                          ("0.9000", "1.0000", "0.0010")],
}
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def px(p: Decimal) -> str:
    """A price as Kalshi writes it: dollars, four decimals."""
    return f"{p:.4f}"


def fp(c: Decimal) -> str:
    """A count as Kalshi writes it: contracts, two decimals."""
    return f"{c:.2f}"


def day_code(d: date) -> str:
    return f"{d:%y}{MONTHS[d.month - 1]}{d:%d}"


def _iso(d: date, hour: int) -> str:
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ranges_of(structure: str) -> list[dict[str, str]]:
    return [{"start": a, "end": b, "step": s} for a, b, s in STRUCTURES[structure]]


def on_grid(price: Decimal, ranges: list[dict[str, str]]) -> bool:
    """Whether *price* is a valid price under *ranges* (the step of the band it falls in)."""
    if not D(0) < price < ONE:
        return False
    for r in ranges:
        if D(r["start"]) <= price <= D(r["end"]) and (price - D(r["start"])) % D(r["step"]) == 0:
            return True
    return False


@dataclass
class FakeEvent:
    event_ticker: str
    series_ticker: str
    title: str
    sub_title: str
    category: str
    mutually_exclusive: bool = False
    combo: bool = False

    def row(self) -> dict[str, Any]:
        return {
            "event_ticker": self.event_ticker,
            "series_ticker": self.series_ticker,
            "title": self.title,
            "sub_title": self.sub_title,
            "category": self.category,
            "mutually_exclusive": self.mutually_exclusive,
            "collateral_return_type": "",
            "available_on_brokers": True,
            "product_metadata": {},
        }


@dataclass
class FakeMarket:
    """One market as Kalshi keeps it: two bid ladders (YES and NO), Decimal price -> count."""

    ticker: str
    event_ticker: str
    title: str
    yes_sub_title: str
    close_time: str
    status: str = "active"
    structure: str = "linear_cent"
    ranges: list[dict[str, str]] = field(default_factory=lambda: ranges_of("linear_cent"))
    volume: Decimal = ZERO
    open_interest: Decimal = ZERO
    last_price: Decimal = ZERO
    combo: str | None = None  # mve_collection_ticker
    yes: dict[Decimal, Decimal] = field(default_factory=dict)
    no: dict[Decimal, Decimal] = field(default_factory=dict)

    def side(self, side: str) -> dict[Decimal, Decimal]:
        if side not in ("yes", "no"):
            raise ValueError(f"side must be yes or no, not {side!r}")
        return self.yes if side == "yes" else self.no

    def ladder(self, side: str, depth: int = 0) -> list[list[str]]:
        """Bids ascending, best last (the venue's order); *depth* > 0 keeps the best N."""
        levels = sorted(self.side(side).items())
        if depth > 0:
            levels = levels[-depth:]
        return [[px(p), fp(c)] for p, c in levels]

    def row(self) -> dict[str, Any]:
        yb = max(self.yes, default=None)
        nb = max(self.no, default=None)
        liquidity = sum((p * c for p, c in self.yes.items()), D(0)) + sum((p * c for p, c in self.no.items()), D(0))
        row: dict[str, Any] = {
            "ticker": self.ticker,
            "event_ticker": self.event_ticker,
            "market_type": "binary",
            "title": self.title,
            "subtitle": "",
            "yes_sub_title": self.yes_sub_title,
            "no_sub_title": self.yes_sub_title,
            "status": self.status,
            "open_time": "2026-01-01T00:00:00Z",
            "close_time": self.close_time,
            "expiration_time": self.close_time,
            "latest_expiration_time": self.close_time,
            "yes_bid_dollars": px(yb if yb is not None else D(0)),
            "yes_ask_dollars": px(ONE - nb if nb is not None else ONE),
            "no_bid_dollars": px(nb if nb is not None else D(0)),
            "no_ask_dollars": px(ONE - yb if yb is not None else ONE),
            "last_price_dollars": px(self.last_price),
            "volume_fp": fp(self.volume),
            "volume_24h_fp": fp(self.volume / 10),
            "open_interest_fp": fp(self.open_interest),
            "liquidity_dollars": px(liquidity),
            "notional_value_dollars": "1.0000",
            "price_level_structure": self.structure,
            "price_ranges": [dict(r) for r in self.ranges],
            "fractional_trading_enabled": False,
            "can_close_early": True,
            "rules_primary": f"If {self.yes_sub_title}, the market resolves to Yes.",
        }
        if self.combo:
            row["mve_collection_ticker"] = self.combo
            row["mve_selected_legs"] = []
        return row


TIFS = frozenset({"fill_or_kill", "good_till_canceled", "immediate_or_cancel"})
STPS = frozenset({"taker_at_cross", "maker"})
_FP_RE = re.compile(r"^\d+(\.\d{1,2})?$")
_PX_RE = re.compile(r"^\d(\.\d{1,6})?$|^\.\d{1,6}$")
_CID_RE = re.compile(r"^[\w:+=/-]{1,64}$")
TAKER_FEE = D("0.07")
BATCH_MAX = 20


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def taker_fee(count: Decimal, yes_price: Decimal) -> Decimal:
    """Kalshi's taker fee: 0.07 · C · P · (1 − P), rounded up to the cent."""
    return (TAKER_FEE * count * yes_price * (ONE - yes_price)).quantize(CENT, rounding=ROUND_UP)


@dataclass
class FakeOrder:
    """One of the account's orders, V2 style: a bid or an ask on the YES leg at a YES price."""

    order_id: str
    client_order_id: str
    ticker: str
    side: str  # bid | ask
    price: Decimal  # YES price
    initial: Decimal
    tif: str
    stp: str
    post_only: bool
    created_ms: int
    remaining: Decimal = ZERO
    filled: Decimal = ZERO
    status: str = "resting"  # resting | canceled | executed
    updated_ms: int = 0
    taker_fees: Decimal = ZERO
    maker_fees: Decimal = ZERO
    cancel_reason: str | None = None

    @property
    def level(self) -> tuple[str, Decimal]:
        """Where the order rests in Kalshi's two bid ladders: a bid as a YES bid, an ask as a NO bid."""
        return ("yes", self.price) if self.side == "bid" else ("no", ONE - self.price)

    @property
    def unit_cost(self) -> Decimal:
        """Dollars a contract costs at the limit (bid: p; ask: 1 − p, the NO it buys)."""
        return self.price if self.side == "bid" else ONE - self.price

    def row(self) -> dict[str, Any]:
        """The order as ``GET /portfolio/orders`` (and ``user_order``) report it."""
        return {
            "order_id": self.order_id,
            "user_id": "fake-member",
            "client_order_id": self.client_order_id,
            "ticker": self.ticker,
            "side": "yes",
            "action": "buy" if self.side == "bid" else "sell",
            "type": "limit",
            "status": self.status,
            "yes_price_dollars": px(self.price),
            "no_price_dollars": px(ONE - self.price),
            "fill_count_fp": fp(self.filled),
            "remaining_count_fp": fp(self.remaining),
            "initial_count_fp": fp(self.initial),
            "taker_fees_dollars": px(self.taker_fees),
            "maker_fees_dollars": px(self.maker_fees),
            "time_in_force": self.tif,
            "self_trade_prevention_type": self.stp,
            "post_only": self.post_only,
            "created_time": _iso_ms(self.created_ms),
            "last_update_time": _iso_ms(self.updated_ms or self.created_ms),
        }


class _Sub:
    __slots__ = ("channel", "seq", "sid", "tickers")

    def __init__(self, sid: int, channel: str, tickers: list[str]) -> None:
        self.sid, self.channel, self.tickers, self.seq = sid, channel, tickers, 0


class _Session:
    """One WebSocket connection and its subscriptions."""

    def __init__(self, fake: FakeKalshi, ws: WebSocket) -> None:
        self.fake = fake
        self.ws = ws
        self.proto = ws.scope.get("fake.protocol")  # uvicorn's protocol: ping frames, abort
        self.subs: dict[int, _Sub] = {}
        self.next_sid = 1
        self.silent = False
        self.closed = False
        self.lock = asyncio.Lock()
        self.pings = 0

    async def send(self, obj: Mapping[str, Any]) -> None:
        if self.silent or self.closed:
            return
        try:
            await self.ws.send_text(json.dumps(obj, separators=(",", ":")))
        except Exception:  # the client went away
            self.closed = True

    def ping(self) -> None:
        proto = self.proto
        if self.silent or self.closed or proto is None or proto.transport.is_closing():
            return
        proto.conn.send_ping(b"heartbeat")
        proto.transport.write(b"".join(proto.conn.data_to_send()))
        self.pings += 1

    def abort(self) -> None:
        self.closed = True
        if self.proto is not None:
            self.proto.transport.abort()

    def book_subs(self, ticker: str) -> list[_Sub]:
        return [s for s in self.subs.values() if s.channel == "orderbook_delta" and ticker in s.tickers]


class _Grab:
    """Puts uvicorn's protocol object in the WebSocket scope (Starlette wraps ``send`` later), and
    an HTTP request's transport in its scope (to drop a connection mid-request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            proto = getattr(send, "__self__", None)
            if proto is not None and hasattr(proto, "conn") and hasattr(proto, "transport"):
                scope["fake.protocol"] = proto
        elif scope["type"] == "http":
            transport = _transport_of(send)
            if transport is not None:
                scope["fake.transport"] = transport
        await self.app(scope, receive, send)


def _transport_of(fn: Any, depth: int = 0) -> Any:
    """The transport behind an ASGI ``send`` (uvicorn's cycle, possibly wrapped in closures)."""
    owner = getattr(fn, "__self__", None)
    if owner is not None and hasattr(owner, "transport"):
        return owner.transport
    if depth < 4:
        for cell in getattr(fn, "__closure__", None) or ():
            with contextlib.suppress(ValueError):
                found = _transport_of(cell.cell_contents, depth + 1)
                if found is not None:
                    return found
    return None


class WsError(Exception):
    def __init__(self, code: int, msg: str, **extra: Any) -> None:
        super().__init__(msg)
        self.code, self.msg, self.extra = code, msg, extra


class FakeKalshi:
    """The venue's state (catalogue, books as Kalshi keeps them), its app, and scenario controls."""

    def __init__(self, *, now: float | None = None, seed: int = 13, combos: int = 1200,
                 ping_s: float = 10.0, reads_per_s: float = 20.0, burst: int = 20,
                 max_skew_ms: int = 10_000, balance: Decimal | str = "1000", writes_per_s: float = 10.0,
                 write_burst: int = 10, drop_delay_s: float = 1.0) -> None:
        self.markets: dict[str, FakeMarket] = {}
        self.events: dict[str, FakeEvent] = {}
        self.keys: dict[str, rsa.RSAPublicKey] = {}
        self.sessions: list[_Session] = []
        self.ping_s = ping_s
        self.max_skew_ms = max_skew_ms
        self.reads_per_s, self.burst = reads_per_s, burst
        self._tokens, self._tokens_at = float(burst), time.monotonic()
        self._throttle = 0
        self.served_429 = 0
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, query) of every REST call
        self.commands: list[dict[str, Any]] = []  # every WebSocket command received
        self.ws_accepted = 0
        self.ws_refused: list[str] = []
        self.trade_seq = 0
        # -- the order side: one account
        self.balance = D(str(balance))  # dollars
        self.orders: dict[str, FakeOrder] = {}  # order id -> order, in creation order
        self.by_client: dict[str, str] = {}  # client order id -> order id
        self.fill_log: list[dict[str, Any]] = []  # every fill row, oldest first
        self.writes_per_s, self.write_burst = writes_per_s, write_burst
        self._wtokens, self._wtokens_at = float(write_burst), time.monotonic()
        self.drop_delay_s = drop_delay_s
        self._drop = 0
        self._dup_fills = False
        self._rejects: list[tuple[str, str]] = []
        self.legacy_calls = 0  # POST/DELETE on the retired V1 order paths (answered 410)
        self.duplicates = 0  # creates refused because the client order id exists
        self.creates = 0  # order creates accepted
        self.dropped = 0  # replies held past the client's timeout
        self.holding = 0  # held replies not sent yet
        self._sever = 0
        self.severed = 0  # writes whose connection was dropped after the venue acted
        self._fail: list[tuple[int, bool]] = []
        self.batch_cancels = 0
        self._order_lock = asyncio.Lock()
        self._rng = random.Random(seed)
        self._build(now if now is not None else time.time(), combos)
        self.app = Starlette(
            routes=[
                Route(f"{API}/markets", self.get_markets),
                Route(f"{API}/markets/{{ticker}}", self.get_market),
                Route(f"{API}/markets/{{ticker}}/orderbook", self.get_orderbook),
                Route(f"{API}/events", self.get_events),
                Route(f"{API}/events/{{event_ticker}}", self.get_event),
                Route(f"{API}/portfolio/balance", self.get_balance),
                Route(f"{API}/portfolio/orders", self.v1_orders, methods=["GET", "POST"]),
                Route(f"{API}/portfolio/orders/{{order_id}}", self.v1_order, methods=["GET", "DELETE"]),
                Route(f"{API}/portfolio/events/orders", self.create_order, methods=["POST"]),
                Route(f"{API}/portfolio/events/orders/batched", self.cancel_batch, methods=["DELETE"]),
                Route(f"{API}/portfolio/events/orders/{{order_id}}", self.cancel_order, methods=["DELETE"]),
                Route(f"{API}/portfolio/fills", self.get_fills),
                WebSocketRoute(WS_PATH, self.websocket),
            ],
            middleware=[Middleware(_Grab)],
        )

    # -- catalogue ---------------------------------------------------------------------------
    def add_key(self, key_id: str, public_key: rsa.RSAPublicKey) -> None:
        self.keys[key_id] = public_key

    def _event(self, ticker: str, series: str, title: str, category: str) -> None:
        self.events[ticker] = FakeEvent(ticker, series, title, "", category, mutually_exclusive=False)

    def _market(self, ticker: str, event: str, title: str, outcome: str, close: str, fair: float, *,
                structure: str = "linear_cent", status: str = "active") -> None:
        m = FakeMarket(ticker, event, title, outcome, close, status=status, structure=structure,
                       ranges=ranges_of(structure))
        rng = self._rng
        m.volume = D(rng.randrange(1_000, 900_000))
        m.open_interest = (m.volume / 3).quantize(ONE)
        if status == "active":
            self._seed_book(m, fair)
        self.markets[ticker] = m

    def _seed_book(self, m: FakeMarket, fair: float) -> None:
        """Two-sided near the money, one-sided far from it; levels on the market's grid."""
        rng = self._rng
        fine = D(m.ranges[0]["step"]) if len(m.ranges) == 1 else CENT
        fair_d = D(str(round(fair, 3)))
        for side, value in (("yes", fair_d), ("no", ONE - fair_d)):
            # Nobody bids for a side worth (nearly) nothing: far strikes are one-sided.
            if value < D("0.02"):
                continue
            best = (value - D("0.01")).quantize(D("0.001") if fine < CENT else CENT)
            tail = best < D("0.10") or best > D("0.90")
            step = D(STRUCTURES[m.structure][0][2]) if tail and m.structure != "linear_cent" else CENT
            for i in range(6):
                p = best - step * i
                if on_grid(p, m.ranges):
                    m.side(side)[p] = D(rng.randrange(5, 600))
        m.last_price = max(m.yes, default=fair_d)

    def _build(self, now: float, combos: int) -> None:
        d0 = datetime.fromtimestamp(now, tz=UTC).date()
        rng = self._rng
        # Auto-generated combo markets come first: an unfiltered listing is all combos.
        for i in range(combos):
            coll = f"KXMVECROSSCATEGORY-R{i // 50:03d}"
            ev = f"KXMVECROSSCATEGORY-S2026{i:05X}"
            self.events[ev] = FakeEvent(ev, "KXMVECROSSCATEGORY", f"Combo {i}", "", "Combos", combo=True)
            t = f"{ev}-{rng.getrandbits(32):08X}"
            self.markets[t] = FakeMarket(t, ev, f"yes A, yes B, no C ({i})", "combo", _iso(d0 + timedelta(days=2), 23),
                                         combo=coll)
        # Bitcoin above $K in five days, nine strikes.
        d = d0 + timedelta(days=5)
        ev = f"KXBTCD-{day_code(d)}"
        self._event(ev, "KXBTCD", f"Bitcoin price on {d:%b} {d.day}, {d.year} at 5pm EST", "Crypto")
        for k in range(91_000, 100_000, 1000):
            fair = 1 - 0.5 * (1 + math.erf(math.log(k / 95_400) / (0.03 * math.sqrt(2))))
            self._market(f"{ev}-T{k}", ev, f"Bitcoin above ${k:,} on {d:%b} {d.day}, {d.year} at 5pm EST?",
                         f"${k:,} or above", _iso(d, 22), min(0.995, max(0.005, fair)))
        # Fed: tapered deci-cent ticks at the tails.
        meeting = (d0.replace(day=1) + timedelta(days=40)).replace(day=9)
        ev = f"KXFED-{meeting:%y}{MONTHS[meeting.month - 1]}"
        self._event(ev, "KXFED", f"Fed rate after the {meeting:%B} {meeting.year} meeting", "Economics")
        for rate, fair in (("3.00", 0.995), ("3.25", 0.97), ("3.50", 0.88), ("3.75", 0.38), ("4.00", 0.045),
                           ("4.25", 0.006)):
            self._market(f"{ev}-T{rate}", ev, f"Will the upper bound of the federal funds rate be above "
                         f"{rate}% following the Fed's {meeting:%b} {meeting.year} meeting?",
                         f"Above {rate}%", _iso(meeting, 18), fair, structure="tapered_deci_cent")
        # NYC high temperature tomorrow.
        d = d0 + timedelta(days=1)
        ev = f"KXHIGHNY-{day_code(d)}"
        self._event(ev, "KXHIGHNY", f"Highest temperature in NYC on {d:%b} {d.day}, {d.year}", "Climate")
        for code, label, w in (("T44", "44° or below", 0.05), ("B45.5", "45° to 46°", 0.17),
                               ("B47.5", "47° to 48°", 0.33), ("B49.5", "49° to 50°", 0.27),
                               ("B51.5", "51° to 52°", 0.13), ("T52", "53° or above", 0.05)):
            self._market(f"{ev}-{code}", ev, f"Will the high temp in NYC be {label} on {d:%b} {d.day}, {d.year}?",
                         label, _iso(d + timedelta(days=1), 4), w)
        # One NBA game, a market per team.
        d = d0 + timedelta(days=2)
        ev = f"KXNBAGAME-{day_code(d)}BOSLAL"
        self._event(ev, "KXNBAGAME", "Boston at Los Angeles L", "Sports")
        for team, name, fair in (("BOS", "Boston", 0.44), ("LAL", "Los Angeles L", 0.56)):
            self._market(f"{ev}-{team}", ev, "Boston at Los Angeles L Winner?", name,
                         _iso(d + timedelta(days=1), 3), fair)
        # CPI, deci-cent everywhere.
        ref = d0.replace(day=1)
        ev = f"KXCPIYOY-{ref:%y}{MONTHS[ref.month - 1]}"
        self._event(ev, "KXCPIYOY", f"CPI year-over-year in {ref:%B} {ref.year}", "Economics")
        for level, fair in (("2.4", 0.96), ("2.6", 0.8), ("2.8", 0.45), ("3.0", 0.14), ("3.2", 0.025)):
            self._market(f"{ev}-T{level}", ev, f"Will CPI rise more than {level}% year-over-year in "
                         f"{ref:%B} {ref.year}?", f"Above {level}%", _iso(ref + timedelta(days=41), 12), fair,
                         structure="deci_cent")
        # Yesterday's Bitcoin event: settled (not in an ``open`` listing).
        d = d0 - timedelta(days=1)
        ev = f"KXBTCD-{day_code(d)}"
        self._event(ev, "KXBTCD", f"Bitcoin price on {d:%b} {d.day}, {d.year} at 5pm EST", "Crypto")
        for k in range(93_000, 96_000, 1000):
            self._market(f"{ev}-T{k}", ev, f"Bitcoin above ${k:,} on {d:%b} {d.day}, {d.year} at 5pm EST?",
                         f"${k:,} or above", _iso(d, 22), 0.5, status="finalized")

    def open_markets(self) -> list[FakeMarket]:
        """Regular (not combo) markets an ``open`` listing returns, in listing order."""
        return [m for m in self.markets.values() if m.status == "active" and not m.combo]

    # -- auth and limits -------------------------------------------------------------------------
    def auth_error(self, headers: Mapping[str, str], method: str, path: str) -> str | None:
        """Why a signed request is refused (None: accepted). *path* excludes the query."""
        key_id = headers.get("kalshi-access-key")
        ts = headers.get("kalshi-access-timestamp")
        sig = headers.get("kalshi-access-signature")
        if not key_id or not ts or not sig:
            return "missing KALSHI-ACCESS-KEY / -TIMESTAMP / -SIGNATURE headers"
        public = self.keys.get(key_id)
        if public is None:
            return "unknown API key"
        if not ts.isdigit():
            return "KALSHI-ACCESS-TIMESTAMP must be integer milliseconds"
        if abs(int(ts) - int(time.time() * 1000)) > self.max_skew_ms:
            return "stale KALSHI-ACCESS-TIMESTAMP"
        try:
            raw = base64.b64decode(sig, validate=True)
            public.verify(raw, (ts + method + path).encode(), _PSS, hashes.SHA256())
        except (InvalidSignature, binascii.Error, ValueError):
            return "bad signature"
        return None

    def throttle(self, n: int) -> None:
        """Answer the next *n* REST calls (reads or writes) 429 without Retry-After."""
        self._throttle = n

    def _limited(self, write: bool = False, cost: int = 1) -> bool:
        if self._throttle > 0:
            self._throttle -= 1
            return True
        now = time.monotonic()
        if write:
            self._wtokens = min(float(self.write_burst), self._wtokens + (now - self._wtokens_at) * self.writes_per_s)
            self._wtokens_at = now
            if self._wtokens < cost:
                return True
            self._wtokens -= cost
            return False
        self._tokens = min(float(self.burst), self._tokens + (now - self._tokens_at) * self.reads_per_s)
        self._tokens_at = now
        if self._tokens < 1:
            return True
        self._tokens -= 1
        return False

    async def _gate(self, request: Request, *, auth: bool = False, write: bool = False,
                    cost: int = 1) -> Response | None:
        self.requests.append((request.url.path, dict(request.query_params)))
        if self._limited(write, cost):
            self.served_429 += 1
            return JSONResponse({"error": "too many requests"}, status_code=429)  # no Retry-After
        signed = any(h in request.headers for h in ("kalshi-access-key", "kalshi-access-signature"))
        if auth or signed:
            why = self.auth_error(request.headers, request.method, request.url.path)
            if why is not None:
                return _error(401, "authentication_error", why)
        return None

    # -- REST ----------------------------------------------------------------------------------
    async def get_markets(self, request: Request) -> Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        q = request.query_params
        try:
            limit = _int(q.get("limit"), 100, 1, 1000, "limit")
            offset = _cursor(q.get("cursor"))
            statuses = _statuses(q.get("status"))
        except ValueError as exc:
            return _error(400, "invalid_parameters", str(exc))
        mve = q.get("mve_filter")
        if mve not in (None, "only", "exclude"):
            return _error(400, "invalid_parameters", "mve_filter must be 'only' or 'exclude'")
        events = set(filter(None, (q.get("event_ticker") or "").split(",")))
        tickers = set(filter(None, (q.get("tickers") or "").split(",")))
        series = q.get("series_ticker")
        rows = [
            m for m in self.markets.values()
            if (statuses is None or m.status in statuses)
            and (mve != "exclude" or not m.combo) and (mve != "only" or m.combo)
            and (not events or m.event_ticker in events) and (not tickers or m.ticker in tickers)
            and (not series or m.event_ticker.split("-")[0] == series)
        ]
        page = rows[offset:offset + limit]
        more = offset + limit < len(rows)
        return JSONResponse({"markets": [m.row() for m in page],
                             "cursor": _encode_cursor(offset + limit) if more else ""})

    async def get_market(self, request: Request) -> Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        m = self.markets.get(request.path_params["ticker"])
        if m is None:
            return _error(404, "not_found", "market not found")
        return JSONResponse({"market": m.row()})

    async def get_orderbook(self, request: Request) -> Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        m = self.markets.get(request.path_params["ticker"])
        if m is None:
            return _error(404, "not_found", "market not found")
        try:
            depth = _int(request.query_params.get("depth"), 0, 0, 100, "depth")
        except ValueError as exc:
            return _error(400, "invalid_parameters", str(exc))
        return JSONResponse({"orderbook_fp": {"yes_dollars": m.ladder("yes", depth),
                                              "no_dollars": m.ladder("no", depth)}})

    def _event_status(self, ev: FakeEvent) -> str:
        statuses = {m.status for m in self.markets.values() if m.event_ticker == ev.event_ticker}
        return "active" if "active" in statuses else next(iter(statuses), "finalized")

    async def get_events(self, request: Request) -> Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        q = request.query_params
        try:
            limit = _int(q.get("limit"), 200, 1, 200, "limit")
            offset = _cursor(q.get("cursor"))
            statuses = _statuses(q.get("status"))
        except ValueError as exc:
            return _error(400, "invalid_parameters", str(exc))
        rows = [e for e in self.events.values()
                if not e.combo and (statuses is None or self._event_status(e) in statuses)]
        page = rows[offset:offset + limit]
        more = offset + limit < len(rows)
        return JSONResponse({"events": [e.row() for e in page], "milestones": [],
                             "cursor": _encode_cursor(offset + limit) if more else ""})

    async def get_event(self, request: Request) -> Response:
        if (refused := await self._gate(request)) is not None:
            return refused
        ev = self.events.get(request.path_params["event_ticker"])
        if ev is None:
            return _error(404, "not_found", "event not found")
        markets = [m.row() for m in self.markets.values() if m.event_ticker == ev.event_ticker]
        return JSONResponse({"event": ev.row(), "markets": markets})

    async def get_balance(self, request: Request) -> Response:
        if (refused := await self._gate(request, auth=True)) is not None:
            return refused
        cents = int((self.balance * 100).to_integral_value())
        return JSONResponse({"balance": cents, "portfolio_value": cents, "updated_ts": int(time.time())})

    # -- orders (V2) ------------------------------------------------------------------------------
    async def v1_orders(self, request: Request) -> Response:
        """``GET /portfolio/orders`` lists orders; ``POST`` (the retired V1 create) answers 410."""
        if request.method == "POST":
            return self._legacy(request)
        if (refused := await self._gate(request, auth=True)) is not None:
            return refused
        q = request.query_params
        try:
            limit = _int(q.get("limit"), 100, 1, 1000, "limit")
            offset = _cursor(q.get("cursor"))
            min_ts = _int(q.get("min_ts"), 0, 0, 2**62, "min_ts")
            max_ts = _int(q.get("max_ts"), 2**62, 0, 2**62, "max_ts")
        except ValueError as exc:
            return _v2_error(400, "invalid_parameters", str(exc))
        status = q.get("status")
        if status not in (None, "", "resting", "canceled", "executed"):
            return _v2_error(400, "invalid_parameters", "status must be resting, canceled or executed")
        ticker, event = q.get("ticker"), q.get("event_ticker")
        rows = [o for o in reversed(self.orders.values())
                if (not ticker or o.ticker == ticker) and (not status or o.status == status)
                and (not event or self.markets[o.ticker].event_ticker == event)
                and min_ts * 1000 <= o.created_ms <= max_ts * 1000]
        page = rows[offset:offset + limit]
        more = offset + limit < len(rows)
        return JSONResponse({"orders": [o.row() for o in page], "cursor": _encode_cursor(offset + limit) if more else ""})

    async def v1_order(self, request: Request) -> Response:
        """``GET /portfolio/orders/{id}``; ``DELETE`` (the V1 cancel) answers 410."""
        if request.method == "DELETE":
            return self._legacy(request)
        if (refused := await self._gate(request, auth=True)) is not None:
            return refused
        o = self.orders.get(request.path_params["order_id"])
        if o is None:
            return _v2_error(404, "not_found", "order not found")
        return JSONResponse({"order": o.row()})

    def _legacy(self, request: Request) -> Response:
        self.requests.append((request.url.path, dict(request.query_params)))
        self.legacy_calls += 1
        return _v2_error(410, "deprecated_v1_order_endpoint", "Please switch to the V2 endpoints",
                         "docs.kalshi.com/api-reference/orders/create-order-v2")

    async def create_order(self, request: Request) -> Response:
        if (refused := await self._gate(request, auth=True, write=True)) is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return _v2_error(400, "invalid_parameters", "the body must be a JSON object")
        if (failed := self._fail_untaken()) is not None:
            return failed
        async with self._order_lock:
            resp = await self._create(body)
        return await self._reply(request, resp, taken=resp.status_code == 201)

    def _fail_untaken(self) -> Response | None:
        if self._fail and not self._fail[0][1]:
            status, _ = self._fail.pop(0)
            return _v2_error(status, "internal_error", "internal server error")
        return None

    async def _reply(self, request: Request, resp: Response, *, taken: bool) -> Response:
        """Answer a write, unless a scenario holds the reply, fails it or drops the connection."""
        if self._fail and taken:
            status, _ = self._fail.pop(0)
            return _v2_error(status, "internal_error", "internal server error")
        if self._sever > 0:
            self._sever -= 1
            self.severed += 1
            transport = request.scope.get("fake.transport")
            if transport is not None:
                transport.abort()
                await asyncio.sleep(0.05)  # connection_lost runs: the response goes nowhere
            return resp
        await self._maybe_drop()
        return resp

    async def _maybe_drop(self) -> None:
        if self._drop > 0:
            self._drop -= 1
            self.dropped += 1
            self.holding += 1
            try:
                await asyncio.sleep(self.drop_delay_s)
            finally:
                self.holding -= 1

    async def _create(self, body: Any) -> Response:
        if not isinstance(body, dict):
            return _v2_error(400, "invalid_parameters", "the body must be a JSON object")
        if self._rejects:
            code, reason = self._rejects.pop(0)
            return _v2_error(400, code, reason)
        ticker = body.get("ticker")
        if not isinstance(ticker, str) or not ticker:
            return _v2_error(400, "invalid_parameters", "ticker is required")
        m = self.markets.get(ticker)
        if m is None:
            return _v2_error(404, "market_not_found", f"market {ticker} not found")
        side = body.get("side")
        if side not in ("bid", "ask"):
            return _v2_error(400, "invalid_parameters", "side must be 'bid' or 'ask' (of the YES leg)")
        count = body.get("count")
        if not isinstance(count, str) or not _FP_RE.match(count):
            return _v2_error(400, "invalid_parameters", "count must be a fixed-point string such as '10.00'")
        c = D(count)
        if c != c.to_integral_value():
            return _v2_error(400, "invalid_parameters", "only whole contracts can be traded")
        if c < 1:
            return _v2_error(400, "invalid_parameters", "count must be at least 1 contract")
        price = body.get("price")
        if not isinstance(price, str) or not _PX_RE.match(price):
            return _v2_error(400, "invalid_parameters", "price must be a dollar string such as '0.5600'")
        p = D(price)
        if not on_grid(p, m.ranges):
            steps = ", ".join(f"{r['step']} from {r['start']} to {r['end']}" for r in m.ranges)
            return _v2_error(400, "invalid_price", f"price {price} is not a valid price for {ticker} (ticks: {steps})")
        tif = body.get("time_in_force")
        if tif not in TIFS:
            return _v2_error(400, "invalid_parameters",
                             "time_in_force must be fill_or_kill, good_till_canceled or immediate_or_cancel")
        stp = body.get("self_trade_prevention_type")
        if stp not in STPS:
            return _v2_error(400, "invalid_parameters", "self_trade_prevention_type must be taker_at_cross or maker")
        post_only = body.get("post_only", False)
        if not isinstance(post_only, bool):
            return _v2_error(400, "invalid_parameters", "post_only must be a boolean")
        cid = body.get("client_order_id")
        if cid is not None and (not isinstance(cid, str) or not _CID_RE.match(cid)):
            return _v2_error(400, "invalid_parameters", "client_order_id: at most 64 of [A-Za-z0-9_:+=/-]")
        if m.status != "active":
            return _v2_error(400, "market_closed", f"market {ticker} is not open for trading (status {m.status})")
        if cid and cid in self.by_client:
            self.duplicates += 1
            return _v2_error(409, "order_already_exists", f"an order with client_order_id {cid} already exists")
        now = int(time.time() * 1000)
        o = FakeOrder(str(uuid.uuid4()), cid or str(uuid.uuid4()), ticker, side, p, c, tif, stp, post_only, now,
                      remaining=c, updated_ms=now)
        need = self.reserved() + c * o.unit_cost
        if need > self.balance:
            return _v2_error(400, "insufficient_balance",
                             f"insufficient balance: this order and your resting orders need ${need:.2f}, "
                             f"the account has ${self.balance:.2f}")
        levels = self._crossing(m, o)
        if post_only and levels:
            return _v2_error(400, "post_only_cross", "post-only order would cross the book")
        if tif == "fill_or_kill" and self._fillable(m, o, levels) < c:
            o.remaining, o.status, o.cancel_reason = ZERO, "canceled", "fill_or_kill: not enough to fill"
            self._register(o)
            await self._push_order(o)
            return self._created(o)
        self._register(o)
        stopped = False
        for q, yes_px in levels:
            if o.remaining == 0:
                break
            opp = "no" if o.side == "bid" else "yes"
            ours = self._ours(ticker, opp, q)
            if ours and stp == "maker":
                for r in ours:
                    await self._cancel(r, "self trade prevention (maker)")
                ours = []
            avail = m.side(opp).get(q, ZERO) - sum((r.remaining for r in ours), ZERO)
            take = min(o.remaining, avail)
            if take > 0:
                await self._apply(m, opp, q, -take)
                o.remaining -= take
                o.filled += take
                m.volume += take
                m.last_price = yes_px
                await self._record_fill(o, take, yes_px, taker=True)
            if ours and o.remaining > 0:
                stopped = True  # taker_at_cross: the taker stops at our own resting order
                break
        o.updated_ms = int(time.time() * 1000)
        if o.remaining == 0:
            o.status = "executed"
        elif tif == "good_till_canceled" and not stopped:
            side_, lvl = o.level
            await self._apply(m, side_, lvl, o.remaining)
        else:
            o.cancel_reason = "self trade prevention (taker_at_cross)" if stopped else f"{tif}: remainder canceled"
            o.status, o.remaining = "canceled", ZERO
        await self._push_order(o)
        return self._created(o)

    def _register(self, o: FakeOrder) -> None:
        self.orders[o.order_id] = o
        self.by_client[o.client_order_id] = o.order_id
        self.creates += 1

    def _created(self, o: FakeOrder) -> Response:
        body: dict[str, Any] = {"order_id": o.order_id, "client_order_id": o.client_order_id,
                                "fill_count": fp(o.filled), "remaining_count": fp(o.remaining), "ts_ms": o.updated_ms}
        mine = [f for f in self.fill_log if f["order_id"] == o.order_id]
        if mine:
            n = sum((D(f["count_fp"]) for f in mine), ZERO)
            body["average_fill_price"] = px(sum((D(f["yes_price_dollars"]) * D(f["count_fp"]) for f in mine), ZERO) / n)
            body["average_fee_paid"] = px(sum((D(f["fee_cost"]) for f in mine), ZERO) / n)
        return JSONResponse(body, status_code=201)

    def _crossing(self, m: FakeMarket, o: FakeOrder) -> list[tuple[Decimal, Decimal]]:
        """The opposite levels *o* crosses, best first: (level price, YES execution price)."""
        if o.side == "bid":  # YES asks = 1 − NO bids
            return [(q, ONE - q) for q in sorted(m.no, reverse=True) if ONE - q <= o.price]
        return [(q, q) for q in sorted(m.yes, reverse=True) if q >= o.price]

    def _fillable(self, m: FakeMarket, o: FakeOrder, levels: list[tuple[Decimal, Decimal]]) -> Decimal:
        opp = "no" if o.side == "bid" else "yes"
        total = ZERO
        for q, _ in levels:
            ours = self._ours(m.ticker, opp, q)
            total += m.side(opp).get(q, ZERO) - (ZERO if o.stp == "maker" else sum((r.remaining for r in ours), ZERO))
            if ours and o.stp == "taker_at_cross":
                break
        return total

    def _ours(self, ticker: str, side: str, price: Decimal) -> list[FakeOrder]:
        """Our resting orders at one level, oldest first."""
        return [o for o in self.orders.values()
                if o.status == "resting" and o.ticker == ticker and o.level == (side, price)]

    def reserved(self) -> Decimal:
        """Dollars the resting orders hold (each at its limit)."""
        return sum((o.remaining * o.unit_cost for o in self.orders.values() if o.status == "resting"), ZERO)

    async def _record_fill(self, o: FakeOrder, count: Decimal, yes_px: Decimal, *, taker: bool) -> dict[str, Any]:
        fee = taker_fee(count, yes_px) if taker else ZERO
        unit = yes_px if o.side == "bid" else ONE - yes_px
        self.balance -= count * unit + fee
        if taker:
            o.taker_fees += fee
        else:
            o.maker_fees += fee
        now = int(time.time() * 1000)
        fid = str(uuid.uuid4())
        row = {
            "fill_id": fid, "trade_id": fid, "order_id": o.order_id, "client_order_id": o.client_order_id,
            "ticker": o.ticker, "market_ticker": o.ticker, "side": "yes",
            "action": "buy" if o.side == "bid" else "sell", "count_fp": fp(count),
            "yes_price_dollars": px(yes_px), "no_price_dollars": px(ONE - yes_px), "is_taker": taker,
            "fee_cost": px(fee), "created_time": _iso_ms(now), "ts": now // 1000, "ts_ms": now,
        }
        self.fill_log.append(row)
        msg = {k: row[k] for k in ("trade_id", "order_id", "client_order_id", "market_ticker", "side", "action",
                                   "count_fp", "yes_price_dollars", "no_price_dollars", "is_taker", "fee_cost",
                                   "ts", "ts_ms")}
        for _ in range(2 if self._dup_fills else 1):
            await self._push("fill", o.ticker, msg)
        return row

    async def _push(self, channel: str, ticker: str, msg: Mapping[str, Any]) -> None:
        kind = "user_order" if channel == "user_orders" else channel
        for sess in list(self.sessions):
            async with sess.lock:
                for sub in list(sess.subs.values()):
                    if sub.channel == channel and (not sub.tickers or ticker in sub.tickers):
                        sub.seq += 1
                        await sess.send({"type": kind, "sid": sub.sid, "seq": sub.seq, "msg": dict(msg)})

    async def _push_order(self, o: FakeOrder) -> None:
        await self._push("user_orders", o.ticker, o.row())

    async def _cancel(self, o: FakeOrder, reason: str) -> Decimal:
        """Take a resting order out of the book; the contracts it had left."""
        reduced = o.remaining
        side, lvl = o.level
        if reduced > 0:
            await self._apply(self.markets[o.ticker], side, lvl, -reduced)
        o.remaining, o.status, o.cancel_reason = ZERO, "canceled", reason
        o.updated_ms = int(time.time() * 1000)
        await self._push_order(o)
        return reduced

    async def _maker_fill(self, o: FakeOrder, count: Decimal, *, adjust_level: bool = True) -> dict[str, Any]:
        """A counterparty takes *count* of resting order *o* at its price."""
        m = self.markets[o.ticker]
        if adjust_level:
            side, lvl = o.level
            await self._apply(m, side, lvl, -count)
        o.remaining -= count
        o.filled += count
        o.updated_ms = int(time.time() * 1000)
        if o.remaining == 0:
            o.status = "executed"
        m.volume += count
        m.last_price = o.price
        row = await self._record_fill(o, count, o.price, taker=False)
        await self._push_order(o)
        return row

    async def cancel_order(self, request: Request) -> Response:
        if (refused := await self._gate(request, auth=True, write=True)) is not None:
            return refused
        oid = request.path_params["order_id"]
        if (failed := self._fail_untaken()) is not None:
            return failed
        async with self._order_lock:
            o = self.orders.get(oid)
            if o is None:
                return _v2_error(404, "not_found", "order not found")
            if o.status != "resting":
                return _v2_error(404, "not_found", f"order {oid} is not resting (status {o.status})")
            reduced = await self._cancel(o, "canceled by the member")
        resp = JSONResponse({"order_id": o.order_id, "client_order_id": o.client_order_id,
                             "reduced_by": fp(reduced), "reduced_by_fp": fp(reduced), "ts_ms": o.updated_ms})
        return await self._reply(request, resp, taken=True)

    async def cancel_batch(self, request: Request) -> Response:
        """``DELETE /portfolio/events/orders/batched`` ``{"orders": [{"order_id"}, …]}`` (at most
        :data:`BATCH_MAX`), billed 2 tokens an order against 10 a write."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        items = body.get("orders") if isinstance(body, dict) else None
        n = len(items) if isinstance(items, list) else 1
        if (refused := await self._gate(request, auth=True, write=True, cost=max(1, -(-2 * n // 10)))) is not None:
            return refused
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            return _v2_error(400, "invalid_parameters", "orders must be a non-empty list of {order_id}")
        if len(items) > BATCH_MAX:
            return _v2_error(400, "invalid_parameters", f"at most {BATCH_MAX} orders a batch")
        if (failed := self._fail_untaken()) is not None:
            return failed
        out: list[dict[str, Any]] = []
        async with self._order_lock:
            for item in items:
                oid = str(item.get("order_id"))
                o = self.orders.get(oid)
                if o is None or o.status != "resting":
                    why = "order not found" if o is None else f"order {oid} is not resting (status {o.status})"
                    out.append({"order_id": oid, "error": {"code": "not_found", "message": why}})
                    continue
                reduced = await self._cancel(o, "canceled by the member")
                out.append({"order_id": oid, "client_order_id": o.client_order_id, "reduced_by": fp(reduced),
                            "reduced_by_fp": fp(reduced), "ts_ms": o.updated_ms})
        self.batch_cancels += 1
        return await self._reply(request, JSONResponse({"orders": out}), taken=True)

    async def get_fills(self, request: Request) -> Response:
        if (refused := await self._gate(request, auth=True)) is not None:
            return refused
        q = request.query_params
        try:
            limit = _int(q.get("limit"), 100, 1, 200, "limit")
            offset = _cursor(q.get("cursor"))
            min_ts = _int(q.get("min_ts"), 0, 0, 2**62, "min_ts")
            max_ts = _int(q.get("max_ts"), 2**62, 0, 2**62, "max_ts")
        except ValueError as exc:
            return _v2_error(400, "invalid_parameters", str(exc))
        ticker, order_id = q.get("ticker"), q.get("order_id")
        rows = [f for f in reversed(self.fill_log)
                if (not ticker or f["ticker"] == ticker) and (not order_id or f["order_id"] == order_id)
                and min_ts * 1000 <= f["ts_ms"] <= max_ts * 1000]
        page = rows[offset:offset + limit]
        more = offset + limit < len(rows)
        out = [{k: v for k, v in f.items() if k != "ts_ms"} for f in page]
        return JSONResponse({"fills": out, "cursor": _encode_cursor(offset + limit) if more else ""})

    # -- order scenario controls (run on the server loop) -------------------------------------------
    def drop_next_reply(self, n: int = 1, delay_s: float | None = None) -> None:
        """The next *n* writes are carried out, but answered only after *delay_s* (default
        :attr:`drop_delay_s`): past the client's timeout, so it cannot tell what happened."""
        self._drop = n
        if delay_s is not None:
            self.drop_delay_s = delay_s

    def sever_next(self, n: int = 1) -> None:
        """The next *n* writes are carried out, then the connection drops without an answer (a
        venue disconnect mid-order)."""
        self._sever = n

    def fail_next(self, status: int = 503, taken: bool = False) -> None:
        """Answer the next write *status* (a 5xx): after carrying it out when *taken*, else without
        carrying it out (a create is then not registered at all)."""
        self._fail.append((status, taken))

    def duplicate_fills(self, on: bool = True) -> None:
        """Send every ``fill`` message twice (the same ``trade_id``)."""
        self._dup_fills = on

    def reject_next(self, reason: str, code: str = "order_rejected") -> None:
        """Refuse the next create with HTTP 400, *code* and *reason*."""
        self._rejects.append((code, reason))

    async def fill_resting(self, order_id: str, qty: str | Decimal) -> dict[str, Any]:
        """A counterparty takes *qty* (at most what is left) of one of our resting orders; the fill row."""
        async with self._order_lock:
            o = self.orders[order_id]
            if o.status != "resting":
                raise ValueError(f"order {order_id} is not resting ({o.status})")
            return await self._maker_fill(o, min(D(str(qty)), o.remaining))

    def order_by_client(self, client_order_id: str) -> FakeOrder | None:
        oid = self.by_client.get(client_order_id)
        return self.orders.get(oid) if oid else None

    def set_balance(self, dollars: str | Decimal) -> None:
        self.balance = D(str(dollars))

    # -- WebSocket ---------------------------------------------------------------------------------
    async def websocket(self, ws: WebSocket) -> None:
        why = self.auth_error(ws.headers, "GET", ws.scope["path"])
        if why is not None:
            self.ws_refused.append(why)
            await ws.send_denial_response(_error(401, "authentication_error", why))
            return
        await ws.accept()
        self.ws_accepted += 1
        sess = _Session(self, ws)
        self.sessions.append(sess)
        pinger = asyncio.create_task(self._pinger(sess))
        try:
            while True:
                text = await ws.receive_text()
                if sess.silent:
                    continue
                await self._command(sess, text)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            sess.closed = True
            pinger.cancel()
            if sess in self.sessions:
                self.sessions.remove(sess)

    async def _pinger(self, sess: _Session) -> None:
        while not sess.closed:
            await asyncio.sleep(self.ping_s)
            sess.ping()

    async def _command(self, sess: _Session, text: str) -> None:
        try:
            cmd = json.loads(text)
        except ValueError:
            await sess.send({"type": "error", "msg": {"code": 1, "msg": "Unable to process message"}})
            return
        if not isinstance(cmd, dict):
            await sess.send({"type": "error", "msg": {"code": 1, "msg": "Unable to process message"}})
            return
        self.commands.append(cmd)
        cid = cmd.get("id")
        try:
            name = cmd.get("cmd")
            if name == "list_subscriptions":
                await sess.send({"id": cid, "type": "ok",
                                 "msg": [{"channel": s.channel, "sid": s.sid} for s in sess.subs.values()]})
                return
            if name not in ("subscribe", "unsubscribe", "update_subscription"):
                raise WsError(5, "Unknown command")
            params = cmd.get("params")
            if not isinstance(params, dict):
                raise WsError(2, "Params required")
            if name == "subscribe":
                await self._subscribe(sess, cid, params)
            elif name == "unsubscribe":
                await self._unsubscribe(sess, cid, params)
            else:
                await self._update(sess, cid, params)
        except WsError as exc:
            await sess.send({"id": cid, "type": "error", "msg": {"code": exc.code, "msg": exc.msg, **exc.extra}})

    def _tickers(self, params: Mapping[str, Any], required: bool) -> list[str]:
        tickers: list[str] = []
        if isinstance(params.get("market_ticker"), str):
            tickers.append(params["market_ticker"])
        if isinstance(params.get("market_tickers"), list):
            tickers.extend(str(t) for t in params["market_tickers"])
        if required and not tickers:
            raise WsError(14, "Market Ticker required")
        for t in tickers:
            if t not in self.markets:
                raise WsError(16, "Market not found", market_ticker=t)
        return list(dict.fromkeys(tickers))

    async def _subscribe(self, sess: _Session, cid: Any, params: Mapping[str, Any]) -> None:
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels:
            raise WsError(3, "Channels required")
        for ch in channels:
            if ch not in CHANNELS:
                raise WsError(8, "Unknown channel name")
        tickers = self._tickers(params, required="orderbook_delta" in channels)
        async with sess.lock:
            for ch in channels:
                sub = _Sub(sess.next_sid, ch, [] if ch == "market_lifecycle_v2" else list(tickers))
                sess.next_sid += 1
                sess.subs[sub.sid] = sub
                await sess.send({"id": cid, "type": "subscribed", "msg": {"channel": ch, "sid": sub.sid}})
                if ch == "orderbook_delta":
                    for t in sub.tickers:
                        await self._snapshot(sess, sub, t)

    async def _unsubscribe(self, sess: _Session, cid: Any, params: Mapping[str, Any]) -> None:
        sids = params.get("sids")
        if not isinstance(sids, list) or not sids:
            raise WsError(4, "Subscription IDs required")
        for sid in sids:
            if sid not in sess.subs:
                raise WsError(7, "Unknown subscription ID")
        async with sess.lock:
            for sid in sids:
                sub = sess.subs.pop(sid)
                await sess.send({"id": cid, "sid": sid, "seq": sub.seq, "type": "unsubscribed"})

    async def _update(self, sess: _Session, cid: Any, params: Mapping[str, Any]) -> None:
        action = params.get("action")
        if action is None:
            raise WsError(15, "Action required")
        if action not in ("add_markets", "delete_markets", "get_snapshot"):
            raise WsError(13, "Unsupported action")
        sid, sids = params.get("sid"), params.get("sids")
        if (sid is None) == (sids is None) or (sids is not None and (not isinstance(sids, list) or len(sids) != 1)):
            raise WsError(12, "Exactly one subscription ID is required")
        sid = sid if sid is not None else sids[0]
        sub = sess.subs.get(sid)
        if sub is None:
            raise WsError(7, "Unknown subscription ID")
        tickers = self._tickers(params, required=True)
        if action == "get_snapshot":
            if sub.channel != "orderbook_delta":
                raise WsError(13, "Unsupported action")
            for t in tickers:
                if t not in sub.tickers:
                    raise WsError(16, "Market not found", market_ticker=t)
        async with sess.lock:
            if action == "add_markets":
                added = [t for t in tickers if t not in sub.tickers]
                sub.tickers.extend(added)
            elif action == "delete_markets":
                added = []
                sub.tickers = [t for t in sub.tickers if t not in tickers]
            else:
                added = tickers
            await sess.send({"id": cid, "sid": sub.sid, "seq": sub.seq, "type": "ok",
                             "msg": {"market_tickers": list(sub.tickers)}})
            if sub.channel == "orderbook_delta":
                for t in added:
                    await self._snapshot(sess, sub, t)

    async def _snapshot(self, sess: _Session, sub: _Sub, ticker: str) -> None:
        """Send one market's snapshot (the caller holds the session lock)."""
        m = self.markets[ticker]
        sub.seq += 1
        body: dict[str, Any] = {"market_ticker": ticker, "market_id": _market_id(ticker)}
        if m.yes:
            body["yes_dollars_fp"] = m.ladder("yes")
        if m.no:
            body["no_dollars_fp"] = m.ladder("no")
        await sess.send({"type": "orderbook_snapshot", "sid": sub.sid, "seq": sub.seq, "msg": body})

    # -- scenario controls (run on the server loop) ---------------------------------------------
    async def _broadcast_delta(self, m: FakeMarket, side: str, price: Decimal, delta: Decimal, *,
                               hide: bool = False) -> None:
        ts_ms = int(time.time() * 1000)
        for sess in list(self.sessions):
            async with sess.lock:
                for sub in sess.book_subs(m.ticker):
                    sub.seq += 1
                    if hide:
                        continue  # the message is lost: its seq number is used, nothing arrives
                    await sess.send({"type": "orderbook_delta", "sid": sub.sid, "seq": sub.seq, "msg": {
                        "market_ticker": m.ticker, "market_id": _market_id(m.ticker), "price_dollars": px(price),
                        "delta_fp": fp(delta), "side": side, "ts_ms": ts_ms}})

    async def move(self, ticker: str, side: str, price: str | Decimal, delta: str | Decimal, *,
                   hide: bool = False) -> Decimal:
        """Change a level by *delta* contracts (a resting order added or cancelled); the new size.
        Bids added that cross one of our resting orders trade with it at its price."""
        m = self.markets[ticker]
        p, dq = D(str(price)), D(str(delta))
        new = await self._apply(m, side, p, dq, hide=hide)
        if dq > 0 and any(o.status == "resting" and o.ticker == ticker for o in self.orders.values()):
            async with self._order_lock:
                new = await self._cross_resting(m, side, p, dq)
        return new

    async def _cross_resting(self, m: FakeMarket, side: str, p: Decimal, added: Decimal) -> Decimal:
        """Someone else's new bid (*side* at *p*, *added* contracts) against our resting orders:
        a NO bid at q crosses our YES bids at ≥ 1 − q, a YES bid at q our asks at ≤ q."""
        if side == "no":
            mine = sorted((o for o in self.orders.values() if o.status == "resting" and o.ticker == m.ticker
                           and o.side == "bid" and o.price >= ONE - p), key=lambda o: (-o.price, o.created_ms))
        else:
            mine = sorted((o for o in self.orders.values() if o.status == "resting" and o.ticker == m.ticker
                           and o.side == "ask" and o.price <= p), key=lambda o: (o.price, o.created_ms))
        left = added
        for o in mine:
            if left <= 0:
                break
            take = min(left, o.remaining)
            await self._apply(m, side, p, -take)
            await self._maker_fill(o, take)
            left -= take
        return m.side(side).get(p, ZERO)

    async def _apply(self, m: FakeMarket, side: str, p: Decimal, dq: Decimal, *, hide: bool = False) -> Decimal:
        """Change one level and push its delta (no matching)."""
        ticker = m.ticker
        if not on_grid(p, m.ranges):
            raise ValueError(f"{px(p)} is off {ticker}'s price grid")
        levels = m.side(side)
        new = levels.get(p, D(0)) + dq
        if new < 0:
            raise ValueError(f"{ticker} {side} {px(p)} would go negative")
        if new == 0:
            levels.pop(p, None)
        else:
            levels[p] = new
        if dq != 0:
            await self._broadcast_delta(m, side, p, dq, hide=hide)
        return new

    async def set_level(self, ticker: str, side: str, price: str | Decimal, count: str | Decimal, *,
                        hide: bool = False) -> None:
        """Set the bids at one price to *count* contracts (0 removes); pushes the delta."""
        m = self.markets[ticker]
        p = D(str(price))
        await self.move(ticker, side, p, D(str(count)) - m.side(side).get(p, D(0)), hide=hide)

    async def gap(self, ticker: str, side: str, price: str | Decimal, count: str | Decimal) -> None:
        """A change whose delta is lost on the way: the subscription's next message skips a seq."""
        await self.set_level(ticker, side, price, count, hide=True)

    async def clear_side(self, ticker: str, side: str) -> None:
        """Cancel every bid of one side: a one-sided book."""
        m = self.markets[ticker]
        for p in sorted(m.side(side)):
            await self.set_level(ticker, side, p, 0)

    def stall(self) -> None:
        """Every open socket goes silent (no data, no replies, no pings) but stays open."""
        for sess in self.sessions:
            sess.silent = True

    def disconnect(self) -> int:
        """Drop every connection abruptly (no close frame); how many."""
        sessions = list(self.sessions)
        for sess in sessions:
            sess.abort()
        return len(sessions)

    async def set_structure(self, ticker: str, structure: str,
                            ranges: list[dict[str, str]] | None = None) -> None:
        """The market's price level structure changes: resting bids off the new grid are
        cancelled (deltas), then ``market_lifecycle_v2`` ``price_level_structure_updated``."""
        m = self.markets[ticker]
        new_ranges = ranges or ranges_of(structure)
        for side in ("yes", "no"):
            levels = m.side(side)
            for p in sorted(levels):
                if not on_grid(p, new_ranges):
                    count = levels.pop(p)
                    await self._broadcast_delta(m, side, p, -count)
        m.structure, m.ranges = structure, new_ranges
        body = {"market_ticker": ticker, "event_type": "price_level_structure_updated",
                "price_level_structure": structure, "price_ranges": [dict(r) for r in m.ranges]}
        for sess in list(self.sessions):
            async with sess.lock:
                for sub in list(sess.subs.values()):
                    if sub.channel == "market_lifecycle_v2":
                        await sess.send({"type": "market_lifecycle_v2", "sid": sub.sid, "msg": body})

    async def trade(self, ticker: str, taker_side: str, count: str | Decimal) -> Decimal:
        """A taker buys *count* contracts of *taker_side* at the best opposite bid (YES taker
        lifts the YES ask = 1 − best NO bid); the print and the level's delta go out. The
        YES price of the print."""
        m = self.markets[ticker]
        opp = "no" if taker_side == "yes" else "yes"
        book = m.side(opp)
        best = max(book)
        c = min(D(str(count)), book[best])
        yes_price = ONE - best if taker_side == "yes" else best
        ours = self._ours(ticker, opp, best)  # ours is last in the level's queue
        mine = max(ZERO, c - (book[best] - sum((o.remaining for o in ours), ZERO)))
        m.volume += c
        m.last_price = yes_price
        await self.move(ticker, opp, best, -c)
        if mine > 0:
            async with self._order_lock:
                for o in ours:
                    take = min(mine, o.remaining)
                    if take > 0:
                        await self._maker_fill(o, take, adjust_level=False)
                        mine -= take
        self.trade_seq += 1
        now = time.time()
        body = {"trade_id": f"fake-{self.trade_seq:08d}", "market_ticker": ticker,
                "yes_price_dollars": px(yes_price), "no_price_dollars": px(ONE - yes_price), "count_fp": fp(c),
                "taker_outcome_side": taker_side, "taker_book_side": "bid" if taker_side == "yes" else "ask",
                "taker_side": taker_side, "ts": int(now), "ts_ms": int(now * 1000)}
        for sess in list(self.sessions):
            async with sess.lock:
                for sub in list(sess.subs.values()):
                    if sub.channel == "trade" and (not sub.tickers or ticker in sub.tickers):
                        sub.seq += 1
                        await sess.send({"type": "trade", "sid": sub.sid, "seq": sub.seq, "msg": body})
        return yes_price

    async def blast(self, ticker: str, n: int, side: str = "yes") -> list[tuple[int, str, str]]:
        """Send *n* deltas for one market as fast as the sockets take them (benchmarks): the top
        bids of *side* gain one contract each, then lose it, in turn, so the book comes back
        after every two rounds. Returns ``(send_monotonic_ns, price_dollars, new_count_fp)`` per
        delta, stamped just before its frame is written (``time.monotonic_ns``: comparable
        with the client's clock in the same process)."""
        m = self.markets[ticker]
        levels = m.side(side)
        prices = sorted(levels, reverse=True)[:5] or [D("0.5000")]
        plan: list[tuple[Decimal, Decimal, str]] = []
        for i in range(n):
            p = prices[i % len(prices)]
            dq = ONE if (i // len(prices)) % 2 == 0 else -ONE
            new = levels.get(p, D(0)) + dq
            if new == 0:
                levels.pop(p, None)
            else:
                levels[p] = new
            plan.append((p, dq, fp(new)))
        targets = [(s, sub) for s in self.sessions if not s.silent and not s.closed for sub in s.book_subs(ticker)]
        # Render first: the timed loop is only the socket writes.
        ts_ms = int(time.time() * 1000)
        frames: list[list[bytes]] = []
        for p, dq, _ in plan:
            row = []
            for _sess, sub in targets:
                sub.seq += 1
                row.append(json.dumps({"type": "orderbook_delta", "sid": sub.sid, "seq": sub.seq, "msg": {
                    "market_ticker": ticker, "price_dollars": px(p), "delta_fp": fp(dq), "side": side,
                    "ts_ms": ts_ms}}, separators=(",", ":")).encode())
            frames.append(row)
        stamps = [0] * n
        async with contextlib.AsyncExitStack() as stack:
            for sess in {id(s): s for s, _ in targets}.values():
                await stack.enter_async_context(sess.lock)
            for i, row in enumerate(frames):
                stamps[i] = time.monotonic_ns()
                for (sess, _sub), data in zip(targets, row, strict=True):
                    proto = sess.proto
                    if proto is None:
                        await sess.ws.send_text(data.decode())
                        continue
                    if not proto.writable.is_set():
                        await proto.writable.wait()
                    if proto.transport.is_closing():
                        continue
                    proto.conn.send_text(data)
                    proto.transport.write(b"".join(proto.conn.data_to_send()))
                if i % 256 == 255:
                    await asyncio.sleep(0)
        return [(stamps[i], px(p), count) for i, (p, _, count) in enumerate(plan)]

    # -- reading the state (for assertions) ---------------------------------------------------------
    def quote_levels(self, ticker: str) -> dict[str, list[dict[str, float]]]:
        """The market as our YES book: bids = YES bids (best first), asks = 1 − NO bids."""
        m = self.markets[ticker]
        return {
            "bids": [{"price": float(p), "size": float(c)} for p, c in sorted(m.yes.items(), reverse=True)],
            "asks": [{"price": float(ONE - p), "size": float(c)} for p, c in sorted(m.no.items(), reverse=True)],
        }

    def subscribed(self, channel: str = "orderbook_delta") -> set[str]:
        """Tickers some open session is subscribed to on *channel*."""
        return {t for s in self.sessions if not s.closed for sub in s.subs.values()
                if sub.channel == channel for t in sub.tickers}

    def subscriptions(self, channel: str) -> int:
        return sum(1 for s in self.sessions if not s.closed for sub in s.subs.values() if sub.channel == channel)

    def pings_sent(self) -> int:
        return sum(s.pings for s in self.sessions)


# -- helpers ---------------------------------------------------------------------------------------
def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _v2_error(status: int, code: str, message: str, details: str = "") -> JSONResponse:
    """An error as the V2 order endpoints answer it (``ErrorResponse``)."""
    return JSONResponse({"code": code, "message": message, "details": details, "service": "exchange"},
                        status_code=status)


def _int(text: str | None, default: int, lo: int, hi: int, name: str) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}")
    return value


def _statuses(text: str | None) -> set[str] | None:
    if not text:
        return None
    out: set[str] = set()
    for s in text.split(","):
        if s not in FILTER_STATUS:
            raise ValueError(f"invalid status filter {s!r}: expected one of {', '.join(FILTER_STATUS)}")
        out.update(FILTER_STATUS[s])
    return out


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def _cursor(text: str | None) -> int:
    if not text:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        return int(data["o"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ValueError("invalid cursor") from None


def _market_id(ticker: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kalshi:{ticker}"))


def levels_equal(quote: Mapping[str, Any], fake_levels: Mapping[str, Iterable[Mapping[str, float]]]) -> bool:
    """A service quote's bids/asks equal the fake's book (every level)."""
    return quote["bids"] == list(fake_levels["bids"]) and quote["asks"] == list(fake_levels["asks"])
