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

**One bad step fails alone.** If the group's transaction still fails after its
retries, each step is committed on its own (with the same retries), so a step
that can never be written (a value the database refuses) fails by itself and
the other clients' fills of the same turn are kept.
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
        done = loop.run_in_executor(self._pool, self._commit_group, [b for b, _, _ in group])

        def _done(f: asyncio.Future[list[BaseException | None]]) -> None:
            exc = None if f.cancelled() else f.exception()
            each = f.result() if not f.cancelled() and exc is None else [exc] * len(group)
            for (_batch, then, fut), err in zip(group, each, strict=True):
                if fut.done():
                    continue
                if f.cancelled():
                    fut.cancel()
                elif err is not None:
                    fut.set_exception(err)
                else:
                    fut.set_result(None)
                    then()

        done.add_done_callback(_done)

    async def flush(self) -> None:
        """Wait until every batch queued so far is committed (or has failed)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def _commit_group(self, batches: list[TradeBatch]) -> list[BaseException | None]:
        """Commit the group in one transaction; if it cannot be, each step on its own.
        Returns each step's error (None: committed)."""
        try:
            self._commit_sync(batches)
            return [None] * len(batches)
        except Exception as exc:
            if len(batches) == 1:
                return [exc]
        log.warning("trading: committing the %d steps of the failed group one by one", len(batches))
        out: list[BaseException | None] = []
        for b in batches:
            try:
                self._commit_sync([b])
                out.append(None)
            except Exception as exc:
                out.append(exc)
        return out

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
