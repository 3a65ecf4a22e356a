"""A fake Polymarket for the live connector's tests and ``bench/live_feed.py``.

One Starlette app serves the three Polymarket hosts on loopback (VENUES.md,
Polymarket and "Connectors"):

* Gamma under ``/gamma``: ``GET /gamma/events`` (``limit``, ``offset``,
  ``active``, ``closed``, ``archived``, ``order``, ``ascending``, ``slug``,
  ``id``) and ``GET /gamma/markets``; events carry their markets;
  ``outcomes``/``outcomePrices``/``clobTokenIds`` are JSON-encoded strings.
  Like the real Gamma, an omitted ``closed`` lists *closed* rows only, and
  ``limit`` is silently clamped (``gamma_page_cap``).
* CLOB REST at the root: ``GET /book?token_id=`` — both sides best LAST (bids
  ascending, asks descending: the venue's order, which its docs describe
  inconsistently), ``404 {"error": "No orderbook exists for the requested
  token id"}``; ``GET /`` answers ``"OK"``.
* The market WebSocket at ``/ws/market``: the first client message must be
  ``{"assets_ids": [...], "type": "market"}``; later ones ``{"assets_ids":
  [...], "operation": "subscribe"|"unsubscribe"}``; text ``PING`` → ``PONG``;
  a socket that sends no ``PING`` for ``ping_timeout_s`` is closed. Anything
  else is refused with the text ``INVALID OPERATION`` (and recorded in
  :attr:`FakePolymarket.refusals`). Subscribing sends a JSON *array* of ``book``
  events (book sides: bids ascending, asks ascending, prices written ``".48"``
  as in the venue's docs). ``price_change`` uses the current shape
  (``price_changes``: every change carries ``asset_id``, ``price``, absolute
  ``size``, ``side`` BUY/SELL, ``hash``, ``best_bid``, ``best_ask``) and, as
  the venue does, repeats each YES change on the NO token mirrored (price 1 − p,
  BUY ↔ SELL) in the same message. No sequence numbers.

State is kept as the venue keeps it: one book per YES token in venue strings
(the NO token's book is its mirror); ticks as strings (``"0.01"``, ``"0.005"``,
``"0.0025"``). Rate limits throttle (delay), they do not refuse:
``/book`` 1,500 and Gamma 300 per 10 s by default (:attr:`limits`).

Scenario controls are plain methods; run them on the server's loop with
``FakeServer.call``/``acall``: :meth:`set_level`, :meth:`set_levels`,
:meth:`change_tick`, :meth:`trade`, :meth:`stall`, :meth:`disconnect`,
:meth:`throttle_next` (delay the next N REST calls), :meth:`reject_next`
(answer the next N REST calls 429 without Retry-After, as a fronting proxy
would), :meth:`hide_books` (no socket snapshot on subscribe), :meth:`remove_book`
(404 and no snapshot), :meth:`send_raw`, and :meth:`blast` for the benchmark.
What the client did is in :attr:`FakePolymarket.received` (socket messages),
:attr:`~FakePolymarket.requests` (REST calls), :meth:`~FakePolymarket.subscribed`,
:attr:`~FakePolymarket.connections` and :attr:`~FakePolymarket.throttled`.

The order side (:class:`_Trading`, for ``sequence.execution.venues.polymarket``)
checks what the venue checks, with the official client's own definitions (the
V2 EIP-712 domain/types and order hash from ``py_clob_client_v2``, never
re-typed):

* L1 wallet auth (``GET /auth/derive-api-key``, ``POST /auth/api-key``): the
  ``ClobAuth`` EIP-712 signature in ``POLY_SIGNATURE`` must recover to
  ``POLY_ADDRESS``; keys are a pure function of (address, nonce).
  :meth:`~_Trading.register` makes keys for a wallet directly.
* L2 on every trading call: ``POLY_API_KEY``/``POLY_PASSPHRASE``/``POLY_ADDRESS``
  must match a key, and ``POLY_SIGNATURE`` must equal the HMAC-SHA256 (key =
  the urlsafe-base64-decoded secret) of ``POLY_TIMESTAMP + METHOD + path +
  body``, urlsafe base64; else ``401 {"error": "Unauthorized/Invalid api key"}``.
* ``POST /order``: the order's signer must be recovered from its V2 EIP-712
  signature (exchange or neg-risk exchange by the market's ``neg_risk``) and be
  the key's address, ``owner`` the API key; then, each a ``400 {"error"}``: a
  price off the tick, fewer than ``min_order_size`` shares, a marketable BUY
  under $1, a duplicate (same hash, ever), a crossing post-only, post-only with
  FOK/FAK, a FOK that cannot fill whole, a FAK with nothing to match. An
  accepted order matches the fake's book (best level first, each level a
  counterparty's order: one trade per level, the book updated and broadcast as
  ``price_change``); a GTC remainder rests (our resting orders are not shown in
  the public book and only fill through :meth:`~_Trading.take`); a FOK/FAK
  remainder is cancelled. Reply ``{"success", "errorMsg", "orderID",
  "status": "matched"|"live", "makingAmount", "takingAmount",
  "transactionsHashes", "tradeIDs"}`` (decimal amounts).
* Trades go ``MATCHED`` → ``MINED`` → ``CONFIRMED`` (``trade_steps_s`` apart);
  :meth:`~_Trading.hold_trades`, :meth:`~_Trading.advance`,
  :meth:`~_Trading.fail_next_trades` script other fates. Taker fee rate
  ``fee_rate_bps`` (makers 0).
* ``GET /data/order/{id}`` (404 when unknown), ``GET /data/orders`` (LIVE
  orders) and ``GET /data/trades`` (``after`` in unix seconds, newest first),
  both paged by ``next_cursor`` (base64 offsets, ``"MA=="`` … ``"LTE="``,
  ``page_size`` rows); ``DELETE /order`` ``{"orderID"}`` → ``{"canceled",
  "not_canceled"}``; ``DELETE /orders`` ``[ids]`` (≤ 3000, repeats ignored) → ``{"canceled":
  [ids], "not_canceled": {id: "order can't be found - already canceled or matched"}}`` for
  every id that is not one of the key's LIVE orders (:attr:`~_Trading.cancel_batches`,
  :meth:`~_Trading.drop_next_cancel_reply`); ``GET /balance-allowance``, ``/tick-size``,
  ``/neg-risk``.
* ``POST /v1/heartbeats`` ``{"heartbeat_id"}``: the first beat starts a chain;
  a chain not fed for ``heartbeat_timeout_s`` cancels every LIVE order of its
  key (:attr:`~_Trading.heartbeat_cancels`) and ends (its id is then refused).
* The user channel ``/ws/user``: the first message must be ``{"auth":
  {"apiKey", "secret", "passphrase"}, "type": "user", "markets"}`` (else
  closed with 1008); ``PING`` → ``PONG``; ``order`` events (``PLACEMENT``,
  ``UPDATE``, ``CANCELLATION``) and ``trade`` events (every status change) of
  that key. Controls :meth:`~_Trading.drop_next_reply` (the order is taken, its
  reply never comes), :meth:`~_Trading.duplicate_trades`,
  :meth:`~_Trading.disconnect_user`.

Not modelled: balances (one fixed ``collateral`` answer, never checked),
self-trade prevention, GTD expiry, and the ``custom_feature_enabled`` market
events (``best_bid_ask``, ``new_market``, ``market_resolved``).

Benchmark note: with this fake in the benchmark's own process (sharing the
GIL), one change per frame tops out near the fake's own send rate (≈ 65k
frames/s on a 2-core box); ``blast(..., per_message=k)`` with k ≥ 2, or the
fake in another process, measures the connector rather than the fake.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2, OrderV2, SignatureTypeV2
from py_clob_client_v2.order_utils import Side as PolySide
from py_clob_client_v2.signing.eip712 import MSG_TO_SIGN, get_clob_auth_domain
from py_clob_client_v2.signing.model import ClobAuth
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from sequence.market.venues.sim_polymarket import condition_id, slugify, token_id

from .harness import FakeServer

ONE = Decimal(1)
NO_BOOK = "No orderbook exists for the requested token id"
INVALID = "INVALID OPERATION"
#: ``DELETE /orders``: ids per request at most (the venue's documented maximum), and the reason the
#: venue gives for any id it did not cancel (unknown, not yours, matched or already cancelled).
CANCEL_BATCH = 3000
CANNOT_CANCEL = "order can't be found - already canceled or matched"


def fmt(d: Decimal) -> str:
    """A venue decimal string: ``0.5``, ``0.48``, ``1``, ``219.217767`` (no exponent)."""
    text = format(d.normalize(), "f")
    return text


def _dot(d: Decimal) -> str:
    """A price as the socket's ``book`` writes it in the venue's docs: ``.48``."""
    text = fmt(d)
    return text[1:] if text.startswith("0.") else text


@dataclass
class FakeBook:
    """One YES token's book as the venue keeps it: price → size string per side."""

    tick: str
    bids: dict[Decimal, str] = field(default_factory=dict)
    asks: dict[Decimal, str] = field(default_factory=dict)

    def side(self, side: str) -> dict[Decimal, str]:
        return self.bids if side == "BUY" else self.asks

    def best(self) -> tuple[Decimal | None, Decimal | None]:
        return (max(self.bids) if self.bids else None, min(self.asks) if self.asks else None)

    def mirrored(self) -> FakeBook:
        """The NO token's book: bids ↔ asks at 1 − price."""
        return FakeBook(self.tick, {ONE - p: s for p, s in self.asks.items()},
                        {ONE - p: s for p, s in self.bids.items()})


