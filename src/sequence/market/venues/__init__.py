"""Venue adapters: deterministic simulators, a replay source, and the interface they share."""

from .base import VenueAdapter
from .replay import ReplayVenue
from .sim import SimConfig, SimParams, SimVenue
from .sim_coinbase import SimCoinbase
from .sim_kalshi import SimKalshi
from .sim_polymarket import SimPolymarket

__all__ = [
    "ReplayVenue",
    "SimCoinbase",
    "SimConfig",
    "SimKalshi",
    "SimParams",
    "SimPolymarket",
    "SimVenue",
    "VenueAdapter",
]
