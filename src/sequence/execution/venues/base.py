"""What every venue order adapter offers the graph engine: place, cancel, look up, backfill, listen.

One :class:`OrderVenue` per (client, venue): it holds that client's venue
credentials (unsealed in memory only) and speaks the venue's order API. The
engine never sees a venue's wire format; it sends :class:`OrderRequest` s and
receives :class:`VenueOrder` (an order's state at the venue) and
:class:`VenueFill` (one execution) — from the answers to its calls and from
the venue's user channel (:meth:`OrderVenue.events`).

Exactly once
------------
Every request carries a ``client_order_id`` derived from the graph, node and
attempt (:func:`client_order_id`): the same node attempt always maps to the
same id. When :meth:`OrderVenue.place` cannot tell whether the venue took the
order (a timeout, a dropped connection, a 5xx) it raises
:class:`OutcomeUnknown`, never retries on its own, and the engine asks
:meth:`OrderVenue.lookup` with the same id before anything else is sent. An
adapter whose venue has no client order id (Polymarket) makes the venue's own
order id a pure function of the request (a deterministic salt, so the signed
order and its hash are the same on every attempt) and looks that up.

Fills are identified by the venue's own fill/trade id
(:attr:`VenueFill.fill_id`): the engine deduplicates on it across the user
channel, reconnects and REST backfill (:meth:`OrderVenue.fills`).

Units
-----
Prices and quantities are :class:`~decimal.Decimal` in the instrument's own
terms: a Kalshi or Polymarket price is dollars per contract/share of the
outcome the request names (a NO buy at 0.40 is priced 0.40, the adapter maps
it to the venue's YES-leg ask at 0.60 where the venue wants that); a Coinbase
price is quote currency per base unit; quantities are contracts, shares or
base units. Fees are in dollars (quote currency).
"""

from __future__ import annotations

import asyncio
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Literal

import httpx

__all__ = [
    "AccountInfo",
    "AuthFailed",
    "OrderConfig",
    "OrderError",
    "OrderRejected",
    "OrderRequest",
    "OrderVenue",
    "OutcomeUnknown",
    "VenueFill",
    "VenueOrder",
    "client_order_id",
]

Side = Literal["buy", "sell"]
TimeInForce = Literal["gtc", "ioc", "fok"]
OrderStatus = Literal["pending", "open", "filled", "cancelled", "rejected"]

#: Namespace of the client order ids Sequence derives (uuid5 of the node's order id).
_NAMESPACE = uuid.UUID("6f1e3d2a-5b7c-4e8f-9a0b-1c2d3e4f5a6b")


def client_order_id(node_order_id: str) -> str:
    """The venue's client order id for one node attempt (``graph:{graph}:{node}:{n}``): a UUID,
    which every venue accepts, and the same UUID on every retry of that attempt."""
    return str(uuid.uuid5(_NAMESPACE, node_order_id))


class OrderError(Exception):
    """Base of what an adapter raises."""


class OrderRejected(OrderError):
    """The venue refused the order or the cancel; it does not exist there. ``reason`` is the
    venue's own words (shown to the user), ``code`` a short machine code (``insufficient_balance``,
    ``price_off_tick``, ``rate_limited``, ``venue_rejected`` …)."""

    def __init__(self, reason: str, code: str = "venue_rejected") -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code


class OutcomeUnknown(OrderError):
    """The request may or may not have reached the venue (timeout, connection lost, 5xx):
    look the order up by its client order id before sending anything else for it."""


class AuthFailed(OrderError):
    """The venue refused the credentials (401/403, a bad key or signature)."""


@dataclass(frozen=True)
class OrderConfig:
    """Where one venue's order API lives. Every URL is a setting (tests use local servers)."""

    venue: str
    api_url: str  # REST base, e.g. https://external-api.kalshi.com/trade-api/v2
    user_ws_url: str | None = None  # the venue's user (orders/fills) channel
    urls: Mapping[str, str] = field(default_factory=dict)  # venue-specific extras
    timeout_s: float = 5.0  # one request; past it the outcome is unknown
    writes_per_s: float | None = None  # None: the venue's documented tier
    burst: int | None = None


