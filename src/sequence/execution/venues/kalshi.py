"""Kalshi orders (trade-api v2): place, cancel, look up, backfill fills, listen on the user channel.

A thin client on ``httpx`` + ``cryptography`` (the official generated client carries a
proprietary licence and churns). Every REST call and the WebSocket upgrade carry
``KALSHI-ACCESS-KEY`` / ``-TIMESTAMP`` / ``-SIGNATURE`` (RSA-PSS over
``ts + METHOD + path``, the path without its query:
:func:`sequence.market.venues.live.kalshi.kalshi_headers`).

Wire formats (``docs/VENUES.md``, Kalshi; docs.kalshi.com "Create Order (V2)", "Get Fills",
"Get Orders", WebSocket channels ``fill`` / ``user_orders``):

Create
    ``POST {api}/portfolio/events/orders`` with ``{ticker, client_order_id, side, count, price,
    time_in_force, post_only, self_trade_prevention_type}``: ``side`` is the YES leg's book side
    (``bid`` buys YES, ``ask`` sells YES), ``price`` the YES price as a dollar string
    (``"0.5600"``, up to six decimals), ``count`` a fixed-point string (``"10.00"``).
    Buying NO at p is an ``ask`` at 1 − p; selling NO at p a ``bid`` at 1 − p (:func:`order_body`).
    ``client_order_id`` is ours plus ``:`` and the request's intent (``by`` buy YES, ``bn`` buy NO,
    ``sy`` sell YES, ``sn`` sell NO; :func:`venue_client_id`): at the venue a NO buy and a YES sell
    are both an ``ask``, and the suffix lets any later reader (a restarted coordinator, a fill
    with no request at hand) report the order in its own terms. Every :class:`VenueOrder` /
    :class:`VenueFill` carries our id without the suffix.
    ``time_in_force``: ``good_till_canceled`` / ``immediate_or_cancel`` / ``fill_or_kill``.
    ``self_trade_prevention_type``: ``taker_at_cross`` (the documented examples' choice; the
    other value is ``maker``), overridable with ``OrderRequest.extra["self_trade_prevention_type"]``.
    201 → ``{order_id, client_order_id, fill_count, remaining_count, ts_ms}`` (+
    ``average_fill_price`` / ``average_fee_paid`` when it filled). Errors are
    ``{code, message, details, service}`` (an older ``{"error": {code, message}}`` is read too).
    The legacy ``POST /portfolio/orders`` answers 410 and is never called.

Cancel
    ``DELETE {api}/portfolio/events/orders/{order_id}`` → ``{order_id, client_order_id,
    reduced_by, ts_ms}``. An order no longer resting (filled, cancelled) is answered 404 (or
    400): :meth:`KalshiOrders.cancel` then reads it (``GET /portfolio/orders/{id}``) and returns
    its final status.

Batched cancel (the kill switch: :meth:`KalshiOrders.cancel_many`)
    ``DELETE {api}/portfolio/events/orders/batched`` with ``{"orders": [{"order_id"}, …]}``,
    billed 2 rate-limit tokens an order (a single write: 10) → ``{"orders": [{order_id,
    reduced_by, …} or {order_id, error}]}``.

Reads
    ``GET {api}/portfolio/orders/{order_id}`` → ``{"order": {...}}``; ``GET {api}/portfolio/orders``
    (``ticker``, ``status`` = ``resting|canceled|executed``, ``min_ts``, ``limit``, ``cursor``) →
    ``{"orders": [...], "cursor"}``. An order row: ``order_id``, ``client_order_id``, ``ticker``,
    ``status`` (``resting`` → open, ``canceled`` → cancelled, ``executed`` → filled),
    ``fill_count_fp``, ``remaining_count_fp``, ``initial_count_fp``, ``created_time``,
    ``last_update_time``. ``GET {api}/portfolio/fills`` (``ticker``, ``order_id``, ``min_ts``,
    ``limit`` ≤ 200, ``cursor``) → ``{"fills": [...], "cursor"}``: ``fill_id`` (``trade_id`` is
    the same id under its legacy name), ``order_id``, ``client_order_id``, ``ticker``, ``side``
    (yes|no), ``action`` (buy|sell), ``count_fp``, ``yes_price_dollars``, ``no_price_dollars``,
    ``is_taker``, ``fee_cost`` (dollars), ``created_time``. ``GET {api}/portfolio/balance`` →
    ``{balance (cents), portfolio_value, updated_ts}``.

User channel
    One signed WebSocket (``{ws}`` = ``…/trade-api/ws/v2``, the same socket as market data),
    ``{"id": 1, "cmd": "subscribe", "params": {"channels": ["user_orders", "fill"]}}``. ``fill``
    messages carry ``msg.trade_id`` (= the REST ``fill_id``: the dedupe key is the same on both
    paths), ``order_id``, ``client_order_id``, ``market_ticker``, ``side``, ``action``,
    ``count_fp``, ``yes_price_dollars``, ``is_taker``, ``ts``; ``user_orders`` sends
    ``user_order`` messages whose ``msg`` is an order row.

How lookup works
    :meth:`KalshiOrders.lookup` reads the order by its venue id when this adapter saw it (a
    201, a user-channel update or an earlier lookup); otherwise it lists ``GET /portfolio/orders``
    (every status; narrowed to the request's ticker and to orders created since shortly before
    it was sent when this adapter sent it or was told with :meth:`KalshiOrders.remember`, else
    at most :data:`LOOKUP_MAX_PAGES` pages, newest first) and matches ``client_order_id``
    (without its intent suffix). A lookup links the venue order id to ours, so later fills of
    that order carry our client order id even when the venue's fill rows do not.

Fills and prices
    A fill's price and side are in the terms of the request that made the order: a NO buy at
    0.40 (sent as a YES ask at 0.60) fills as ``side="buy", outcome="no"`` at the fill's
    ``no_price_dollars`` (else 1 − ``yes_price_dollars``). The intent comes from the request
    when this adapter has it, else from the client order id's suffix; for an order placed
    elsewhere (no suffix) the fill's own ``side``/``action`` are used. Fees (``fee_cost``) are
    dollars, per fill. Quantities are contracts. ``ts_ms`` from ``created_time`` (REST) or
    ``ts``/``ts_ms`` (WebSocket).

Errors
    401/403 → :class:`AuthFailed`. 429 (no ``Retry-After``) means the request was not taken:
    retried up to :attr:`KalshiOrders.max_retries` times with a short backoff, then
    :class:`OrderRejected` ``rate_limited``. Other 4xx → :class:`OrderRejected` with the venue's
    message and a code (``insufficient_balance``, ``price_off_tick``, ``market_closed``,
    ``invalid_order``, ``venue_rejected``). A timeout, a connection error or a 5xx on a write →
    :class:`OutcomeUnknown`, never retried. A create refused because the ``client_order_id``
    already exists is not a reject (the order exists): :meth:`place` looks it up and returns it.
    Reads (lookup, open orders, fills) that cannot get an answer (transport, 5xx, 429 after
    the retries, a garbled body) raise :class:`OutcomeUnknown` too: "could not tell".

Rate limit
    Writes go through a token bucket (Basic tier: 10 writes/s), reads through another (20/s);
    ``OrderConfig.writes_per_s`` / ``burst`` override the write bucket.

Unconfirmed (not found in the documentation we could read; the fake follows these choices)
    * A filter or path to get an order by ``client_order_id`` (none found: lookup lists and
      matches); whether ``GET /portfolio/orders`` lists V2 orders with the same row shape.
    * ``min_ts`` units (read as Unix seconds) on ``/portfolio/orders`` and ``/portfolio/fills``.
    * The error ``code`` strings (``insufficient_balance``, ``invalid_price``, ``market_closed``,
      ``order_already_exists``) and the status of a duplicate ``client_order_id`` (409 here);
      whether Kalshi refuses a duplicate id of a finished order, or only of an open one.
    * The cancel answer for an order already filled or cancelled (404 here).
    * The exact ``user_order`` message fields, and which ``side``/``action`` a fill of a V2
      ``ask`` reports (the fake says ``side="yes", action="sell"``).
    * ``fee_cost`` as a dollar string; ``reduced_by`` as a fixed-point string.
    * The batched cancel's answer shape (``orders`` here; a ``responses`` array is read too), its
      maximum size, and that a single write costs 10 tokens.
    * Whether ``/portfolio/balance`` now also has a ``balance_dollars`` field (read if present).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from sequence.market.venues.live.base import Backoff, TokenBucket, VenueError
from sequence.market.venues.live.kalshi import kalshi_headers, load_private_key

from .base import (
    AccountInfo,
    AuthFailed,
    OrderConfig,
    OrderError,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderVenue,
    OutcomeUnknown,
    VenueFill,
    VenueOrder,
)

__all__ = ["KalshiOrders", "order_body", "yes_leg"]

log = logging.getLogger("sequence.execution.venues.kalshi")

ONE = Decimal(1)
ZERO = Decimal(0)
#: Kalshi Basic tier.
WRITES_PER_S = 10.0
WRITE_BURST = 10
READS_PER_S = 20.0
READ_BURST = 20
FILLS_PAGE = 200  # GET /portfolio/fills limit ≤ 200
#: Orders per batched cancel (the documented maximum scales with the tier; 20 is the long-standing one).
CANCEL_BATCH = 20
#: Rate-limit tokens: a write costs 10, a batched cancel 2 per order in it (one bucket token = one write).
WRITE_COST = 10
BATCH_CANCEL_COST = 2
ORDERS_PAGE = 200
#: Pages a lookup without a ticker reads at most (200 orders a page).
LOOKUP_MAX_PAGES = 50
#: A lookup of an order this adapter sent lists orders created since this long before sending.
LOOKUP_SLACK_S = 60
TIF = {"gtc": "good_till_canceled", "ioc": "immediate_or_cancel", "fok": "fill_or_kill"}
STP_DEFAULT = "taker_at_cross"
STP = frozenset({"taker_at_cross", "maker"})
_STATUS: dict[str, OrderStatus] = {
    "resting": "open", "open": "open", "pending": "pending",
    "canceled": "cancelled", "cancelled": "cancelled", "executed": "filled", "filled": "filled",
}


# -- the request mapping (pure) ------------------------------------------------------------------
def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def dollars(price: Decimal) -> str:
    """A price as Kalshi takes it: dollars, four decimals (six when the price needs them)."""
    p4 = price.quantize(Decimal("0.0001"))
    if p4 == price:
        return f"{p4:.4f}"
    p6 = price.quantize(Decimal("0.000001"))
    if p6 != price:
        raise OrderRejected(f"price {price} has more than six decimals", "price_off_tick")
    return f"{p6:.6f}"


def count_fp(qty: Decimal) -> str:
    """A count as Kalshi takes it: contracts, two decimals."""
    q2 = qty.quantize(Decimal("0.01"))
    if q2 != qty:
        raise OrderRejected(f"quantity {qty} has more than two decimals", "invalid_order")
    return f"{q2:.2f}"


def yes_leg(outcome: Literal["yes", "no"], side: Literal["buy", "sell"], price: Decimal) -> tuple[str, Decimal]:
    """The YES-book side and YES price of an order on *outcome*: buy YES → bid at p, sell YES →
    ask at p, buy NO → ask at 1 − p, sell NO → bid at 1 − p."""
    if outcome == "yes":
        return ("bid" if side == "buy" else "ask"), price
    return ("ask" if side == "buy" else "bid"), ONE - price


#: The intent suffix of the client order id we send: a V2 order is only a YES-book bid or ask, so
#: a NO buy and a YES sell look alike at the venue; the suffix says which one the request was.
_INTENT_CODES: dict[tuple[str, str], str] = {("buy", "yes"): "by", ("buy", "no"): "bn",
                                              ("sell", "yes"): "sy", ("sell", "no"): "sn"}
_INTENTS: dict[str, tuple[Literal["buy", "sell"], Literal["yes", "no"]]] = {
    "by": ("buy", "yes"), "bn": ("buy", "no"), "sy": ("sell", "yes"), "sn": ("sell", "no")}
MAX_CLIENT_ID = 64


def venue_client_id(client_order_id: str, side: str, outcome: str) -> str:
    """The client order id sent to Kalshi: ours plus ``:`` and the intent (``by``, ``bn``, ``sy``,
    ``sn``), the same on every retry of the same request (an id too long for it is sent as is)."""
    if len(client_order_id) + 3 > MAX_CLIENT_ID:
        return client_order_id
    return f"{client_order_id}:{_INTENT_CODES[(side, outcome)]}"


def split_client_id(venue_id: str) -> tuple[str, tuple[Literal["buy", "sell"], Literal["yes", "no"]] | None]:
    """Our client order id and the (side, outcome) intent from the id Kalshi reports."""
    if len(venue_id) > 3 and venue_id[-3] == ":" and venue_id[-2:] in _INTENTS:
        return venue_id[:-3], _INTENTS[venue_id[-2:]]
    return venue_id, None


def order_body(req: OrderRequest) -> dict[str, Any]:
    """The ``POST /portfolio/events/orders`` body for *req* (validated: a limit price strictly
    between 0 and 1, a positive quantity, a known time in force)."""
    if req.price is None:
        raise OrderRejected("Kalshi has no market orders: a limit price is required", "invalid_order")
    price, qty = Decimal(req.price), Decimal(req.qty)
    if not ZERO < price < ONE:
        raise OrderRejected(f"price {price} is outside (0, 1)", "invalid_order")
    if qty <= 0:
        raise OrderRejected(f"quantity {qty} must be positive", "invalid_order")
    if req.tif not in TIF:
        raise OrderRejected(f"time in force {req.tif!r} is not one of {', '.join(TIF)}", "invalid_order")
    outcome = req.outcome or "yes"
    if outcome not in ("yes", "no"):
        raise OrderRejected(f"outcome {outcome!r} must be yes or no", "invalid_order")
    if req.side not in ("buy", "sell"):
        raise OrderRejected(f"side {req.side!r} must be buy or sell", "invalid_order")
    book_side, yes_price = yes_leg(outcome, req.side, price)
    stp = str(req.extra.get("self_trade_prevention_type") or STP_DEFAULT)
    if stp not in STP:
        raise OrderRejected(f"self_trade_prevention_type {stp!r} is not one of {', '.join(sorted(STP))}",
                            "invalid_order")
    return {
        "ticker": req.symbol,
        "client_order_id": venue_client_id(req.client_order_id, req.side, outcome),
        "side": book_side,
        "count": count_fp(qty),
        "price": dollars(yes_price),
        "time_in_force": TIF[req.tif],
        "post_only": bool(req.post_only),
        "self_trade_prevention_type": stp,
    }


def reject_code(status: int, code: str, message: str) -> str:
    """Our machine code for a venue refusal."""
    text = f"{code} {message}".lower()
    if status == 429:
        return "rate_limited"
    if "insufficient" in text or "balance" in text:
        return "insufficient_balance"
    if "tick" in text or "invalid_price" in text or "price" in code.lower():
        return "price_off_tick"
    if "closed" in text or "inactive" in text or "not open" in text or "paused" in text or "settled" in text:
        return "market_closed"
    if "post_only" in text or "post only" in text:
        return "post_only_would_cross"
    if status == 404 and "market" in text:
        return "unknown_market"
    if "invalid" in text or "bad_request" in text or "count" in text:
        return "invalid_order"
    return "venue_rejected"


def _ms(row: Mapping[str, Any], *names: str) -> int:
    """A timestamp in ms from the first of *names* present: ``*_ms`` ints, ``ts`` seconds, ISO."""
    for name in names:
        v = row.get(name)
        if v is None or v == "":
            continue
        if isinstance(v, int | float) and not isinstance(v, bool):
            return int(v) if name.endswith("_ms") else int(v * 1000)
        try:
            return int(datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            with contextlib.suppress(ValueError):
                return int(float(str(v)) * (1 if name.endswith("_ms") else 1000))
    return 0


def _count(row: Mapping[str, Any], *names: str) -> Decimal:
    for name in names:
        d = _dec(row.get(name))
        if d is not None:
            return d
    return ZERO


def _venue_error(resp: httpx.Response) -> tuple[str, str]:
    """(code, message) of a venue error answer."""
    try:
        body = resp.json()
    except ValueError:
        return "", (resp.text or f"HTTP {resp.status_code}")[:500]
    if isinstance(body, Mapping):
        inner = body.get("error")
        src: Mapping[str, Any] = inner if isinstance(inner, Mapping) else body
        code = str(src.get("code") or "")
        message = str(src.get("message") or src.get("details") or (inner if isinstance(inner, str) else "") or "")
        return code, message or code or f"HTTP {resp.status_code}"
    return "", str(body)[:500]


#: Orders remembered per adapter (request, ids, intent); past it the oldest half is forgotten.
MAX_TRACKED = 200_000


def _trim(d: dict[str, Any]) -> None:
    if len(d) > MAX_TRACKED:
        for key in list(itertools.islice(d, len(d) // 2)):
            del d[key]


@dataclass(frozen=True)
class _Known:
    """What we know of one order: the request it came from (its outcome and side)."""

    req: OrderRequest
    sent_ms: int


class KalshiOrders(OrderVenue):
    """Kalshi's order API for one client's key: see the module docstring."""

    venue: ClassVar[str] = "kalshi"
    #: 429s retried per request before giving up (``rate_limited``).
    max_retries = 5
    retry_initial_s = 0.05
    retry_max_s = 1.0
    #: User-channel reconnect backoff.
    reconnect_initial_s = 0.2
    reconnect_max_s = 10.0

    def __init__(self, credentials: Mapping[str, str], config: OrderConfig, *,
                 http: httpx.AsyncClient | None = None) -> None:
        super().__init__(credentials, config, http=http)
        self.api = config.api_url.rstrip("/")
        self.api_path = urlsplit(self.api).path.rstrip("/")
        self.key_id = str(self.credentials.get("api_key_id") or "")
        self._key: rsa.RSAPrivateKey | None = None
        rate = config.writes_per_s or WRITES_PER_S
        self._writes = TokenBucket(rate, config.burst or max(1, int(min(rate, WRITE_BURST))))
        self._reads = TokenBucket(READS_PER_S, READ_BURST)
        self._requests: dict[str, _Known] = {}  # client order id -> the request we sent
        self._ids: dict[str, str] = {}  # venue order id -> client order id
        self._cids: dict[str, str] = {}  # client order id -> venue order id
        # venue order id -> (side, outcome) read from its client order id's suffix
        self._intent: dict[str, tuple[Literal["buy", "sell"], Literal["yes", "no"]]] = {}
        self.throttled = 0  # 429s seen
        self.ws_connects = 0
        self.ws_reconnects = 0

    # -- bookkeeping ---------------------------------------------------------------------------
    def remember(self, req: OrderRequest, venue_order_id: str | None = None, *, sent_ms: int | None = None) -> None:
        """Note a request this client sent (after a restart: its working orders), so lookups are
        narrowed to its ticker and its fills come back in its outcome's terms."""
        self._requests[req.client_order_id] = _Known(req, int(time.time() * 1000) if sent_ms is None else sent_ms)
        _trim(self._requests)
        if venue_order_id:
            self._link(venue_order_id, req.client_order_id)

    def _link(self, venue_order_id: str, cid: str | None) -> None:
        if cid:
            self._ids[venue_order_id] = cid
            self._cids[cid] = venue_order_id
            _trim(self._ids)
            _trim(self._cids)

    def _row_cid(self, row: Mapping[str, Any], venue_order_id: str) -> str | None:
        """Our client order id for a venue row (its intent suffix noted), or the one we know."""
        raw = row.get("client_order_id")
        if raw:
            cid, intent = split_client_id(str(raw))
            if intent is not None and venue_order_id:
                self._intent[venue_order_id] = intent
                _trim(self._intent)
            if venue_order_id:
                self._link(venue_order_id, cid)
            return cid
        return self._ids.get(venue_order_id)

    def _request_of(self, venue_order_id: str, cid: str | None) -> OrderRequest | None:
        cid = cid or self._ids.get(venue_order_id)
        known = self._requests.get(cid) if cid else None
        return known.req if known else None

    # -- HTTP ------------------------------------------------------------------------------------
    def _signer(self) -> rsa.RSAPrivateKey:
        if self._key is None:
            pem = self.credentials.get("private_key_pem")
            if not self.key_id or not pem:
                raise AuthFailed("Kalshi credentials need api_key_id and private_key_pem")
            try:
                self._key = load_private_key(pem)
            except VenueError as exc:
                raise AuthFailed(str(exc)) from None
        return self._key

    def _headers(self, method: str, path: str) -> dict[str, str]:
        return kalshi_headers(self.key_id, self._signer(), method, self.api_path + path)

    async def _call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                    body: Mapping[str, Any] | None = None, write: bool = False) -> httpx.Response:
        """One signed request; 429s retried (bounded). Transport failures propagate as httpx errors."""
        backoff = Backoff(self.retry_initial_s, self.retry_max_s)
        attempt = 0
        while True:
            await (self._writes if write else self._reads).acquire()
            headers = self._headers(method, path)
            resp = await self.http.request(method, self.api + path, params=params, json=body, headers=headers,
                                           timeout=self.config.timeout_s)
            if resp.status_code != 429 or attempt >= self.max_retries:
                return resp
            self.throttled += 1
            attempt += 1
            await asyncio.sleep(backoff.next())

    async def _write(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> httpx.Response:
        try:
            resp = await self._call(method, path, body=body, write=True)
        except httpx.TimeoutException as exc:
            raise OutcomeUnknown(f"Kalshi {method} {path}: no answer within {self.config.timeout_s:g} s "
                                 f"({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise OutcomeUnknown(f"Kalshi {method} {path}: connection failed ({type(exc).__name__}: {exc})") from None
        if resp.status_code >= 500:
            message = _venue_error(resp)[1]
            raise OutcomeUnknown(f"Kalshi {method} {path}: HTTP {resp.status_code} {message}")
        self._auth_check(resp)
        return resp

    async def _read(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        try:
            resp = await self._call("GET", path, params=params)
        except httpx.HTTPError as exc:
            raise OutcomeUnknown(f"Kalshi GET {path}: {type(exc).__name__}: {exc}") from None
        self._auth_check(resp)
        if resp.status_code == 429:
            raise OutcomeUnknown(f"Kalshi GET {path}: still rate limited after {self.max_retries} retries")
        if resp.status_code >= 500:
            raise OutcomeUnknown(f"Kalshi GET {path}: HTTP {resp.status_code} {_venue_error(resp)[1]}")
        return resp

    @staticmethod
    def _auth_check(resp: httpx.Response) -> None:
        if resp.status_code in (401, 403):
            message = _venue_error(resp)[1]
            raise AuthFailed(f"Kalshi refused the key: HTTP {resp.status_code} {message}")

    @staticmethod
    def _json(resp: httpx.Response) -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError:
            raise OutcomeUnknown(f"Kalshi answered HTTP {resp.status_code} without JSON") from None
        if not isinstance(body, dict):
            raise OutcomeUnknown(f"Kalshi answered HTTP {resp.status_code} with {type(body).__name__}, "
                                 "not an object")
        return body

    # -- the interface ---------------------------------------------------------------------------
    async def check(self) -> AccountInfo:
        resp = await self._read("/portfolio/balance")
        if resp.status_code != 200:
            raise OrderError(f"Kalshi GET /portfolio/balance: HTTP {resp.status_code} {_venue_error(resp)[1]}")
        body = self._json(resp)
        bal = _dec(body.get("balance_dollars"))
        if bal is None:
            cents = _dec(body.get("balance"))
            bal = (cents / 100) if cents is not None else ZERO
        balances = {"USD": bal}
        pv = _dec(body.get("portfolio_value"))
        if pv is not None:
            balances["portfolio_value"] = pv / 100
        return AccountInfo(account=f"Kalshi API key {self.key_id}", balances=balances)

    async def place(self, req: OrderRequest) -> VenueOrder:
        body = order_body(req)
        self.remember(req)
        resp = await self._write("POST", "/portfolio/events/orders", body)
        if resp.status_code in (200, 201):
            return self._ack(req, self._json(resp))
        code, message = _venue_error(resp)
        if resp.status_code == 409 or "already" in f"{code} {message}".lower() or "duplicate" in code.lower():
            # The venue has an order with this client order id: it exists, so not a reject.
            found = await self.lookup(req.client_order_id)
            if found is not None:
                return found
            raise OutcomeUnknown(f"Kalshi says client order id {req.client_order_id} exists ({message}) "
                                 "but the order was not found")
        if resp.status_code == 429:
            raise OrderRejected(f"rate limited: {message}", "rate_limited")
        if resp.status_code == 410:  # never expected: we only use the V2 path
            raise OrderRejected(f"Kalshi: {message}", "venue_rejected")
        raise OrderRejected(message, reject_code(resp.status_code, code, message))

    def _ack(self, req: OrderRequest, body: Mapping[str, Any]) -> VenueOrder:
        oid = str(body.get("order_id") or "")
        if not oid:
            raise OutcomeUnknown(f"Kalshi accepted the order without an order_id: {dict(body)!r}"[:300])
        self._link(oid, req.client_order_id)
        filled = _count(body, "fill_count_fp", "fill_count")
        remaining = _count(body, "remaining_count_fp", "remaining_count")
        status: OrderStatus
        reason = None
        if remaining > 0:
            status = "open"
        elif filled >= req.qty:
            status = "filled"
        else:
            status = "cancelled"
            reason = f"{TIF[req.tif]}: {req.qty - filled} not filled, cancelled"
        return VenueOrder(req.client_order_id, oid, status, req.symbol, filled, remaining, reason,
                          _ms(body, "ts_ms", "ts"))

    def _order(self, row: Mapping[str, Any]) -> VenueOrder:
        oid = str(row.get("order_id") or "")
        cid = self._row_cid(row, oid)
        raw = str(row.get("status") or "")
        status = _STATUS.get(raw, "open")
        filled = _count(row, "fill_count_fp", "fill_count")
        remaining = _count(row, "remaining_count_fp", "remaining_count")
        if status != "open":
            remaining = ZERO
        reason = None
        if status == "cancelled":
            reason = str(row.get("cancel_reason") or row.get("reason") or "canceled")
        return VenueOrder(cid, oid, status, str(row.get("ticker") or row.get("market_ticker") or ""),
                          filled, remaining, reason, _ms(row, "ts_ms", "last_update_time", "created_time", "ts"))

    async def _get_order(self, venue_order_id: str) -> VenueOrder | None:
        resp = await self._read(f"/portfolio/orders/{quote(venue_order_id, safe='')}")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise OutcomeUnknown(f"Kalshi GET order {venue_order_id}: HTTP {resp.status_code} {_venue_error(resp)[1]}")
        row = self._json(resp).get("order")
        if not isinstance(row, Mapping):
            raise OutcomeUnknown(f"Kalshi GET order {venue_order_id}: no order in the answer")
        return self._order(row)

    async def cancel(self, venue_order_id: str) -> VenueOrder:
        resp = await self._write("DELETE", f"/portfolio/events/orders/{quote(venue_order_id, safe='')}")
        if resp.status_code in (200, 201):
            body = self._json(resp)
            cid = self._row_cid(body, venue_order_id)
            reduced = _count(body, "reduced_by_fp", "reduced_by")
            req = self._request_of(venue_order_id, cid)
            filled = max(ZERO, req.qty - reduced) if req is not None else ZERO
            return VenueOrder(cid, venue_order_id, "cancelled", req.symbol if req else "",
                              filled, ZERO, "canceled by us", _ms(body, "ts_ms", "ts"))
        code, message = _venue_error(resp)
        if resp.status_code in (400, 404, 409):
            # Gone already (filled or cancelled): its final status.
            order = await self._get_order(venue_order_id)
            if order is not None:
                return order
            raise OrderRejected(f"no such order {venue_order_id}: {message}", "unknown_order")
        if resp.status_code == 429:
            raise OrderRejected(f"cancel rate limited: {message}", "rate_limited")
        raise OrderRejected(message, reject_code(resp.status_code, code, message))

    async def cancel_many(self, venue_order_ids: list[str]) -> list[VenueOrder | OrderError]:
        """Cancel many orders (the kill switch) with ``DELETE /portfolio/events/orders/batched``,
        :data:`CANCEL_BATCH` at a time; one answer per id, in order: the cancelled (or already
        finished) order, or the error for that id (:class:`OutcomeUnknown` when the batch's
        answer was lost: ask :meth:`cancel` again)."""
        out: list[VenueOrder | OrderError] = []
        for i in range(0, len(venue_order_ids), CANCEL_BATCH):
            out.extend(await self._cancel_batch(venue_order_ids[i:i + CANCEL_BATCH]))
        return out

    async def _cancel_batch(self, ids: list[str]) -> list[VenueOrder | OrderError]:
        for _ in range(1, -(-len(ids) * BATCH_CANCEL_COST // WRITE_COST)):  # the batch is billed per item
            await self._writes.acquire()
        try:
            resp = await self._write("DELETE", "/portfolio/events/orders/batched",
                                     {"orders": [{"order_id": oid} for oid in ids]})
        except OrderError as exc:
            return [exc] * len(ids)
        if resp.status_code not in (200, 201):
            code, message = _venue_error(resp)
            err: OrderError = OrderRejected(message, "rate_limited" if resp.status_code == 429 else
                                            reject_code(resp.status_code, code, message))
            return [err] * len(ids)
        body = self._json(resp)
        rows = body.get("orders") or body.get("responses") or []
        by_id = {str(r.get("order_id")): r for r in rows if isinstance(r, Mapping)}
        out: list[VenueOrder | OrderError] = []
        for oid in ids:
            row = by_id.get(oid)
            if row is None or row.get("error"):
                try:  # gone already, or refused: its own status
                    found = await self._get_order(oid)
                except OrderError as exc:
                    out.append(exc)
                    continue
                if found is None:
                    out.append(OrderRejected(f"no such order {oid}", "unknown_order"))
                elif found.status == "open":
                    err_body = row.get("error") if row else None
                    msg = str(err_body.get("message") if isinstance(err_body, Mapping) else err_body or "not cancelled")
                    out.append(OrderRejected(msg, "venue_rejected"))
                else:
                    out.append(found)
                continue
            cid = self._row_cid(row, oid)
            reduced = _count(row, "reduced_by_fp", "reduced_by")
            req = self._request_of(oid, cid)
            filled = max(ZERO, req.qty - reduced) if req is not None else ZERO
            out.append(VenueOrder(cid, oid, "cancelled", req.symbol if req else "", filled,
                                  ZERO, "canceled by us", _ms(row, "ts_ms", "ts")))
        return out

    async def _list_orders(self, params: Mapping[str, Any], *, max_pages: int | None = None,
                           match: str | None = None) -> list[VenueOrder]:
        out: list[VenueOrder] = []
        cursor: str | None = None
        pages = 0
        while True:
            q = dict(params)
            q["limit"] = ORDERS_PAGE
            if cursor:
                q["cursor"] = cursor
            resp = await self._read("/portfolio/orders", q)
            if resp.status_code != 200:
                raise OutcomeUnknown(f"Kalshi GET /portfolio/orders: HTTP {resp.status_code} {_venue_error(resp)[1]}")
            body = self._json(resp)
            for row in body.get("orders") or []:
                if not isinstance(row, Mapping):
                    continue
                if match is not None and split_client_id(str(row.get("client_order_id") or ""))[0] != match:
                    continue
                out.append(self._order(row))
                if match is not None:
                    return out
            pages += 1
            cursor = str(body.get("cursor") or "")
            if not cursor or (max_pages is not None and pages >= max_pages):
                return out

    async def lookup(self, client_order_id: str) -> VenueOrder | None:
        oid = self._cids.get(client_order_id)
        if oid:
            found = await self._get_order(oid)
            if found is not None:
                return found
        known = self._requests.get(client_order_id)
        params: dict[str, Any] = {}
        if known is not None:
            params["ticker"] = known.req.symbol
            params["min_ts"] = max(0, known.sent_ms // 1000 - LOOKUP_SLACK_S)
        hits = await self._list_orders(params, max_pages=None if known else LOOKUP_MAX_PAGES, match=client_order_id)
        return hits[0] if hits else None

    async def open_orders(self) -> list[VenueOrder]:
        return await self._list_orders({"status": "resting"})

    def _fill(self, row: Mapping[str, Any]) -> VenueFill:
        oid = str(row.get("order_id") or "")
        cid = self._row_cid(row, oid)
        req = self._request_of(oid, cid)
        outcome: Literal["yes", "no"]
        side: Literal["buy", "sell"]
        if req is not None:
            outcome = req.outcome or "yes"
            side = req.side
        elif oid in self._intent:
            side, outcome = self._intent[oid]
        else:
            outcome = "no" if row.get("side") == "no" else "yes"
            side = "sell" if row.get("action") == "sell" else "buy"
        yes = _dec(row.get("yes_price_dollars") or row.get("yes_price_fixed"))
        no = _dec(row.get("no_price_dollars") or row.get("no_price_fixed"))
        if outcome == "no":
            price = no if no is not None else (ONE - yes if yes is not None else ZERO)
        else:
            price = yes if yes is not None else (ONE - no if no is not None else ZERO)
        return VenueFill(
            fill_id=str(row.get("fill_id") or row.get("trade_id") or ""),
            venue_order_id=oid,
            client_order_id=cid,
            symbol=str(row.get("ticker") or row.get("market_ticker") or (req.symbol if req else "")),
            side=side,
            price=price,
            qty=_count(row, "count_fp", "count"),
            fee=_dec(row.get("fee_cost")) or ZERO,
            is_taker=bool(row.get("is_taker", True)),
            ts_ms=_ms(row, "ts_ms", "created_time", "ts"),
            outcome=outcome,
        )

    async def fills(self, since_ms: int) -> list[VenueFill]:
        out: list[VenueFill] = []
        cursor: str | None = None
        while True:
            q: dict[str, Any] = {"min_ts": max(0, since_ms // 1000), "limit": FILLS_PAGE}
            if cursor:
                q["cursor"] = cursor
            resp = await self._read("/portfolio/fills", q)
            if resp.status_code != 200:
                raise OutcomeUnknown(f"Kalshi GET /portfolio/fills: HTTP {resp.status_code} {_venue_error(resp)[1]}")
            body = self._json(resp)
            out.extend(self._fill(r) for r in body.get("fills") or [] if isinstance(r, Mapping))
            cursor = str(body.get("cursor") or "")
            if not cursor:
                break
        out = [f for f in out if f.ts_ms >= since_ms]
        # The venue lists newest first; we hand them back oldest first (stable for equal times).
        out.reverse()
        out.sort(key=lambda f: f.ts_ms)
        return out

    # -- the user channel --------------------------------------------------------------------------
    def parse_ws(self, msg: Mapping[str, Any]) -> VenueOrder | VenueFill | None:
        """One user-channel message as an event (None: not an order or fill message)."""
        body = msg.get("msg")
        if not isinstance(body, Mapping):
            return None
        kind = msg.get("type")
        if kind == "fill":
            return self._fill(body)
        if kind == "user_order":
            return self._order(body)
        return None

    async def events(self) -> AsyncIterator[VenueOrder | VenueFill]:
        url = self.config.user_ws_url
        if not url:
            raise OrderError("no Kalshi WebSocket URL configured")
        path = urlsplit(url).path or "/"
        backoff = Backoff(self.reconnect_initial_s, self.reconnect_max_s)
        first = True
        while True:
            if not first:
                self.ws_reconnects += 1
                await asyncio.sleep(backoff.next())
            first = False
            try:
                headers = kalshi_headers(self.key_id, self._signer(), "GET", path)
                async with connect(url, additional_headers=headers, open_timeout=max(1.0, self.config.timeout_s),
                                   compression=None, max_size=2**22) as ws:
                    await ws.send(json.dumps({"id": 1, "cmd": "subscribe",
                                              "params": {"channels": ["user_orders", "fill"]}}))
                    self.ws_connects += 1
                    async for raw in ws:
                        try:
                            msg = json.loads(raw)
                        except ValueError:
                            continue
                        if not isinstance(msg, Mapping):
                            continue
                        if msg.get("type") == "subscribed":
                            backoff.reset()
                        elif msg.get("type") == "error":
                            log.warning("Kalshi user channel error: %s", msg.get("msg"))
                        ev = self.parse_ws(msg)
                        if ev is not None:
                            yield ev
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    raise AuthFailed(f"Kalshi refused the key at the WebSocket upgrade (HTTP {status})") from None
                log.warning("Kalshi user channel upgrade refused: HTTP %s; reconnecting", status)
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as exc:
                log.info("Kalshi user channel dropped (%s); reconnecting", type(exc).__name__)
