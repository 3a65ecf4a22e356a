"""The coordinator's shared objects, reachable from every route as ``app.state.core``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sequence.api.auth import Authenticator
from sequence.api.notify import Notifier
from sequence.secrets import Keyring
from sequence.settings import Settings
from sequence.store.store import Store

if TYPE_CHECKING:
    from sequence.execution.engine import TradingEngine
    from sequence.market.service import MarketService


@dataclass
class Core:
    settings: Settings
    store: Store
    keyring: Keyring
    auth: Authenticator
    notifier: Notifier
    #: The market service (venues, books, the stream hub); None in an app built without it.
    market: MarketService | None = None
    #: The graph engine; set with the market service.
    trading: TradingEngine | None = None


def core_of(app: Any) -> Core:
    core: Core = app.state.core
    return core
