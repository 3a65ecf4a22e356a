"""The log pump: a run's stdout/stderr fds → numbered records (:mod:`.lines`) → batches → a sink.

Delivery: records are grouped into batches (``batch_lines`` / about
``batch_bytes``, or whatever arrived within ``linger_s``; a line after a quiet
spell of ``linger_s`` — a run's first line — is sealed at once, only bursts
linger) and handed to ``await sink(batch)``, one batch at a time, in order.  The sink owns delivery
— the runner's is :class:`~sequence.runner.logs.uploader.LogUploader`, the one
place that retries — and returns once it has taken the batch.  A sink that
raises has not taken it: the pump keeps the batch (and everything after it),
stops sending, and :meth:`LogPump.aclose` persists them for a replay.

Memory is bounded: up to ``memory_bytes`` of pending lines are kept in
memory; beyond that, sealed batches go to the spool on disk (:mod:`.spool`)
and are read back in order once the sink catches up.  When the unsent spool
exceeds ``spool_max_bytes`` the pump stops reading the pipes until it falls
below half; the strategy then blocks in ``write()`` — it is slowed, never
dropped.  Spool files left behind by :meth:`LogPump.aclose` (sink still down
at shutdown) are delivered later with :func:`~sequence.runner.logs.spool.replay_spool`.

A sink that is merely slower than the strategy gets backpressure (reading
pauses while memory is full: spooling costs more CPU than the upload it waits
for); a sink that has not taken a batch for ``blocked_after_s`` (the
coordinator is down or unreachable) makes the pump spool instead, so the
strategy is never held up by an outage.

Everything runs on the event loop thread (``loop.add_reader``); reads are
``os.read`` of up to ``read_chunk`` bytes, split with ``bytes``/``str`` methods.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sequence.runner.logs.lines import KiB, Lines, LogPumpStats, LogRecord, LogSink, MiB, Stream
from sequence.runner.logs.spool import Spool, spool_files

log = logging.getLogger("sequence.runner")

_RECORD_OVERHEAD = 200  # bytes of Python objects per record, for the memory budget


@dataclass(frozen=True)
class LogPumpConfig:
    read_chunk: int = 1 * MiB
    pipe_size: int = 1 * MiB  # F_SETPIPE_SZ, best effort
    max_line_bytes: int = 64 * KiB
    batch_lines: int = 1000
    batch_bytes: int = 256 * KiB
    linger_s: float = 0.05
    memory_bytes: int = 4 * MiB  # pending line bytes kept in memory before spooling
    spool_max_bytes: int = 64 * MiB  # unsent spool above this pauses reading
    # True: spool to disk whenever memory is full. False: spool only while the
    # sink is blocked (coordinator down); when it is merely slower than the
    # strategy, pause reading instead (backpressure) — writing and re-reading a
    # spool costs more CPU than the upload it is waiting for.
    spool_when_slow: bool = True
    eof_idle_timeout_s: float = 5.0  # after exit: give up on a pipe nobody writes to
    # A delivery pending this long means the sink is blocked (coordinator down
    # or unreachable): spool instead of holding the strategy up.
    blocked_after_s: float = 1.0
    rate_lines: int = 0  # sustained lines/s; 0 = unlimited
    burst_lines: int = 0  # bucket size (default: 10 s of rate_lines)

    def __post_init__(self) -> None:
        if self.max_line_bytes < 16 or self.batch_lines < 1 or self.batch_bytes < 1:
            raise ValueError("log pump sizes must be positive (max_line_bytes >= 16)")
        if self.spool_max_bytes < 1 or self.memory_bytes < 0 or self.read_chunk < 1:
            raise ValueError("log pump sizes must be positive")


@dataclass
class _Stream:
    name: Stream
    fd: int
    eof: bool = False
    reading: bool = False


class LogPump:
    """Reads a run's stdout/stderr fds and delivers numbered records to *sink*."""

    def __init__(
        self,
        sink: LogSink,
        *,
        spool_dir: Path,
        config: LogPumpConfig | None = None,
        clock: Callable[[], float] = time.time,
        first_seq: int = 1,
        mask: Iterable[str] = (),
    ) -> None:
        self._sink = sink
        self._cfg = cfg = config or LogPumpConfig()
        self.stats = LogPumpStats()
        self._lines = Lines(self._add, self.stats, max_line_bytes=cfg.max_line_bytes, rate_lines=cfg.rate_lines,
                            burst_lines=cfg.burst_lines, first_seq=first_seq, mask=mask)
        self._spool = Spool(spool_dir, self.stats)
        self._delivering_since: float | None = None
        self._clock = clock
        self._spool_dir = spool_dir
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: list[_Stream] = []
        self._open: list[LogRecord] = []
        self._open_bytes = 0
        self._open_since = 0.0
        # When the last batch was sealed: a line after a quiet spell (the run's first
        # line, a daemon's heartbeat print) goes at once; only a burst lingers.
        self._last_seal = float("-inf")
        self._spool_error = False
        self._sink_failing = False
        self._sink_error: BaseException | None = None
        self._unbounded = False
        self._wake = asyncio.Event()
        self._eof = False
        self._eof_event = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    # -- wiring -------------------------------------------------------------

    def attach(self, name: Stream, fd: int) -> None:
        """Start reading *fd* (the pump owns and closes it)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        os.set_blocking(fd, False)
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, self._cfg.pipe_size)
        st = _Stream(name=name, fd=fd)
        self._streams.append(st)
        if not self.stats.paused:
            self._add_reader(st)
        if self._sender is None:
            self._sender = loop.create_task(self._send_loop(), name="sequence-logpump-sender")

    @property
    def next_seq(self) -> int:
        return self._lines.next_seq

    def _add_reader(self, st: _Stream) -> None:
        if not st.eof and not st.reading and self._loop is not None:
            self._loop.add_reader(st.fd, self._on_readable, st)
            st.reading = True

    def _remove_reader(self, st: _Stream) -> None:
        if st.reading and self._loop is not None:
            self._loop.remove_reader(st.fd)
            st.reading = False

    def release_backpressure(self) -> None:
        """The writers are gone: read what is left in the pipes regardless of
        the spool bound (at most the pipe buffers), so EOF comes promptly."""
        self._unbounded = True
        if self.stats.paused:
            self.stats.paused = False
            for st in self._streams:
                self._add_reader(st)

    def _pause(self) -> None:
        if self._unbounded:
            return
        if not self.stats.paused:
            self.stats.paused = True
            self.stats.pauses += 1
            for st in self._streams:
                self._remove_reader(st)

    def _maybe_resume(self) -> None:
        if not self.stats.paused:
            return
        if self.stats.spool_bytes > self._cfg.spool_max_bytes // 2:
            return
        mem = self._spool.mem_bytes
        if self._spool_error and mem > self._cfg.memory_bytes:
            return
        if not self._cfg.spool_when_slow and not self._sink_failing and mem > self._cfg.memory_bytes // 2:
            return
        self._spool_error = False
        self.stats.paused = False
        for st in self._streams:
            self._add_reader(st)

    # -- reading ------------------------------------------------------------

    def _on_readable(self, st: _Stream) -> None:
        try:
            chunk = os.read(st.fd, self._cfg.read_chunk)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("log pump: reading %s failed: %s", st.name, exc)
            chunk = b""
        if not chunk:
            self._finish_stream(st)
            return
        self.stats.bytes_read += len(chunk)
        self._lines.feed(st.name, chunk, self._clock())

    def system(self, text: str) -> None:
        """Add a platform line (stream ``system``) to the run's log, in order
        (also after the strategy's output ended: the exit reason comes last)."""
        if self._closed:
            return
        self._lines.system(text, self._clock())
        if (self._sender is not None and self._sender.done() and self._sink_error is None
                and self._loop is not None):
            self._sender = self._loop.create_task(self._send_loop(), name="sequence-logpump-sender")

    def _finish_stream(self, st: _Stream) -> None:
        self._remove_reader(st)
        self._lines.finish(st.name, self._clock())
        st.eof = True
        with contextlib.suppress(OSError):
            os.close(st.fd)
        if all(s.eof for s in self._streams):
            self._lines.report_drops(self._clock())
            self._eof = True
            self._eof_event.set()
            self._wake.set()

    # -- batching and queueing ---------------------------------------------

    def _add(self, recs: list[LogRecord], cum: list[int]) -> None:
        """Append records to the open batch, sealing at batch_lines / batch_bytes.

        *cum* holds the cumulative line lengths of *recs* (the batch byte
        budget is counted in characters of ``line``: cheap, and close enough).
        """
        cfg = self._cfg
        if not self._open:
            self._open_since = time.monotonic()
        n = len(recs)
        start = 0
        base = 0
        while start < n:
            room = cfg.batch_lines - len(self._open)
            room_b = cfg.batch_bytes - self._open_bytes
            end = min(n, start + room)
            if cum[end - 1] - base > room_b:
                end = bisect.bisect_right(cum, base + room_b, start, end)
                if end == start:
                    if self._open:
                        self._seal()
                        continue
                    end = start + 1  # one line bigger than a whole batch
            if start == 0 and end == n:
                self._open.extend(recs)
            else:
                self._open.extend(recs[start:end])
            self._open_bytes += cum[end - 1] - base
            base = cum[end - 1]
            start = end
            if len(self._open) >= cfg.batch_lines or self._open_bytes >= cfg.batch_bytes:
                self._seal()
                self._open_since = time.monotonic()
        self._wake.set()

    def _seal(self) -> None:
        if not self._open:
            return
        batch, nbytes = self._open, self._open_bytes
        self._open, self._open_bytes = [], 0
        self._last_seal = time.monotonic()
        # Memory accounting: the text plus what a small dict costs per record.
        self._push(batch, nbytes + _RECORD_OVERHEAD * len(batch))

    def _push(self, batch: list[LogRecord], nbytes: int) -> None:
        spool = self._spool
        if spool.mem_bytes + nbytes <= self._cfg.memory_bytes:
            spool.push_mem(batch, nbytes)
            return
        if not self._cfg.spool_when_slow and not self._sink_failing:
            spool.push_mem(batch, nbytes)
            self._pause()
            return
        try:
            spool.push_file(batch)
        except OSError as exc:
            log.warning(
                "log pump: cannot spool to %s (%s); pausing the strategy's output",
                self._spool_dir,
                exc,
            )
            self._spool_error = True
            spool.push_mem(batch, nbytes)
            self._pause()
            return
        if self.stats.spool_bytes > self._cfg.spool_max_bytes:
            self._pause()

    # -- sending ------------------------------------------------------------

    async def _send_loop(self) -> None:
        cfg = self._cfg
        while True:
            batch = self._spool.peek()
            if batch is None:
                if self._open:
                    now = time.monotonic()
                    age = now - self._open_since
                    if self._eof or age >= cfg.linger_s or now - self._last_seal >= cfg.linger_s:
                        self._seal()
                        continue
                    timeout: float | None = cfg.linger_s - age
                elif self._eof:
                    return
                else:
                    timeout = None
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            await self._deliver(batch)
            self._spool.pop()
            self._maybe_resume()

    def _on_blocked(self) -> None:
        """A delivery has been pending for ``blocked_after_s``: treat the sink as down."""
        if self._delivering_since is None or self._sink_failing:
            return
        self._sink_failing = True
        log.warning("log sink blocked for %.1fs; spooling the strategy's output", self._cfg.blocked_after_s)
        if self.stats.paused and not self._spool_error:
            self._maybe_resume()

    async def _deliver(self, batch: list[LogRecord]) -> None:
        """Hand one batch to the sink, once: the sink owns retries. If it raises, the
        batch stays queued, sending stops, and the exception ends the send loop."""
        loop = asyncio.get_running_loop()
        self._delivering_since = time.monotonic()
        timer = loop.call_later(self._cfg.blocked_after_s, self._on_blocked)
        try:
            await self._sink(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("log sink refused a batch (%s: %s); keeping the rest for a replay",
                        type(exc).__name__, exc)
            self._sink_error = exc
            self._sink_failing = True
            # Output keeps flowing to the spool; aclose() persists it.
            if self.stats.paused and not self._spool_error:
                self._maybe_resume()
            raise
        finally:
            timer.cancel()
            self._delivering_since = None
        self._sink_failing = False
        self.stats.batches_delivered += 1
        self.stats.records_delivered += len(batch)

    # -- lifecycle ----------------------------------------------------------

    async def wait_eof(
        self, idle_timeout: float | None = None, total_timeout: float | None = None
    ) -> bool:
        """Wait until every attached stream hit EOF.

        Gives up — emitting the partial lines and returning False — when
        nothing was read for *idle_timeout* while reading was not paused, or
        after *total_timeout* (someone outside the run holds the pipe).
        """
        idle = self._cfg.eof_idle_timeout_s if idle_timeout is None else idle_timeout
        deadline = None if total_timeout is None else time.monotonic() + total_timeout
        last = -1
        while not self._eof_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._eof_event.wait(), idle)
                break
            over = deadline is not None and time.monotonic() > deadline
            if not over and (self.stats.paused or self.stats.bytes_read != last):
                last = self.stats.bytes_read
                continue
            log.warning(
                "log pump: output pipes still open %.1fs after the run ended; closing them", idle
            )
            self.stats.forced_eof = True
            for st in self._streams:
                if not st.eof:
                    self._finish_stream(st)
            return False
        return True

    @property
    def delivered(self) -> bool:
        return (
            self._eof
            and self._sender is not None
            and self._sender.done()
            and not self._sender.cancelled()
            and self._sender.exception() is None
        )

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything read so far (up to EOF) reached the sink (False: it did
        not within *timeout*, or the sink refused a batch)."""
        if self._sender is None:
            return True
        if not self._eof:
            await self._eof_event.wait()
        done, _ = await asyncio.wait({self._sender}, timeout=timeout)
        if self._sender in done and not self._sender.cancelled():
            exc = self._sender.exception()
            if exc is not None and exc is not self._sink_error:
                raise exc  # a bug in the pump, not the sink
            return exc is None
        return False

    async def aclose(self) -> list[Path]:
        """Stop reading and sending; persist what was not delivered.

        Returns the spool files left for :func:`~sequence.runner.logs.spool.replay_spool`
        (empty when everything reached the sink).
        """
        if self._closed:
            return spool_files(self._spool_dir)
        self._closed = True
        for st in self._streams:
            if not st.eof:
                self._remove_reader(st)
                self._lines.finish(st.name, self._clock())
                st.eof = True
                with contextlib.suppress(OSError):
                    os.close(st.fd)
        self._eof = True
        self._eof_event.set()
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        elif self._sender is not None and not self._sender.cancelled():
            self._sender.exception()  # a refusing sink was logged already: retrieved here
        self._seal()
        return self._spool.persist()
