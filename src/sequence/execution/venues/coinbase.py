"""Coinbase Advanced Trade orders: place, cancel, look up, backfill fills, listen on the user channel.

Wire formats (docs.cdp.coinbase.com, Advanced Trade API; the official ``coinbase-advanced-py``
client; /work/shared/docs/VENUES.md). Anything marked *(unconfirmed)* is this adapter's reading,
not something a public source states outright.

Authentication
--------------
Every REST request carries a fresh JWT (``Authorization: Bearer …``), signed ES256 with the
key's EC P-256 private key (EdDSA for an Ed25519 key, given as PEM or as Coinbase's base64
secret). Header: ``alg``, ``typ``, ``kid`` = the key name (``organizations/{org}/apiKeys/{key}``)
and a random hex ``nonce``. Claims: ``sub`` = the key name, ``iss`` = ``"cdp"`` (the official
Python client still sends ``"coinbase-cloud"``; the CDP docs and SDKs use ``"cdp"``), ``nbf`` =
now, ``exp`` = now + 120 s (the venue's maximum), and ``uri`` = ``"METHOD host/path"`` — the
host as in the API URL (with its port, if any) and the path without the query string
(the query is not covered: unconfirmed, the official client signs the path alone). The
user-channel JWT has no ``uri``.

REST (``api_url`` = ``https://api.coinbase.com/api/v3/brokerage``)
--------------------------------------------------------------------
- ``GET /accounts?limit=&cursor=`` → ``{"accounts": [{currency, available_balance: {value,
  currency}, hold, retail_portfolio_id, …}], "has_next", "cursor"}`` — :meth:`check` (every
  page; the available balance of each currency with money in it, the portfolio as account).
- ``POST /orders`` ``{client_order_id, product_id, side: BUY|SELL, order_configuration}``
  where the configuration is one of (:func:`order_configuration`):
  ``limit_limit_gtc {base_size, limit_price, post_only}`` (tif ``gtc``),
  ``sor_limit_ioc {base_size, limit_price}`` (``ioc``), ``limit_limit_fok {base_size,
  limit_price}`` (``fok``), ``market_market_ioc {base_size}`` (no price). Sizes and prices are
  sent as plain decimal strings exactly as the request gives them (no rounding here: the
  engine sends them on the product's ``base_increment``/``price_increment``; the venue refuses
  what is off them). The answer is HTTP 200 either way: ``{"success": true,
  "success_response": {order_id, product_id, side, client_order_id}}`` or ``{"success":
  false, "error_response": {error, message, error_details, preview_failure_reason,
  new_order_failure_reason}}`` — a business reject (:class:`OrderRejected`, :func:`reject_code`).
  The answer carries no order state: :meth:`place` returns ``open`` for every accepted order
  (an IOC/FOK/market order's fills and end come from :meth:`events`/:meth:`lookup`).
- Duplicate ``client_order_id``: the docs say an id that is not unique does not create an
  order and the existing order is returned instead (success, its ``order_id``)
  *(unconfirmed: not verified against the live venue)*. The adapter relies on neither answer:
  after :class:`OutcomeUnknown` the engine calls :meth:`lookup` before anything else.
- ``POST /orders/batch_cancel {order_ids}`` → ``{"results": [{success, failure_reason,
  order_id}]}``; a filled order answers ``ORDER_IS_FILLED`` and a cancelled one
  ``DUPLICATE_CANCEL_REQUEST`` *(unconfirmed which reason the venue uses for each)*: not
  errors — :meth:`cancel` then reads the order and returns its final state.
- ``GET /orders/historical/{order_id}`` → ``{"order": {order_id, client_order_id, product_id,
  side, status (PENDING OPEN FILLED CANCELLED EXPIRED FAILED QUEUED CANCEL_QUEUED …),
  filled_size, average_filled_price, total_fees, order_configuration, created_time,
  last_fill_time, reject_message, cancel_message, …}}``; 404 for an unknown id.
- ``GET /orders/historical/batch?order_status=OPEN&start_date=&limit=&cursor=`` →
  ``{"orders", "has_next", "cursor"}``, newest first. It has **no client-order-id filter**,
  so :meth:`lookup` of an id not learnt in this session lists every order created in the last
  :attr:`CoinbaseOrders.lookup_window_s` (7 days) page by page and matches
  ``client_order_id`` — a few requests at most for a bot's volume. (That a listing without
  ``order_status`` includes every status — filled, cancelled, expired, failed — is
  unconfirmed.)
- ``GET /orders/historical/fills?start_sequence_timestamp=&limit=&cursor=`` (also
  ``order_ids``) → ``{"fills": [{entry_id, trade_id, order_id, trade_time, price, size,
  commission, liquidity_indicator MAKER|TAKER, size_in_quote, side, product_id, …}],
  "cursor"}``; paged until the cursor is empty; sorted here oldest first (the venue's own
  order is newest first, unconfirmed). ``trade_id`` is taken as unique per fill of this
  account (Coinbase prevents self-trades; two of our own orders matching each other would
  share one trade id — unconfirmed).
- 401/403 → :class:`AuthFailed`. 429 → retried a few times with backoff (the request was
  not taken: safe), then :class:`OrderRejected` ``rate_limited`` for a write. A timeout,
  a dropped connection or a 5xx on a write → :class:`OutcomeUnknown`, never retried; reads
  are retried a few times, then raise :class:`OutcomeUnknown` too ("no answer: ask again" —
  what the router's lookup loop retries on; a read changes nothing at the venue). Writes go through a token bucket (:attr:`writes_per_s`,
  Coinbase's private REST limit is 30 requests/s per key *(unconfirmed for order writes)*).

User channel (``user_ws_url`` = ``wss://advanced-trade-ws-user.coinbase.com``)
-------------------------------------------------------------------------------
:meth:`events` subscribes ``{"type": "subscribe", "channel": "user", "jwt": …}`` and
``heartbeats`` (so the socket is never idle-closed). The venue answers with a ``snapshot``
of the open orders, then ``update``\\ s; each ``orders[]`` row has ``order_id``,
``client_order_id``, ``status``, ``cumulative_quantity``, ``leaves_quantity``,
``avg_price``, ``total_fees``, ``product_id``, ``order_side``, ``cancel_reason``,
``reject_reason``, ``creation_time``. Every message carries the connection's
``sequence_num``: an older number is a duplicate (dropped), a jump is a lost message (the
socket is replaced: the new snapshot restates every open order). A silent socket (no
heartbeat for :attr:`stall_s`) is replaced too; reconnects back off exponentially.

Fills from the channel: the user channel has **no trade ids** — a fill inferred from a
``cumulative_quantity`` change would have no id the REST backfill shares. So every row is
emitted as a :class:`VenueOrder`, and when an order's ``cumulative_quantity`` grew the
adapter reads that order's fills from ``/orders/historical/fills?order_ids=`` and emits
them as :class:`VenueFill` with ``fill_id`` = the REST ``trade_id`` — the same ids
:meth:`fills` returns, so the engine's dedupe holds across the channel, reconnects and
backfill. (If the REST fills lag the channel, the read is retried briefly; a fill still
missing arrives with the next update or the engine's backfill.)

Units: prices are quote currency per base unit, quantities base units, ``fee`` is the fill's
``commission`` in the quote currency. A fill with ``size_in_quote`` has its size converted
to base units (size / price).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from sequence.market.venues.live.base import Backoff, TokenBucket

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

__all__ = [
    "CoinbaseOrders",
    "build_jwt",
    "load_private_key",
    "order_configuration",
    "parse_fill",
    "parse_order",
    "parse_user_order",
    "reject_code",
]

log = logging.getLogger("sequence.execution.venues.coinbase")

#: The venue's maximum JWT lifetime.
JWT_LIFETIME_S = 120
#: ``iss`` claim (the CDP docs; the official Python client still says "coinbase-cloud").
JWT_ISSUER = "cdp"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

#: The venue's order status -> ours.
STATUS: dict[str, OrderStatus] = {
    "PENDING": "pending",
    "QUEUED": "pending",
    "UNKNOWN_ORDER_STATUS": "pending",
    "OPEN": "open",
    "CANCEL_QUEUED": "open",  # still working until the cancel lands
    "EDIT_QUEUED": "open",
    "FILLED": "filled",
    "CANCELLED": "cancelled",
    "EXPIRED": "cancelled",
    "FAILED": "rejected",
}

#: Substrings of the venue's failure reasons -> our reject codes, first match wins.
REJECT_CODES: tuple[tuple[str, str], ...] = (
    ("INSUFFICIENT_FUND", "insufficient_balance"),
    ("INSUFFICIENT_LEDGER_BALANCE", "insufficient_balance"),
    ("INVALID_LIMIT_PRICE_POST_ONLY", "post_only_would_cross"),
    ("INVALID_PRICE_PRECISION", "price_off_tick"),
    ("INVALID_QUOTE_SIZE_PRECISION", "size_off_increment"),
    ("INVALID_SIZE_PRECISION", "size_off_increment"),
    ("BASE_SIZE_TOO_SMALL", "below_min_size"),
    ("QUOTE_SIZE_TOO_SMALL", "below_min_size"),
    ("BASE_SIZE_TOO_LARGE", "above_max_size"),
    ("QUOTE_SIZE_TOO_LARGE", "above_max_size"),
    ("INVALID_PRODUCT_ID", "unknown_instrument"),
    ("ORDER_ENTRY_DISABLED", "trading_disabled"),
    ("INELIGIBLE_PAIR", "trading_disabled"),
    ("INVALID_NO_LIQUIDITY", "no_liquidity"),
    ("INVALID_LIMIT_PRICE", "invalid_price"),
    ("UNSUPPORTED_ORDER_CONFIGURATION", "invalid_order"),
    ("INVALID_ORDER_CONFIG", "invalid_order"),
    ("INVALID_SIDE", "invalid_order"),
)
_UNKNOWN_REASONS = frozenset({"", "UNKNOWN_FAILURE_REASON", "UNKNOWN_PREVIEW_FAILURE_REASON"})


# -- pure pieces (unit-tested on their own) ------------------------------------------------------
def load_private_key(text: str) -> PrivateKey:
    """The key's private key: a PEM (EC P-256 ``BEGIN EC PRIVATE KEY`` or PKCS#8; Ed25519 PEM) or
    Coinbase's Ed25519 secret (base64 of 64 bytes: seed then public key). :class:`AuthFailed`
    if it is neither."""
    raw = text.strip().replace("\\n", "\n")
    try:
        if raw.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(raw.encode(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
                return key
            if isinstance(key, ed25519.Ed25519PrivateKey):
                return key
            raise AuthFailed("the private key is neither an EC P-256 nor an Ed25519 key")
        secret = base64.b64decode(raw, validate=True)
    except (ValueError, TypeError) as e:
        raise AuthFailed(f"the private key is not a PEM key or a base64 Ed25519 secret: {e}") from None
    if len(secret) in (32, 64):
        return ed25519.Ed25519PrivateKey.from_private_bytes(secret[:32])
    raise AuthFailed("the private key is not a PEM key or a base64 Ed25519 secret")


def build_jwt(key_name: str, key: PrivateKey, *, uri: str | None, now: float,
              lifetime_s: int = JWT_LIFETIME_S, nonce: str | None = None) -> str:
    """One request's JWT (see the module docstring). *uri* is ``"METHOD host/path"`` (None for
    the WebSocket)."""
    claims: dict[str, Any] = {"sub": key_name, "iss": JWT_ISSUER, "nbf": int(now), "exp": int(now) + lifetime_s}
    if uri is not None:
        claims["uri"] = uri
    algorithm = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
    return jwt.encode(claims, key, algorithm=algorithm,
                      headers={"kid": key_name, "nonce": nonce or secrets.token_hex(16)})


def _plain(d: Decimal, what: str) -> str:
    if not d.is_finite() or d <= 0:
        raise OrderRejected(f"{what} must be a positive number, not {d}", "invalid_order")
    return f"{d:f}"


def order_configuration(req: OrderRequest) -> dict[str, dict[str, Any]]:
    """The request's ``order_configuration``: gtc → ``limit_limit_gtc`` (with ``post_only``),
    ioc → ``sor_limit_ioc``, fok → ``limit_limit_fok``, no price → ``market_market_ioc``
    (``base_size``). Decimal strings exactly as given. :class:`OrderRejected` (``invalid_order``)
    for what the venue has no configuration for (a post-only IOC/FOK/market order)."""
    size = _plain(req.qty, "qty")
    if req.price is None:
        if req.post_only:
            raise OrderRejected("a market order cannot be post-only", "invalid_order")
        if req.tif == "fok":
            raise OrderRejected("a market order is IOC on Coinbase (no fill-or-kill market order)", "invalid_order")
        return {"market_market_ioc": {"base_size": size}}
    price = _plain(req.price, "price")
    if req.tif == "gtc":
        return {"limit_limit_gtc": {"base_size": size, "limit_price": price, "post_only": bool(req.post_only)}}
    if req.post_only:
        raise OrderRejected(f"a post-only order must be GTC, not {req.tif.upper()}", "invalid_order")
    if req.tif == "ioc":
        return {"sor_limit_ioc": {"base_size": size, "limit_price": price}}
    if req.tif == "fok":
        return {"limit_limit_fok": {"base_size": size, "limit_price": price}}
    raise OrderRejected(f"unknown time in force {req.tif!r}", "invalid_order")


def reject_code(error: Mapping[str, Any]) -> str:
    """Our code for an ``error_response`` (``insufficient_balance``, ``post_only_would_cross`` …)."""
    fields = [str(error.get(k) or "") for k in ("error", "new_order_failure_reason", "preview_failure_reason",
                                                  "failure_reason")]
    for text in fields:
        for needle, code in REJECT_CODES:
            if needle in text:
                return code
    return "venue_rejected"


def reject_reason(error: Mapping[str, Any]) -> str:
    """The venue's words for an ``error_response``: its message, else its reason codes."""
    message = str(error.get("message") or "").strip()
    details = str(error.get("error_details") or "").strip()
    codes = [str(error.get(k)) for k in ("error", "new_order_failure_reason", "preview_failure_reason")
             if error.get(k) and str(error.get(k)) not in _UNKNOWN_REASONS]
    words = message or details or (codes[0] if codes else "")
    if codes and codes[0] not in words:
        words = f"{words} ({codes[0]})" if words else codes[0]
    return words or "the venue refused the order"