@dataclass(frozen=True)
class OrderRequest:
    """One order to place. ``symbol`` is the venue's instrument (Kalshi ticker, Polymarket
    token id, Coinbase product id); ``outcome`` is ``yes``/``no`` on prediction venues."""

    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal | None  # a limit; None only where the venue has market orders (Coinbase)
    tif: TimeInForce = "gtc"
    post_only: bool = False
    outcome: Literal["yes", "no"] | None = None
    #: What the venue needs to build the order (Polymarket: ``tick_size``, ``neg_risk``).
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VenueOrder:
    """An order as the venue reports it."""

    client_order_id: str | None
    venue_order_id: str
    status: OrderStatus
    symbol: str = ""
    filled_qty: Decimal = Decimal(0)
    remaining_qty: Decimal = Decimal(0)
    reason: str | None = None  # why it was rejected or cancelled, in the venue's words
    ts_ms: int = 0


@dataclass(frozen=True)
class VenueFill:
    """One execution of one of our orders. ``fill_id`` is the venue's id for it (dedupe key)."""

    fill_id: str
    venue_order_id: str
    client_order_id: str | None
    symbol: str
    side: Side
    price: Decimal  # in the request's terms (the outcome's price; quote per base unit)
    qty: Decimal
    fee: Decimal = Decimal(0)
    is_taker: bool = True
    ts_ms: int = 0
    outcome: Literal["yes", "no"] | None = None


@dataclass(frozen=True)
class AccountInfo:
    """What ``sequence connect`` shows after checking credentials with the venue."""

    account: str  # an identifier the user recognises (member id, wallet address, portfolio)
    balances: Mapping[str, Decimal] = field(default_factory=dict)  # currency -> available


OrderEvent = VenueOrder | VenueFill


class OrderVenue(ABC):
    """A venue's order API for one client's credentials."""

    venue: ClassVar[str]

    def __init__(self, credentials: Mapping[str, str], config: OrderConfig, *,
                 http: httpx.AsyncClient | None = None) -> None:
        self.credentials = dict(credentials)
        self.config = config
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(timeout=config.timeout_s)

    def __repr__(self) -> str:  # never the credentials
        return f"<{type(self).__name__} {self.config.api_url}>"

    @abstractmethod
    async def check(self) -> AccountInfo:
        """One cheap authenticated call (a balance): :class:`AuthFailed` if refused."""

    @abstractmethod
    async def place(self, req: OrderRequest) -> VenueOrder:
        """Send one order. Returns the venue's ack (``open``, or ``filled`` when it crossed at
        once — the fills themselves come from :meth:`events`/:meth:`fills`). Raises
        :class:`OrderRejected` (the order does not exist) or :class:`OutcomeUnknown`."""

    @abstractmethod
    async def cancel(self, venue_order_id: str) -> VenueOrder:
        """Cancel one order. An order already gone (filled, cancelled) is not an error: the
        answer says its final status. Raises :class:`OutcomeUnknown` when unsure."""

    @abstractmethod
    async def lookup(self, client_order_id: str) -> VenueOrder | None:
        """The order this client order id names, or None if the venue never took it."""

    @abstractmethod
    async def open_orders(self) -> list[VenueOrder]:
        """Every open order of this account (reconciliation, the kill switch)."""

    @abstractmethod
    async def fills(self, since_ms: int) -> list[VenueFill]:
        """Our fills since *since_ms* (every page), oldest first."""

    @abstractmethod
    def events(self) -> AsyncIterator[VenueOrder | VenueFill]:
        """The user channel: order updates and fills as they happen. Reconnects by itself; after
        a reconnect the engine backfills with :meth:`fills` (duplicates are expected)."""

    async def cancel_many(self, venue_order_ids: list[str]) -> Sequence[VenueOrder | OrderError]:
        """Cancel several orders (the kill switch); one answer per id, in order: the order's
        final state, or the error for that id. Venues with a batch cancel override this."""
        results = await asyncio.gather(*(self.cancel(v) for v in venue_order_ids), return_exceptions=True)
        out: list[VenueOrder | OrderError] = []
        for r in results:
            if isinstance(r, VenueOrder | OrderError):
                out.append(r)
            elif isinstance(r, BaseException):
                out.append(OutcomeUnknown(f"{type(r).__name__}: {r}"))
        return out

    async def learn(self, req: OrderRequest) -> None:
        """After a restart: learn an order this adapter placed before, so that :meth:`lookup` and
        the user channel recognise it (Polymarket recomputes the order's id from the request).
        Nothing to do for venues with client order ids."""
        return None

    async def set_working(self, working: bool) -> None:
        """The account has (or no longer has) working orders: venues with a dead-man switch
        (Polymarket's heartbeat) keep it alive while it does."""
        return None

    async def close(self) -> None:
        if self._own_http:
            await self.http.aclose()
