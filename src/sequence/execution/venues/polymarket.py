"""Polymarket CLOB V2 orders: EIP-712 orders signed with the official client, L2 HMAC auth.

What this adapter speaks (VENUES.md, Polymarket and "Connectors"; the
installed ``py-clob-client-v2`` is the reference for every wire detail):

* **Signing.** Orders are built and signed by ``py-clob-client-v2``'s own pieces
  — :class:`OrderBuilder` for the official amount rounding and the signer /
  funder / signature-type rules, :class:`ExchangeOrderBuilderV2` for the V2
  EIP-712 typed data, signature and order hash (domain "Polymarket CTF
  Exchange", version "2", the neg-risk exchange when ``neg_risk``) — never
  hand-rolled. Signing is pure-Python elliptic-curve arithmetic (milliseconds an
  order), so it runs in a worker thread (``asyncio.to_thread``), never on the event
  loop. The client's HTTP layer is synchronous, so requests go out on
  our own ``httpx.AsyncClient`` (timeouts and :class:`OutcomeUnknown` are ours),
  with the client's header functions (L1 ``create_level_1_headers``, L2
  ``create_level_2_headers``: HMAC-SHA256 over ``timestamp + METHOD + path +
  body``, urlsafe base64; the path never carries the query string).
* **Credentials** (``CREDENTIAL_FIELDS["polymarket"]``): ``private_key``
  (required), ``api_key``/``api_secret``/``api_passphrase`` (derived with L1
  wallet auth — ``GET /auth/derive-api-key``, else ``POST /auth/api-key`` —
  when absent), ``funder`` (the proxy wallet holding funds; default the
  signer) and ``signature_type`` (0 EOA, 1 proxy, 2 Gnosis safe, 3 POLY_1271).

Exactly once
------------
Polymarket has no client order id. The venue's order id is the EIP-712 hash of
the signed order, so the adapter makes the signed order a pure function of the
request (:meth:`PolymarketOrders.build`):

* ``salt`` = the first 6 bytes of SHA-256(client_order_id) (< 2**48, the range
  of the official clients' random salts);
* ``timestamp`` (a signed V2 field, ms) = ``req.extra["created_ms"]`` — the
  engine fixes it once when it creates the attempt and sends it unchanged on
  every retry — or ``0`` when absent (still pure; whether the live CLOB refuses
  an order timestamp far from now is **(unconfirmed)**);
* amounts from ``qty``/``price`` with the official rounding (a quantity finer
  than the client's 2 decimals, or a price off the tick, is refused here
  rather than silently rounded); the exchange contract from ``neg_risk``;
* ECDSA signatures are deterministic (RFC 6979), so even the body is
  byte-identical on a retry.

:meth:`~PolymarketOrders.lookup` (``client_order_id``) recomputes that hash from
the request this adapter signed (:meth:`~PolymarketOrders.place`, or
:meth:`~PolymarketOrders.track` after a restart, which signs without sending)
and asks ``GET /data/order/{hash}``; ``None`` when the venue does not know it.
A second :meth:`place` of the same request carries the same hash, which the
venue refuses as a duplicate (``duplicate_order``) — never a second order.

Orders
------
``POST /order`` ``{"order": {...signed...}, "owner": api_key, "orderType":
"GTC"|"GTD"|"FOK"|"FAK", "postOnly", "deferExec"}`` (``order_to_json_v2``).
``tif``: ``gtc`` → GTC (GTD when ``extra["expiration"]``, unix seconds, is
set), ``ioc`` → FAK, ``fok`` → FOK; ``post_only`` only with GTC/GTD (refused
here otherwise). ``extra``: ``tick_size`` (``"0.01"`` …; fetched from
``GET /tick-size`` when absent) and ``neg_risk`` (``GET /neg-risk``). A
refusal — HTTP 4xx ``{"error": msg}``, or 200 ``{"success": false,
"errorMsg"}`` — is :class:`OrderRejected` with the venue's words and a code
(:func:`reject_code`: ``below_min_notional`` for a marketable BUY under $1,
``below_min_size``, ``price_off_tick``, ``duplicate_order``,
``invalid_signature``, ``insufficient_balance``, ``post_only_would_cross``,
``fok_not_filled``, ``no_match``, ``rate_limited``, ``trading_disabled`` …).
A timeout, a dropped connection or a 5xx is :class:`OutcomeUnknown` (never
retried here). 401/403 is :class:`AuthFailed`. The venue throttles (delays)
rather than answering 429; a 429 (a fronting proxy) is ``rate_limited``.

Order states (``GET /data/order/{id}``, ``GET /data/orders`` paged with
``next_cursor`` from ``"MA=="`` to ``"LTE="``): ``LIVE`` → open, ``MATCHED`` →
filled, ``CANCELED``/``CANCELED_MARKET_RESOLVED`` → cancelled (``filled_qty``
keeps what matched first), ``INVALID`` → rejected; an ``ORDER_STATUS_``
prefix is tolerated. ``DELETE /order`` ``{"orderID"}`` answers ``{"canceled":
[...], "not_canceled": {id: reason}}``; the order is then read back.

The kill switch (:meth:`~PolymarketOrders.cancel_many`) sends one ``DELETE /orders``
whose body is the JSON list of order ids (``client.cancel_orders`` of the official
client; at most 3000 ids a request, repeats ignored, per the venue's docs) and gets
the same ``{"canceled", "not_canceled"}`` answer. Only the ids it did not cancel
are read back: the venue gives one reason ("order can't be found - already
canceled or matched", the wording reported by users of the live venue
**(unconfirmed)**) for an unknown order, a matched one and a cancelled one.

Fills
-----
One fill per (trade, our order). The fill id is the venue's trade id when we
were the taker, ``"{trade id}:{our order id}"`` for each of our maker orders in
a trade (one trade can match several of them). ``GET /data/trades``
(``after`` = unix seconds, paged) and the user channel carry the same ids.

Trade status goes ``MATCHED`` → ``MINED`` → ``CONFIRMED`` (or ``RETRYING`` →
…, or ``FAILED``). **Choice:** by default a trade counts as a fill from
``MATCHED`` on (``MATCHED``, ``MINED``, ``CONFIRMED``, ``RETRYING``): the
venue's order state (``size_matched``) moves at the match, and the engine must
see the fill that explains it. ``FAILED`` is never a fill. A trade that fails
*after* it was reported (a "ghost fill") cannot be taken back through this
interface: it is logged at ERROR and kept in
:attr:`PolymarketOrders.failed_fills` for the engine to reconcile.
``confirmed_only=True`` counts only ``MINED``/``CONFIRMED`` trades (slower,
never a ghost). Each status message repeats the same fill id: the engine
deduplicates on it.

Fees are dollars (pUSD): ``fee_rate_bps / 10_000 × min(price, 1 − price) ×
shares`` for the side whose rate the trade reports (the taker's
``fee_rate_bps``, each maker order's own) **(unconfirmed)**: V2 trades carry a
rate, not an amount, and the V2 client's fee model
(``rate × (p(1 − p))^exponent``) needs a per-market exponent the trade does not
carry.

User channel
------------
``events()`` connects ``config.user_ws_url`` (``/ws/user``), sends ``{"auth":
{"apiKey", "secret", "passphrase"}, "markets": [], "type": "user"}`` (an empty
``markets`` list = every market, **(unconfirmed)**), sends the text ``PING``
every ``ping_s`` (answered ``PONG``), and maps ``order`` events
(``PLACEMENT``/``UPDATE``/``CANCELLATION``) to :class:`VenueOrder` and
``trade`` events to :class:`VenueFill` (above; ``maker_orders[].side``
**(unconfirmed)**, else the opposite of the taker's side). It reconnects with
exponential backoff; after a reconnect the engine backfills with
:meth:`fills`. A close with code 1008 right after the auth message is taken as
refused credentials (:class:`AuthFailed`) **(unconfirmed)**.

Heartbeat (dead-man switch)
---------------------------
``POST /v1/heartbeats`` ``{"heartbeat_id": ""}`` (the path and body of the
official client; the reply's ``heartbeat_id`` is sent with the next beat). Once
heartbeats start, the venue cancels every open order of the account when they
stop for longer than its timeout (about 10 s, **(unconfirmed)**).
:meth:`~PolymarketOrders.keep_alive` beats every ``heartbeat_s`` (5 s) until
cancelled; :meth:`~PolymarketOrders.start_keep_alive` /
:meth:`~PolymarketOrders.stop_keep_alive` run it as a task. The engine keeps it
running while this account has working orders: if the process dies, the venue
cancels them. A refused beat (an expired chain: the venue already cancelled the
orders, and says so on the user channel) is logged and a new chain starts.

Also **(unconfirmed)**: the exact wording of the venue's refusals (codes are
matched on key phrases); ``GET /data/order/{id}`` for an unknown id (404 and
an empty/``null`` body are both read as "unknown"); the units of
``makingAmount``/``takingAmount`` in the ``POST /order`` reply (read as
decimal shares/dollars); whether a limit-priced FOK BUY with 4-decimal dollar
amounts passes the venue's market-order precision rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal

import httpx
from eth_keys.datatypes import PrivateKey
from py_clob_client_v2.clob_types import ApiCreds, RequestArgs
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.constants import BYTES32_ZERO, END_CURSOR, INITIAL_CURSOR, POLYGON
from py_clob_client_v2.endpoints import (
    CANCEL,
    CANCEL_ORDERS,
    CREATE_API_KEY,
    DERIVE_API_KEY,
    GET_BALANCE_ALLOWANCE,
    GET_NEG_RISK,
    GET_ORDER,
    GET_TICK_SIZE,
    ORDERS,
    POST_HEARTBEAT,
    POST_ORDER,
    TRADES,
)
from py_clob_client_v2.headers.headers import create_level_1_headers, create_level_2_headers
from py_clob_client_v2.order_builder.builder import ROUNDING_CONFIG, OrderBuilder
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2, OrderDataV2, SignatureTypeV2
from py_clob_client_v2.order_utils.model.order_data_v2 import SignedOrderV2, order_to_json_v2
from py_clob_client_v2.signer import Signer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

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
    Side,
    VenueFill,
    VenueOrder,
)

__all__ = ["COUNTED", "ON_CHAIN", "PolymarketOrders", "SignedOrder", "order_salt", "reject_code"]

log = logging.getLogger("sequence.execution.venues.polymarket")

#: Trade statuses counted as fills by default, and with ``confirmed_only``.
COUNTED = frozenset({"MATCHED", "MINED", "CONFIRMED", "RETRYING"})
ON_CHAIN = frozenset({"MINED", "CONFIRMED"})
FAILED = "FAILED"
USDC = Decimal(10) ** 6  # pUSD and outcome shares have 6 decimals on chain
FEE_QUANTUM = Decimal("0.000001")
#: ``DELETE /orders`` takes at most this many order ids (docs.polymarket.com, "Cancel multiple orders").
CANCEL_BATCH = 3000
#: Orders read at once after a batch cancel (only those the venue did not cancel).
CANCEL_READS = 8
SIZE_QUANTUM = Decimal("0.01")  # the official client rounds sizes down to 2 decimals
TIF_ORDER_TYPE = {"gtc": "GTC", "ioc": "FAK", "fok": "FOK"}
ORDER_STATES: dict[str, OrderStatus] = {
    "LIVE": "open", "MATCHED": "filled", "CANCELED": "cancelled", "CANCELLED": "cancelled",
    "CANCELED_MARKET_RESOLVED": "cancelled", "INVALID": "rejected", "UNMATCHED": "open",
    "DELAYED": "pending",
}
#: Key phrases of the venue's refusals -> our code (first match wins; order matters).
REJECT_CODES: tuple[tuple[str, str], ...] = (
    ("marketable buy", "below_min_notional"),
    ("lower than the minimum", "below_min_size"),
    ("min size", "below_min_size"),
    ("tick size", "price_off_tick"),
    ("duplicated", "duplicate_order"),
    ("invalid signature", "invalid_signature"),
    ("not enough balance", "insufficient_balance"),
    ("allowance", "insufficient_balance"),
    ("post-only", "post_only_would_cross"),
    ("post only", "post_only_would_cross"),
    ("fully filled", "fok_not_filled"),
    ("no orders found to match", "no_match"),
    ("too many requests", "rate_limited"),
    ("trading is currently", "trading_disabled"),
    ("owner", "owner_mismatch"),
    ("not yet ready", "market_closed"),
    ("closed", "market_closed"),
    ("expiration", "invalid_expiration"),
)


def reject_code(message: str) -> str:
    """Our short code for one of the venue's refusal messages (``venue_rejected`` if unknown)."""
    low = message.lower()
    return next((code for phrase, code in REJECT_CODES if phrase in low), "venue_rejected")


