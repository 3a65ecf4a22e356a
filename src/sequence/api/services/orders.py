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

import httpx

from sequence.api.errors import ApiError, bad_request
from sequence.api.state import Core
from sequence.execution.engine import TradingEngine
from sequence.execution.router import OrderRouter
from sequence.execution.venues import (
    AuthFailed,
    OrderRejected,
    OutcomeUnknown,
    order_config,
    order_venue,
)
from sequence.market.service import MarketService
from sequence.secrets import Sealed, venue_credentials_label
from sequence.settings import Settings
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


async def check_credentials(settings: Settings, venue: str, credentials: Mapping[str, str]) -> dict[str, Any]:
    """One cheap authenticated call to *venue* with *credentials* (``sequence connect``): what
    the venue says of the account, or an :class:`ApiError` saying why they cannot be used."""
    try:
        adapter = order_venue(credentials, order_config(settings, venue))
    except Exception as exc:  # key material that does not parse (AuthFailed, ValueError …)
        raise bad_request(f"these {venue} credentials cannot be used: {exc}", "body") from None
    try:
        info = await adapter.check()
    except AuthFailed as exc:
        raise bad_request(f"{venue} refused these credentials: {exc}", "body") from None
    except (OutcomeUnknown, OrderRejected, httpx.HTTPError, OSError) as exc:
        raise ApiError(502, "venue_unreachable", f"could not check the credentials with {venue}: {exc}; "
                       "retry, or store them unchecked with ?check=false", {"venue": venue}) from None
    except ValueError as exc:
        raise bad_request(f"these {venue} credentials cannot be used: {exc}", "body") from None
    finally:
        await adapter.close()
    return {"account": info.account, "balances": {k: str(v) for k, v in info.balances.items()}}


def build_engine(core: Core, service: MarketService) -> TradingEngine:
    """The engine over *service*; real orders on the live venues go to those venues."""
    live = [v for v, mode in core.settings.venues.items() if mode == "live"]
    router = None
    if live:
        router = OrderRouter({v: order_config(core.settings, v) for v in live}, credentials_loader(core))
        log.info("real orders route to: %s", ", ".join(live))
    return TradingEngine(TradingStore(core.store.db), service, fees=FeeSchedule.from_mapping(core.settings.trading_fees),
                         router=router, controls=ControlsStore(core.store.db))


__all__ = ["build_engine", "check_credentials", "credentials_loader"]
