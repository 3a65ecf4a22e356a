"""Live venue connectors: Kalshi, Polymarket and Coinbase market data (see base.py).

Each connector lives in its own module and is imported only when a venue is
switched to live, so the simulator-only default never loads WebSocket or
crypto code.
"""

from __future__ import annotations

import importlib

from ...clock import Clock
from .base import Backoff, LiveConfig, LiveVenue, Sink, Stalled, TokenBucket, VenueError, units

#: venue -> "module:class" of its live connector.
LIVE_VENUES = {
    "kalshi": "sequence.market.venues.live.kalshi:KalshiLive",
    "polymarket": "sequence.market.venues.live.polymarket:PolymarketLive",
    "coinbase": "sequence.market.venues.live.coinbase:CoinbaseLive",
}


def live_venue(config: LiveConfig, clock: Clock) -> LiveVenue:
    """The live connector for ``config.venue``."""
    try:
        target = LIVE_VENUES[config.venue]
    except KeyError:
        raise ValueError(f"no live connector for {config.venue!r}; expected one of {sorted(LIVE_VENUES)}") from None
    module, _, name = target.partition(":")
    cls: type[LiveVenue] = getattr(importlib.import_module(module), name)
    return cls(config, clock=clock)


__all__ = [
    "LIVE_VENUES",
    "Backoff",
    "LiveConfig",
    "LiveVenue",
    "Sink",
    "Stalled",
    "TokenBucket",
    "VenueError",
    "live_venue",
    "units",
]