@dataclass
class FakeMarket:
    id: str
    slug: str
    question: str
    outcomes: list[str]  # venue order
    tokens: list[str]  # venue order, index i pairs with outcomes[i]
    yes: str
    no: str
    condition: str
    book: FakeBook
    group_item_title: str = ""
    neg_risk: bool = False
    neg_risk_other: bool = False
    active: bool = True
    closed: bool = False
    accepting_orders: bool = True
    enable_order_book: bool = True
    min_size: int = 5
    volume: float = 0.0
    last_trade: str | None = None
    end_date: str = "2026-12-31T23:59:00Z"

    def gamma(self, event: FakeEvent | None = None) -> dict[str, Any]:
        bid, ask = self.book.best()
        first_is_yes = self.tokens[0] == self.yes
        if not first_is_yes:  # Gamma quotes the first outcome
            bid, ask = (None if ask is None else ONE - ask), (None if bid is None else ONE - bid)
        price = (bid + ask) / 2 if bid is not None and ask is not None else (bid or ask or Decimal("0.5"))
        first = price.quantize(Decimal("0.0001"))
        prices = [fmt(first), fmt(ONE - first)]
        liquidity = float(sum(p * Decimal(s) for p, s in self.book.bids.items())
                          + sum((ONE - p) * Decimal(s) for p, s in self.book.asks.items()))
        row: dict[str, Any] = {
            "id": self.id,
            "question": self.question,
            "conditionId": self.condition,
            "questionID": "0x" + hashlib.sha256(self.slug.encode()).hexdigest(),
            "slug": self.slug,
            "endDate": self.end_date,
            "outcomes": json.dumps(self.outcomes),
            "outcomePrices": json.dumps(prices),
            "clobTokenIds": json.dumps(self.tokens),
            "active": self.active,
            "closed": self.closed,
            "archived": False,
            "acceptingOrders": self.accepting_orders,
            "enableOrderBook": self.enable_order_book,
            "volume": f"{self.volume:.4f}",
            "volumeNum": self.volume,
            "liquidity": f"{liquidity:.4f}",
            "liquidityNum": round(liquidity, 4),
            "negRisk": self.neg_risk,
            "negRiskOther": self.neg_risk_other,
            "orderPriceMinTickSize": float(self.book.tick),
            "orderMinSize": self.min_size,
            "groupItemTitle": self.group_item_title,
            "lastTradePrice": float(self.last_trade) if self.last_trade else 0,
        }
        if bid is not None:
            row["bestBid"] = float(bid)
        if ask is not None:
            row["bestAsk"] = float(ask)
        if bid is not None and ask is not None:
            row["spread"] = float(ask - bid)
        if event is not None:
            row["negRiskAugmented"] = event.augmented
        return row


@dataclass
class FakeEvent:
    id: str
    slug: str
    title: str
    markets: list[FakeMarket]
    category: str = "Sports"
    neg_risk: bool = False
    augmented: bool = False
    active: bool = True
    closed: bool = False
    end_date: str = "2026-12-31T23:59:00Z"

    @property
    def volume(self) -> float:
        return sum(m.volume for m in self.markets)

    def gamma(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ticker": self.slug,
            "slug": self.slug,
            "title": self.title,
            "startDate": "2025-01-01T00:00:00Z",
            "endDate": self.end_date,
            "active": self.active,
            "closed": self.closed,
            "archived": False,
            "negRisk": self.neg_risk,
            "enableNegRisk": self.neg_risk,
            "negRiskAugmented": self.augmented,
            "volume": self.volume,
            "liquidity": sum(float(m.gamma()["liquidityNum"]) for m in self.markets),
            "category": self.category,
            "tags": [{"id": "1", "label": self.category, "slug": self.category.lower()}],
            "markets": [m.gamma(self) for m in self.markets],
        }


class _Conn:
    __slots__ = ("assets", "last_ping", "opened", "stalled", "subscribed", "ws")

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.assets: set[str] = set()
        self.subscribed = False  # the channel subscription (first message) arrived
        self.stalled = False
        self.opened = self.last_ping = time.monotonic()


# -- the default catalogue ------------------------------------------------------------------------
def ladder(fair: str, tick: str, levels: int = 5, *, bids: bool = True, asks: bool = True,
           size: int = 120, spread_ticks: int = 1) -> FakeBook:
    """A two-sided (or one-sided) ladder around *fair*, sizes growing away from the touch."""
    p, t = Decimal(fair), Decimal(tick)
    book = FakeBook(tick)
    for k in range(levels):
        bp = p - t * (spread_ticks + k)
        ap = p + t * (spread_ticks + k)
        sz = str(size + 37 * k) + (".5" if k % 3 == 1 else "")
        if bids and bp >= t:
            book.bids[bp] = sz
        if asks and ap <= ONE - t:
            book.asks[ap] = sz
    return book


def _market(mid: int, question: str, book: FakeBook, *, title: str = "", outcomes: Sequence[str] = ("Yes", "No"),
            **kw: Any) -> FakeMarket:
    slug = slugify(question)
    tokens = [token_id(slug, o) for o in outcomes]
    names = [o.lower() for o in outcomes]
    yes_i = names.index("yes") if "yes" in names else 0
    return FakeMarket(id=str(mid), slug=slug, question=question, outcomes=list(outcomes), tokens=tokens,
                      yes=tokens[yes_i], no=tokens[1 - yes_i], condition=condition_id(slug), book=book,
                      group_item_title=title, **kw)


def default_catalogue() -> list[FakeEvent]:
    """A few events shaped like Polymarket's: a neg-risk World Cup winner with placeholders
    (an "Other" market with ``negRiskOther``, unnamed "Team AF"/"Team AG", one not yet on the
    order book) and a closed (eliminated) team whose outcomes come No-first for England; plain
    binaries (one near 4 ¢ whose tick will change, one one-sided lottery ticket); a Fed
    decision with 0.005/0.0025/0.001/0.0001 ticks; a two-team game without Yes/No; and a closed
    2024 event."""
    wc_q = "Will {} win the 2026 FIFA World Cup?"
    teams = [("Spain", "0.16", 850_000.0), ("France", "0.14", 700_000.0), ("Argentina", "0.11", 650_000.0),
             ("Brazil", "0.09", 640_000.0), ("Germany", "0.07", 300_000.0)]
    wc: list[FakeMarket] = []
    mid = 500_001
    for name, fair, vol in teams:
        wc.append(_market(mid, wc_q.format(name), ladder(fair, "0.01"), title=name, neg_risk=True, volume=vol,
                          end_date="2026-07-19T23:59:00Z"))
        mid += 1
    wc.append(_market(mid, wc_q.format("England"), ladder("0.12", "0.01"), title="England", outcomes=("No", "Yes"),
                      neg_risk=True, volume=620_000.0, end_date="2026-07-19T23:59:00Z"))
    mid += 1
    wc.append(_market(mid, wc_q.format("Italy"), FakeBook("0.01"), title="Italy", neg_risk=True, closed=True,
                      active=True, accepting_orders=False, volume=90_000.0, end_date="2026-07-19T23:59:00Z"))
    mid += 1
    wc.append(_market(mid, wc_q.format("another team"), ladder("0.012", "0.001", 3, bids=False, size=40),
                      title="Other", neg_risk=True, neg_risk_other=True, volume=1_200.0,
                      end_date="2026-07-19T23:59:00Z"))
    mid += 1
    for name in ("Team AF", "Team AG"):
        wc.append(_market(mid, wc_q.format(name), ladder("0.002", "0.001", 2, bids=False, size=25), title=name,
                          neg_risk=True, volume=150.0, end_date="2026-07-19T23:59:00Z"))
        mid += 1
    wc.append(_market(mid, wc_q.format("Team AH"), FakeBook("0.001"), title="Team AH", neg_risk=True,
                      enable_order_book=False, accepting_orders=False, end_date="2026-07-19T23:59:00Z"))
    mid += 1
    fed_q = "Fed {} after July 2026 meeting?"
    fed = [
        _market(mid, fed_q.format("No change"), ladder("0.905", "0.005"), title="No change", neg_risk=True,
                volume=2_100_000.0, end_date="2026-07-29T18:00:00Z"),
        _market(mid + 1, fed_q.format("25 bps decrease"), ladder("0.0825", "0.0025"), title="25 bps decrease",
                neg_risk=True, volume=1_400_000.0, end_date="2026-07-29T18:00:00Z"),
        _market(mid + 2, fed_q.format("50+ bps decrease"), ladder("0.009", "0.001", 4), title="50+ bps decrease",
                neg_risk=True, volume=300_000.0, end_date="2026-07-29T18:00:00Z"),
        _market(mid + 3, fed_q.format("25+ bps increase"), ladder("0.0035", "0.0001", 3, spread_ticks=2),
                title="25+ bps increase", neg_risk=True, volume=80_000.0, end_date="2026-07-29T18:00:00Z"),
    ]
    mid += 4
    recession = _market(mid, "US recession in 2026?", ladder("0.27", "0.01", 8), volume=4_300_000.0,
                        end_date="2027-01-31T23:59:00Z")
    recession.book.bids[Decimal("0.2")] = "219.217767"  # a partly filled level: shares to 6 decimals
    btc = _market(mid + 1, "Will Bitcoin reach $150,000 by December 31, 2026?", ladder("0.05", "0.01", 4),
                  volume=9_800_000.0)
    kanye = _market(mid + 2, "Will Kanye West win the 2028 US Presidential Election?",
                    ladder("0.003", "0.001", 4, bids=False, size=2500), volume=210_000.0,
                    end_date="2028-11-07T23:59:00Z")
    game = _market(mid + 3, "Lakers vs. Celtics", ladder("0.45", "0.01", 6), outcomes=("Lakers", "Celtics"),
                   volume=95_000.0, end_date="2026-03-01T03:00:00Z")
    trump = _market(mid + 4, "Will Donald Trump win the 2024 US Presidential Election?", FakeBook("0.001"),
                    neg_risk=True, closed=True, active=True, accepting_orders=False, volume=1.5e9,
                    end_date="2024-11-05T23:59:00Z")
    return [
        FakeEvent("100001", "2026-fifa-world-cup-winner", "2026 FIFA World Cup Winner", wc, "Sports",
                  neg_risk=True, augmented=True, end_date="2026-07-19T23:59:00Z"),
        FakeEvent("100002", "fed-decision-in-july", "Fed decision in July?", fed, "Economics", neg_risk=True,
                  end_date="2026-07-29T18:00:00Z"),
        FakeEvent("100003", recession.slug, recession.question, [recession], "Economics"),
        FakeEvent("100004", btc.slug, btc.question, [btc], "Crypto"),
        FakeEvent("100005", kanye.slug, kanye.question, [kanye], "Politics", end_date="2028-11-07T23:59:00Z"),
        FakeEvent("100006", game.slug, game.question, [game], "Sports", end_date="2026-03-01T03:00:00Z"),
        FakeEvent("100007", "presidential-election-winner-2024", "Presidential Election Winner 2024", [trump],
                  "Politics", neg_risk=True, closed=True, end_date="2024-11-05T23:59:00Z"),
    ]


