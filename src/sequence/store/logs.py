"""A run's log lines: ingest (batches that never duplicate or reorder), retention, reads.

Lines are history, not actions: a batch is accepted from the run's own runner at
its own epoch even after the run ended or moved (see :meth:`LogsStore.append_log_columns`).

A batch is stored as one row of ``log_chunks`` (its seqs ``first_seq..last_seq``,
its columns as JSON in ``body``), not a row per line: a row per line cost a
B-tree insert and a driver round trip per line, the ingest ceiling on SQLite
(docs/design.md, "Logs"). Reads unpack the chunks; retention drops whole chunks
and cuts the one it stops in, so what it drops is still a prefix of the run's
lines, line by line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from sequence.protocol import STREAM_CODE
from sequence.store import tables as t
from sequence.store.base import StoreBase
from sequence.store.errors import Conflict, StaleWrite

log = logging.getLogger("sequence.store")

# What one stored log line costs besides its text (run_id, seq, ts, stream, its
# share of the chunk's key), for the retention byte count: an estimate, kept in SQL too.
LOG_LINE_OVERHEAD = 64

_CODE_STREAM = {c: s for s, c in STREAM_CODE.items()}


@dataclass(frozen=True)
class LogColumns:
    """A contiguous batch of log lines as parallel columns, starting at ``first_seq``.

    ``raw``: the batch's JSON exactly as its runner sent it (checked by
    :func:`sequence.protocol.decode_logs`, no line changed), stored as the chunk's
    body when the whole batch is new, so ingest encodes nothing.
    """

    first_seq: int
    ts: list[float]
    streams: list[str]
    lines: list[str]
    partial: list[int]  # indexes of lines that are parts of a longer line
    raw: str | None = None


def chunk_body(cols: LogColumns, skip: int = 0) -> str:
    """The ``body`` of a chunk holding ``cols`` from index ``skip``: the runner's batch format."""
    streams = "".join(STREAM_CODE[x] for x in cols.streams[skip:])
    return json.dumps({"ts": cols.ts[skip:], "streams": streams, "lines": cols.lines[skip:],
                       "partial": [i - skip for i in cols.partial if i >= skip]},
                      separators=(",", ":"), ensure_ascii=False)


def _unpack(body: str) -> tuple[list[Any], str, list[str], set[int]]:
    b = json.loads(body)
    return b["ts"], b["streams"], b["lines"], set(b.get("partial") or ())


