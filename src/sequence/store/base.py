"""What the store's aggregates share: the database, the clock, the lease and log
settings (:class:`StoreBase`), and a row as a plain dict (:func:`row`).

Each aggregate's verbs are a mixin over :class:`StoreBase` (:mod:`.keys`,
:mod:`.strategies`, :mod:`.runs`, :mod:`.logs`); :class:`sequence.store.store.Store`
is all of them in one object.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from sequence.store.db import Database


def row(r: Any) -> dict[str, Any]:
    """A result row as a plain dict."""
    return dict(r._mapping)


class StoreBase:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time, lease_seconds: float = 12.0,
                 log_retention_bytes: int = 0) -> None:
        self.db = db
        self.clock = clock
        self.lease_seconds = lease_seconds
        # Per strategy, 0 = unlimited.  Checked once a strategy has sent an eighth of
        # it since the last check (per process), not on every batch.
        self.log_retention_bytes = log_retention_bytes
        self._log_bytes_unchecked: dict[str, int] = {}
        # Until then no lease is charged: see RunsStore.begin_lease_grace.
        self.lease_grace_until = float("-inf")
        # Runners whose watch closed during that grace (RunsStore.watch_closed): id -> until.
        self._watch_cut: dict[str, float] = {}

    def notify(self, channel: str) -> None:
        """Tell every coordinator replica on this (PostgreSQL) database (:meth:`Database.notify`)."""
        self.db.notify(channel)

    def listen(self, channel: str, stop: threading.Event) -> Iterator[str]:
        """Notifications from the replicas (:meth:`Database.listen`)."""
        return self.db.listen(channel, stop)


__all__ = ["StoreBase", "row"]