def _dec(value: Any) -> Decimal:
    if value is None or value == "":
        return Decimal(0)
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)
    return d if d.is_finite() else Decimal(0)


def ts_ms(text: Any) -> int:
    """An RFC 3339 time (nanoseconds allowed, ``Z`` or an offset) as epoch milliseconds; 0 if
    absent or unreadable."""
    if not isinstance(text, str) or not text:
        return 0
    s = text.strip().replace(" ", "T", 1)
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    head, dot, rest = s.partition(".")
    if dot:
        digits = ""
        for i, ch in enumerate(rest):
            if not ch.isdigit():
                tail = rest[i:]
                break
            digits += ch
        else:
            tail = ""
        s = f"{head}.{digits[:6].ljust(6, '0')}{tail}"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return 0
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _base_size(config: Any) -> Decimal:
    if isinstance(config, Mapping):
        for body in config.values():
            if isinstance(body, Mapping) and body.get("base_size") not in (None, ""):
                return _dec(body["base_size"])
    return Decimal(0)


def parse_order(row: Mapping[str, Any]) -> VenueOrder:
    """A ``/orders/historical`` order as a :class:`VenueOrder`."""
    status = STATUS.get(str(row.get("status") or ""), "pending")
    filled = _dec(row.get("filled_size"))
    size = _base_size(row.get("order_configuration"))
    remaining = max(size - filled, Decimal(0)) if status in ("open", "pending") else Decimal(0)
    reason = None
    if status == "rejected":
        reason = str(row.get("reject_message") or row.get("reject_reason") or "") or None
    elif status == "cancelled":
        reason = str(row.get("cancel_message") or "") or None
    return VenueOrder(
        client_order_id=str(row.get("client_order_id") or "") or None,
        venue_order_id=str(row.get("order_id") or ""),
        status=status,
        symbol=str(row.get("product_id") or ""),
        filled_qty=filled,
        remaining_qty=remaining,
        reason=reason,
        ts_ms=ts_ms(row.get("last_fill_time")) or ts_ms(row.get("created_time")),
    )


