"""The store: domain verbs over the tables.  Everything above the store speaks
these verbs; nothing above it writes SQL.

:class:`Store` is one object made of one mixin per aggregate:

* :mod:`.keys` — clients, API keys, runner tokens, venue credentials, and the
  sealed columns' bulk read and write for key rotation;
* :mod:`.strategies` — deploy, start, stop, delete, artifacts;
* :mod:`.runs` — runners, claims, heartbeats and leases, exits;
* :mod:`.logs` — log ingest, retention and reads;
* :mod:`.layers` — dependency layers: locks, wheels stored once, garbage collection;
* :mod:`.algos` — WASM algo deployments, which coordinator runs each, their logs.

Trading (graphs, fills, positions) is a separate object,
:class:`sequence.store.trading.TradingStore`. The engine and transactions are
:mod:`.db`; the errors are :mod:`.errors`::

    StoreError
     ├── NotFound          no such object for this client
     ├── Conflict          the move is not allowed now (state machine, races)
     └── StaleWrite        a runner write whose (run_id, epoch) is not current

This module is the one callers import from: every name they use is here.
"""

from __future__ import annotations

from sequence.store.algos import AlgosStore
from sequence.store.base import StoreBase
from sequence.store.errors import Conflict, NotFound, QuotaExceeded, StaleWrite, StoreError
from sequence.store.keys import KeysStore, Principal
from sequence.store.layers import LayersStore
from sequence.store.logs import LOG_LINE_OVERHEAD, LogColumns, LogsStore
from sequence.store.runs import ExitReport, RunsStore
from sequence.store.strategies import StrategiesStore


class Store(KeysStore, StrategiesStore, RunsStore, LogsStore, LayersStore, AlgosStore, StoreBase):
    """Every storage verb but trading's, on one database (see the module docstring)."""


__all__ = [
    "LOG_LINE_OVERHEAD",
    "Conflict",
    "ExitReport",
    "LogColumns",
    "NotFound",
    "Principal",
    "QuotaExceeded",
    "StaleWrite",
    "Store",
    "StoreError",
]
