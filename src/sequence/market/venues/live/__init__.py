"""Live venue connectors: Kalshi, Polymarket and Coinbase market data (see base.py)."""

from .base import Backoff, LiveConfig, LiveVenue, Sink, Stalled, TokenBucket, VenueError, units

__all__ = ["Backoff", "LiveConfig", "LiveVenue", "Sink", "Stalled", "TokenBucket", "VenueError", "units"]
