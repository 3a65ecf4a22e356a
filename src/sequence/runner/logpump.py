"""stdout/stderr → numbered line records → an async sink, without loss.

Record shape (one per line, JSON-ready)::

    {"seq": 17, "ts": 1732550000.123, "stream": "stdout", "line": "...", "partial": true}

- ``seq`` starts at 1 and increases by one per record across *both* streams,
  in the order the runner read them; within a stream, order is the
  process's write order.
- ``ts`` is the epoch time (float seconds) at which the runner read the chunk.
- ``line`` is text without its line terminator: ``\\n`` and ``\\r\\n`` both end a
  line (a lone ``\\r`` is kept), invalid UTF-8 becomes U+FFFD, a last line
  without a newline is still emitted at EOF.
- A line longer than ``max_line_bytes`` (64 KiB) is cut (on a character
  boundary) into several records; every part but the last carries
  ``"partial": true`` meaning "continues in the next record of this stream".

Delivery: records are grouped into batches (``batch_lines`` / about
``batch_bytes``, or whatever arrived within ``linger_s``) and handed to
``await sink(batch)``, one batch at a time, in order.  A sink that raises is
retried with exponential backoff until it succeeds, so delivery is
at-least-once and ordered: the receiver must ignore records whose ``seq`` it
already has (a batch that failed *after* the receiver stored it is sent again).

Memory is bounded: up to ``memory_bytes`` of pending lines are kept in
memory; beyond that, sealed batches are appended to spool files
(``spool-<n>.jsonl``, one JSON array per line) in the run's ``logs/`` dir
and read back in order once the sink catches up.  When the unsent spool
exceeds ``spool_max_bytes`` the pump stops reading the pipes until it falls
below half; the strategy then blocks in ``write()`` — it is slowed, never
dropped.  Spool files left behind by :meth:`LogPump.aclose` (sink still down
at shutdown) are delivered later with :func:`replay_spool`.

A sink that is merely slower than the strategy gets backpressure (reading
pauses while memory is full: spooling costs more CPU than the upload it waits
for); a sink that fails, or has not accepted a batch for ``blocked_after_s``
(the coordinator is down or unreachable), makes the pump spool instead, so
the strategy is never held up by an outage.

Two things are applied to the text before anything is stored or sent:

- **masking**: every occurrence of a value in ``mask`` (the strategy's
  secrets and its API key) becomes ``***``.  Values shorter than
  ``MASK_MIN_LEN`` are not masked (they would destroy the logs); a value is
  masked where it appears whole in one line (not across lines, nor encoded).
- **rate limit**: a token bucket of ``rate_lines`` per second with
  ``burst_lines`` of credit; lines beyond it are dropped, counted, and the
  count is reported in a ``system`` record when lines flow again.

``system`` records (stream ``"system"``) are the platform's own lines in a
run's log: rate-limit notices, egress refusals, the exit reason.

Everything runs on the event loop thread (``loop.add_reader``); reads are
``os.read`` of up to ``read_chunk`` bytes, split with ``bytes``/``str`` methods.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import itertools
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NotRequired, TypedDict

__all__ = [
    "LogPump",
    "LogPumpConfig",
    "LogPumpStats",
    "LogRecord",
    "LogSink",
    "replay_spool",
    "spool_files",
]

log = logging.getLogger("sequence.runner")

KiB = 1024
MiB = 1024 * KiB
_RECORD_OVERHEAD = 200  # bytes of Python objects per record, for the memory budget


MASK_MIN_LEN = 6
MASK = "***"

Stream = Literal["stdout", "stderr", "system"]


class LogRecord(TypedDict):
    seq: int
    ts: float
    stream: Stream
    line: str
    partial: NotRequired[bool]


LogSink = Callable[[list[LogRecord]], Awaitable[None]]


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
    # sink is failing (coordinator down); when it is merely slower than the
    # strategy, pause reading instead (backpressure) — writing and re-reading a
    # spool costs more CPU than the upload it is waiting for.
    spool_when_slow: bool = True
    retry_initial_s: float = 0.1
    retry_max_s: float = 5.0
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
class LogPumpStats:
    lines_read: int = 0
    bytes_read: int = 0
    partial_records: int = 0
    records_delivered: int = 0
    batches_delivered: int = 0
    sink_failures: int = 0
    last_sink_error: str | None = None
    spooled_batches: int = 0
    spool_bytes: int = 0  # written to spool files, not yet delivered
    spool_peak_bytes: int = 0
    paused: bool = False
    pauses: int = 0
    forced_eof: bool = False
    dropped_lines: int = 0  # by the rate limit
    masked_lines: int = 0  # lines in which a secret was replaced


@dataclass
class _Stream:
    name: Stream
    fd: int
    carry: bytes = b""
    eof: bool = False
    reading: bool = False


@dataclass
class _MemSeg:
    index: int
    batches: deque[tuple[list[LogRecord], int]] = field(default_factory=deque)


@dataclass
class _FileSeg:
    index: int
    path: Path
    fd: int
    lengths: deque[int] = field(default_factory=deque)  # unread lines, in order
    read_off: int = 0
    write_off: int = 0
    current: list[LogRecord] | None = None  # decoded head, cached across retries


_Seg = _MemSeg | _FileSeg


def _utf8_cut(b: bytes, limit: int) -> int:
    """Largest cut <= limit that does not split a UTF-8 sequence (best effort)."""
    i = limit
    while i > limit - 4 and i > 0 and (b[i] & 0xC0) == 0x80:
        i -= 1
    return i if i > limit - 4 and i > 0 else limit


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
        self._cfg = config or LogPumpConfig()
        # Longest first, so a secret containing another is masked whole.
        self._mask = sorted({m for m in mask if len(m) >= MASK_MIN_LEN}, key=len, reverse=True)
        rate = self._cfg.rate_lines
        self._burst = float(self._cfg.burst_lines or rate * 10)
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self._dropped_pending = 0
        self._delivering_since: float | None = None
        self._clock = clock
        self._spool_dir = spool_dir
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: list[_Stream] = []
        self._next_seq = first_seq
        self._open: list[LogRecord] = []
        self._open_bytes = 0
        self._open_since = 0.0
        self._segs: deque[_Seg] = deque()
        self._seg_index = 0
        self._mem_bytes = 0
        self._spool_error = False
        self._sink_failing = False
        self._unbounded = False
        self._wake = asyncio.Event()
        self._eof = False
        self._eof_event = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        self.stats = LogPumpStats()

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
        return self._next_seq

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
        if self._spool_error and self._mem_bytes > self._cfg.memory_bytes:
            return
        if not self._cfg.spool_when_slow and not self._sink_failing and self._mem_bytes > self._cfg.memory_bytes // 2:
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
        self._ingest(st, chunk, self._clock())

    def _ingest(self, st: _Stream, chunk: bytes, ts: float) -> None:
        data = st.carry + chunk if st.carry else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        nl = data.rfind(b"\n")
        if nl < 0:
            st.carry = data
        else:
            block = data[:nl]
            st.carry = data[nl + 1 :]
            maxb = self._cfg.max_line_bytes
            text = block.decode("utf-8", "replace")
            if self._mask:
                text = self._masked(text)
            lines = text.split("\n")
            if len(block) > maxb // 4 and max(map(len, lines)) > maxb // 4:
                self._emit_checked(st, block, ts)
            else:
                self._emit(st.name, lines, ts)
        if len(st.carry) > self._cfg.max_line_bytes:
            self._emit_long_carry(st, ts)

    def _emit_checked(self, st: _Stream, block: bytes, ts: float) -> None:
        """Slow path: some line may exceed max_line_bytes; cut it into parts."""
        maxb = self._cfg.max_line_bytes
        pending: list[str] = []
        for bl in block.split(b"\n"):
            if len(bl) <= maxb:
                pending.append(self._masked(bl.decode("utf-8", "replace")))
                continue
            if pending:
                self._emit(st.name, pending, ts)
                pending = []
            rest = bl
            while len(rest) > maxb:
                cut = _utf8_cut(rest, maxb)
                self._emit_partial(st.name, rest[:cut], ts)
                rest = rest[cut:]
            self._emit(st.name, [rest.decode("utf-8", "replace")], ts)
        if pending:
            self._emit(st.name, pending, ts)

    def _emit_long_carry(self, st: _Stream, ts: float) -> None:
        maxb = self._cfg.max_line_bytes
        while len(st.carry) > maxb:
            cut = _utf8_cut(st.carry, maxb)
            self._emit_partial(st.name, st.carry[:cut], ts)
            st.carry = st.carry[cut:]

    def _masked(self, text: str) -> str:
        hit = False
        for secret in self._mask:
            if secret in text:
                text = text.replace(secret, MASK)
                hit = True
        if hit:
            self.stats.masked_lines += 1
        return text

    def _admit(self, n: int) -> int:
        """How many of *n* lines the rate limit lets through now (token bucket)."""
        rate = self._cfg.rate_lines
        if rate <= 0:
            return n
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        take = min(n, int(self._tokens))
        self._tokens -= take
        if take < n:
            self._dropped_pending += n - take
            self.stats.dropped_lines += n - take
        return take

    def _report_drops(self, ts: float) -> None:
        n, self._dropped_pending = self._dropped_pending, 0
        self._system(
            f"{n} lines dropped: the log rate limit is {self._cfg.rate_lines} lines/s "
            f"(bursts up to {int(self._burst)})",
            ts,
        )

    def _system(self, text: str, ts: float) -> None:
        rec: LogRecord = {"seq": self._next_seq, "ts": ts, "stream": "system", "line": text}
        self._next_seq += 1
        self._add([rec], [len(text)])

    def system(self, text: str) -> None:
        """Add a platform line (stream ``system``) to the run's log, in order
        (also after the strategy's output ended: the exit reason comes last)."""
        if self._closed:
            return
        self._system(self._masked(text) if self._mask else text, self._clock())
        if self._sender is not None and self._sender.done() and self._loop is not None:
            self._sender = self._loop.create_task(self._send_loop(), name="sequence-logpump-sender")

    def _emit_partial(self, name: Stream, part: bytes, ts: float) -> None:
        if self._cfg.rate_lines > 0 and not self._admit(1):
            return
        text = part.decode("utf-8", "replace")
        rec: LogRecord = {
            "seq": self._next_seq,
            "ts": ts,
            "stream": name,
            "line": self._masked(text) if self._mask else text,
            "partial": True,
        }
        self._next_seq += 1
        self.stats.partial_records += 1
        self._add([rec], [len(rec["line"])])

    def _emit(self, name: Stream, lines: list[str], ts: float) -> None:
        if self._cfg.rate_lines > 0:
            take = self._admit(len(lines))
            if take < len(lines):
                lines = lines[:take]
            elif self._dropped_pending:
                self._report_drops(ts)
            if not lines:
                return
        seq0 = self._next_seq
        n = len(lines)
        self._next_seq = seq0 + n
        self.stats.lines_read += n
        recs: list[LogRecord] = [
            {"seq": s, "ts": ts, "stream": name, "line": ln} for s, ln in enumerate(lines, seq0)
        ]
        self._add(recs, list(itertools.accumulate(map(len, lines))))

    def _finish_stream(self, st: _Stream) -> None:
        self._remove_reader(st)
        if st.carry:
            carry, st.carry = st.carry, b""
            self._emit(st.name, [carry.decode("utf-8", "replace")], self._clock())
        st.eof = True
        with contextlib.suppress(OSError):
            os.close(st.fd)
        if all(s.eof for s in self._streams):
            if self._dropped_pending:
                self._report_drops(self._clock())
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
        # Memory accounting: the text plus what a small dict costs per record.
        self._push(batch, nbytes + _RECORD_OVERHEAD * len(batch))

    def _push(self, batch: list[LogRecord], nbytes: int) -> None:
        last = self._segs[-1] if self._segs else None
        if self._mem_bytes + nbytes <= self._cfg.memory_bytes:
            self._push_mem(last, batch, nbytes)
            return
        if not self._cfg.spool_when_slow and not self._sink_failing:
            self._push_mem(last, batch, nbytes)
            self._pause()
            return
        try:
            self._push_file(last, batch)
        except OSError as exc:
            log.warning(
                "log pump: cannot spool to %s (%s); pausing the strategy's output",
                self._spool_dir,
                exc,
            )
            self._spool_error = True
            self._push_mem(self._segs[-1] if self._segs else None, batch, nbytes)
            self._pause()

    def _push_mem(self, last: _Seg | None, batch: list[LogRecord], nbytes: int) -> None:
        if not isinstance(last, _MemSeg):
            last = _MemSeg(self._new_index())
            self._segs.append(last)
        last.batches.append((batch, nbytes))
        self._mem_bytes += nbytes

    def _push_file(self, last: _Seg | None, batch: list[LogRecord]) -> None:
        data = (json.dumps(batch, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        if not isinstance(last, _FileSeg):
            index = self._new_index()
            self._spool_dir.mkdir(parents=True, exist_ok=True)
            path = self._spool_dir / f"spool-{index:08d}.jsonl"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            last = _FileSeg(index, path, fd)
            self._segs.append(last)
        written = os.pwrite(last.fd, data, last.write_off)
        if written != len(data):
            raise OSError(f"short write to {last.path}")
        last.write_off += len(data)
        last.lengths.append(len(data))
        self.stats.spooled_batches += 1
        self.stats.spool_bytes += len(data)
        self.stats.spool_peak_bytes = max(self.stats.spool_peak_bytes, self.stats.spool_bytes)
        if self.stats.spool_bytes > self._cfg.spool_max_bytes:
            self._pause()

    def _new_index(self) -> int:
        self._seg_index += 1
        return self._seg_index

    # -- sending ------------------------------------------------------------

    def _peek(self) -> list[LogRecord] | None:
        while self._segs:
            seg = self._segs[0]
            if isinstance(seg, _MemSeg):
                if seg.batches:
                    return seg.batches[0][0]
            else:
                if seg.current is not None:
                    return seg.current
                if seg.lengths:
                    raw = os.pread(seg.fd, seg.lengths[0], seg.read_off)
                    seg.current = json.loads(raw)
                    return seg.current
                os.close(seg.fd)
                with contextlib.suppress(OSError):
                    seg.path.unlink()
            self._segs.popleft()
        return None

    def _pop(self) -> None:
        seg = self._segs[0]
        if isinstance(seg, _MemSeg):
            _, nbytes = seg.batches.popleft()
            self._mem_bytes -= nbytes
        else:
            n = seg.lengths.popleft()
            seg.read_off += n
            seg.current = None
            self.stats.spool_bytes -= n
        self._maybe_resume()

    async def _send_loop(self) -> None:
        cfg = self._cfg
        while True:
            batch = self._peek()
            if batch is None:
                if self._open:
                    age = time.monotonic() - self._open_since
                    if self._eof or age >= cfg.linger_s:
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
            self._pop()

    def _on_blocked(self) -> None:
        """A delivery has been pending for ``blocked_after_s``: treat the sink as down."""
        if self._delivering_since is None or self._sink_failing:
            return
        self._sink_failing = True
        log.warning("log sink blocked for %.1fs; spooling the strategy's output", self._cfg.blocked_after_s)
        if self.stats.paused and not self._spool_error:
            self._maybe_resume()

    async def _deliver(self, batch: list[LogRecord]) -> None:
        delay = self._cfg.retry_initial_s
        while True:
            loop = asyncio.get_running_loop()
            self._delivering_since = time.monotonic()
            timer = loop.call_later(self._cfg.blocked_after_s, self._on_blocked)
            try:
                await self._sink(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._sink_failing and not self._cfg.spool_when_slow:
                    self._sink_failing = True
                    # Paused only because the sink was slow: now that it is down,
                    # read again and let the spool take the output.
                    if self.stats.paused and not self._spool_error:
                        self._maybe_resume()
                self._sink_failing = True
                self.stats.sink_failures += 1
                self.stats.last_sink_error = f"{type(exc).__name__}: {exc}"
                if self.stats.sink_failures == 1 or delay >= self._cfg.retry_max_s:
                    log.warning(
                        "log sink failed (%s); retrying in %.2fs", self.stats.last_sink_error, delay
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._cfg.retry_max_s)
                continue
            finally:
                timer.cancel()
                self._delivering_since = None
            self._sink_failing = False
            self.stats.batches_delivered += 1
            self.stats.records_delivered += len(batch)
            return

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
        )

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything read so far (up to EOF) reached the sink."""
        if self._sender is None:
            return True
        if not self._eof:
            await self._eof_event.wait()
        done, _ = await asyncio.wait({self._sender}, timeout=timeout)
        if self._sender in done and not self._sender.cancelled():
            exc = self._sender.exception()
            if exc is not None:
                raise exc
            return True
        return False

    async def aclose(self) -> list[Path]:
        """Stop reading and sending; persist what was not delivered.

        Returns the spool files left for :func:`replay_spool` (empty when
        everything reached the sink).
        """
        if self._closed:
            return spool_files(self._spool_dir)
        self._closed = True
        for st in self._streams:
            if not st.eof:
                self._remove_reader(st)
                if st.carry:
                    carry, st.carry = st.carry, b""
                    self._emit(st.name, [carry.decode("utf-8", "replace")], self._clock())
                st.eof = True
                with contextlib.suppress(OSError):
                    os.close(st.fd)
        self._eof = True
        self._eof_event.set()
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        self._seal()
        return self._persist()

    def _persist(self) -> list[Path]:
        left: list[Path] = []
        while self._segs:
            seg = self._segs.popleft()
            if isinstance(seg, _MemSeg):
                if not seg.batches:
                    continue
                self._spool_dir.mkdir(parents=True, exist_ok=True)
                path = self._spool_dir / f"spool-{seg.index:08d}.jsonl"
                with open(path, "wb") as f:
                    for batch, _ in seg.batches:
                        f.write(
                            (
                                json.dumps(batch, ensure_ascii=False, separators=(",", ":")) + "\n"
                            ).encode()
                        )
                left.append(path)
                continue
            if not seg.lengths:
                os.close(seg.fd)
                seg.path.unlink(missing_ok=True)
                continue
            if seg.read_off:  # drop the delivered prefix so a replay does not resend it
                rest = os.pread(seg.fd, seg.write_off - seg.read_off, seg.read_off)
                tmp = seg.path.with_suffix(".tmp")
                tmp.write_bytes(rest)
                os.replace(tmp, seg.path)
            os.close(seg.fd)
            left.append(seg.path)
        self._mem_bytes = 0
        return left


def spool_files(spool_dir: Path) -> list[Path]:
    """Spool files in delivery order (for :func:`replay_spool`)."""
    try:
        return sorted(spool_dir.glob("spool-*.jsonl"))
    except OSError:
        return []


async def replay_spool(spool_dir: Path, sink: LogSink) -> int:
    """Deliver spool files left by an earlier pump, oldest first; delete each when done.

    The sink's exceptions propagate (call again later: files not yet
    delivered stay).  A partly delivered file is sent again from its start,
    so the receiver must ignore ``seq`` values it already has.
    """
    sent = 0
    for path in spool_files(spool_dir):
        with open(path, "rb") as f:
            for raw in f:
                if raw.strip():
                    batch = json.loads(raw)
                    await sink(batch)
                    sent += len(batch)
        path.unlink()
    return sent
