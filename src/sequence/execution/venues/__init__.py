"""Venue order routing: one adapter per venue behind :class:`~.base.OrderVenue` (see base.py).

Each adapter lives in its own module, imported only when a client trades on
that venue for real, so paper trading and the simulators never load them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping

import httpx

from sequence.settings import Settings

from .base import (
    AccountInfo,
    AuthFailed,
    OrderConfig,
    OrderError,
    OrderRejected,
    OrderRequest,
    OrderVenue,
    OutcomeUnknown,
    VenueFill,
    VenueOrder,
    client_order_id,
)

#: venue -> "module:class" of its order adapter.
ORDER_VENUES = {
    "kalshi": "sequence.execution.venues.kalshi:KalshiOrders",
    "polymarket": "sequence.execution.venues.polymarket:PolymarketOrders",
    "coinbase": "sequence.execution.venues.coinbase:CoinbaseOrders",
}


def order_config(settings: Settings, venue: str) -> OrderConfig:
    """One venue's order API endpoints from the settings (the same hosts as its market data;
    Kalshi's orders and fills share its one WebSocket)."""
    if venue == "kalshi":
        return OrderConfig("kalshi", settings.kalshi_api_url, settings.kalshi_ws_url)
    if venue == "polymarket":
        return OrderConfig("polymarket", settings.polymarket_api_url, settings.polymarket_user_ws_url,
                           urls={"gamma": settings.polymarket_gamma_url})
    if venue == "coinbase":
        return OrderConfig("coinbase", settings.coinbase_api_url, settings.coinbase_user_ws_url)
    raise ValueError(f"no order adapter for {venue!r}; expected one of {sorted(ORDER_VENUES)}")


def order_venue(credentials: Mapping[str, str], config: OrderConfig, *,
                http: httpx.AsyncClient | None = None) -> OrderVenue:
    """The order adapter for ``config.venue`` with one client's credentials."""
    try:
        target = ORDER_VENUES[config.venue]
    except KeyError:
        raise ValueError(f"no order adapter for {config.venue!r}; expected one of {sorted(ORDER_VENUES)}") from None
    module, _, name = target.partition(":")
    limit = sys.getrecursionlimit()
    try:
        cls: type[OrderVenue] = getattr(importlib.import_module(module), name)
    finally:
        # py_ecc (imported under Polymarket's signing libraries) raises the interpreter's
        # recursion limit to 100,000 at import. With it, a hostile deeply nested JSON body makes
        # the parser overflow the C stack: the coordinator crashes instead of answering 400.
        sys.setrecursionlimit(limit)
    return cls(credentials, config, http=http)


__all__ = [
    "ORDER_VENUES",
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
    "order_config",
    "order_venue",
]
