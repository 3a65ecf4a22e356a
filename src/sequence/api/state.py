"""The coordinator's shared objects, reachable from every route as ``app.state.core``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sequence.api.auth import Authenticator
from sequence.api.notify import Notifier
from sequence.secrets import Keyring
from sequence.settings import Settings
from sequence.store.store import Store


@dataclass
class Core:
    settings: Settings
    store: Store
    keyring: Keyring
    auth: Authenticator
    notifier: Notifier
    market: Any = None
    trading: Any = None


def core_of(app: Any) -> Core:
    core: Core = app.state.core
    return core