def order_salt(client_order_id: str) -> int:
    """The order's salt: a pure function of the client order id, below 2**48 as the official
    clients' random salts are (``random() * now_ms``)."""
    return int.from_bytes(hashlib.sha256(client_order_id.encode()).digest()[:6], "big")


def _tick(value: Any) -> str:
    """A tick size as the official client keys it (``"0.01"``, ``"0.0025"``)."""
    try:
        text = format(Decimal(str(value)).normalize(), "f")
    except InvalidOperation:
        text = str(value)
    if text not in ROUNDING_CONFIG:
        raise OrderRejected(f"unknown tick size {value!r}; expected one of {sorted(ROUNDING_CONFIG)}",
                            "invalid_tick_size")
    return text


def _dec(value: Any, default: str = "0") -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else Decimal(default)
    except InvalidOperation:
        return Decimal(default)


def _ts_ms(value: Any) -> int:
    """A venue time (unix seconds or ms, number or string) in ms."""
    t = _dec(value)
    return int(t if t > 10**11 else t * 1000)


def _outcome(value: Any) -> Literal["yes", "no"] | None:
    text = str(value or "").lower()
    if text == "yes":
        return "yes"
    return "no" if text == "no" else None


def _side(value: Any) -> Side:
    return "sell" if str(value).upper() == "SELL" else "buy"


