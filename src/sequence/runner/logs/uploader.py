"""Getting a run's lines to the coordinator: the one place that retries log delivery.

:class:`CoordinatorClient` makes one attempt per call; the pump hands each
batch to its sink once. Everything that must be tried again is tried here,
with one policy (:class:`Backoff`):

* :class:`LogUploader` — a run's live batches, the pump's sink;
* :func:`deliver_spools` — spools an earlier runner process left on this data
  dir (the coordinator stores a run's lines even after the run ended);
* :class:`Retrying` — any sink made to retry (tests, tools).

A batch is tried until the coordinator stores it, or refuses it for good
(:class:`StaleRun`, :class:`Rejected`: the run was deleted, is not this
runner's, or the batch does not continue the run's lines — a resend cannot
change that): then the run's remaining lines are dropped with a warning.
Delivery is at-least-once; the coordinator ignores lines it already has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sequence.protocol import encode_logs
from sequence.runner.client import (
    CoordinatorClient,
    CoordinatorError,
    CoordinatorUnavailable,
    Rejected,
    StaleRun,
)
from sequence.runner.logs.lines import LogRecord, LogSink
from sequence.runner.logs.spool import UPLOADER_SPOOL, read_batches, spool_files, write_batches

log = logging.getLogger("sequence.runner")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial_s``, doubling up to ``max_s``."""

    initial_s: float = 0.05
    max_s: float = 2.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * 2, self.max_s)


#: Live uploads: a short outage should cost little latency once it ends.
LIVE = Backoff(0.05, 2.0)
#: Replays of old spools: nobody waits for them.
REPLAY = Backoff(0.5, 10.0)


async def _until_stored(attempt: Callable[[], Awaitable[Any]], backoff: Backoff, what: str,
                        stop: asyncio.Event | None = None) -> bool:
    """Run ``attempt`` until it succeeds (True) or the coordinator refuses for good (False).

    Transient failures (:class:`CoordinatorUnavailable`, and any other
    :class:`CoordinatorError`) are retried after the backoff's next delay; with
    ``stop``, giving up when it is set (``CoordinatorUnavailable`` is raised then).
    """
    delays = backoff.delays()
    while True:
        try:
            await attempt()
            return True
        except (StaleRun, Rejected) as exc:
            log.warning("the coordinator refused %s (%s); dropping them", what, exc)
            return False
        except CoordinatorError as exc:
            delay = next(delays)
            if delay >= backoff.max_s or delay == backoff.initial_s:
                log.warning("delivering %s failed (%s); retrying in %.2fs", what, exc, delay)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                if stop.is_set():
                    raise CoordinatorUnavailable(f"gave up delivering {what}: shutting down") from exc


class LogUploader:
    """The pump's sink: uploads batches in order with one in flight and one queued,
    so the pump reads and batches the next lines while the coordinator stores the
    last ones.  Retries a batch until it is stored; a full queue blocks the pump
    (which spools to disk once it is blocked for long): backpressure, never loss.
    Batches still held when it is closed are written back to the run's spool.
    """

    def __init__(self, client: CoordinatorClient, run_id: str, epoch: int, backoff: Backoff = LIVE) -> None:
        self.client = client
        self.run_id = run_id
        self.epoch = epoch
        self.backoff = backoff
        self._queue: asyncio.Queue[tuple[list[LogRecord], bytes]] = asyncio.Queue(maxsize=1)
        self._inflight: list[LogRecord] | None = None
        self._task: asyncio.Task[None] | None = None
        self._refused = False
        self._closed = False

    async def __call__(self, batch: list[LogRecord]) -> None:
        if self._refused:
            return  # the coordinator refused this run's logs for good: nothing to keep
        if self._closed:
            raise CoordinatorUnavailable("the uploader is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._upload(), name=f"logs-{self.run_id}")
        # Encode now, while the previous batch is in flight: the coordinator
        # stores batch N while this process encodes batch N+1.
        await self._queue.put((batch, encode_logs(self.epoch, batch)))

    async def _upload(self) -> None:
        what = f"logs of run {self.run_id}"
        while True:
            batch, body = await self._queue.get()
            self._inflight = batch
            if not self._refused:
                stored = await _until_stored(partial(self.client.logs_encoded, self.run_id, body), self.backoff, what)
                self._refused = not stored
            self._inflight = None
            self._queue.task_done()

    async def drain(self, timeout: float) -> bool:
        """Wait until every batch handed over has been stored."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    async def aclose(self, spool_dir: Path | None = None) -> None:
        """Stop uploading; write batches not yet stored to *spool_dir* (delivered
        after a runner restart; a batch the coordinator did store is ignored there)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        pending = [self._inflight] if self._inflight else []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait()[0])
        if pending and spool_dir is not None and not self._refused:
            with contextlib.suppress(OSError):
                spool_dir.mkdir(parents=True, exist_ok=True)
                write_batches(spool_dir / UPLOADER_SPOOL, pending)
                log.warning("run %s: %d undelivered log batch(es) kept for replay", self.run_id, len(pending))


async def deliver_spools(client: CoordinatorClient, spools: Mapping[str, tuple[Path, Mapping[str, Any]]],
                         closing: asyncio.Event, backoff: Backoff = REPLAY) -> None:
    """Deliver the logs an earlier runner process spooled, run by run (``run_id →
    (logs dir, run record)``), then remove each run's dir. Stops when ``closing``
    is set, leaving what was not delivered for the next process."""
    for run_id, (logs_dir, record) in spools.items():
        if closing.is_set():
            return
        runner_id, epoch = record.get("runner_id"), record.get("epoch")
        if not isinstance(runner_id, str) or not isinstance(epoch, int):
            log.warning("dropping the spooled logs of run %s: no run record", run_id)
            shutil.rmtree(logs_dir.parent, ignore_errors=True)
            continue
        what = f"the spooled logs of run {run_id}"
        sent = 0
        try:
            for path in spool_files(logs_dir):
                for batch in read_batches(path):
                    body = encode_logs(epoch, batch)
                    if not await _until_stored(partial(client.logs_encoded, run_id, body, runner_id=runner_id),
                                               backoff, what, closing):
                        break
                    sent += len(batch)
                else:
                    path.unlink()
                    continue
                break  # refused: drop the rest
            else:
                log.info("delivered %d spooled log lines of run %s", sent, run_id)
        except CoordinatorUnavailable:
            return  # shutting down: the next process delivers the rest
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s (%s); dropping them", what, exc)
        shutil.rmtree(logs_dir.parent, ignore_errors=True)


class Retrying:
    """A sink that retries another until it takes the batch, with :class:`Backoff`."""

    def __init__(self, sink: LogSink, backoff: Backoff = LIVE) -> None:
        self.sink = sink
        self.backoff = backoff
        self.failures = 0
        self.last_error: str | None = None

    async def __call__(self, batch: list[LogRecord]) -> None:
        delays = self.backoff.delays()
        while True:
            try:
                await self.sink(batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(next(delays))
