"""Strategies: deploy and redeploy, start, stop, delete, and their artifacts.

Each move follows :data:`sequence.lifecycle.STRATEGY`; a stop or a redeploy of a
running strategy asks its run to stop (:func:`sequence.store.runs.request_stop`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from sequence.lifecycle import STRATEGY, StrategyStatus
from sequence.secrets import STRATEGY_SEALED_COLUMNS
from sequence.store import tables as t
from sequence.store.base import StoreBase
from sequence.store.base import row as _row
from sequence.store.errors import Conflict, NotFound, QuotaExceeded
from sequence.store.ids import short_code
from sequence.store.runs import request_stop, run_summary, run_summary_of


class StrategiesStore(StoreBase):
    def find_strategy_id(self, client_id: str, name: str) -> str | None:
        with self.db.read() as c:
            return c.execute(sa.select(t.strategies.c.strategy_id).where(
                t.strategies.c.client_id == client_id, t.strategies.c.name == name)).scalar()

    def deploy_strategy(self, strategy_id: str, client_id: str, fields: Mapping[str, Any], artifact: bytes,
                        *, start: bool, max_per_client: int | None = None) -> tuple[dict[str, Any], bool]:
        """Create, or redeploy (same client + name keeps the id).  Returns (row, created).

        A new strategy past the client's *max_per_client* raises :class:`QuotaExceeded`."""
        now = self.clock()
        art_id = "art_" + short_code(16)
        s = t.strategies
        try:
            with self.db.write() as c:
                cur = c.execute(sa.select(s).where(s.c.strategy_id == strategy_id)).first()
                art = t.artifacts.insert().values(
                    artifact_id=art_id, strategy_id=strategy_id, sha256=fields["artifact_sha256"],
                    size=len(artifact), data=artifact, created_at=now)
                values = {**fields, "artifact_id": art_id, "updated_at": now}
                if cur is None:
                    if max_per_client is not None and c.execute(
                            sa.select(sa.func.count()).select_from(s).where(s.c.client_id == client_id)
                    ).scalar_one() >= max_per_client:
                        raise QuotaExceeded(max_per_client)
                    status: str = StrategyStatus.queued if start else StrategyStatus.stopped
                    c.execute(s.insert().values(
                        strategy_id=strategy_id, client_id=client_id, created_at=now, status=str(status),
                        desired_state="running" if start else "stopped",
                        queued_at=now if start else None, restart_count=0, consecutive_failures=0, **values))
                    c.execute(art)
                    created = True
                else:
                    c.execute(art)
                    status = STRATEGY.next(cur.status, "redeploy")
                    desired = "running" if start else cur.desired_state
                    # A crash-looping strategy (failed, waiting for its backoff) runs the
                    # new code now, as a running one does after its restart.
                    if (start or desired == "running") and status in (StrategyStatus.stopped, StrategyStatus.failed):
                        status = STRATEGY.next(status, "start")
                    # New code, fresh count: a redeploy ends a crash loop's backoff too.
                    upd: dict[str, Any] = {"status": str(status), "desired_state": desired, "restart_count": 0,
                                           "consecutive_failures": 0}
                    if status == StrategyStatus.queued:
                        upd.update(queued_at=now, next_restart_at=None)
                    c.execute(s.update().where(s.c.strategy_id == strategy_id).values(**values, **upd))
                    if status == StrategyStatus.stopping and cur.current_run_id:
                        request_stop(c, cur.current_run_id, now)
                    created = False
                self._prune_artifacts(c, strategy_id)
        except IntegrityError as exc:
            raise Conflict("a strategy with this name was created concurrently; retry") from exc
        row = self.get_strategy(client_id, strategy_id)
        assert row is not None
        return row, created

    def _prune_artifacts(self, c: Connection, strategy_id: str) -> None:
        keep = sa.union(
            sa.select(t.strategies.c.artifact_id).where(t.strategies.c.strategy_id == strategy_id),
            sa.select(t.runs.c.artifact_id).where(t.runs.c.strategy_id == strategy_id, t.runs.c.active_guard.is_not(None)),
        )
        c.execute(t.artifacts.delete().where(t.artifacts.c.strategy_id == strategy_id,
                                             t.artifacts.c.artifact_id.not_in(sa.select(keep.subquery().c[0]))))

    def get_strategy(self, client_id: str | None, strategy_id: str, *, with_sealed: bool = False) -> dict[str, Any] | None:
        s = t.strategies
        cols = [col for col in s.c if with_sealed or col.name not in STRATEGY_SEALED_COLUMNS]
        q = sa.select(*cols).where(s.c.strategy_id == strategy_id)
        if client_id is not None:
            q = q.where(s.c.client_id == client_id)
        with self.db.read() as c:
            r = c.execute(q).first()
            if r is None:
                return None
            row = _row(r)
            row["current_run"] = run_summary(c, row["current_run_id"])
        return row

    def list_strategies(self, client_id: str, *, limit: int | None = None,
                        after: tuple[float, str] | None = None) -> list[dict[str, Any]]:
        """Oldest first; ``after`` = the (created_at, strategy_id) of the last row seen."""
        s = t.strategies
        cols = [col for col in s.c if col.name not in STRATEGY_SEALED_COLUMNS]
        q = sa.select(*cols).where(s.c.client_id == client_id).order_by(s.c.created_at, s.c.strategy_id)
        if after is not None:
            q = q.where(sa.or_(s.c.created_at > after[0],
                               sa.and_(s.c.created_at == after[0], s.c.strategy_id > after[1])))
        if limit is not None:
            q = q.limit(limit)
        with self.db.read() as c:
            rows = [_row(r) for r in c.execute(q)]
            runs = {r["current_run_id"] for r in rows if r["current_run_id"]}
            summaries = {}
            if runs:
                for r in c.execute(sa.select(t.runs).where(t.runs.c.run_id.in_(runs))):
                    summaries[r.run_id] = run_summary_of(_row(r))
            for row in rows:
                row["current_run"] = summaries.get(row["current_run_id"])
        return rows

    def count_strategies_by_status(self) -> dict[str, int]:
        s = t.strategies
        with self.db.read() as c:
            return {r[0]: int(r[1]) for r in c.execute(sa.select(s.c.status, sa.func.count()).group_by(s.c.status))}


    def start_strategy(self, client_id: str, strategy_id: str) -> dict[str, Any]:
        now = self.clock()
        with self.db.write() as c:
            cur = self._lock_strategy(c, client_id, strategy_id)
            status = STRATEGY.next(cur.status, "start")
            upd: dict[str, Any] = {"status": str(status), "desired_state": "running", "updated_at": now}
            if cur.status in (StrategyStatus.stopped, StrategyStatus.failed):
                upd.update(queued_at=now, next_restart_at=None, consecutive_failures=0)
            c.execute(t.strategies.update().where(t.strategies.c.strategy_id == strategy_id).values(**upd))
        row = self.get_strategy(client_id, strategy_id)
        assert row is not None
        return row

    def stop_strategy(self, client_id: str, strategy_id: str) -> dict[str, Any]:
        now = self.clock()
        with self.db.write() as c:
            cur = self._lock_strategy(c, client_id, strategy_id)
            status = STRATEGY.next(cur.status, "stop")
            c.execute(t.strategies.update().where(t.strategies.c.strategy_id == strategy_id).values(
                status=str(status), desired_state="stopped", next_restart_at=None, updated_at=now))
            if status == StrategyStatus.stopping and cur.current_run_id:
                request_stop(c, cur.current_run_id, now)
        row = self.get_strategy(client_id, strategy_id)
        assert row is not None
        return row

    def delete_strategy(self, client_id: str, strategy_id: str) -> None:
        with self.db.write() as c:
            self._lock_strategy(c, client_id, strategy_id)
            run_ids = sa.select(t.runs.c.run_id).where(t.runs.c.strategy_id == strategy_id)
            c.execute(t.api_keys.delete().where(t.api_keys.c.run_id.in_(run_ids)))
            c.execute(t.log_chunks.delete().where(t.log_chunks.c.run_id.in_(run_ids)))
            c.execute(t.runs.delete().where(t.runs.c.strategy_id == strategy_id))
            c.execute(t.artifacts.delete().where(t.artifacts.c.strategy_id == strategy_id))
            c.execute(t.strategies.delete().where(t.strategies.c.strategy_id == strategy_id))

    def _lock_strategy(self, c: Connection, client_id: str, strategy_id: str) -> Any:
        q = sa.select(t.strategies).where(t.strategies.c.strategy_id == strategy_id, t.strategies.c.client_id == client_id)
        if not self.db.is_sqlite:
            q = q.with_for_update()
        r = c.execute(q).first()
        if r is None:
            raise NotFound(f"no strategy {strategy_id}")
        return r

    def artifact(self, artifact_id: str) -> tuple[str, bytes] | None:
        with self.db.read() as c:
            r = c.execute(sa.select(t.artifacts.c.sha256, t.artifacts.c.data)
                          .where(t.artifacts.c.artifact_id == artifact_id)).first()
        return (r.sha256, bytes(r.data)) if r else None


__all__ = ["StrategiesStore"]
