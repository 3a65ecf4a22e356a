"""A run's log lines: ingest (batches that never duplicate or reorder), retention, reads.

Lines are history, not actions: a batch is accepted from the run's own runner at
its own epoch even after the run ended or moved (see :meth:`LogsStore.append_log_columns`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from sequence.store import tables as t
from sequence.store.base import StoreBase
from sequence.store.errors import Conflict, StaleWrite

log = logging.getLogger("sequence.store")

# What one stored log line costs besides its text (run_id, strategy_id, seq, ts,
# stream, index entry), for the retention byte count: an estimate, kept in SQL too.
LOG_LINE_OVERHEAD = 64


@dataclass(frozen=True)
class LogColumns:
    """A contiguous batch of log lines as parallel columns, starting at ``first_seq``."""

    first_seq: int
    ts: list[float]
    streams: list[str]
    lines: list[str]
    partial: list[int]  # indexes of lines that are parts of a longer line


_LOG_COLUMNS = "run_id, seq, strategy_id, ts, stream, line, partial"
_READ_KEYS = ("seq", "ts", "stream", "line", "partial")


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
            partial = set(cols.partial)
            flags = [i in partial for i in range(skip, n)] if partial else repeat(False, n - skip)
            # The hot path of log capture: rows zipped in C and a driver-level
            # executemany are several times faster than Core's per-row dicts.
            rows = zip(repeat(run_id), range(nxt, nxt + n - skip), repeat(r.strategy_id),
                       cols.ts[skip:], cols.streams[skip:], cols.lines[skip:], flags, strict=False)
            if self.db.is_sqlite:
                c.exec_driver_sql(
                    f"INSERT INTO hosted_strategy_logs ({_LOG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", list(rows))
            else:
                # PostgreSQL's bulk ingest: COPY, in this transaction (the run row is locked above).
                raw: Any = c.connection.driver_connection
                with raw.cursor() as cur, cur.copy(f"COPY hosted_strategy_logs ({_LOG_COLUMNS}) FROM STDIN") as cp:
                    for row in rows:
                        cp.write_row(row)
            stored = n - skip
            # sum(map(len)) runs in C: the byte count costs no per-line Python work.
            nbytes = sum(map(len, cols.lines[skip:] if skip else cols.lines)) + LOG_LINE_OVERHEAD * stored
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
        runs, lg = t.runs, t.hosted_strategy_logs
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
                while excess > 0 and first < last:
                    if nbytes <= excess:
                        cut = last
                    else:  # an estimate from the run's mean line size; the loop corrects it
                        per_line = max(1, nbytes // (last - first))
                        cut = min(last, first + max(1, -(-excess // per_line)))
                    n, size = c.execute(
                        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.length(lg.c.line)), 0))
                        .where(lg.c.run_id == r.run_id, lg.c.seq > first, lg.c.seq <= cut)).one()
                    c.execute(lg.delete().where(lg.c.run_id == r.run_id, lg.c.seq <= cut))
                    freed = int(size) + LOG_LINE_OVERHEAD * int(n)
                    nbytes = max(0, nbytes - freed) if cut < last else 0
                    excess -= freed
                    dropped_total += cut - first
                    first = cut
                if first >= last:
                    nbytes = 0
                c.execute(runs.update().where(runs.c.run_id == r.run_id).values(dropped_lines=first, log_bytes=nbytes))
                if excess <= 0:
                    break
        return dropped_total

    def strategy_log_bytes(self, strategy_id: str) -> int:
        """Stored log bytes of a strategy, as retention counts them."""
        with self.db.read() as c:
            return int(c.execute(sa.select(sa.func.coalesce(sa.func.sum(t.runs.c.log_bytes), 0))
                                 .where(t.runs.c.strategy_id == strategy_id)).scalar_one())

    def read_logs(self, run_id: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        lg = t.hosted_strategy_logs
        with self.db.read() as c:
            rows = c.execute(sa.select(lg.c.seq, lg.c.ts, lg.c.stream, lg.c.line, lg.c.partial)
                             .where(lg.c.run_id == run_id, lg.c.seq > after_seq).order_by(lg.c.seq).limit(limit))
            # Zipped with the names, not Row._mapping: a page is up to 10,000 lines.
            return [dict(zip(_READ_KEYS, r, strict=True)) for r in rows]


__all__ = ["LOG_LINE_OVERHEAD", "LogColumns", "LogsStore"]