def parse_user_order(row: Mapping[str, Any], ts: int = 0) -> VenueOrder:
    """One ``orders[]`` row of a ``user`` channel event as a :class:`VenueOrder`."""
    status = STATUS.get(str(row.get("status") or ""), "pending")
    reason = None
    if status == "rejected":
        reason = str(row.get("reject_reason") or "") or None
    elif status == "cancelled":
        reason = str(row.get("cancel_reason") or "") or None
    return VenueOrder(
        client_order_id=str(row.get("client_order_id") or "") or None,
        venue_order_id=str(row.get("order_id") or ""),
        status=status,
        symbol=str(row.get("product_id") or ""),
        filled_qty=_dec(row.get("cumulative_quantity")),
        remaining_qty=_dec(row.get("leaves_quantity")) if status in ("open", "pending") else Decimal(0),
        reason=reason,
        ts_ms=ts or ts_ms(row.get("creation_time")),
    )


def parse_fill(row: Mapping[str, Any], client_order_id: str | None = None) -> VenueFill:
    """One ``/orders/historical/fills`` row as a :class:`VenueFill` (``fill_id`` = ``trade_id``)."""
    price = _dec(row.get("price"))
    size = _dec(row.get("size"))
    if row.get("size_in_quote") and price > 0:
        size = size / price
    side: Literal["buy", "sell"] = "sell" if str(row.get("side") or "").upper() == "SELL" else "buy"
    return VenueFill(
        fill_id=str(row.get("trade_id") or row.get("entry_id") or ""),
        venue_order_id=str(row.get("order_id") or ""),
        client_order_id=client_order_id,
        symbol=str(row.get("product_id") or ""),
        side=side,
        price=price,
        qty=size,
        fee=_dec(row.get("commission")),
        is_taker=str(row.get("liquidity_indicator") or "").upper() != "MAKER",
        ts_ms=ts_ms(row.get("trade_time")) or ts_ms(row.get("sequence_timestamp")),
    )


