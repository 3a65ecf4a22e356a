"""The graph engine with real-order routing: which venues trade for real, and whose credentials.

A venue in ``live`` mode (``SEQUENCE_VENUES``) routes real orders — a
``seq_live_`` key's graphs without ``sandbox`` — to the venue, with the
client's own credentials (``sequence connect``), unsealed only when its
adapter is made. Simulated and replayed venues keep matching real orders in
their own books, as before. Paper orders never reach a venue, whatever the
mode (the engine decides before the router is asked).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sequence.api.state import Core
from sequence.execution.engine import TradingEngine
from sequence.execution.router import OrderRouter
from sequence.execution.venues import order_config
from sequence.market.service import MarketService
from sequence.secrets import Sealed, venue_credentials_label
from sequence.store.controls import ControlsStore
from sequence.store.trading import TradingStore
from sequence.trading.fees import FeeSchedule

log = logging.getLogger("sequence.orders")


def credentials_loader(core: Core) -> Any:
    """``(client_id, venue) -> credentials | None``: read and unseal (runs in a thread)."""

    def load(client_id: str, venue: str) -> Mapping[str, str] | None:
        row = core.store.sealed_venue_credentials(client_id, venue)
        if row is None:
            return None
        value = core.keyring.unseal_json(Sealed(row["ciphertext"], row["nonce"], row["key_id"]),
                                         venue_credentials_label(client_id, venue))
        return value if isinstance(value, dict) else None

    return load


def build_engine(core: Core, service: MarketService) -> TradingEngine:
    """The engine over *service*; real orders on the live venues go to those venues."""
    live = [v for v, mode in core.settings.venues.items() if mode == "live"]
    router = None
    if live:
        router = OrderRouter({v: order_config(core.settings, v) for v in live}, credentials_loader(core))
        log.info("real orders route to: %s", ", ".join(live))
    return TradingEngine(TradingStore(core.store.db), service, fees=FeeSchedule.from_mapping(core.settings.trading_fees),
                         router=router, controls=ControlsStore(core.store.db))


__all__ = ["build_engine", "credentials_loader"]
