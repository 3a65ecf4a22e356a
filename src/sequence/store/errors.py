"""What the store's verbs raise.

Exceptions::

    StoreError
     ├── NotFound          no such object for this client
     ├── Conflict          the move is not allowed now (state machine, races)
     └── StaleWrite        a runner write whose (run_id, epoch) is not current

The trading verbs (:mod:`sequence.store.trading`) have their own:
``Fenced`` and ``IdempotencyConflict``.
"""

from __future__ import annotations


class StoreError(Exception):
    pass


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


class StaleWrite(StoreError):
    pass


class QuotaExceeded(StoreError):
    """A client already has the most objects of a kind it may have."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit}")
        self.limit = limit


__all__ = ["Conflict", "NotFound", "QuotaExceeded", "StaleWrite", "StoreError"]
