"""The coordinator's shared objects, reachable from every route as ``app.state.core``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sequence.api.auth import Authenticator
from sequence.api.notify import Notifier
from sequence.secrets import Keyring
from sequence.settings import Settings
from sequence.store.store import Store

if TYPE_CHECKING:
    from sequence.algos.manager import AlgoManager
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
    #: The WASM algos running in this coordinator; set with the market service.
    algos: AlgoManager | None = None
    #: The latest memory and CPU of each active run, as its runner's heartbeats report them
    #: (run id -> ``{rss_bytes, cpu_seconds, cpu_percent, at}``); in memory, for the dashboard.
    run_usage: dict[str, dict[str, Any]] = field(default_factory=dict)


def core_of(app: Any) -> Core:
    core: Core = app.state.core
    return core
