"""Attach the market service and routes to the coordinator app.

``sequence.api.app.create_app`` imports this module when present and calls
:func:`attach`. Settings read (by name, so this module does not depend on the
settings class): ``market_seed``, ``market_replay`` (a recording path; replaces
the simulators) and ``market_rate_hz`` (wake-ups per second of the most liquid
simulated markets).
"""

from __future__ import annotations

from typing import Any

from .clock import Clock
from .routes import install_error_handler, install_routes
from .service import MarketService
from .venues.sim import BASE_RATE_HZ, SimConfig


def build_service(settings: Any, *, clock: Clock | None = None) -> MarketService:
    """The market service the settings describe: a replay, or the seeded simulators."""
    replay = getattr(settings, "market_replay", None)
    if replay:
        return MarketService.from_recording(replay, clock=clock)
    config = SimConfig(
        seed=int(getattr(settings, "market_seed", 0) or 0),
        rate_hz=float(getattr(settings, "market_rate_hz", BASE_RATE_HZ) or BASE_RATE_HZ),
    )
    return MarketService.simulated(config=config, clock=clock)


def attach(app: Any, core: Any, settings: Any, market: MarketService | None = None) -> MarketService:
    """Build (unless given) the service, expose it as ``core.market`` and ``app.state.market``,
    include the market routes (ahead of the others: /v1/quotes is the hot path) and the
    ``MarketError`` handler. The app's lifespan starts the service."""
    service = market if market is not None else build_service(settings)
    core.market = service
    app.state.market = service
    install_routes(app)
    install_error_handler(app)
    return service