class _Resubscribe(Exception):
    """The user channel lost a message or stalled: replace the socket."""


# -- the adapter ---------------------------------------------------------------------------------
class CoinbaseOrders(OrderVenue):
    """Coinbase Advanced Trade orders for one API key (see the module docstring)."""

    venue = "coinbase"
    #: Write token bucket when the config sets none.
    writes_per_s: float = 30.0
    burst: int = 30
    #: 429 retries (the request was refused before it was taken) and their first backoff.
    rate_limit_retries: int = 3
    retry_backoff_s: float = 0.2
    #: Read retries on a timeout/5xx.
    read_retries: int = 2
    #: How far back :meth:`lookup` lists orders for a client order id it has not seen.
    lookup_window_s: float = 7 * 24 * 3600
    #: Page sizes asked for.
    page_size: int = 250
    fills_page_size: int = 100
    #: User channel: a socket silent this long is replaced (heartbeats come every second).
    stall_s: float = 30.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    #: After an order's quantity grew on the channel, how often / how long to wait for its REST fills.
    fill_fetch_tries: int = 3
    fill_fetch_wait_s: float = 0.1

    def __init__(self, credentials: Mapping[str, str], config: OrderConfig, *,
                 http: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__(credentials, config, http=http)
        key_name = self.credentials.get("api_key_name") or ""
        pem = self.credentials.get("private_key_pem") or ""
        if not key_name or not pem:
            raise AuthFailed("coinbase credentials need api_key_name and private_key_pem")
        self.key_name = key_name
        self._key = load_private_key(pem)
        self.clock = clock
        parts = urlsplit(config.api_url)
        self._base = config.api_url.rstrip("/")
        self._host = parts.netloc
        self._prefix = parts.path.rstrip("/")
        self.writes = TokenBucket(config.writes_per_s or self.writes_per_s, config.burst or self.burst)
        #: client order id <-> venue order id, learnt from acks, lookups and the channel.
        self._ids: dict[str, str] = {}
        self._cids: dict[str, str] = {}
        #: venue order id -> cumulative quantity last seen on the channel.
        self._cum: dict[str, Decimal] = {}
        #: trade ids already emitted from the channel (this session).
        self._emitted: set[str] = set()
        self.stats = {"reconnects": 0, "duplicates": 0, "gaps": 0, "stalls": 0, "rate_limited": 0}

    # -- auth ------------------------------------------------------------------------------------
    def jwt_uri(self, method: str, path: str) -> str:
        """The ``uri`` claim: ``"METHOD host/path"`` (path without the query)."""
        return f"{method} {self._host}{path}"

    def token(self, method: str | None = None, path: str | None = None) -> str:
        """A fresh JWT for one request (``method``/``path`` None: the WebSocket's)."""
        uri = self.jwt_uri(method, path) if method and path else None
        return build_jwt(self.key_name, self._key, uri=uri, now=self.clock())

    # -- HTTP --------------------------------------------------------------------------------------
    def _remember(self, client_order_id: str | None, order_id: str) -> None:
        if client_order_id and order_id:
            self._ids[client_order_id] = order_id
            self._cids[order_id] = client_order_id

    async def _call(self, method: str, path: str, *, params: Any = None, body: Any = None,
                    write: bool = False) -> Any:
        """One request. Returns the JSON answer (``None`` for a 404 on a read); raises as the module
        docstring says."""
        url = self._base + path
        signed = self._prefix + path
        what = f"{method} {path}"
        attempt = 0
        throttled = 0
        while True:
            if write:
                await self.writes.acquire()
            headers = {"Authorization": f"Bearer {self.token(method, signed)}"}
            try:
                r = await self.http.request(method, url, params=params, json=body, headers=headers,
                                            timeout=self.config.timeout_s)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                if write:
                    raise OutcomeUnknown(f"coinbase {what}: no answer ({type(e).__name__}: {e})") from None
                if attempt < self.read_retries:
                    attempt += 1
                    await asyncio.sleep(self.retry_backoff_s * attempt)
                    continue
                raise OutcomeUnknown(f"coinbase {what}: no answer ({type(e).__name__}: {e})") from None
            status = r.status_code
            if status == 429:
                self.stats["rate_limited"] += 1
                if throttled < self.rate_limit_retries:
                    delay = self.retry_backoff_s * (2 ** throttled)
                    retry_after = r.headers.get("retry-after")
                    if retry_after:
                        with contextlib.suppress(ValueError):
                            delay = max(delay, min(float(retry_after), 5.0))
                    throttled += 1
                    await asyncio.sleep(delay)
                    continue
                if write:
                    raise OrderRejected(f"coinbase rate limit: {_words(r)}", "rate_limited")
                raise OutcomeUnknown(f"coinbase {what}: rate limited ({_words(r)})")
            if status in (401, 403):
                raise AuthFailed(f"coinbase refused the credentials ({status}): {_words(r)}")
            if status >= 500:
                if not write and attempt < self.read_retries:
                    attempt += 1
                    await asyncio.sleep(self.retry_backoff_s * attempt)
                    continue
                raise OutcomeUnknown(f"coinbase {what}: HTTP {status}: {_words(r)}")
            if status == 404 and not write:
                return None
            if status >= 400:
                payload = _json(r)
                err = payload if isinstance(payload, Mapping) else {}
                if write:
                    raise OrderRejected(reject_reason(err) if err else _words(r), reject_code(err))
                raise OrderError(f"coinbase {what}: HTTP {status}: {_words(r)}")
            payload = _json(r)
            if payload is None:
                if write:
                    raise OutcomeUnknown(f"coinbase {what}: an answer that is not JSON")
                raise OrderError(f"coinbase {what}: an answer that is not JSON")
            return payload

    # -- the interface -----------------------------------------------------------------------------
    async def check(self) -> AccountInfo:
        balances: dict[str, Decimal] = {}
        portfolio = ""
        cursor = ""
        for _ in range(100):
            params: dict[str, Any] = {"limit": self.page_size}
            if cursor:
                params["cursor"] = cursor
            data = await self._call("GET", "/accounts", params=params)
            if not isinstance(data, Mapping):
                raise OrderError("coinbase GET /accounts: no accounts in the answer")
            for acc in data.get("accounts") or ():
                ccy = str(acc.get("currency") or "")
                available = _dec((acc.get("available_balance") or {}).get("value"))
                held = _dec((acc.get("hold") or {}).get("value"))
                if ccy and (available or held):  # Coinbase keeps a wallet per currency, mostly empty
                    balances[ccy] = balances.get(ccy, Decimal(0)) + available
                portfolio = portfolio or str(acc.get("retail_portfolio_id") or "")
            cursor = str(data.get("cursor") or "")
            if not data.get("has_next") or not cursor:
                break
        account = f"portfolio {portfolio}" if portfolio else self.key_name
        return AccountInfo(account=account, balances=balances)

    async def place(self, req: OrderRequest) -> VenueOrder:
        body = {"client_order_id": req.client_order_id, "product_id": req.symbol, "side": req.side.upper(),
                "order_configuration": order_configuration(req)}
        data = await self._call("POST", "/orders", body=body, write=True)
        if not isinstance(data, Mapping):
            raise OutcomeUnknown("coinbase POST /orders: an answer without success")
        if not data.get("success"):
            err = data.get("error_response") or {}
            if not isinstance(err, Mapping):
                err = {}
            if not err and data.get("failure_reason"):
                err = {"error": data.get("failure_reason")}
            raise OrderRejected(reject_reason(err), reject_code(err))
        ok = data.get("success_response") or {}
        order_id = str((ok.get("order_id") if isinstance(ok, Mapping) else None) or data.get("order_id") or "")
        if not order_id:
            raise OutcomeUnknown("coinbase POST /orders: success without an order id")
        self._remember(req.client_order_id, order_id)
        return VenueOrder(req.client_order_id, order_id, "open", req.symbol, Decimal(0), req.qty,
                          ts_ms=int(self.clock() * 1000))

    async def cancel_many(self, venue_order_ids: list[str]) -> list[VenueOrder]:
        """Cancel up to 100 orders per request (``batch_cancel``; the kill switch). Each answer:
        ``cancelled`` (accepted), ``filled`` (``ORDER_IS_FILLED``), or — for an order already
        cancelled (``DUPLICATE_CANCEL_REQUEST``) — ``cancelled``; an order the venue does not
        know is ``rejected`` with its reason. Quantities are not read here (see :meth:`cancel`)."""
        out: list[VenueOrder] = []
        for i in range(0, len(venue_order_ids), 100):
            chunk = venue_order_ids[i:i + 100]
            data = await self._call("POST", "/orders/batch_cancel", body={"order_ids": chunk}, write=True)
            results = {str(r.get("order_id")): r for r in (data or {}).get("results") or () if isinstance(r, Mapping)}
            for oid in chunk:
                res = results.get(oid)
                cid = self._cids.get(oid)
                if res is None:
                    raise OutcomeUnknown(f"coinbase batch_cancel: no result for {oid}")
                reason = str(res.get("failure_reason") or "")
                if res.get("success"):
                    out.append(VenueOrder(cid, oid, "cancelled", reason=None, ts_ms=int(self.clock() * 1000)))
                elif "FILLED" in reason:
                    out.append(VenueOrder(cid, oid, "filled", reason=reason))
                elif "DUPLICATE_CANCEL" in reason:
                    out.append(VenueOrder(cid, oid, "cancelled", reason=reason))
                else:
                    out.append(VenueOrder(cid, oid, "rejected", reason=reason or "cancel refused"))
        return out

    async def cancel(self, venue_order_id: str) -> VenueOrder:
        (answer,) = await self.cancel_many([venue_order_id])
        if answer.status == "rejected":
            if "UNKNOWN_CANCEL_ORDER" in (answer.reason or ""):
                raise OrderRejected(f"coinbase does not know order {venue_order_id} ({answer.reason})", "unknown_order")
            # Refused for another reason: the order may still work; say what the venue has.
            try:
                current = await self.order(venue_order_id)
            except OrderError:
                current = None
            if current is not None and current.status in ("filled", "cancelled", "rejected"):
                return current
            raise OrderRejected(f"coinbase refused to cancel {venue_order_id}: {answer.reason}", "cancel_refused")
        try:
            current = await self.order(venue_order_id)
        except OrderError:
            return answer
        if current is None:
            return answer
        if answer.status == "cancelled" and current.status in ("open", "pending"):
            # The cancel is accepted (CANCEL_QUEUED or not yet applied): it ends cancelled.
            return VenueOrder(current.client_order_id, venue_order_id, "cancelled", current.symbol,
                              current.filled_qty, Decimal(0), current.reason, current.ts_ms)
        return current

    async def order(self, venue_order_id: str) -> VenueOrder | None:
        """One order by the venue's id (``GET /orders/historical/{id}``), None if unknown."""
        data = await self._call("GET", f"/orders/historical/{venue_order_id}")
        row = data.get("order") if isinstance(data, Mapping) else None
        if not isinstance(row, Mapping):
            return None
        order = parse_order(row)
        self._remember(order.client_order_id, order.venue_order_id)
        return order

    async def _list_orders(self, params: Mapping[str, Any], *, stop: Callable[[Mapping[str, Any]], bool] | None = None,
                           ) -> list[Mapping[str, Any]]:
        rows: list[Mapping[str, Any]] = []
        cursor = ""
        for _ in range(1000):
            page = {**params, "limit": self.page_size}
            if cursor:
                page["cursor"] = cursor
            data = await self._call("GET", "/orders/historical/batch", params=page)
            if not isinstance(data, Mapping):
                break
            for row in data.get("orders") or ():
                if not isinstance(row, Mapping):
                    continue
                rows.append(row)
                if stop is not None and stop(row):
                    return rows
            cursor = str(data.get("cursor") or "")
            if not data.get("has_next") or not cursor:
                break
        return rows

    async def lookup(self, client_order_id: str) -> VenueOrder | None:
        known = self._ids.get(client_order_id)
        if known:
            order = await self.order(known)
            if order is not None:
                return order
        since = int((self.clock() - self.lookup_window_s) * 1000)
        rows = await self._list_orders({"start_date": rfc3339(since)},
                                       stop=lambda row: row.get("client_order_id") == client_order_id)
        for row in rows:
            if row.get("client_order_id") == client_order_id:
                order = parse_order(row)
                self._remember(client_order_id, order.venue_order_id)
                return order
        return None

    async def open_orders(self) -> list[VenueOrder]:
        out = []
        for row in await self._list_orders({"order_status": "OPEN"}):
            order = parse_order(row)
            self._remember(order.client_order_id, order.venue_order_id)
            out.append(order)
        return out

    async def _fills(self, params: Mapping[str, Any]) -> list[VenueFill]:
        out: list[VenueFill] = []
        seen: set[str] = set()
        cursor = ""
        for _ in range(10_000):
            page = {**params, "limit": self.fills_page_size}
            if cursor:
                page["cursor"] = cursor
            data = await self._call("GET", "/orders/historical/fills", params=page)
            if not isinstance(data, Mapping):
                break
            for row in data.get("fills") or ():
                if not isinstance(row, Mapping):
                    continue
                fill = parse_fill(row, self._cids.get(str(row.get("order_id") or "")))
                if fill.fill_id and fill.fill_id not in seen:
                    seen.add(fill.fill_id)
                    out.append(fill)
            nxt = str(data.get("cursor") or "")
            if not nxt or nxt == cursor or not data.get("fills"):
                break
            cursor = nxt
        out.sort(key=lambda f: (f.ts_ms, f.fill_id))
        return out

    async def fills(self, since_ms: int) -> list[VenueFill]:
        return await self._fills({"start_sequence_timestamp": rfc3339(max(since_ms, 0))})

    async def order_fills(self, venue_order_id: str) -> list[VenueFill]:
        """Every fill of one order, oldest first."""
        return await self._fills({"order_ids": venue_order_id})

    # -- the user channel ------------------------------------------------------------------------
    def _subscribe(self, channel: str) -> str:
        return json.dumps({"type": "subscribe", "channel": channel, "product_ids": [], "jwt": self.token()})

    async def events(self) -> AsyncIterator[VenueOrder | VenueFill]:
        url = self.config.user_ws_url
        if not url:
            raise OrderError("coinbase: no user channel URL configured")
        backoff = Backoff(self.backoff_initial_s, self.backoff_max_s)
        first = True
        while True:
            if not first:
                self.stats["reconnects"] += 1
                await asyncio.sleep(backoff.next())
            first = False
            try:
                async with connect(url, open_timeout=self.config.timeout_s, max_size=16 * 1024 * 1024,
                                   ping_interval=None, compression=None) as ws:
                    await ws.send(self._subscribe("user"))
                    await ws.send(self._subscribe("heartbeats"))
                    next_seq: int | None = None
                    while True:
                        try:
                            async with asyncio.timeout(self.stall_s):
                                raw = await ws.recv()
                        except TimeoutError:
                            self.stats["stalls"] += 1
                            raise _Resubscribe("the user channel went silent") from None
                        msg = json.loads(raw)
                        if not isinstance(msg, Mapping):
                            continue
                        seq = msg.get("sequence_num")
                        if isinstance(seq, int):
                            if next_seq is not None and seq < next_seq:
                                self.stats["duplicates"] += 1
                                continue
                            if next_seq is not None and seq > next_seq:
                                self.stats["gaps"] += 1
                                raise _Resubscribe(f"sequence_num {seq}, expected {next_seq}")
                            next_seq = seq + 1
                        if msg.get("type") == "error":
                            words = " ".join(str(msg[k]) for k in ("message", "reason") if msg.get(k))
                            log.warning("coinbase user channel refused: %s", words)
                            raise _Resubscribe(words)
                        if msg.get("channel") != "user":
                            continue
                        backoff.reset()
                        ts = ts_ms(msg.get("timestamp"))
                        for event in msg.get("events") or ():
                            for row in (event.get("orders") or ()) if isinstance(event, Mapping) else ():
                                if not isinstance(row, Mapping):
                                    continue
                                order = parse_user_order(row, ts)
                                if not order.venue_order_id:
                                    continue
                                self._remember(order.client_order_id, order.venue_order_id)
                                yield order
                                async for fill in self._new_fills(order):
                                    yield fill
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError, _Resubscribe, ValueError) as e:
                log.info("coinbase user channel: %s: %s; reconnecting", type(e).__name__, e)

    async def _new_fills(self, order: VenueOrder) -> AsyncIterator[VenueFill]:
        """The REST fills of an order whose cumulative quantity grew (ids = trade ids)."""
        oid = order.venue_order_id
        before = self._cum.get(oid, Decimal(0))
        if order.filled_qty <= before:
            return
        got = before
        for attempt in range(max(self.fill_fetch_tries, 1)):
            try:
                fills = await self.order_fills(oid)
            except OrderError as e:
                log.warning("coinbase: fills of %s not read (%s); the backfill will find them", oid, e)
                return
            got = sum((f.qty for f in fills), Decimal(0))
            for f in fills:
                if f.fill_id not in self._emitted:
                    self._emitted.add(f.fill_id)
                    yield f
            if got >= order.filled_qty:
                self._cum[oid] = order.filled_qty
                return
            if attempt + 1 < self.fill_fetch_tries:
                await asyncio.sleep(self.fill_fetch_wait_s)
        self._cum[oid] = max(before, got)


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def _words(r: httpx.Response) -> str:
    payload = _json(r)
    if isinstance(payload, Mapping):
        for k in ("message", "error_details", "error"):
            if payload.get(k):
                return str(payload[k])[:300]
    return (r.text or r.reason_phrase or str(r.status_code))[:300]
