"""The graph engine's store writer: one thread commits the decision steps, in order.

Each step the engine takes produces one
:class:`~sequence.store.trading.TradeBatch` — fills, node and graph status,
the nodes they trigger. The writer commits it in **one transaction** on its
single thread, in the order the steps were taken, retries a failed commit
(three attempts, 50 ms then 200 ms apart), and only after the commit runs the
step's ``then`` (the engine publishes its stream messages there), so a client
that sees a fill on the stream can read it back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import anyio

from sequence.store.trading import TradeBatch, TradingStore

log = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 3


class Writer:
    def __init__(self, store: TradingStore) -> None:
        self.store = store
        self._pool: ThreadPoolExecutor | None = None
        self._pending: set[asyncio.Future[None]] = set()

    def start(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trading-writer")

    async def stop(self) -> None:
        """Wait for the commits in flight, then end the thread."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await anyio.to_thread.run_sync(lambda: pool.shutdown(wait=True))

    def commit(self, loop: asyncio.AbstractEventLoop, batch: TradeBatch,
               then: Callable[[], None]) -> asyncio.Future[None]:
        """Queue ``batch``; ``then()`` runs on the loop once it is committed (not if it failed)."""
        if self._pool is None:
            raise RuntimeError("the trading engine is not started")
        fut: asyncio.Future[None] = loop.run_in_executor(self._pool, self._commit_sync, batch)
        self._pending.add(fut)

        def _done(f: asyncio.Future[None]) -> None:
            self._pending.discard(f)
            if f.cancelled() or f.exception() is not None:
                return
            then()

        fut.add_done_callback(_done)
        return fut

    async def flush(self) -> None:
        """Wait until every batch queued so far is committed (or has failed)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def _commit_sync(self, batch: TradeBatch) -> None:
        delay = 0.05
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                self.store.commit(batch)
                return
            except Exception:
                if attempt == COMMIT_ATTEMPTS:
                    log.exception("trading: could not commit %d fill(s), %d node and %d graph update(s)",
                                  len(batch.fills), len(batch.nodes), len(batch.graphs))
                    raise
                log.warning("trading: commit failed (attempt %d), retrying", attempt, exc_info=True)
                time.sleep(delay)
                delay *= 4
