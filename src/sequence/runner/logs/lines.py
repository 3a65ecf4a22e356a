"""A run's output bytes → numbered line records: split, cut, masked, rate-limited.

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
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict

KiB = 1024
MiB = 1024 * KiB

MASK_MIN_LEN = 6
MASK = "***"

Stream = Literal["stdout", "stderr", "system"]


class LogRecord(TypedDict):
    seq: int
    ts: float
    stream: Stream
    line: str
    partial: NotRequired[bool]


#: Where a pump delivers its batches: returns once the batch is taken (see the pump).
LogSink = Callable[[list[LogRecord]], Awaitable[None]]

#: Where :class:`Lines` hands its records: the records and the cumulative lengths
#: of their ``line`` texts (for the batch byte budget).
Emit = Callable[[list[LogRecord], list[int]], None]


@dataclass
class LogPumpStats:
    """What a pump did: lines read, batches delivered and spooled, pauses, drops."""

    lines_read: int = 0
    bytes_read: int = 0
    partial_records: int = 0
    records_delivered: int = 0
    batches_delivered: int = 0
    spooled_batches: int = 0
    spool_bytes: int = 0  # written to spool files, not yet delivered
    spool_peak_bytes: int = 0
    paused: bool = False
    pauses: int = 0
    forced_eof: bool = False
    dropped_lines: int = 0  # by the rate limit
    masked_lines: int = 0  # lines in which a secret was replaced


def utf8_cut(b: bytes, limit: int) -> int:
    """Largest cut <= limit that does not split a UTF-8 sequence (best effort)."""
    i = limit
    while i > limit - 4 and i > 0 and (b[i] & 0xC0) == 0x80:
        i -= 1
    return i if i > limit - 4 and i > 0 else limit


class Lines:
    """Numbers the lines of a run's streams and hands them to ``emit``, in order.

    :meth:`feed` takes a chunk read from a stream, :meth:`finish` ends a stream
    (its last line without a newline is still a line), :meth:`system` adds a
    platform line. Everything runs on one thread; nothing here blocks.
    """

    def __init__(self, emit: Emit, stats: LogPumpStats, *, max_line_bytes: int, rate_lines: int = 0,
                 burst_lines: int = 0, first_seq: int = 1, mask: Iterable[str] = ()) -> None:
        self._emit_to = emit
        self.stats = stats
        self._maxb = max_line_bytes
        # Longest first, so a secret containing another is masked whole.
        self._mask = sorted({m for m in mask if len(m) >= MASK_MIN_LEN}, key=len, reverse=True)
        self._rate = rate_lines
        self.burst = float(burst_lines or rate_lines * 10)
        self._tokens = self.burst
        self._refilled = time.monotonic()
        self.dropped_pending = 0
        self.next_seq = first_seq
        self._carry: dict[Stream, bytes] = {}

    def feed(self, name: Stream, chunk: bytes, ts: float) -> None:
        carry = self._carry.get(name, b"")
        data = carry + chunk if carry else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        nl = data.rfind(b"\n")
        if nl < 0:
            carry = data
        else:
            block = data[:nl]
            carry = data[nl + 1 :]
            maxb = self._maxb
            text = block.decode("utf-8", "replace")
            if self._mask:
                text = self._masked(text)
            lines = text.split("\n")
            if len(block) > maxb // 4 and max(map(len, lines)) > maxb // 4:
                self._emit_checked(name, block, ts)
            else:
                self._emit(name, lines, ts)
        if len(carry) > self._maxb:
            carry = self._emit_long(name, carry, ts)
        self._carry[name] = carry

    def finish(self, name: Stream, ts: float) -> None:
        """The stream ended: its last line without a newline is a line too."""
        carry = self._carry.pop(name, b"")
        if carry:
            text = carry.decode("utf-8", "replace")
            self._emit(name, [self._masked(text) if self._mask else text], ts)

    def system(self, text: str, ts: float) -> None:
        """A platform line (stream ``system``), masked like the strategy's own."""
        self._system(self._masked(text) if self._mask else text, ts)

    def report_drops(self, ts: float) -> None:
        """Say how many lines the rate limit dropped since the last notice (if any)."""
        if self.dropped_pending:
            self._report_drops(ts)

    def _emit_checked(self, name: Stream, block: bytes, ts: float) -> None:
        """Slow path: some line may exceed max_line_bytes; cut it into parts."""
        maxb = self._maxb
        pending: list[str] = []
        for bl in block.split(b"\n"):
            if len(bl) <= maxb:
                pending.append(self._masked(bl.decode("utf-8", "replace")))
                continue
            if pending:
                self._emit(name, pending, ts)
                pending = []
            rest = bl
            while len(rest) > maxb:
                cut = utf8_cut(rest, maxb)
                self._emit_partial(name, rest[:cut], ts)
                rest = rest[cut:]
            text = rest.decode("utf-8", "replace")
            self._emit(name, [self._masked(text) if self._mask else text], ts)
        if pending:
            self._emit(name, pending, ts)

    def _emit_long(self, name: Stream, carry: bytes, ts: float) -> bytes:
        maxb = self._maxb
        while len(carry) > maxb:
            cut = utf8_cut(carry, maxb)
            self._emit_partial(name, carry[:cut], ts)
            carry = carry[cut:]
        return carry

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
        rate = self._rate
        if rate <= 0:
            return n
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        take = min(n, int(self._tokens))
        self._tokens -= take
        if take < n:
            self.dropped_pending += n - take
            self.stats.dropped_lines += n - take
        return take

    def _report_drops(self, ts: float) -> None:
        n, self.dropped_pending = self.dropped_pending, 0
        self._system(
            f"{n} lines dropped: the log rate limit is {self._rate} lines/s "
            f"(bursts up to {int(self.burst)})",
            ts,
        )

    def _system(self, text: str, ts: float) -> None:
        rec: LogRecord = {"seq": self.next_seq, "ts": ts, "stream": "system", "line": text}
        self.next_seq += 1
        self._emit_to([rec], [len(text)])

    def _emit_partial(self, name: Stream, part: bytes, ts: float) -> None:
        if self._rate > 0 and not self._admit(1):
            return
        text = part.decode("utf-8", "replace")
        rec: LogRecord = {
            "seq": self.next_seq,
            "ts": ts,
            "stream": name,
            "line": self._masked(text) if self._mask else text,
            "partial": True,
        }
        self.next_seq += 1
        self.stats.partial_records += 1
        self._emit_to([rec], [len(rec["line"])])

    def _emit(self, name: Stream, lines: list[str], ts: float) -> None:
        if self._rate > 0:
            take = self._admit(len(lines))
            if take < len(lines):
                lines = lines[:take]
            elif self.dropped_pending:
                self._report_drops(ts)
            if not lines:
                return
        seq0 = self.next_seq
        n = len(lines)
        self.next_seq = seq0 + n
        self.stats.lines_read += n
        recs: list[LogRecord] = [
            {"seq": s, "ts": ts, "stream": name, "line": ln} for s, ln in enumerate(lines, seq0)
        ]
        self._emit_to(recs, list(itertools.accumulate(map(len, lines))))