class LogsStore(StoreBase):
    def _log_run(self, c: Connection, run_id: str, epoch: int, runner_id: str) -> Any:
        """The run a log batch is for: it must be this runner's, at this epoch — but it
        need not be current.  Logs are history: a run that ended, was stopped or was
        re-queued while its runner was cut off still gets the lines it printed."""
        q = sa.select(t.runs.c.strategy_id, t.runs.c.epoch, t.runs.c.runner_id, t.runs.c.log_lines).where(
            t.runs.c.run_id == run_id)
        if not self.db.is_sqlite:
            q = q.with_for_update()
        r = c.execute(q).first()
        if r is None or r.epoch != epoch or r.runner_id != runner_id:
            raise StaleWrite(f"run {run_id} epoch {epoch} is not this runner's")
        return r

    def append_log_columns(self, run_id: str, epoch: int, runner_id: str, cols: LogColumns) -> int:
        """Store a contiguous batch of log lines (what the runner sends); returns the next expected seq.

        Lines already stored (seq below the next expected one) are skipped, so a retried batch
        never duplicates; a gap raises Conflict so the runner resends from its spool and nothing
        is reordered."""
        with self.db.write() as c:
            r = self._log_run(c, run_id, epoch, runner_id)
            nxt = int(r.log_lines) + 1  # seq starts at 1 within a run
            n = len(cols.lines)
            skip = nxt - cols.first_seq
            if skip < 0:
                raise Conflict(f"log gap: expected seq {nxt}, got {cols.first_seq}")
            if skip >= n:
                return nxt
            stored = n - skip
            # sum(map(len)) runs in C: the byte count costs no per-line Python work.
            nbytes = sum(map(len, cols.lines[skip:] if skip else cols.lines)) + LOG_LINE_OVERHEAD * stored
            body = cols.raw if cols.raw is not None and not skip else chunk_body(cols, skip)
            # Bound parameters, not .values(): the compiled INSERT is cached (a batch per line
            # from a slow printer still pays one statement, not one compile).
            c.execute(t.log_chunks.insert(), {"run_id": run_id, "first_seq": nxt, "last_seq": nxt + stored - 1,
                                              "nbytes": nbytes, "body": body})
            c.execute(t.runs.update().where(t.runs.c.run_id == run_id).values(
                log_lines=nxt - 1 + stored, log_bytes=t.runs.c.log_bytes + nbytes))
        if self.log_retention_bytes:
            sid = r.strategy_id
            due = self._log_bytes_unchecked.get(sid, 0) + nbytes
            if due >= self.log_retention_bytes // 8:
                self._log_bytes_unchecked.pop(sid, None)
                try:
                    self.enforce_log_retention(sid)
                except DBAPIError:  # the batch is stored; trim on a later batch instead
                    log.warning("log retention of strategy %s failed; retrying later", sid, exc_info=True)
                    self._log_bytes_unchecked[sid] = due
            else:
                if len(self._log_bytes_unchecked) > 100_000:
                    self._log_bytes_unchecked.clear()
                self._log_bytes_unchecked[sid] = due
        return nxt + stored

    def enforce_log_retention(self, strategy_id: str, limit: int | None = None) -> int:
        """Drop a strategy's oldest log lines until its stored bytes are back under 7/8
        of the limit: old runs' lines first, then the current run's oldest.  Each run
        counts what it lost in ``dropped_lines`` (always a prefix of its seqs).
        Returns the number of lines dropped."""
        limit = self.log_retention_bytes if limit is None else limit
        if not limit:
            return 0
        runs = t.runs
        dropped_total = 0
        with self.db.write() as c:
            # Only run rows are locked, oldest first (an append locks just its own run, and
            # never waits while holding it), so a trim cannot deadlock with ingest.
            rq = (sa.select(runs.c.run_id, runs.c.log_lines, runs.c.dropped_lines, runs.c.log_bytes)
                  .where(runs.c.strategy_id == strategy_id, runs.c.log_bytes > 0).order_by(runs.c.epoch))
            if not self.db.is_sqlite:
                rq = rq.with_for_update()
            rows = c.execute(rq).all()
            total = sum(int(r.log_bytes) for r in rows)
            if total <= limit:
                return 0
            excess = total - limit * 7 // 8
            for r in rows:
                first, last, nbytes = int(r.dropped_lines), int(r.log_lines), int(r.log_bytes)
                cut, freed = self._trim_run(c, r.run_id, excess)
                if cut > first:
                    dropped_total += cut - first
                    first = cut
                excess -= freed
                nbytes = 0 if first >= last else max(0, nbytes - freed)
                c.execute(runs.update().where(runs.c.run_id == r.run_id).values(dropped_lines=first, log_bytes=nbytes))
                if excess <= 0:
                    break
        return dropped_total

    def _trim_run(self, c: Connection, run_id: str, excess: int) -> tuple[int, int]:
        """Drop the oldest lines of one run worth at least ``excess`` bytes (or all of them):
        whole chunks, then a cut inside the chunk where it stops. Returns (the last seq
        dropped, or 0; bytes freed)."""
        lc = t.log_chunks
        cut, freed, after = 0, 0, 0
        while freed < excess:
            page = c.execute(sa.select(lc.c.first_seq, lc.c.last_seq, lc.c.nbytes)
                             .where(lc.c.run_id == run_id, lc.c.last_seq > after)
                             .order_by(lc.c.last_seq).limit(500)).all()
            if not page:
                break
            whole = None
            for ch in page:
                if freed >= excess:
                    break
                if freed + int(ch.nbytes) <= excess:  # the whole chunk goes
                    freed += int(ch.nbytes)
                    whole = cut = int(ch.last_seq)
                    continue
                # The chunk where the excess ends: keep its newest lines.
                body = c.execute(sa.select(lc.c.body).where(lc.c.run_id == run_id, lc.c.last_seq == ch.last_seq)
                                 ).scalar_one()
                ts, streams, lines, partial = _unpack(body)
                k, part = 0, 0
                while k < len(lines) and freed + part < excess:
                    part += len(lines[k]) + LOG_LINE_OVERHEAD
                    k += 1
                rest = LogColumns(0, ts, [_CODE_STREAM[x] for x in streams], lines, sorted(partial))
                c.execute(lc.update().where(lc.c.run_id == run_id, lc.c.last_seq == ch.last_seq).values(
                    first_seq=int(ch.first_seq) + k, nbytes=int(ch.nbytes) - part, body=chunk_body(rest, k)))
                freed += part
                cut = int(ch.first_seq) + k - 1
            if whole is not None:
                c.execute(lc.delete().where(lc.c.run_id == run_id, lc.c.last_seq <= whole))
            after = int(page[-1].last_seq)
        return cut, freed

    def strategy_log_bytes(self, strategy_id: str) -> int:
        """Stored log bytes of a strategy, as retention counts them."""
        with self.db.read() as c:
            return int(c.execute(sa.select(sa.func.coalesce(sa.func.sum(t.runs.c.log_bytes), 0))
                                 .where(t.runs.c.strategy_id == strategy_id)).scalar_one())

    def read_logs(self, run_id: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` lines of a run with seq > ``after_seq``, in order."""
        lc = t.log_chunks
        out: list[dict[str, Any]] = []
        cursor = after_seq
        with self.db.read() as c:
            while len(out) < limit:
                page = c.execute(sa.select(lc.c.first_seq, lc.c.last_seq, lc.c.body)
                                 .where(lc.c.run_id == run_id, lc.c.last_seq > cursor)
                                 .order_by(lc.c.last_seq).limit(min(limit - len(out), 256))).all()
                if not page:
                    break
                for first, _last, body in page:
                    ts, streams, lines, partial = _unpack(body)
                    for i in range(max(0, after_seq + 1 - first), len(lines)):
                        out.append({"seq": first + i, "ts": float(ts[i]), "stream": _CODE_STREAM[streams[i]],
                                    "line": lines[i], "partial": i in partial})
                        if len(out) == limit:
                            return out
                cursor = page[-1][1]
        return out


__all__ = ["LOG_LINE_OVERHEAD", "LogColumns", "LogsStore", "chunk_body"]
