"""The pump's queue of sealed batches: in memory while it fits, then on disk.

Batches wait here, in order, until the sink takes them. Up to the pump's
``memory_bytes`` they are kept in memory; beyond that (or while the sink is
down) they are appended to spool files (``spool-<n>.jsonl``, one JSON array
per line) in the run's ``logs/`` dir and read back in order once the sink
catches up. :meth:`Spool.persist` writes what is left to files when the pump
closes; :func:`replay_spool` (or :func:`sequence.runner.logs.uploader.deliver_spools`
for the runner daemon) delivers them later.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sequence.runner.logs.lines import LogPumpStats, LogRecord, LogSink

#: Sorts before the pump's own ``spool-00000001…`` files: batches the uploader held
#: when it closed are older than anything the pump still had.
UPLOADER_SPOOL = "spool-00000000-uploader.jsonl"


def encode_batch(batch: list[LogRecord]) -> bytes:
    """One spool line: the batch as a JSON array."""
    return (json.dumps(batch, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def write_batches(path: Path, batches: Iterable[list[LogRecord]]) -> None:
    """Write ``batches`` to a spool file (replacing it)."""
    with open(path, "wb") as f:
        for batch in batches:
            f.write(encode_batch(batch))


def read_batches(path: Path) -> Iterator[list[LogRecord]]:
    """The batches of a spool file, in order."""
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                yield json.loads(raw)


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
        for batch in read_batches(path):
            await sink(batch)
            sent += len(batch)
        path.unlink()
    return sent


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


class Spool:
    """Sealed batches in order: runs of memory segments and file segments."""

    def __init__(self, spool_dir: Path, stats: LogPumpStats) -> None:
        self.dir = spool_dir
        self.stats = stats
        #: Bytes of the batches held in memory (the pump's estimate).
        self.mem_bytes = 0
        self._segs: deque[_Seg] = deque()
        self._seg_index = 0

    def push_mem(self, batch: list[LogRecord], nbytes: int) -> None:
        last = self._segs[-1] if self._segs else None
        if not isinstance(last, _MemSeg):
            last = _MemSeg(self._new_index())
            self._segs.append(last)
        last.batches.append((batch, nbytes))
        self.mem_bytes += nbytes

    def push_file(self, batch: list[LogRecord]) -> None:
        """Append to the spool on disk; ``OSError`` when it cannot (nothing queued then)."""
        last = self._segs[-1] if self._segs else None
        data = encode_batch(batch)
        if not isinstance(last, _FileSeg):
            index = self._new_index()
            self.dir.mkdir(parents=True, exist_ok=True)
            path = self.dir / f"spool-{index:08d}.jsonl"
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

    def _new_index(self) -> int:
        self._seg_index += 1
        return self._seg_index

    def peek(self) -> list[LogRecord] | None:
        """The oldest batch, or None when empty (it stays until :meth:`pop`)."""
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

    def pop(self) -> None:
        """Drop the batch :meth:`peek` returned (the sink has it)."""
        seg = self._segs[0]
        if isinstance(seg, _MemSeg):
            _, nbytes = seg.batches.popleft()
            self.mem_bytes -= nbytes
        else:
            n = seg.lengths.popleft()
            seg.read_off += n
            seg.current = None
            self.stats.spool_bytes -= n

    def persist(self) -> list[Path]:
        """Write everything still queued to spool files, in order; the files."""
        left: list[Path] = []
        while self._segs:
            seg = self._segs.popleft()
            if isinstance(seg, _MemSeg):
                if not seg.batches:
                    continue
                self.dir.mkdir(parents=True, exist_ok=True)
                path = self.dir / f"spool-{seg.index:08d}.jsonl"
                write_batches(path, (batch for batch, _ in seg.batches))
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
        self.mem_bytes = 0
        return left
