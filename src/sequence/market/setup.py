"""The market service the settings describe.

Each venue is simulated, live, replayed or off (``SEQUENCE_VENUES``); with a
recording (``SEQUENCE_MARKET_REPLAY``) every venue that would be simulated
replays instead. Live connectors are
imported only when a venue is live, so the default never loads them.
"""

from __future__ import annotations

from pathlib import Path

from sequence.settings import Settings, SettingsError

from .clock import Clock, RealClock
from .service import SIM_VENUES, MarketService
from .venues.base import VenueAdapter
from .venues.live import LiveConfig, live_venue
from .venues.replay import ReplayVenue
from .venues.sim import SimConfig


def live_config(settings: Settings, venue: str) -> LiveConfig:
    """One live venue's connector settings (its URLs, Kalshi's market-data key)."""
    urls: dict[str, str] = {}
    key_id = pem = None
    if venue == "polymarket":
        urls["gamma"] = settings.polymarket_gamma_url
    if venue == "kalshi" and settings.kalshi_key_id and settings.kalshi_private_key_file:
        key_id, pem = settings.kalshi_key_id, _read_key(settings.kalshi_private_key_file)
    return LiveConfig(
        venue=venue,
        api_url=getattr(settings, f"{venue}_api_url"),
        ws_url=getattr(settings, f"{venue}_ws_url"),
        urls=urls,
        key_id=key_id,
        private_key_pem=pem,
        catalogue_every_s=settings.live_catalogue_seconds,
        max_markets=settings.live_max_markets or None,
    )


def _read_key(path: Path) -> str:
    # Read at start-up so a wrong path stops `sequence up` with the setting's name,
    # not a connector that quietly polls. The key never goes into logs or status.
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"SEQUENCE_KALSHI_PRIVATE_KEY_FILE: cannot read {path}: {exc}") from None


def venue_modes(settings: Settings) -> dict[str, str]:
    """Each venue's source; with a recording, every venue that would be simulated replays."""
    modes = dict(settings.venues)
    if settings.market_replay is not None:
        modes = {v: "replay" if m == "sim" else m for v, m in modes.items()}
    return modes


def build_market(settings: Settings, *, clock: Clock | None = None) -> MarketService:
    """Per venue: the simulator (seeded with ``market_seed`` at ``market_rate_hz``), the
    live venue, the recording ``market_replay``, or nothing."""
    clock = clock or RealClock()
    modes = venue_modes(settings)
    adapters: list[VenueAdapter] = []
    replayed = [v for v, m in modes.items() if m == "replay"]
    if replayed:
        assert settings.market_replay is not None  # Settings.validate
        everything = len(replayed) == len(modes)
        adapters.append(ReplayVenue(settings.market_replay, clock=clock, venues=None if everything else replayed))
    sim = SimConfig(seed=settings.market_seed, rate_hz=settings.market_rate_hz)
    for venue, mode in modes.items():
        if mode == "sim":
            adapters.append(SIM_VENUES[venue](clock, sim))
        elif mode == "live":
            adapters.append(live_venue(live_config(settings, venue), clock))
    return MarketService(adapters, clock=clock)


__all__ = ["build_market", "live_config", "venue_modes"]