def _fee(rate_bps: Any, price: Decimal, qty: Decimal) -> Decimal:
    fee = _dec(rate_bps) / 10_000 * min(price, 1 - price) * qty
    return fee.quantize(FEE_QUANTUM)


@dataclass(frozen=True)
class SignedOrder:
    """One request, signed: the venue's order id (the EIP-712 hash) and the ``POST /order``
    body without its ``owner`` (the API key, added when sent)."""

    client_order_id: str
    order_id: str
    body: Mapping[str, Any]
    typed_data: Mapping[str, Any] = field(repr=False)


class PolymarketOrders(OrderVenue):
    """Polymarket's CLOB V2 order API for one wallet (see the module docstring)."""

    venue: ClassVar[str] = "polymarket"

    def __init__(self, credentials: Mapping[str, str], config: OrderConfig, *,
                 http: httpx.AsyncClient | None = None, chain_id: int = POLYGON,
                 confirmed_only: bool = False, heartbeat_s: float = 5.0, ping_s: float = 10.0,
                 backoff_s: tuple[float, float] = (0.2, 5.0), page_limit: int = 1000) -> None:
        super().__init__(credentials, config, http=http)
        key = self.credentials.get("private_key") or ""
        if not key:
            raise AuthFailed("polymarket credentials need private_key (the wallet's key, hex)")
        try:
            self.signer = Signer(key, chain_id)
        except Exception as exc:  # eth_account's ValueError/binascii errors on a bad key
            raise AuthFailed(f"polymarket private_key is not a valid wallet key: {type(exc).__name__}") from None
        # The official order builder signs with ``signer.private_key``; given the hex string,
        # eth_account re-derives the public key (an elliptic-curve multiplication, half of a
        # build's cost) on every signature. Its signer gets the key parsed once: the same
        # RFC 6979 signatures, twice as fast.
        self._order_signer = copy.copy(self.signer)
        self._order_signer.private_key = PrivateKey(bytes(self.signer.account.key))
        sig_type = int(self.credentials.get("signature_type") or 0)
        self._builder = OrderBuilder(self.signer, SignatureTypeV2(sig_type),
                                     self.credentials.get("funder") or None)
        api = [self.credentials.get(k) or "" for k in ("api_key", "api_secret", "api_passphrase")]
        self._creds: ApiCreds | None = ApiCreds(*api) if all(api) else None
        self._creds_lock = asyncio.Lock()
        self.fill_statuses = ON_CHAIN if confirmed_only else COUNTED
        self.heartbeat_s, self.ping_s = heartbeat_s, ping_s
        self.backoff_s = backoff_s
        self.page_limit = page_limit  # pages per paged read (a runaway cursor stops here)
        self._signed: dict[str, SignedOrder] = {}  # client order id -> what we signed
        self._coid: dict[str, str] = {}  # order id (lower) -> client order id
        self._options: dict[str, tuple[str, bool]] = {}  # token -> (tick, neg_risk) from the venue
        self._heartbeat_id = ""
        self._keep_alive: asyncio.Task[None] | None = None
        self._counted: set[str] = set()  # fill ids the user channel reported as fills
        #: Fills reported (MATCHED) whose trade later FAILED: the engine must reconcile them.
        self.failed_fills: list[VenueFill] = []

    # -- identity ------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """The signing wallet (``POLY_ADDRESS``)."""
        return str(self.signer.address())

    @property
    def maker(self) -> str:
        """The wallet that holds the funds (``funder``, default the signer)."""
        return str(self._builder.funder)

    @property
    def api_key(self) -> str:
        return self._creds.api_key if self._creds else ""

    # -- building (pure) -----------------------------------------------------------------------
    def build(self, req: OrderRequest, tick_size: str | None = None, neg_risk: bool | None = None) -> SignedOrder:
        """Sign *req*: a pure function of the request (and the market's tick and neg-risk flag,
        from ``req.extra`` unless given). Raises :class:`OrderRejected` for what the venue would
        refuse on its face or what the official client would silently round."""
        tick = _tick(req.extra.get("tick_size") if tick_size is None else tick_size)
        neg = bool(req.extra.get("neg_risk", False)) if neg_risk is None else neg_risk
        if req.price is None:
            raise OrderRejected("a Polymarket order needs a limit price", "price_required")
        if req.tif not in TIF_ORDER_TYPE:
            raise OrderRejected(f"time in force {req.tif!r} is not one of {sorted(TIF_ORDER_TYPE)}", "invalid_tif")
        price, qty, t = Decimal(req.price), Decimal(req.qty), Decimal(tick)
        if qty <= 0 or qty != qty.quantize(SIZE_QUANTUM):
            raise OrderRejected(f"size {qty} must be positive with at most 2 decimals", "invalid_qty")
        if price % t or not t <= price <= 1 - t:
            raise OrderRejected(f"price {price} is not on the market's tick {tick} (valid: {t} … {1 - t})",
                                "price_off_tick")
        expiration = int(req.extra.get("expiration") or 0)
        order_type = "GTD" if req.tif == "gtc" and expiration else TIF_ORDER_TYPE[req.tif]
        if req.post_only and order_type not in ("GTC", "GTD"):
            raise OrderRejected("post-only orders must be GTC or GTD", "post_only_tif")
        side = "BUY" if req.side == "buy" else "SELL"
        poly_side, maker_amount, taker_amount = self._builder.get_order_amounts(
            side, float(qty), float(price), ROUNDING_CONFIG[tick])
        shares, dollars = int(qty * USDC), int(qty * price * USDC)
        exact = (dollars, shares) if side == "BUY" else (shares, dollars)
        if (int(maker_amount), int(taker_amount)) != exact:
            raise OrderRejected(f"{qty} at {price} does not fit the venue's amount precision", "invalid_qty")
        contracts = get_contract_config(self.signer.get_chain_id())
        exchange = contracts.neg_risk_exchange_v2 if neg else contracts.exchange_v2
        salt = str(order_salt(req.client_order_id))
        exchange_builder = ExchangeOrderBuilderV2(exchange, self.signer.get_chain_id(), self._order_signer,
                                                  generate_salt=lambda: salt)
        order = exchange_builder.build_order(OrderDataV2(
            maker=self.maker, tokenId=str(req.symbol), makerAmount=str(maker_amount),
            takerAmount=str(taker_amount), side=poly_side, signer=self._builder._v2_order_signer(),
            signatureType=self._builder.signature_type, timestamp=str(int(req.extra.get("created_ms") or 0)),
            metadata=BYTES32_ZERO, builder=BYTES32_ZERO, expiration=str(expiration)))
        typed = exchange_builder.build_order_typed_data(order)
        signature = exchange_builder.build_order_signature(typed)
        order_id = str(exchange_builder.build_order_hash(typed)).lower()
        signed = SignedOrderV2(**{**dataclasses.asdict(order), "signature": signature})
        body = order_to_json_v2(signed, "", order_type, req.post_only, False)
        del body["owner"]
        return SignedOrder(req.client_order_id, order_id, body, typed)

    async def order_id(self, req: OrderRequest) -> str:
        """The venue's id of *req*'s order (its hash), fetching the market's tick/neg-risk if needed."""
        tick, neg = await self._market_options(req)
        return (await self._sign(req, tick, neg)).order_id

    async def track(self, req: OrderRequest) -> str:
        """Sign *req* without sending it, so :meth:`lookup` knows its client order id (after a
        restart, before reconciling). Returns the order id."""
        tick, neg = await self._market_options(req)
        signed = await self._sign(req, tick, neg)
        self._remember(signed)
        return signed.order_id

    async def _sign(self, req: OrderRequest, tick: str, neg: bool) -> SignedOrder:
        """:meth:`build` in a worker thread: signing is CPU-bound (milliseconds of pure-Python
        elliptic-curve arithmetic) and must not stall the event loop. The result is the same."""
        return await asyncio.to_thread(self.build, req, tick, neg)

    def _remember(self, signed: SignedOrder) -> None:
        self._signed[signed.client_order_id] = signed
        self._coid[signed.order_id] = signed.client_order_id

    # -- HTTP ----------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return self.config.api_url.rstrip("/") + path

    async def _ensure_creds(self) -> ApiCreds:
        """L2 credentials: given, or derived from the wallet with L1 auth (derive, else create)."""
        if self._creds is not None:
            return self._creds
        async with self._creds_lock:
            if self._creds is None:
                answer: httpx.Response | None = None
                for method, path in (("GET", DERIVE_API_KEY), ("POST", CREATE_API_KEY)):
                    headers = create_level_1_headers(self.signer, nonce=0)
                    answer = await self._send(method, path, headers)
                    if answer.status_code == 200:
                        data = answer.json()
                        self._creds = ApiCreds(api_key=data["apiKey"], api_secret=data["secret"],
                                               api_passphrase=data["passphrase"])
                        break
                    if answer.status_code >= 500:
                        raise OutcomeUnknown(f"{method} {path}: HTTP {answer.status_code}")
                if self._creds is None:
                    msg = _message(answer) if answer is not None else ""
                    raise AuthFailed(f"Polymarket refused to derive API keys for {self.address}: {msg}")
        assert self._creds is not None
        return self._creds

    async def _send(self, method: str, path: str, headers: dict[str, str], *,
                    params: Mapping[str, Any] | None = None, content: str | None = None) -> httpx.Response:
        if content is not None:
            headers = {**headers, "Content-Type": "application/json"}
        try:
            r = await self.http.request(method, self._url(path), params=params, content=content,
                                        headers=headers, timeout=self.config.timeout_s)
        except httpx.TransportError as exc:  # timeouts, refused/dropped connections
            raise OutcomeUnknown(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if r.status_code in (401, 403):
            raise AuthFailed(f"Polymarket refused the credentials ({r.status_code}): {_message(r)}")
        return r

    async def _call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                    body: Any = None) -> httpx.Response:
        """One L2-authenticated request (the HMAC covers the path without its query)."""
        creds = await self._ensure_creds()
        text = None if body is None else json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        headers = create_level_2_headers(self.signer, creds, RequestArgs(method=method, request_path=path,
                                                                          body=body, serialized_body=text))
        return await self._send(method, path, dict(headers), params=params, content=text)

    async def _read(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """A read: its JSON, ``None`` for 404. Other failures are :class:`OutcomeUnknown`."""
        r = await self._call("GET", path, params=params)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise OutcomeUnknown(f"GET {path}: HTTP {r.status_code}: {_message(r)}")
        if not r.content:
            return None
        return r.json()

    async def _paged(self, path: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor, seen = INITIAL_CURSOR, set()
        for _ in range(self.page_limit):
            page = await self._read(path, {**params, "next_cursor": cursor})
            if not page:
                break
            rows.extend(r for r in page.get("data") or [] if isinstance(r, dict))
            seen.add(cursor)
            cursor = page.get("next_cursor") or END_CURSOR
            if cursor == END_CURSOR or cursor in seen:
                break
        return rows

    async def _market_options(self, req: OrderRequest) -> tuple[str, bool]:
        """The market's tick and neg-risk flag: from ``req.extra``, else asked (and cached)."""
        tick, neg = req.extra.get("tick_size"), req.extra.get("neg_risk")
        if tick is not None and neg is not None:
            return _tick(tick), bool(neg)
        token = str(req.symbol)
        if token not in self._options:
            t = await self._read(GET_TICK_SIZE, {"token_id": token})
            n = await self._read(GET_NEG_RISK, {"token_id": token})
            if t is None or n is None:
                raise OrderRejected(f"no order book for token {token}", "unknown_symbol")
            self._options[token] = (_tick(t.get("minimum_tick_size")), bool(n.get("neg_risk")))
        venue_tick, venue_neg = self._options[token]
        return (_tick(tick) if tick is not None else venue_tick), (bool(neg) if neg is not None else venue_neg)

    # -- the interface ---------------------------------------------------------------------------
    async def check(self) -> AccountInfo:
        """Balance/allowance of the collateral (an authenticated call): the funds wallet and its
        pUSD balance (6-decimal units on the wire)."""
        data = await self._read(GET_BALANCE_ALLOWANCE, {"asset_type": "COLLATERAL",
                                                        "signature_type": int(self._builder.signature_type)})
        balance = _dec((data or {}).get("balance")) / USDC
        return AccountInfo(account=self.maker, balances={"pUSD": balance})

    async def place(self, req: OrderRequest) -> VenueOrder:
        """Sign (deterministically) and send one order; the ack (see the module docstring)."""
        tick, neg = await self._market_options(req)
        signed = await self._sign(req, tick, neg)
        self._remember(signed)  # before sending: a lost reply is looked up by this hash
        return await self.submit(signed, req)

    async def submit(self, signed: SignedOrder, req: OrderRequest) -> VenueOrder:
        """Send an already signed order (``POST /order``) and read the ack."""
        creds = await self._ensure_creds()
        body = {**signed.body, "owner": creds.api_key}
        r = await self._call("POST", POST_ORDER, body=body)
        if r.status_code >= 500:
            msg = _message(r)
            if reject_code(msg) == "trading_disabled":
                raise OrderRejected(msg, "trading_disabled")
            raise OutcomeUnknown(f"POST /order: HTTP {r.status_code}: {msg}")
        if r.status_code != 200:
            msg = _message(r)
            raise OrderRejected(msg, "rate_limited" if r.status_code == 429 else reject_code(msg))
        data = r.json()
        if not isinstance(data, dict) or data.get("success") is False or (data.get("errorMsg") and not data.get("orderID")):
            msg = _message(r)
            raise OrderRejected(msg, reject_code(msg))
        order_id = str(data.get("orderID") or signed.order_id).lower()
        if order_id != signed.order_id:
            log.error("Polymarket answered order id %s for our hash %s (client order id %s)",
                      order_id, signed.order_id, signed.client_order_id)
            self._coid[order_id] = signed.client_order_id
        filled = _dec(data.get("takingAmount") if req.side == "buy" else data.get("makingAmount"))
        venue_status = str(data.get("status") or "").upper()
        status: OrderStatus
        if filled >= req.qty:
            status = "filled"
        elif venue_status in ("DELAYED", "UNMATCHED"):
            status = "pending"
        elif req.tif in ("ioc", "fok") and venue_status == "MATCHED":
            status = "cancelled"  # FAK: the rest was killed
        else:
            status = "open"
        return VenueOrder(signed.client_order_id, order_id, status, str(req.symbol), filled,
                          Decimal(0) if status in ("filled", "cancelled") else req.qty - filled)

    async def cancel(self, venue_order_id: str) -> VenueOrder:
        """``DELETE /order``; then the order as the venue has it (an order already gone is its
        final state). :class:`OrderRejected` (``unknown_order``) if the venue never had it."""
        oid = venue_order_id.lower()
        r = await self._call("DELETE", CANCEL, body={"orderID": venue_order_id})
        if r.status_code >= 500:
            raise OutcomeUnknown(f"DELETE /order: HTTP {r.status_code}: {_message(r)}")
        data = r.json() if r.status_code == 200 and r.content else {}
        canceled = {str(x).lower() for x in (data.get("canceled") or [])}
        not_canceled = {str(k).lower(): str(v) for k, v in (data.get("not_canceled") or {}).items()}
        order = await self._order(oid)
        if order is None:
            reason = not_canceled.get(oid) or _message(r) or "order not found"
            raise OrderRejected(reason, "unknown_order")
        if oid in canceled and order.status in ("open", "pending"):
            order = replace(order, status="cancelled", remaining_qty=Decimal(0))
        if oid in not_canceled and order.reason is None:
            order = replace(order, reason=not_canceled[oid])
        return order

    async def cancel_many(self, venue_order_ids: list[str]) -> Sequence[VenueOrder | OrderError]:
        """Cancel many orders (the kill switch) with ``DELETE /orders`` (a JSON list of order ids,
        :data:`CANCEL_BATCH` at most: larger lists go in several batches) → ``{"canceled": [ids],
        "not_canceled": {id: reason}}``. One answer per id, in order:

        * in ``canceled``: ``cancelled`` (not read back: ``filled_qty`` is not in the answer, what
          matched before arrives as fills);
        * in ``not_canceled`` (the venue's reason — "order can't be found - already canceled or
          matched" — does not tell an unknown order from a finished one), or missing from the
          answer: the order is read (``GET /data/order/{id}``, only these) — its final state
          (``filled``, ``cancelled``), :class:`OrderRejected` ``unknown_order`` if the venue does
          not know it, ``cancel_refused`` if it is still open;
        * the batch refused (4xx): that :class:`OrderRejected` for each of its ids; its answer
          lost (timeout, dropped connection, 5xx, unreadable): :class:`OutcomeUnknown` for each.
        """
        ids = [oid.lower() for oid in venue_order_ids]  # the venue's ids are lower-case hex
        unique = list(dict.fromkeys(ids))  # the venue ignores repeats: one answer serves them all
        chunks = [unique[i:i + CANCEL_BATCH] for i in range(0, len(unique), CANCEL_BATCH)]
        answers: dict[str, VenueOrder | OrderError] = {}
        for part in await asyncio.gather(*(self._cancel_batch(c) for c in chunks)):
            answers.update(part)
        return [answers[oid] for oid in ids]

    async def _cancel_batch(self, keys: list[str]) -> dict[str, VenueOrder | OrderError]:
        """One ``DELETE /orders`` of these (lower-case) order ids: an answer for each."""
        try:
            r = await self._call("DELETE", CANCEL_ORDERS, body=keys)
        except OrderError as exc:  # OutcomeUnknown (no answer) or AuthFailed
            return dict.fromkeys(keys, exc)
        if r.status_code >= 500:
            return dict.fromkeys(keys, OutcomeUnknown(f"DELETE /orders: HTTP {r.status_code}: {_message(r)}"))
        if r.status_code != 200:
            msg = _message(r) or f"HTTP {r.status_code}"
            return dict.fromkeys(keys, OrderRejected(msg, "rate_limited" if r.status_code == 429 else reject_code(msg)))
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return dict.fromkeys(keys, OutcomeUnknown(f"DELETE /orders: unreadable answer {r.text[:80]!r}"))
        raw_done = data.get("canceled") or []
        canceled = {str(x).lower() for x in raw_done} if isinstance(raw_done, list) else set()
        raw_not = data.get("not_canceled") or {}
        not_canceled = {str(k).lower(): str(v) for k, v in raw_not.items()} if isinstance(raw_not, dict) else {}
        out: dict[str, VenueOrder | OrderError] = {}
        for oid in keys:
            if oid in canceled:
                out[oid] = VenueOrder(self._coid.get(oid), oid, "cancelled", self._symbol_of(oid),
                                      reason="canceled by us")
        unsure = [oid for oid in keys if oid not in out]
        limit = asyncio.Semaphore(CANCEL_READS)

        async def settle(oid: str) -> VenueOrder | OrderError:
            reason = not_canceled.get(oid)
            async with limit:
                try:
                    order = await self._order(oid)
                except OrderError as exc:
                    return exc
            if order is None:
                return OrderRejected(reason or "order not found", "unknown_order")
            if order.status in ("open", "pending"):
                why = reason or "not in the venue's answer"
                return OrderRejected(f"not cancelled: {why}", "cancel_refused")
            return order if order.reason or not reason else replace(order, reason=reason)

        for oid, answer in zip(unsure, await asyncio.gather(*(settle(o) for o in unsure)), strict=True):
            out[oid] = answer
        return out

    def _symbol_of(self, order_id: str) -> str:
        """The token of an order this adapter signed ("" if it did not)."""
        signed = self._signed.get(self._coid.get(order_id, ""))
        return str(signed.body.get("order", {}).get("tokenId", "")) if signed is not None else ""

    async def lookup(self, client_order_id: str) -> VenueOrder | None:
        """The order this client order id was signed as (its hash, recomputed by :meth:`build`),
        or None if the venue never took it. The request must have gone through :meth:`place` or
        :meth:`track` in this process (the hash needs the whole request)."""
        signed = self._signed.get(client_order_id)
        if signed is None:
            raise OrderError(f"client order id {client_order_id} was not placed or tracked by this "
                             "adapter: track(request) first")
        return await self._order(signed.order_id)

    async def _order(self, order_id: str) -> VenueOrder | None:
        data = await self._read(GET_ORDER + order_id)
        if not isinstance(data, dict) or not data.get("id"):
            return None
        return self._venue_order(data)

    async def open_orders(self) -> list[VenueOrder]:
        rows = await self._paged(ORDERS, {})
        return [o for o in (self._venue_order(r) for r in rows) if o.status in ("open", "pending")]

    async def fills(self, since_ms: int) -> list[VenueFill]:
        """Our fills of trades matched since *since_ms* (``after`` is in seconds, so the first
        second repeats: the engine deduplicates), oldest first, each fill once."""
        rows = await self._paged(TRADES, {"after": max(0, since_ms // 1000)})
        out: dict[str, VenueFill] = {}
        for trade in rows:
            for f in self._fills_of(trade):
                out.setdefault(f.fill_id, f)
        return sorted(out.values(), key=lambda f: (f.ts_ms, f.fill_id))

    # -- venue shapes -> ours --------------------------------------------------------------------
    def _venue_order(self, d: Mapping[str, Any]) -> VenueOrder:
        oid = str(d.get("id", "")).lower()
        raw = str(d.get("status", "")).upper().removeprefix("ORDER_STATUS_")
        event = str(d.get("type", "")).upper()
        original, matched = _dec(d.get("original_size")), _dec(d.get("size_matched"))
        status: OrderStatus = ORDER_STATES.get(raw, "open")
        if event == "CANCELLATION" and not raw:
            status = "cancelled"
        if status == "open" and original > 0 and matched >= original:
            status = "filled"
        remaining = original - matched if status in ("open", "pending") else Decimal(0)
        reason = "market resolved" if raw == "CANCELED_MARKET_RESOLVED" else None
        return VenueOrder(self._coid.get(oid), oid, status, str(d.get("asset_id", "")), matched,
                          max(remaining, Decimal(0)), reason, _ts_ms(d.get("timestamp") or d.get("created_at")))

    def _mine(self, m: Mapping[str, Any]) -> bool:
        return (bool(self.api_key) and m.get("owner") == self.api_key) or \
            str(m.get("maker_address", "")).lower() == self.maker.lower()

    def _fills_of(self, trade: Mapping[str, Any], statuses: frozenset[str] | None = None) -> list[VenueFill]:
        """Our fills in one trade (taker and/or maker orders), if its status counts."""
        if str(trade.get("status", "")).upper() not in (statuses or self.fill_statuses):
            return []
        trade_id = str(trade.get("id", ""))
        ts = _ts_ms(trade.get("match_time") or trade.get("matchtime") or trade.get("last_update"))
        asset = str(trade.get("asset_id", ""))
        taker_side = _side(trade.get("side"))
        out: list[VenueFill] = []
        makers = [m for m in trade.get("maker_orders") or [] if isinstance(m, dict) and self._mine(m)]
        for m in makers:
            oid = str(m.get("order_id", "")).lower()
            price, qty = _dec(m.get("price")), _dec(m.get("matched_amount"))
            m_asset = str(m.get("asset_id") or asset)
            side = _side(m["side"]) if m.get("side") else ("sell" if taker_side == "buy" else "buy")
            out.append(VenueFill(f"{trade_id}:{oid}", oid, self._coid.get(oid), m_asset, side, price, qty,
                                 _fee(m.get("fee_rate_bps"), price, qty), False, ts, _outcome(m.get("outcome"))))
        trader_side = str(trade.get("trader_side", "")).upper()
        taker = trader_side == "TAKER" or (not trader_side and not makers and trade.get("owner") == self.api_key)
        if taker:
            oid = str(trade.get("taker_order_id", "")).lower()
            price, qty = _dec(trade.get("price")), _dec(trade.get("size"))
            out.append(VenueFill(trade_id, oid, self._coid.get(oid), asset, taker_side, price, qty,
                                 _fee(trade.get("fee_rate_bps"), price, qty), True, ts,
                                 _outcome(trade.get("outcome"))))
        return out

    def _on_message(self, msg: Mapping[str, Any]) -> list[VenueOrder | VenueFill]:
        kind = str(msg.get("event_type", "")).lower()
        if kind == "order":
            return [self._venue_order(msg)]
        if kind != "trade":
            return []
        if str(msg.get("status", "")).upper() == FAILED:
            for f in self._fills_of(msg, frozenset({FAILED})):
                if f.fill_id in self._counted:
                    log.error("Polymarket trade %s FAILED after its fill %s was reported (order %s)",
                              msg.get("id"), f.fill_id, f.venue_order_id)
                    self.failed_fills.append(f)
            return []
        fills = self._fills_of(msg)
        self._counted.update(f.fill_id for f in fills)
        return list(fills)

    # -- the user channel --------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[VenueOrder | VenueFill]:
        """The user channel (see the module docstring): reconnects by itself with backoff."""
        if not self.config.user_ws_url:
            raise OrderError("no Polymarket user channel URL configured")
        first, most = self.backoff_s
        delay = first
        while True:
            creds = await self._ensure_creds()
            try:
                async with connect(self.config.user_ws_url, ping_interval=None, close_timeout=2,
                                   open_timeout=self.config.timeout_s, max_size=2**24) as ws:
                    await ws.send(json.dumps({"auth": {"apiKey": creds.api_key, "secret": creds.api_secret,
                                                       "passphrase": creds.api_passphrase},
                                              "markets": [], "type": "user"}))
                    pinger = asyncio.create_task(self._ping(ws))
                    try:
                        async for raw in ws:
                            if not isinstance(raw, str) or raw == "PONG":
                                continue
                            delay = first
                            for ev in self._parse(raw):
                                yield ev
                    finally:
                        pinger.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await pinger
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == 1008:
                    raise AuthFailed(f"Polymarket user channel refused the credentials: {exc.rcvd.reason}") from None
                log.info("Polymarket user channel closed (%s); reconnecting in %.1f s", exc, delay)
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                log.info("Polymarket user channel unreachable (%s); reconnecting in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(most, delay * 2)

    async def _ping(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.ping_s)
            await ws.send("PING")

    def _parse(self, raw: str) -> list[VenueOrder | VenueFill]:
        try:
            data = json.loads(raw)
        except ValueError:
            log.warning("Polymarket user channel sent non-JSON text: %.80r", raw)
            return []
        out: list[VenueOrder | VenueFill] = []
        for msg in data if isinstance(data, list) else [data]:
            if isinstance(msg, dict):
                out.extend(self._on_message(msg))
        return out

    # -- the heartbeat (dead-man switch) -----------------------------------------------------------
    async def heartbeat(self) -> None:
        """One beat (``POST /v1/heartbeats``). A refused beat means the chain expired (the venue
        has cancelled our open orders: their ``order`` events say so): logged, and a new chain is
        started at once. Raises :class:`OrderRejected` if the new chain is refused too."""
        for _ in range(2):
            r = await self._call("POST", POST_HEARTBEAT, body={"heartbeat_id": self._heartbeat_id})
            if r.status_code == 200:
                data = r.json() if r.content else {}
                self._heartbeat_id = str((data or {}).get("heartbeat_id") or "")
                return
            if r.status_code >= 500:
                raise OutcomeUnknown(f"heartbeat: HTTP {r.status_code}: {_message(r)}")
            if not self._heartbeat_id:
                break
            log.warning("Polymarket refused heartbeat %s (%s): the chain expired, open orders may have been "
                        "cancelled; starting a new chain", self._heartbeat_id, _message(r))
            self._heartbeat_id = ""
        raise OrderRejected(f"heartbeat refused: {_message(r)}", "heartbeat_refused")

    async def keep_alive(self, interval_s: float | None = None) -> None:
        """Beat every *interval_s* (default ``heartbeat_s``) until cancelled. Run it while this
        account has working orders; stopping it lets the venue cancel them after its timeout."""
        every = self.heartbeat_s if interval_s is None else interval_s
        while True:
            try:
                await self.heartbeat()
            except AuthFailed:
                raise
            except OrderError as exc:
                log.warning("Polymarket heartbeat failed: %s", exc)
            await asyncio.sleep(every)

    def start_keep_alive(self, interval_s: float | None = None) -> asyncio.Task[None]:
        """:meth:`keep_alive` as a task on the running loop (idempotent)."""
        if self._keep_alive is None or self._keep_alive.done():
            self._keep_alive = asyncio.create_task(self.keep_alive(interval_s), name="polymarket-heartbeat")
        return self._keep_alive

    async def stop_keep_alive(self) -> None:
        task, self._keep_alive = self._keep_alive, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OrderError):
                await task

    async def learn(self, req: OrderRequest) -> None:
        await self.track(req)

    async def set_working(self, working: bool) -> None:
        # The heartbeat is a dead-man switch: beat while orders work, stop when none do.
        if working:
            self.start_keep_alive()
        else:
            await self.stop_keep_alive()

    async def close(self) -> None:
        await self.stop_keep_alive()
        await super().close()


def _message(r: httpx.Response) -> str:
    """The venue's words in an answer: ``error``/``errorMsg``/``message``, else the text."""
    try:
        data = r.json()
    except ValueError:
        return r.text.strip()
    if isinstance(data, dict):
        for key in ("error", "errorMsg", "message"):
            if data.get(key):
                value = data[key]
                return value if isinstance(value, str) else json.dumps(value)
        return ""
    return data if isinstance(data, str) else r.text.strip()