# -- the order side -------------------------------------------------------------------------------
TOKEN = Decimal(10) ** 6  # pUSD and shares: 6 decimals on chain
UNAUTHORIZED = "Unauthorized/Invalid api key"
COUNTERPARTY_OWNER = "00000000-0000-4000-8000-00000000c0de"  # someone else's API key
COUNTERPARTY = "0x000000000000000000000000000000000000c0de"
_KEY_NS = uuid.UUID("0b6f4b8e-2f6a-4c52-9d1e-5a7c3e9f1d20")
END = "LTE="


def _cursor(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


def _offset(cursor: str | None) -> int:
    try:
        return max(0, int(base64.b64decode(cursor or "MA==").decode()))
    except ValueError:
        return 0


@dataclass
class ApiKey:
    api_key: str
    secret: str  # urlsafe base64
    passphrase: str
    address: str

    def creds(self) -> dict[str, str]:
        return {"api_key": self.api_key, "api_secret": self.secret, "api_passphrase": self.passphrase}


@dataclass
class FakeOrder:
    """One order as the venue keeps it (sizes in shares, the price in the token's terms)."""

    id: str
    owner: str  # API key
    maker: str
    asset_id: str
    market: str
    outcome: str
    side: str  # BUY | SELL
    price: Decimal
    original: Decimal
    order_type: str
    expiration: str = "0"
    matched: Decimal = Decimal(0)
    status: str = "LIVE"  # LIVE | MATCHED | CANCELED
    trades: list[str] = field(default_factory=list)
    created_at: int = field(default_factory=lambda: int(time.time()))

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "owner": self.owner, "maker_address": self.maker,
                "market": self.market, "asset_id": self.asset_id, "side": self.side,
                "original_size": fmt(self.original), "size_matched": fmt(self.matched),
                "price": fmt(self.price), "outcome": self.outcome, "expiration": self.expiration,
                "order_type": self.order_type, "associate_trades": list(self.trades),
                "created_at": self.created_at}


@dataclass
class FakeTrade:
    """One trade as one party (``owner``) sees it: ``trader_side`` TAKER or MAKER."""

    id: str
    owner: str
    taker_order_id: str
    market: str
    asset_id: str
    outcome: str
    side: str  # the taker's side
    size: Decimal
    price: Decimal
    maker_address: str
    trader_side: str
    maker_orders: list[dict[str, Any]]
    fee_rate_bps: int = 0
    status: str = "MATCHED"
    match_time: int = field(default_factory=lambda: int(time.time()))
    last_update: int = field(default_factory=lambda: int(time.time()))
    transaction_hash: str = ""

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "taker_order_id": self.taker_order_id, "market": self.market,
                "asset_id": self.asset_id, "side": self.side, "size": fmt(self.size),
                "fee_rate_bps": str(self.fee_rate_bps), "price": fmt(self.price), "status": self.status,
                "match_time": str(self.match_time), "last_update": str(self.last_update),
                "outcome": self.outcome, "bucket_index": 0, "owner": self.owner,
                "maker_address": self.maker_address, "maker_orders": [dict(m) for m in self.maker_orders],
                "transaction_hash": self.transaction_hash, "trader_side": self.trader_side}


