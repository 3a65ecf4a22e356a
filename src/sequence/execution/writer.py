"""The graph engine's store writer: one thread commits the decision steps, in order.

Each step the engine takes produces one
:class:`~sequence.store.trading.TradeBatch` — fills, node and graph status,
the nodes they trigger. The writer commits it on its single thread, in the
order the steps were taken, retries a failed commit (three attempts, 50 ms
then 200 ms apart), and only after the commit runs the step's ``then`` (the
engine publishes its stream messages there), so a client that sees a fill on
the stream can read it back.

**Group commit.** The steps of one turn of the event loop (a busy book: an
algo's order on every tick, a re-match that fills many orders) go to the
thread together, at the end of the turn, and are written in **one
transaction**, in order. Each step is still all-or-nothing (they share the
transaction), and each ``then`` runs in order once it is committed. One
transaction instead of one per step is less time on the disk and far less
time holding the GIL, which the loop thread — matching the next order — then
does not wait for.
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

_Item = tuple[TradeBatch, Callable[[], None], "asyncio.Future[None]"]


class Writer:
    def __init__(self, store: TradingStore) -> None:
        self.store = store
        self._pool: ThreadPoolExecutor | None = None
        self._pending: set[asyncio.Future[None]] = set()
        self._queued: list[_Item] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trading-writer")

    async def stop(self) -> None:
        """Wait for the commits in flight, then end the thread."""
        await self.flush()
        pool, self._pool = self._pool, None
        if pool is not None:
            await anyio.to_thread.run_sync(lambda: pool.shutdown(wait=True))

    def commit(self, loop: asyncio.AbstractEventLoop, batch: TradeBatch,
               then: Callable[[], None]) -> asyncio.Future[None]:
        """Queue ``batch``; ``then()`` runs on the loop once it is committed (not if it failed)."""
        if self._pool is None:
            raise RuntimeError("the trading engine is not started")
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        if not self._queued:  # the first of this turn: send the group when the turn ends
            self._loop = loop
            loop.call_soon(self._send)
        self._queued.append((batch, then, fut))
        return fut

    def _send(self) -> None:
        group, self._queued = self._queued, []
        if not group:
            return
        assert self._pool is not None and self._loop is not None
        loop = self._loop
        done = loop.run_in_executor(self._pool, self._commit_sync, [b for b, _, _ in group])

        def _done(f: asyncio.Future[None]) -> None:
            exc = None if f.cancelled() else f.exception()
            for _batch, then, fut in group:
                if fut.done():
                    continue
                if f.cancelled():
                    fut.cancel()
                elif exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(None)
                    then()

        done.add_done_callback(_done)

    async def flush(self) -> None:
        """Wait until every batch queued so far is committed (or has failed)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def _commit_sync(self, batches: list[TradeBatch]) -> None:
        delay = 0.05
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                self.store.commit_all(batches)
                return
            except Exception:
                if attempt == COMMIT_ATTEMPTS:
                    log.exception("trading: could not commit %d step(s): %d fill(s), %d node and %d graph update(s)",
                                  len(batches), sum(len(b.fills) for b in batches),
                                  sum(len(b.nodes) for b in batches), sum(len(b.graphs) for b in batches))
                    raise
                log.warning("trading: commit failed (attempt %d), retrying", attempt, exc_info=True)
                time.sleep(delay)
                delay *= 4