class _UserConn:
    __slots__ = ("key", "markets", "pings", "ws")

    def __init__(self, ws: WebSocket, key: str, markets: list[str]) -> None:
        self.ws, self.key, self.markets, self.pings = ws, key, set(markets), 0


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _Trading:
    """The order side of :class:`FakePolymarket` (see the module docstring)."""

    markets: dict[str, FakeMarket]
    limits: dict[str, tuple[int, float]]

    # provided by FakePolymarket
    def book_of(self, token: str) -> FakeBook:
        raise NotImplementedError

    async def set_levels(self, token: str, changes: Sequence[tuple[str, str, str]]) -> None:
        raise NotImplementedError

    async def _gate(self, request: Request, group: str) -> Response | None:
        raise NotImplementedError

    def _init_trading(self, *, chain_id: int, heartbeat_timeout_s: float, trade_steps_s: tuple[float, float],
                      page_size: int, fee_rate_bps: int, collateral: str) -> None:
        self.chain_id = chain_id
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.trade_steps_s = trade_steps_s
        self.page_size = page_size
        self.fee_rate_bps = fee_rate_bps
        self.collateral = Decimal(collateral)
        self.api_keys: dict[str, ApiKey] = {}
        self.orders: dict[str, FakeOrder] = {}  # every order ever accepted, by hash
        self.trades: dict[str, FakeTrade] = {}
        self.order_posts: list[dict[str, Any]] = []  # every POST /order body that passed L2
        self.order_refusals: list[tuple[str, str]] = []  # (path, why) of every refused trading call
        self.heartbeats: dict[str, tuple[str, float]] = {}  # api key -> (heartbeat id, last beat)
        self.heartbeat_cancels: list[str] = []  # orders the dead-man switch cancelled
        self.user_conns: set[_UserConn] = set()
        self.user_received: list[Any] = []
        self._drop: list[str] = []
        self._drop_cancels: list[str] = []
        self.cancel_batches: list[list[str]] = []  # every DELETE /orders list that passed L2
        self._dup_trades = False
        self._hold = False
        self._fail = 0
        self._failing: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hb_check: asyncio.TimerHandle | None = None
        contracts = get_contract_config(chain_id)
        self._exchanges = {False: contracts.exchange_v2, True: contracts.neg_risk_exchange_v2}

    def _trading_routes(self) -> list[BaseRoute]:
        return [
            Route("/auth/derive-api-key", self._derive_key, methods=["GET"]),
            Route("/auth/api-key", self._create_key, methods=["POST"]),
            Route("/balance-allowance", self._balance, methods=["GET"]),
            Route("/tick-size", self._tick_size, methods=["GET"]),
            Route("/neg-risk", self._neg_risk, methods=["GET"]),
            Route("/order", self._post_order, methods=["POST"]),
            Route("/order", self._delete_order, methods=["DELETE"]),
            Route("/orders", self._delete_orders, methods=["DELETE"]),
            Route("/data/order/{order_id}", self._get_order, methods=["GET"]),
            Route("/data/orders", self._get_orders, methods=["GET"]),
            Route("/data/trades", self._get_trades, methods=["GET"]),
            Route("/v1/heartbeats", self._heartbeat, methods=["POST"]),
            WebSocketRoute("/ws/user", self._ws_user),
        ]

    # -- keys and auth -----------------------------------------------------------------------------
    def _key_for(self, address: str, nonce: int = 0) -> ApiKey:
        seed = f"{address.lower()}:{nonce}"
        return ApiKey(str(uuid.uuid5(_KEY_NS, seed)),
                      base64.urlsafe_b64encode(hashlib.sha256(b"secret:" + seed.encode()).digest()).decode(),
                      hashlib.sha256(b"passphrase:" + seed.encode()).hexdigest()[:32], address)

    def register(self, address: str, nonce: int = 0) -> dict[str, str]:
        """Create the wallet's L2 keys (as the user did on the website); ``api_key``/``api_secret``/
        ``api_passphrase`` as our credential fields name them."""
        key = self._key_for(address, nonce)
        self.api_keys[key.api_key] = key
        return key.creds()

    def _deny(self, request: Request, status: int, message: str) -> JSONResponse:
        self.order_refusals.append((f"{request.method} {request.url.path}", message))
        return JSONResponse({"error": message}, status_code=status)

    def _l1(self, request: Request) -> tuple[str, int]:
        """The wallet an L1 request proves it controls, and its nonce."""
        h = request.headers
        try:
            address, sig = h["POLY_ADDRESS"], h["POLY_SIGNATURE"]
            stamp, nonce = h["POLY_TIMESTAMP"], int(h.get("POLY_NONCE", "0"))
            auth = ClobAuth(address=address, timestamp=stamp, nonce=nonce, message=MSG_TO_SIGN)
            digest = keccak(auth.signable_bytes(get_clob_auth_domain(self.chain_id)))
            signer = Account._recover_hash(digest, signature=bytes.fromhex(sig.removeprefix("0x")))
        except (KeyError, ValueError, TypeError) as exc:
            raise _Refused(401, "Invalid L1 Request headers") from exc
        if signer.lower() != address.lower():
            raise _Refused(401, "Invalid L1 Request headers")
        return address, nonce

    def _l2(self, request: Request, body: bytes) -> ApiKey:
        """The API key an L2 request is signed with (HMAC recomputed here), or :class:`_Refused`."""
        h = request.headers
        key = self.api_keys.get(h.get("POLY_API_KEY", ""))
        stamp, sig = h.get("POLY_TIMESTAMP", ""), h.get("POLY_SIGNATURE", "")
        if (key is None or not stamp.isdigit() or h.get("POLY_PASSPHRASE") != key.passphrase
                or h.get("POLY_ADDRESS", "").lower() != key.address.lower()):
            raise _Refused(401, UNAUTHORIZED)
        message = stamp + request.method + request.url.path + body.decode()
        digest = hmac.new(base64.urlsafe_b64decode(key.secret), message.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.urlsafe_b64encode(digest).decode(), sig):
            raise _Refused(401, UNAUTHORIZED)
        return key

    async def _authed(self, request: Request, group: str = "data") -> tuple[ApiKey, bytes] | Response:
        early = await self._gate(request, group)
        if early is not None:
            return early
        body = await request.body()
        try:
            return self._l2(request, body), body
        except _Refused as r:
            return self._deny(request, r.status, r.message)

    async def _derive_key(self, request: Request) -> Response:
        try:
            address, nonce = self._l1(request)
        except _Refused as r:
            return self._deny(request, r.status, r.message)
        key = self._key_for(address, nonce)
        if key.api_key not in self.api_keys:
            return self._deny(request, 400, "Could not derive api key!")
        return JSONResponse({"apiKey": key.api_key, "secret": key.secret, "passphrase": key.passphrase})

    async def _create_key(self, request: Request) -> Response:
        try:
            address, nonce = self._l1(request)
        except _Refused as r:
            return self._deny(request, r.status, r.message)
        key = self._key_for(address, nonce)
        if key.api_key in self.api_keys:
            return self._deny(request, 400, "Could not create api key")
        self.api_keys[key.api_key] = key
        return JSONResponse({"apiKey": key.api_key, "secret": key.secret, "passphrase": key.passphrase})

    async def _balance(self, request: Request) -> Response:
        got = await self._authed(request)
        if isinstance(got, Response):
            return got
        units = str(int(self.collateral * TOKEN))
        return JSONResponse({"balance": units, "allowances": {a: units for a in self._exchanges.values()}})

    async def _tick_size(self, request: Request) -> Response:
        early = await self._gate(request, "data")
        if early is not None:
            return early
        m = self.markets.get(request.query_params.get("token_id", ""))
        if m is None:
            return JSONResponse({"error": NO_BOOK}, status_code=404)
        return JSONResponse({"minimum_tick_size": float(m.book.tick)})

    async def _neg_risk(self, request: Request) -> Response:
        early = await self._gate(request, "data")
        if early is not None:
            return early
        m = self.markets.get(request.query_params.get("token_id", ""))
        if m is None:
            return JSONResponse({"error": NO_BOOK}, status_code=404)
        return JSONResponse({"neg_risk": m.neg_risk})

    # -- orders ------------------------------------------------------------------------------------
    def _verify_order(self, key: ApiKey, payload: dict[str, Any]) -> tuple[str, FakeMarket, dict[str, Any]]:
        """The order's hash, market and fields, once its signature and owner check out."""
        o = payload.get("order")
        if not isinstance(o, dict) or not isinstance(payload.get("owner"), str):
            raise _Refused(400, "Invalid order payload")
        if payload["owner"] != key.api_key:
            raise _Refused(400, "the order owner has to be the owner of the API KEY")
        m = self.markets.get(str(o.get("tokenId")))
        if m is None:
            raise _Refused(400, "Invalid token id")
        try:
            order = OrderV2(salt=str(o["salt"]), maker=o["maker"], signer=o["signer"], tokenId=str(o["tokenId"]),
                            makerAmount=str(o["makerAmount"]), takerAmount=str(o["takerAmount"]),
                            side=PolySide.BUY if o["side"] == "BUY" else PolySide.SELL,
                            signatureType=SignatureTypeV2(int(o["signatureType"])), timestamp=str(o["timestamp"]),
                            metadata=o["metadata"], builder=o["builder"], expiration=str(o.get("expiration", "0")))
            exchange = ExchangeOrderBuilderV2(self._exchanges[m.neg_risk], self.chain_id, None)
            typed = exchange.build_order_typed_data(order)
            order_hash = str(exchange.build_order_hash(typed)).lower()
            signer = Account.recover_message(encode_typed_data(full_message=typed), signature=o["signature"])
        except (KeyError, ValueError, TypeError) as exc:
            raise _Refused(400, f"Invalid order payload: {exc}") from exc
        if signer.lower() != str(o["signer"]).lower():
            raise _Refused(400, "invalid signature")
        if signer.lower() != key.address.lower():
            raise _Refused(400, "the order signer address has to be the address of the API KEY")
        if order.signatureType == SignatureTypeV2.EOA and str(o["maker"]).lower() != signer.lower():
            raise _Refused(400, "invalid signature")
        return order_hash, m, o

    async def _post_order(self, request: Request) -> Response:
        got = await self._authed(request, "order")
        if isinstance(got, Response):
            return got
        key, body = got
        try:
            payload = json.loads(body)
        except ValueError:
            return self._deny(request, 400, "Invalid order payload")
        self.order_posts.append(payload)
        try:
            reply = await self._accept(key, payload)
        except _Refused as r:
            return self._deny(request, r.status, r.message)
        if self._drop:
            return await self._lost(request, self._drop.pop(0))
        return JSONResponse(reply)

    async def _lost(self, request: Request, mode: str) -> Response:
        """The reply to a processed request never comes (``"lost"``: held until the client gives
        up) or is a 500 (``"500"``)."""
        if mode == "500":
            return JSONResponse({"error": "Internal Server Error"}, status_code=500)
        for _ in range(3000):
            if await request.is_disconnected():
                break
            await asyncio.sleep(0.01)
        return JSONResponse({"error": "reply lost"}, status_code=504)

    async def _accept(self, key: ApiKey, payload: dict[str, Any]) -> dict[str, Any]:
        order_hash, m, o = self._verify_order(key, payload)
        if not m.accepting_orders or m.closed:
            raise _Refused(400, "the market is closed: not accepting orders")
        if order_hash in self.orders:
            raise _Refused(400, "order is invalid. Duplicated. Same order has already been placed, "
                                "can't be placed again")
        order_type = str(payload.get("orderType", "GTC")).upper()
        post_only = bool(payload.get("postOnly"))
        maker_amount, taker_amount = Decimal(o["makerAmount"]), Decimal(o["takerAmount"])
        if maker_amount <= 0 or taker_amount <= 0:
            raise _Refused(400, "invalid order amounts")
        buy = o["side"] == "BUY"
        shares = (taker_amount if buy else maker_amount) / TOKEN
        dollars = (maker_amount if buy else taker_amount) / TOKEN
        price = dollars / shares
        tick = Decimal(m.book.tick)
        if price % tick or not tick <= price <= ONE - tick:
            raise _Refused(400, f"order is invalid. Price ({fmt(price)}) breaks minimum tick size rule: {m.book.tick}")
        if shares < m.min_size:
            raise _Refused(400, f"order is invalid. Size ({fmt(shares)}) lower than the minimum: {m.min_size}")
        if order_type not in ("GTC", "GTD", "FOK", "FAK"):
            raise _Refused(400, f"invalid order type {order_type}")
        if post_only and order_type not in ("GTC", "GTD"):
            raise _Refused(400, "invalid post-only order: only GTC and GTD orders can be post-only")
        book = self.book_of(str(o["tokenId"]))
        levels = book.asks if buy else book.bids
        crossing = sorted((p for p in levels if (p <= price if buy else p >= price)), reverse=not buy)
        if post_only and crossing:
            raise _Refused(400, "invalid post-only order: order crosses book")
        if buy and crossing and dollars < 1:
            raise _Refused(400, f"invalid amount for a marketable BUY order (${fmt(dollars)}), min size: $1")
        available = sum((Decimal(levels[p]) for p in crossing), Decimal(0))
        if order_type == "FOK" and available < shares:
            raise _Refused(400, "order couldn't be fully filled. FOK orders are fully filled or killed.")
        if order_type == "FAK" and not crossing:
            raise _Refused(400, "no orders found to match with FAK order. FAK orders are partially filled "
                                "or killed if no match is found.")
        token = str(o["tokenId"])
        order = FakeOrder(order_hash, key.api_key, str(o["maker"]), token, m.condition,
                          m.outcomes[m.tokens.index(token)], o["side"], price, shares, order_type,
                          str(o.get("expiration", "0")))
        self.orders[order_hash] = order
        await self._order_event(order, "PLACEMENT")
        trades: list[FakeTrade] = []
        changes: list[tuple[str, str, str]] = []
        spent = Decimal(0)
        for p in crossing:
            left = order.original - order.matched
            if left <= 0:
                break
            size = Decimal(levels[p])
            q = min(left, size)
            changes.append(("SELL" if buy else "BUY", fmt(p), fmt(size - q)))
            order.matched += q
            spent += q * p
            trades.append(self._trade(order, key, p, q))
        if changes:
            await self.set_levels(token, changes)
        for t in trades:
            await self._trade_event(t)
        if order.matched >= order.original:
            order.status = "MATCHED"
            await self._order_event(order, "UPDATE")
        elif order_type in ("FOK", "FAK"):
            order.status = "CANCELED"
            await self._order_event(order, "CANCELLATION")
        elif order.matched:
            await self._order_event(order, "UPDATE")
        making, taking = (spent, order.matched) if buy else (order.matched, spent)
        return {"success": True, "errorMsg": "", "orderID": order_hash,
                "status": "matched" if trades else "live",
                "makingAmount": fmt(making) if trades else "", "takingAmount": fmt(taking) if trades else "",
                "transactionsHashes": [], "tradeIDs": [t.id for t in trades]}

    def _trade(self, order: FakeOrder, key: ApiKey, price: Decimal, q: Decimal) -> FakeTrade:
        """Our *order* took *q* at *price* from a counterparty's resting order."""
        trade_id = str(uuid.uuid4())
        other = "SELL" if order.side == "BUY" else "BUY"
        maker_order = {"order_id": "0x" + hashlib.sha256(f"maker:{trade_id}".encode()).hexdigest(),
                       "owner": COUNTERPARTY_OWNER, "maker_address": COUNTERPARTY, "matched_amount": fmt(q),
                       "price": fmt(price), "fee_rate_bps": "0", "asset_id": order.asset_id,
                       "outcome": order.outcome, "side": other}
        t = FakeTrade(trade_id, key.api_key, order.id, order.market, order.asset_id, order.outcome, order.side,
                      q, price, order.maker, "TAKER", [maker_order], self.fee_rate_bps)
        return self._record(order, t)

    def _record(self, order: FakeOrder, t: FakeTrade) -> FakeTrade:
        self.trades[t.id] = t
        order.trades.append(t.id)
        if self._fail:
            self._fail -= 1
            self._failing.add(t.id)
        if not self._hold:
            self._later(self.trade_steps_s[0], self._step, t.id)
        return t

    def _later(self, delay: float, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` (a coroutine function) on this loop after *delay*: timers, not
        sleeping tasks, so a server stopped mid-scenario leaves nothing pending."""
        def fire() -> None:
            task = asyncio.get_running_loop().create_task(fn(*args))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        asyncio.get_running_loop().call_later(delay, fire)

    async def _step(self, trade_id: str) -> None:
        """The next status of an unheld trade: MATCHED → MINED → CONFIRMED, or → FAILED."""
        t = self.trades[trade_id]
        if trade_id in self._failing:
            await self.advance(trade_id, "FAILED")
        elif t.status == "MATCHED":
            await self.advance(trade_id, "MINED")
            self._later(self.trade_steps_s[1], self._step, trade_id)
        elif t.status == "MINED":
            await self.advance(trade_id, "CONFIRMED")

    async def take(self, order_id: str, size: str) -> str:
        """A counterparty takes *size* of our resting order *order_id* (a maker fill for us);
        returns the trade id."""
        order = self.orders[order_id.lower()]
        q = min(Decimal(size), order.original - order.matched)
        if order.status != "LIVE" or q <= 0:
            raise ValueError(f"order {order_id} has nothing left to take ({order.status})")
        trade_id = str(uuid.uuid4())
        ours = {"order_id": order.id, "owner": order.owner, "maker_address": order.maker, "matched_amount": fmt(q),
                "price": fmt(order.price), "fee_rate_bps": "0", "asset_id": order.asset_id,
                "outcome": order.outcome, "side": order.side}
        taker_side = "SELL" if order.side == "BUY" else "BUY"
        t = FakeTrade(trade_id, order.owner, "0x" + hashlib.sha256(f"taker:{trade_id}".encode()).hexdigest(),
                      order.market, order.asset_id, order.outcome, taker_side, q, order.price, order.maker,
                      "MAKER", [ours], self.fee_rate_bps)
        order.matched += q
        self._record(order, t)
        await self._trade_event(t)
        if order.matched >= order.original:
            order.status = "MATCHED"
        await self._order_event(order, "UPDATE")
        return trade_id

    async def advance(self, trade_id: str, status: str) -> None:
        """Move a trade to *status* (``MINED``, ``CONFIRMED``, ``RETRYING``, ``FAILED``) and tell
        its owner on the user channel."""
        t = self.trades[trade_id]
        t.status = status
        t.last_update = int(time.time())
        if status in ("MINED", "CONFIRMED") and not t.transaction_hash:
            t.transaction_hash = "0x" + hashlib.sha256(f"tx:{trade_id}".encode()).hexdigest()
        await self._trade_event(t)

    async def _delete_order(self, request: Request) -> Response:
        got = await self._authed(request, "order")
        if isinstance(got, Response):
            return got
        key, body = got
        try:
            order_id = str(json.loads(body)["orderID"]).lower()
        except (ValueError, KeyError, TypeError):
            return self._deny(request, 400, "Invalid payload")
        order = self.orders.get(order_id)
        if order is None or order.owner != key.api_key:
            return JSONResponse({"canceled": [], "not_canceled": {order_id: "Order not found or already canceled"}})
        if order.status != "LIVE":
            why = "order already matched" if order.status == "MATCHED" else "Order not found or already canceled"
            return JSONResponse({"canceled": [], "not_canceled": {order_id: why}})
        await self._cancel(order)
        return JSONResponse({"canceled": [order_id], "not_canceled": {}})

    async def _delete_orders(self, request: Request) -> Response:
        """``DELETE /orders``: a JSON list of at most :data:`CANCEL_BATCH` order ids (repeats
        ignored) → ``{"canceled": [ids], "not_canceled": {id: reason}}``; an id that is not one of
        the key's LIVE orders (unknown, another key's, matched, cancelled) is not cancelled, with
        the venue's one reason for all of them."""
        got = await self._authed(request, "order")
        if isinstance(got, Response):
            return got
        key, body = got
        try:
            ids = json.loads(body)
        except ValueError:
            ids = None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return self._deny(request, 400, "Invalid payload")
        if len(ids) > CANCEL_BATCH:
            return self._deny(request, 400, f"Too many orders to cancel: max {CANCEL_BATCH}")
        self.cancel_batches.append(list(ids))
        canceled: list[str] = []
        not_canceled: dict[str, str] = {}
        for order_id in dict.fromkeys(i.lower() for i in ids):
            order = self.orders.get(order_id)
            if order is None or order.owner != key.api_key or order.status != "LIVE":
                not_canceled[order_id] = CANNOT_CANCEL
                continue
            await self._cancel(order)
            canceled.append(order_id)
        if self._drop_cancels:
            return await self._lost(request, self._drop_cancels.pop(0))
        return JSONResponse({"canceled": canceled, "not_canceled": not_canceled})

    async def _cancel(self, order: FakeOrder) -> None:
        order.status = "CANCELED"
        await self._order_event(order, "CANCELLATION")

    async def _get_order(self, request: Request) -> Response:
        got = await self._authed(request)
        if isinstance(got, Response):
            return got
        key, _ = got
        order = self.orders.get(request.path_params["order_id"].lower())
        if order is None or order.owner != key.api_key:
            return JSONResponse({"error": "order not found"}, status_code=404)
        return JSONResponse(order.json())

    async def _get_orders(self, request: Request) -> Response:
        got = await self._authed(request)
        if isinstance(got, Response):
            return got
        key, _ = got
        q = request.query_params
        rows = [o.json() for o in self.orders.values() if o.owner == key.api_key and o.status == "LIVE"
                and q.get("id", o.id) == o.id and q.get("market", o.market) == o.market
                and q.get("asset_id", o.asset_id) == o.asset_id]
        return self._data_page(rows, request)

    async def _get_trades(self, request: Request) -> Response:
        got = await self._authed(request)
        if isinstance(got, Response):
            return got
        key, _ = got
        q = request.query_params
        after, before = int(q.get("after", "0")), int(q.get("before", str(2**62)))
        rows = [t.json() for t in sorted(self.trades.values(), key=lambda t: -t.match_time)
                if t.owner == key.api_key and after <= t.match_time <= before
                and q.get("id", t.id) == t.id and q.get("asset_id", t.asset_id) == t.asset_id
                and q.get("market", t.market) == t.market]
        return self._data_page(rows, request)

    def _data_page(self, rows: list[dict[str, Any]], request: Request) -> Response:
        off = _offset(request.query_params.get("next_cursor"))
        page = rows[off: off + self.page_size]
        nxt = off + len(page)
        return JSONResponse({"data": page, "next_cursor": _cursor(nxt) if nxt < len(rows) else END,
                             "limit": self.page_size, "count": len(page)})

    # -- the heartbeat (dead-man switch) -------------------------------------------------------------
    async def _heartbeat(self, request: Request) -> Response:
        got = await self._authed(request, "order")
        if isinstance(got, Response):
            return got
        key, body = got
        try:
            given = str((json.loads(body) if body else {}).get("heartbeat_id") or "")
        except (ValueError, AttributeError):
            return self._deny(request, 400, "Invalid payload")
        current = self.heartbeats.get(key.api_key)
        if given and (current is None or current[0] != given):
            return self._deny(request, 400, "Invalid Heartbeat ID")
        beat_id = given or str(uuid.uuid4())
        self.heartbeats[key.api_key] = (beat_id, time.monotonic())
        if self._hb_check is None:
            self._hb_check = asyncio.get_running_loop().call_later(self._hb_every(), self._check_heartbeats)
        return JSONResponse({"status": "ok", "heartbeat_id": beat_id})

    def _hb_every(self) -> float:
        return max(0.01, self.heartbeat_timeout_s / 10)

    def _check_heartbeats(self) -> None:
        """A timer, while some chain lives: chains not fed in time end, cancelling their key's orders."""
        now = time.monotonic()
        for api_key, (_, last) in list(self.heartbeats.items()):
            if now - last > self.heartbeat_timeout_s:
                del self.heartbeats[api_key]
                self._later(0, self._dead_man, api_key)
        loop = asyncio.get_running_loop()
        self._hb_check = loop.call_later(self._hb_every(), self._check_heartbeats) if self.heartbeats else None

    async def _dead_man(self, api_key: str) -> None:
        for order in list(self.orders.values()):
            if order.owner == api_key and order.status == "LIVE":
                self.heartbeat_cancels.append(order.id)
                await self._cancel(order)

    # -- the user channel --------------------------------------------------------------------------
    async def _ws_user(self, ws: WebSocket) -> None:
        await ws.accept()
        conn: _UserConn | None = None
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                text = msg.get("text")
                if text == "PING":
                    if conn is not None:
                        conn.pings += 1
                    await ws.send_text("PONG")
                    continue
                try:
                    data = json.loads(text or "")
                except ValueError:
                    data = None
                self.user_received.append(data)
                if conn is None:
                    conn = self._user_auth(ws, data)
                    if conn is None:
                        self.order_refusals.append(("WS /ws/user", "invalid auth"))
                        await ws.close(code=1008, reason="invalid auth")
                        return
                    self.user_conns.add(conn)
                elif isinstance(data, dict) and isinstance(data.get("markets"), list):
                    if data.get("operation") == "unsubscribe":
                        conn.markets.difference_update(data["markets"])
                    else:
                        conn.markets.update(data["markets"])
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            if conn is not None:
                self.user_conns.discard(conn)

    def _user_auth(self, ws: WebSocket, data: Any) -> _UserConn | None:
        if not isinstance(data, dict) or str(data.get("type", "")).lower() != "user":
            return None
        auth = data.get("auth") or {}
        key = self.api_keys.get(str(auth.get("apiKey", "")))
        if key is None or auth.get("secret") != key.secret or auth.get("passphrase") != key.passphrase:
            return None
        markets = data.get("markets") or []
        return _UserConn(ws, key.api_key, [str(x) for x in markets])

    async def _to_user(self, api_key: str, market: str, payload: dict[str, Any], times: int = 1) -> None:
        text = json.dumps(payload)
        for conn in list(self.user_conns):
            if conn.key == api_key and (not conn.markets or market in conn.markets):
                for _ in range(times):
                    try:
                        await conn.ws.send_text(text)
                    except Exception:
                        self.user_conns.discard(conn)
                        break

    async def _order_event(self, order: FakeOrder, kind: str) -> None:
        await self._to_user(order.owner, order.market, {**order.json(), "event_type": "order", "type": kind,
                                                        "order_owner": order.owner,
                                                        "timestamp": str(int(time.time() * 1000))})

    async def _trade_event(self, t: FakeTrade) -> None:
        await self._to_user(t.owner, t.market, {**t.json(), "event_type": "trade", "type": "TRADE",
                                                "trade_owner": t.owner, "timestamp": str(int(time.time() * 1000))},
                            2 if self._dup_trades else 1)

    # -- scenario controls -------------------------------------------------------------------------
    def drop_next_reply(self, n: int = 1, mode: str = "lost") -> None:
        """The next *n* ``POST /order`` are processed (the order exists) but the reply is lost:
        held until the client gives up (``"lost"``) or a 500 (``"500"``)."""
        self._drop.extend([mode] * n)

    def drop_next_cancel_reply(self, n: int = 1, mode: str = "lost") -> None:
        """The next *n* ``DELETE /orders`` are processed (the orders are cancelled) but the reply
        is lost (``"lost"``) or a 500 (``"500"``)."""
        self._drop_cancels.extend([mode] * n)

    def duplicate_trades(self, on: bool = True) -> None:
        """Send every ``trade`` event twice on the user channel."""
        self._dup_trades = on

    def hold_trades(self, on: bool = True) -> None:
        """New trades stay ``MATCHED`` until :meth:`advance` moves them."""
        self._hold = on

    def fail_next_trades(self, n: int = 1) -> None:
        """The next *n* trades go ``MATCHED`` → ``FAILED`` instead of being mined."""
        self._fail += n

    async def disconnect_user(self) -> int:
        """Drop every user-channel socket abruptly (no close frame); returns how many."""
        n = 0
        for c in list(self.user_conns):
            self.user_conns.discard(c)
            transport = _transport(c.ws)
            if transport is not None:
                transport.abort()
            else:  # pragma: no cover
                with contextlib.suppress(Exception):
                    await c.ws.close(code=1011)
            n += 1
        return n

    def open_orders_of(self, api_key: str) -> list[FakeOrder]:
        return [o for o in self.orders.values() if o.owner == api_key and o.status == "LIVE"]


# -- the fake venue -----------------------------------------------------------------------------
class FakePolymarket(_Trading):
    """The venue's state, its app, and scenario controls (see the module docstring)."""

    def __init__(self, events: Iterable[FakeEvent] | None = None, *, ping_timeout_s: float = 30.0,
                 gamma_page_cap: int = 100, limits: dict[str, tuple[int, float]] | None = None,
                 chain_id: int = 137, heartbeat_timeout_s: float = 10.0,
                 trade_steps_s: tuple[float, float] = (0.05, 0.05), page_size: int = 100,
                 fee_rate_bps: int = 0, collateral: str = "1000") -> None:
        self.events: list[FakeEvent] = list(default_catalogue() if events is None else events)
        self.ping_timeout_s = ping_timeout_s
        self.gamma_page_cap = gamma_page_cap
        #: group -> (requests, per seconds): more in any window are delayed (the venue throttles).
        self.limits = {"book": (1500, 10.0), "gamma": (300, 10.0), "order": (3500, 10.0), "data": (900, 10.0),
                       **(limits or {})}
        self.conns: set[_Conn] = set()
        self.connections = 0  # sockets accepted so far
        self.refusals: list[str] = []
        self.received: list[Any] = []  # every client socket message (PING excepted)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.throttled = 0  # REST calls delayed by the rate limit or throttle_next
        self.hidden: set[str] = set()
        self.missing: set[str] = set()  # tokens whose order book is gone (REST 404, no socket book)
        self._windows: dict[str, deque[float]] = {}
        self._throttle: list[float] = []
        self._reject: list[int] = []
        self._index()
        self._init_trading(chain_id=chain_id, heartbeat_timeout_s=heartbeat_timeout_s, trade_steps_s=trade_steps_s,
                           page_size=page_size, fee_rate_bps=fee_rate_bps, collateral=collateral)
        self.app = Starlette(routes=[
            Route("/", self._ok),
            Route("/book", self._book),
            Route("/gamma/events", self._gamma_events),
            Route("/gamma/markets", self._gamma_markets),
            WebSocketRoute("/ws/market", self._ws_market),
            *self._trading_routes(),
        ])

    def _index(self) -> None:
        self.markets: dict[str, FakeMarket] = {}  # any token -> market
        for ev in self.events:
            for m in ev.markets:
                for t in m.tokens:
                    self.markets[t] = m

    def serve(self) -> FakeServer:
        """A started :class:`FakeServer` for this venue."""
        return FakeServer(self.app).start()

    # -- lookups (tests) ---------------------------------------------------------------------------
    def market(self, name: str) -> FakeMarket:
        """A market by slug, question or group item title (e.g. ``"Spain"``)."""
        for ev in self.events:
            for m in ev.markets:
                if name in (m.slug, m.question, m.group_item_title):
                    return m
        raise KeyError(name)

    def book_of(self, token: str) -> FakeBook:
        """The venue's book of *token* (the YES book, or its mirror for the NO token)."""
        m = self.markets[token]
        return m.book if token == m.yes else m.book.mirrored()

    def levels(self, token: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """``(bids, asks)`` of *token*, best first, as venue strings."""
        b = self.book_of(token)
        return ([(fmt(p), b.bids[p]) for p in sorted(b.bids, reverse=True)],
                [(fmt(p), b.asks[p]) for p in sorted(b.asks)])

    def subscribed(self) -> set[str]:
        """Every asset some open socket is subscribed to."""
        return {a for c in self.conns for a in c.assets}

    # -- REST --------------------------------------------------------------------------------------
    async def _gate(self, request: Request, group: str) -> Response | None:
        """Record the call; reject or delay it as scripted; throttle past the group's limit."""
        self.requests.append((request.url.path, dict(request.query_params)))
        if self._reject:
            return JSONResponse({"error": "Too Many Requests"}, status_code=self._reject.pop(0))
        if self._throttle:
            self.throttled += 1
            await asyncio.sleep(self._throttle.pop(0))
        n, per = self.limits[group]
        window = self._windows.setdefault(group, deque())
        now = time.monotonic()
        while window and window[0] <= now - per:
            window.popleft()
        if len(window) >= n:
            self.throttled += 1
            await asyncio.sleep(window[0] + per - now)
            now = time.monotonic()
            while window and window[0] <= now - per:
                window.popleft()
        window.append(now)
        return None

    async def _ok(self, request: Request) -> Response:
        return PlainTextResponse("OK")

    async def _book(self, request: Request) -> Response:
        early = await self._gate(request, "book")
        if early is not None:
            return early
        token = request.query_params.get("token_id", "")
        if not token:
            self.refusals.append("GET /book without token_id")
            return JSONResponse({"error": "Invalid payload"}, status_code=400)
        m = self.markets.get(token)
        if m is None or m.closed or not m.enable_order_book or token in self.missing:
            return JSONResponse({"error": NO_BOOK}, status_code=404)
        b = self.book_of(token)
        return JSONResponse({
            "market": m.condition,
            "asset_id": token,
            "timestamp": str(int(time.time() * 1000)),
            "hash": self._hash(token),
            "bids": [{"price": fmt(p), "size": b.bids[p]} for p in sorted(b.bids)],  # best last
            "asks": [{"price": fmt(p), "size": b.asks[p]} for p in sorted(b.asks, reverse=True)],  # best last
            "min_order_size": str(m.min_size),
            "tick_size": b.tick,
            "neg_risk": m.neg_risk,
            "last_trade_price": m.last_trade or "0.5",
        })

    def _filters(self, request: Request) -> tuple[dict[str, bool], int, int, str | None]:
        q = request.query_params

        def flag(name: str) -> bool | None:
            v = q.get(name)
            return None if v is None else v.lower() == "true"

        flags: dict[str, bool] = {}
        active = flag("active")
        if active is not None:
            flags["active"] = active
        closed = flag("closed")
        flags["closed"] = True if closed is None else closed  # Gamma's default is closed rows
        archived = flag("archived")
        if archived is not None:
            flags["archived"] = archived
        limit = int(q.get("limit", "20"))
        offset = int(q.get("offset", "0"))
        if limit < 0 or offset < 0:
            raise ValueError("negative limit or offset")
        return flags, min(limit, self.gamma_page_cap), offset, q.get("order")

    def _page(self, rows: list[dict[str, Any]], request: Request, volume_key: str) -> Response:
        try:
            flags, limit, offset, order = self._filters(request)
        except ValueError as exc:
            self.refusals.append(f"Gamma: {exc}")
            return JSONResponse({"type": "validation error", "error": str(exc)}, status_code=422)
        q = request.query_params
        rows = [r for r in rows if all(r.get(k, False) == v for k, v in flags.items())]
        for key in ("slug", "id"):
            wanted = q.getlist(key)
            if wanted:
                rows = [r for r in rows if str(r.get(key)) in wanted]
        desc = q.get("ascending", "true").lower() == "false"
        if order in ("volume", "volumeNum"):
            rows.sort(key=lambda r: (float(r.get(volume_key) or 0), int(r["id"])), reverse=desc)
        else:
            rows.sort(key=lambda r: int(r["id"]), reverse=desc)
        return JSONResponse(rows[offset: offset + limit])

    async def _gamma_events(self, request: Request) -> Response:
        early = await self._gate(request, "gamma")
        if early is not None:
            return early
        return self._page([e.gamma() for e in self.events], request, "volume")

    async def _gamma_markets(self, request: Request) -> Response:
        early = await self._gate(request, "gamma")
        if early is not None:
            return early
        rows = []
        for e in self.events:
            for m in e.markets:
                row = m.gamma(e)
                row["events"] = [{"id": e.id, "slug": e.slug, "title": e.title}]
                rows.append(row)
        return self._page(rows, request, "volumeNum")

    # -- the market socket -------------------------------------------------------------------------
    async def _ws_market(self, ws: WebSocket) -> None:
        await ws.accept()
        conn = _Conn(ws)
        self.conns.add(conn)
        self.connections += 1
        watchdog = asyncio.create_task(self._watch(conn))
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                text = msg.get("text")
                if text is None:
                    await self._refuse(conn, "a binary frame")
                    continue
                await self._on_client(conn, text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            self.conns.discard(conn)
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _watch(self, conn: _Conn) -> None:
        """Close a socket whose client stopped sending ``PING``."""
        while True:
            await asyncio.sleep(max(0.01, self.ping_timeout_s / 5))
            if time.monotonic() - conn.last_ping > self.ping_timeout_s:
                self.refusals.append(f"no PING for {self.ping_timeout_s:g} s: socket closed")
                self.conns.discard(conn)
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=1008, reason="PING timeout")
                return

    async def _refuse(self, conn: _Conn, why: str) -> None:
        self.refusals.append(why)
        await self._send(conn, INVALID)

    async def _on_client(self, conn: _Conn, text: str) -> None:
        if text == "PING":
            conn.last_ping = time.monotonic()
            await self._send(conn, "PONG")
            return
        try:
            msg = json.loads(text)
        except ValueError:
            await self._refuse(conn, f"not JSON: {text[:60]!r}")
            return
        self.received.append(msg)
        if not isinstance(msg, dict):
            await self._refuse(conn, "not a JSON object")
            return
        ids = msg.get("assets_ids")
        if not isinstance(ids, list) or not all(isinstance(a, str) for a in ids):
            await self._refuse(conn, f"no assets_ids list in {sorted(msg)}")
            return
        if not conn.subscribed:
            if str(msg.get("type", "")).lower() != "market":
                await self._refuse(conn, f"first message is not a market subscription: {sorted(msg)}")
                return
            conn.subscribed = True
            await self._subscribe(conn, ids)
            return
        op = msg.get("operation")
        if op == "subscribe" or str(msg.get("type", "")).lower() == "market":
            await self._subscribe(conn, ids)
        elif op == "unsubscribe":
            conn.assets.difference_update(ids)
        else:
            await self._refuse(conn, f"unknown operation {op!r}")

    async def _subscribe(self, conn: _Conn, ids: list[str]) -> None:
        new = [a for a in ids if a not in conn.assets]
        conn.assets.update(ids)
        books = [self._book_event(a) for a in new if a in self.markets and a not in self.hidden
                 and a not in self.missing and not self.markets[a].closed]
        if books:
            await self._send(conn, json.dumps(books))

    def _hash(self, token: str) -> str:
        b = self.book_of(token)
        body = json.dumps([sorted((fmt(p), s) for p, s in b.bids.items()),
                           sorted((fmt(p), s) for p, s in b.asks.items())])
        return hashlib.sha1(body.encode()).hexdigest()

    def _book_event(self, token: str) -> dict[str, Any]:
        m = self.markets[token]
        b = self.book_of(token)
        return {
            "event_type": "book",
            "asset_id": token,
            "market": m.condition,
            "bids": [{"price": _dot(p), "size": b.bids[p]} for p in sorted(b.bids)],
            "asks": [{"price": _dot(p), "size": b.asks[p]} for p in sorted(b.asks)],
            "timestamp": str(int(time.time() * 1000)),
            "hash": "0x" + self._hash(token),
            "tick_size": b.tick,
            "last_trade_price": m.last_trade or "",
        }

    async def _send(self, conn: _Conn, text: str) -> None:
        if conn.stalled:
            return
        try:
            await conn.ws.send_text(text)
        except Exception:  # the socket went away: its handler cleans up
            self.conns.discard(conn)

    async def _broadcast(self, tokens: Iterable[str], text: str) -> None:
        ts = set(tokens)
        for conn in list(self.conns):
            if conn.assets & ts:
                await self._send(conn, text)

    # -- scenario controls -------------------------------------------------------------------------
    def _yes_change(self, m: FakeMarket, side: str, price: Decimal, size: str) -> list[dict[str, Any]]:
        """Apply one YES-book change; the message entries for YES and the mirrored NO token."""
        levels = m.book.side(side)
        if price % Decimal(m.book.tick) or not 0 < price < 1:
            raise ValueError(f"{price} is not a valid price at tick {m.book.tick}")
        if Decimal(size) == 0:
            levels.pop(price, None)
        else:
            levels[price] = size
        bid, ask = m.book.best()
        no_side = "SELL" if side == "BUY" else "BUY"
        h = hashlib.sha1(f"{m.yes}:{side}:{price}:{size}:{time.monotonic_ns()}".encode()).hexdigest()
        return [
            {"asset_id": m.yes, "price": fmt(price), "size": size, "side": side, "hash": h,
             "best_bid": fmt(bid) if bid is not None else "0", "best_ask": fmt(ask) if ask is not None else "1"},
            {"asset_id": m.no, "price": fmt(ONE - price), "size": size, "side": no_side, "hash": h,
             "best_bid": fmt(ONE - ask) if ask is not None else "0",
             "best_ask": fmt(ONE - bid) if bid is not None else "1"},
        ]

    async def set_levels(self, token: str, changes: Sequence[tuple[str, str, str]]) -> None:
        """Set levels of *token*'s book — ``(side "BUY"|"SELL", price, size)``, size ``"0"``
        removes — and send them as ONE ``price_change`` (YES and mirrored NO entries)."""
        m = self.markets[token]
        entries: list[dict[str, Any]] = []
        for side, price, size in changes:
            p = Decimal(price)
            if token != m.yes:  # a change on the NO token is the mirrored YES change
                side, p = ("SELL" if side == "BUY" else "BUY"), ONE - p
            entries.extend(self._yes_change(m, side, p, size))
        msg = {"event_type": "price_change", "market": m.condition, "price_changes": entries,
               "timestamp": str(int(time.time() * 1000))}
        await self._broadcast(m.tokens, json.dumps(msg))

    async def set_level(self, token: str, side: str, price: str, size: str) -> None:
        await self.set_levels(token, [(side, price, size)])

    async def change_tick(self, token: str, tick: str) -> None:
        """The market's tick becomes *tick*: levels off a coarser grid are cancelled first
        (``price_change`` to 0), then ``tick_size_change`` goes to every subscribed token."""
        m = self.markets[token]
        old, new = m.book.tick, Decimal(tick)
        off = [(side, p) for side, levels in (("BUY", m.book.bids), ("SELL", m.book.asks))
               for p in levels if p % new]
        if off:
            await self.set_levels(m.yes, [(side, fmt(p), "0") for side, p in off])
        m.book.tick = tick
        ts = str(int(time.time() * 1000))
        for t in m.tokens:
            await self._broadcast([t], json.dumps({"event_type": "tick_size_change", "asset_id": t,
                                                   "market": m.condition, "old_tick_size": old,
                                                   "new_tick_size": tick, "timestamp": ts}))

    async def trade(self, token: str, side: str, size: str) -> tuple[str, str]:
        """A taker *side* (BUY|SELL) of *size* on *token* at its best opposite level:
        ``last_trade_price``, then a fresh ``book`` (the venue re-sends the book after a
        trade). Returns ``(price, size)`` traded."""
        m = self.markets[token]
        b = self.book_of(token)
        levels = b.asks if side == "BUY" else b.bids
        price = min(levels) if side == "BUY" else max(levels)
        left = Decimal(levels[price]) - Decimal(size)
        yes_side, yes_price = ("SELL" if side == "BUY" else "BUY"), price
        if token != m.yes:
            yes_side, yes_price = ("BUY" if side == "BUY" else "SELL"), ONE - price
        self._yes_change(m, yes_side, yes_price, fmt(left) if left > 0 else "0")
        m.last_trade = fmt(yes_price)
        m.volume += float(Decimal(size) * price)
        ts = str(int(time.time() * 1000))
        await self._broadcast([token], json.dumps({
            "event_type": "last_trade_price", "asset_id": token, "market": m.condition, "price": fmt(price),
            "size": size, "side": side, "fee_rate_bps": "0", "timestamp": ts,
            "transaction_hash": "0x" + hashlib.sha256(ts.encode()).hexdigest()}))
        for t in m.tokens:
            await self._broadcast([t], json.dumps([self._book_event(t)]))
        return fmt(price), size

    async def send_raw(self, token: str, payload: Any) -> None:
        """Send *payload* (JSON-encoded unless a str) to every socket subscribed to *token*."""
        await self._broadcast([token], payload if isinstance(payload, str) else json.dumps(payload))

    def hide_books(self, *tokens: str) -> None:
        """Subscribing to these tokens sends no ``book`` (the client must ask REST)."""
        self.hidden.update(tokens)

    def remove_book(self, *tokens: str) -> None:
        """These tokens' order books are gone: REST answers 404, subscribing sends no book."""
        self.missing.update(tokens)

    def stall(self) -> None:
        """Every open socket goes silent (stays open, sends nothing, not even PONG)."""
        for c in self.conns:
            c.stalled = True

    async def disconnect(self) -> int:
        """Drop every socket abruptly (TCP abort, no close frame); returns how many."""
        n = 0
        for c in list(self.conns):
            self.conns.discard(c)
            transport = _transport(c.ws)
            if transport is not None:
                transport.abort()
            else:  # pragma: no cover - a server without a reachable transport
                with contextlib.suppress(Exception):
                    await c.ws.close(code=1011)
            n += 1
        return n

    def throttle_next(self, n: int, delay_s: float) -> None:
        """Delay the next *n* REST calls by *delay_s* each (the venue throttles, it does not refuse)."""
        self._throttle.extend([delay_s] * n)

    def reject_next(self, n: int, status: int = 429) -> None:
        """Answer the next *n* REST calls with *status* and no ``Retry-After``."""
        self._reject.extend([status] * n)

    async def blast(self, token: str, n: int, per_message: int = 1) -> list[tuple[int, str, str]]:
        """Benchmark: *n* level changes on *token* as fast as the sockets take them, *per_message*
        changes per ``price_change``. Sizes cycle over the book's existing bid levels (the book
        stays valid, and ends equal to what was sent); YES entries only (no NO mirror, to measure
        the YES path). Frames are built first, then written straight into uvicorn's connection
        (its flow control respected). Returns ``[(time.monotonic_ns() just before the frame's
        send, price, size), ...]`` per change, prices and sizes as sent (venue strings)."""
        m = self.markets[token]
        prices = sorted(m.book.bids) or [Decimal(m.book.tick)]
        conns = [c for c in self.conns if c.assets & set(m.tokens)]
        frames: list[tuple[str, list[tuple[str, str]]]] = []  # built first: the send loop only sends
        ts = str(int(time.time() * 1000))
        for i in range(0, n, per_message):
            changes = []
            for j in range(i, min(n, i + per_message)):
                p = prices[j % len(prices)]
                size = f"{100 + j % 997}.{j % 100:02d}"
                m.book.bids[p] = size
                changes.append((fmt(p), size))
            entries = [{"asset_id": m.yes, "price": price, "size": size, "side": "BUY", "hash": "0x",
                        "best_bid": "0", "best_ask": "1"} for price, size in changes]
            frames.append((json.dumps({"event_type": "price_change", "market": m.condition,
                                       "price_changes": entries, "timestamp": ts}), changes))
        senders = [_fast_send(c) for c in conns if not c.stalled]
        out: list[tuple[int, str, str]] = []
        for text, changes in frames:
            stamp = time.monotonic_ns()
            for send in senders:
                await send(text)
            out.extend((stamp, price, size) for price, size in changes)
        return out


def _protocol(ws: WebSocket) -> Any:
    """uvicorn's protocol object under a Starlette WebSocket (it owns the TCP transport)."""
    fn: Any = ws._send
    for _ in range(6):
        owner = getattr(fn, "__self__", None)
        if owner is not None and hasattr(owner, "transport"):
            return owner
        cells = getattr(fn, "__closure__", None) or ()
        nxt = next((c.cell_contents for c in cells if callable(c.cell_contents)), None)
        if nxt is None:
            return None
        fn = nxt
    return None


def _transport(ws: WebSocket) -> Any:
    """The TCP transport under a Starlette WebSocket on uvicorn (for an abrupt drop)."""
    proto = _protocol(ws)
    return None if proto is None else proto.transport


def _fast_send(conn: _Conn) -> Any:
    """A text sender for the benchmark that skips the ASGI layers: frames straight into
    uvicorn's websockets (sans-I/O) connection, honouring its flow control. Falls back to
    ``send_text`` on another server."""
    proto = _protocol(conn.ws)
    if proto is None or not hasattr(proto, "conn") or not hasattr(proto, "writable"):
        return conn.ws.send_text

    async def send(text: str) -> None:
        if not proto.writable.is_set():
            await proto.writable.wait()
        proto.conn.send_text(text.encode())
        proto.transport.write(b"".join(proto.conn.data_to_send()))

    return send
