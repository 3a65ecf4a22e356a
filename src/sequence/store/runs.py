"""Runners and runs: registration, claims, heartbeats and leases, exits.

A claim is one transaction: pick the oldest runnable strategy, bump the epoch,
insert the run (and, through ``mint_key``, its key). Every later runner write
names ``(run_id, epoch)`` and is refused (:class:`~sequence.store.errors.StaleWrite`)
unless that run is current on that runner. How a run's end moves its strategy
(stopped, failed with a backoff, re-queued) follows :mod:`sequence.lifecycle`:
its tables and its restart policy (:func:`~sequence.lifecycle.restart_after_failure`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sequence.lifecycle import (
    RUN,
    RUN_ACTIVE,
    STRATEGY,
    RunStatus,
    StrategyStatus,
    restart_after_failure,
)
from sequence.store import tables as t
from sequence.store.base import StoreBase
from sequence.store.base import row as _row
from sequence.store.errors import NotFound, StaleWrite
from sequence.store.ids import new_uuid, short_code


@dataclass(frozen=True)
class ExitReport:
    code: int | None = None
    signal: int | None = None
    oom: bool = False
    reason: str | None = None
    peak_rss_bytes: int | None = None
    cpu_seconds: float | None = None
    runner_shutdown: bool = False  # not the strategy's doing: re-queued at once, like a lost runner


def run_summary_of(r: Mapping[str, Any]) -> dict[str, Any]:
    """What a strategy shows of its current run."""
    return {"run_id": r["run_id"], "status": r["status"], "runner_id": r["runner_id"], "region": r["region"],
            "epoch": r["epoch"], "claimed_at": r["claimed_at"], "started_at": r["started_at"]}


def run_summary(c: Connection, run_id: str | None) -> dict[str, Any] | None:
    if not run_id:
        return None
    r = c.execute(sa.select(t.runs).where(t.runs.c.run_id == run_id)).first()
    return run_summary_of(_row(r)) if r else None


def request_stop(c: Connection, run_id: str, now: float) -> None:
    """Ask an active run to stop (its runner hears it on its next heartbeat)."""
    r = c.execute(sa.select(t.runs.c.status).where(t.runs.c.run_id == run_id)).first()
    if r is not None and r.status in RUN_ACTIVE:
        c.execute(t.runs.update().where(t.runs.c.run_id == run_id).values(
            status=str(RUN.next(r.status, "stop")), stop_requested_at=now))


class RunsStore(StoreBase):
    # -- runners ---------------------------------------------------------------------------------
    def register_runner(self, token_id: str, name: str, region: str, capacity: int,
                        isolation: Mapping[str, Any]) -> str:
        now = self.clock()
        rid = "runner_" + short_code(12)
        with self.db.write() as c:
            c.execute(t.runners.insert().values(runner_id=rid, token_id=token_id, name=name, region=region,
                                                capacity=capacity, isolation=dict(isolation), registered_at=now,
                                                last_seen_at=now, beat_at=now))
        return rid

    def get_runner(self, runner_id: str) -> dict[str, Any] | None:
        with self.db.read() as c:
            r = c.execute(sa.select(t.runners).where(t.runners.c.runner_id == runner_id)).first()
        return _row(r) if r else None

    def list_runners(self, *, seen_within: float | None = None) -> list[dict[str, Any]]:
        q = sa.select(t.runners).order_by(t.runners.c.registered_at)
        if seen_within is not None:
            q = q.where(t.runners.c.last_seen_at >= self.clock() - seen_within)
        with self.db.read() as c:
            return [_row(r) for r in c.execute(q)]

    def runners_at_capacity(self, runner_ids: Sequence[str]) -> list[str]:
        if not runner_ids:
            return []
        q = (sa.select(t.runners.c.runner_id, t.runners.c.capacity, sa.func.count(t.runs.c.run_id))
             .select_from(t.runners.outerjoin(t.runs, sa.and_(t.runs.c.runner_id == t.runners.c.runner_id,
                                                               t.runs.c.active_guard.is_not(None))))
             .where(t.runners.c.runner_id.in_(list(runner_ids))).group_by(t.runners.c.runner_id, t.runners.c.capacity))
        with self.db.read() as c:
            return [r[0] for r in c.execute(q) if r[2] >= r[1]]

    def runner_loads(self, runner_ids: Sequence[str]) -> dict[str, int]:
        """Active runs per runner (the dashboard's load column)."""
        if not runner_ids:
            return {}
        q = (sa.select(t.runs.c.runner_id, sa.func.count(t.runs.c.run_id))
             .where(t.runs.c.runner_id.in_(list(runner_ids)), t.runs.c.active_guard.is_not(None))
             .group_by(t.runs.c.runner_id))
        with self.db.read() as c:
            return {r[0]: int(r[1]) for r in c.execute(q)}

    def touch_runner(self, runner_id: str) -> None:
        with self.db.write() as c:
            c.execute(t.runners.update().where(t.runners.c.runner_id == runner_id).values(last_seen_at=self.clock()))

    # -- the watch connection: a faster signal than a lease ---------------------------------------
    def open_watch(self, runner_id: str) -> int:
        """The runner opened its watch connection: a new watch epoch, and its live leases renewed.

        Both in one transaction, committed before the runner hears the watch is open (its
        first byte). So a close of an older watch either sees the new epoch and changes
        nothing, or came first and its shortened leases are renewed here — the runner,
        which stops fencing on that first byte, is never left with a lease shorter than
        it believes. A lease that already lapsed is not revived: the reaper has it.
        """
        now = self.clock()
        r_ = t.runs
        with self.db.write() as c:
            row = c.execute(sa.select(t.runners.c.watch_epoch).where(t.runners.c.runner_id == runner_id)).first()
            if row is None:
                raise NotFound("runner")
            epoch = int(row.watch_epoch) + 1
            c.execute(t.runners.update().where(t.runners.c.runner_id == runner_id).values(
                watch_epoch=epoch, last_seen_at=now))
            c.execute(r_.update().where(r_.c.runner_id == runner_id, r_.c.active_guard.is_not(None),
                                        r_.c.lease_expires_at >= now,
                                        r_.c.lease_expires_at < now + self.lease_seconds)
                      .values(lease_expires_at=now + self.lease_seconds))
        return epoch

    def watch_closed(self, runner_id: str, epoch: int, within: float) -> int:
        """The runner's watch connection ``epoch`` closed: unless a newer one is open, its
        runs' leases end ``within`` seconds from now (never later than they would have).

        The runner kills its runs sooner than that when its watch closes and it cannot
        open another (runner/daemon.py: ``WATCH_FENCE_S``); see docs/design.md. Returns
        how many leases were shortened."""
        now = self.clock()
        until = now + within
        r_ = t.runs
        with self.db.write() as c:
            current = c.execute(sa.select(t.runners.c.watch_epoch)
                                .where(t.runners.c.runner_id == runner_id)).scalar()
            if current != epoch:
                return 0
            res = c.execute(r_.update().where(r_.c.runner_id == runner_id, r_.c.active_guard.is_not(None),
                                              r_.c.lease_expires_at > until).values(lease_expires_at=until))
        n = int(res.rowcount or 0)
        if n and now < self.lease_grace_until:
            # Seen by this coordinator since it started: a fresh signal, not an outage's
            # leftover — its reaper honours it even within the start grace (expire_leases).
            self._watch_cut[runner_id] = until
        return n

    # -- claims, heartbeats, starts --------------------------------------------------------------
    def claim(self, runner_id: str, regions: Sequence[str], free_slots: int, *,
              mint_key: Callable[[Connection, Mapping[str, Any], str], str] | None = None,
              beats: bool = False) -> dict[str, Any] | None:
        """Atomically take the oldest runnable strategy this runner may run.

        *beats*: the runner heartbeats when idle, so none for half a lease means it is frozen
        or cut off, and its poll is given nothing.

        Returns the new run row joined with its strategy (sealed columns
        included, for the caller to unseal), or None.
        """
        if free_slots <= 0:
            return None
        now = self.clock()
        s = t.strategies
        runnable = sa.or_(
            s.c.status == str(StrategyStatus.queued),
            sa.and_(s.c.status == str(StrategyStatus.failed), s.c.desired_state == "running", s.c.next_restart_at <= now),
        )
        where = (runnable, sa.or_(s.c.region.is_(None), s.c.region.in_(list(regions))))
        # Most polls find nothing: a read says so without the write lock. (A strategy queued
        # after this read wakes the poll again: its waiter is made before it claims.)
        with self.db.read() as c:
            if c.execute(sa.select(s.c.strategy_id).where(*where).limit(1)).first() is None:
                return None
        q = (sa.select(s).where(*where)
             .order_by(sa.func.coalesce(s.c.next_restart_at, s.c.queued_at, s.c.created_at)).limit(1))
        if not self.db.is_sqlite:
            q = q.with_for_update(skip_locked=True, of=s)
        with self.db.write() as c:
            active = c.execute(sa.select(sa.func.count()).select_from(t.runs).where(
                t.runs.c.runner_id == runner_id, t.runs.c.active_guard.is_not(None))).scalar_one()
            runner = c.execute(sa.select(t.runners.c.capacity, t.runners.c.draining_at, t.runners.c.beat_at)
                               .where(t.runners.c.runner_id == runner_id)).first()
            if runner is None or runner.draining_at is not None or active >= runner.capacity:
                return None
            if beats and runner.beat_at is not None and runner.beat_at < now - self.lease_seconds / 2:
                # Its heartbeats stopped (frozen, cut off): this poll may be a connection
                # nobody reads any more; the run would wait out a whole lease there.
                return None
            st = c.execute(q).first()
            if st is None:
                return None
            event = "claim" if st.status == StrategyStatus.queued else "retry"
            new_status = STRATEGY.next(st.status, event)
            epoch = self._bump(c, "run_epoch")
            run_id = new_uuid()
            c.execute(t.runs.insert().values(
                run_id=run_id, strategy_id=st.strategy_id, client_id=st.client_id, epoch=epoch,
                status=str(RunStatus.starting), runner_id=runner_id, region=st.region or regions[0],
                artifact_id=st.artifact_id, layer_id=st.layer_id,
                artifact_sha256=st.artifact_sha256, lease_expires_at=now + self.lease_seconds, claimed_at=now,
                active_guard="A"))
            c.execute(s.update().where(s.c.strategy_id == st.strategy_id).values(
                status=str(new_status), current_run_id=run_id, next_restart_at=None, updated_at=now))
            c.execute(t.runners.update().where(t.runners.c.runner_id == runner_id).values(last_seen_at=now))
            out = {**_row(st), "run_id": run_id, "epoch": epoch, "status": str(new_status)}
            if mint_key is not None:
                out["run_api_key"] = mint_key(c, out, run_id)
        return out

    def _bump(self, c: Connection, name: str) -> int:
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        insert = sqlite_insert if self.db.is_sqlite else pg_insert
        update = t.counters.update().where(t.counters.c.name == name).values(value=t.counters.c.value + 1)
        if c.dialect.update_returning:  # PostgreSQL; SQLite from 3.35
            bump = update.returning(t.counters.c.value)
            value = c.execute(bump).scalar()  # one statement, once the counter exists
            if value is None:
                c.execute(insert(t.counters).values(name=name, value=0).on_conflict_do_nothing())
                value = c.execute(bump).scalar_one()
            return int(value)
        c.execute(insert(t.counters).values(name=name, value=0).on_conflict_do_nothing())
        c.execute(update)
        return int(c.execute(sa.select(t.counters.c.value).where(t.counters.c.name == name)).scalar_one())

    def _current_run(self, c: Connection, run_id: str, epoch: int, runner_id: str | None = None) -> Any:
        q = sa.select(t.runs).where(t.runs.c.run_id == run_id)
        if not self.db.is_sqlite:
            q = q.with_for_update()
        r = c.execute(q).first()
        if r is None or r.epoch != epoch or r.active_guard is None or (runner_id and r.runner_id != runner_id):
            raise StaleWrite(f"run {run_id} epoch {epoch} is not current")
        return r

    def heartbeat(self, runner_id: str, runs: Sequence[tuple[str, int]]) -> dict[str, str]:
        """Renew leases.  Answers per run: ``continue``, ``stop`` or ``kill`` (stale: not yours any more).

        One SELECT and one UPDATE per 500 runs, not two statements per run: a runner with
        hundreds of strategies heartbeats every couple of seconds."""
        now = self.clock()
        out: dict[str, str] = {}
        r_ = t.runs
        with self.db.write() as c:
            c.execute(t.runners.update().where(t.runners.c.runner_id == runner_id).values(last_seen_at=now, beat_at=now))
            for i in range(0, len(runs), 500):
                part = runs[i:i + 500]
                q = sa.select(r_.c.run_id, r_.c.epoch, r_.c.active_guard, r_.c.runner_id, r_.c.lease_expires_at,
                              r_.c.status).where(r_.c.run_id.in_([run_id for run_id, _ in part]))
                if not self.db.is_sqlite:
                    q = q.with_for_update()
                rows = {r.run_id: r for r in c.execute(q)}
                renew: list[str] = []
                for run_id, epoch in part:
                    r = rows.get(run_id)
                    if r is None or r.epoch != epoch or r.active_guard is None or r.runner_id != runner_id:
                        out[run_id] = "kill"  # not this runner's current run at this epoch (stale)
                    elif (r.lease_expires_at is not None and r.lease_expires_at < now
                          and now >= self.lease_grace_until):
                        # Too late: the lease has lapsed; expire_leases will (or did) re-queue it.
                        out[run_id] = "kill"
                    else:
                        renew.append(run_id)
                        out[run_id] = "stop" if r.status == RunStatus.stopping else "continue"
                if renew:
                    c.execute(r_.update().where(r_.c.run_id.in_(renew)).values(lease_expires_at=now + self.lease_seconds))
        return out

    def pending_stops(self, runner_id: str, exclude: Iterable[str]) -> list[str]:
        ex = set(exclude)
        with self.db.read() as c:
            rows = c.execute(sa.select(t.runs.c.run_id).where(
                t.runs.c.runner_id == runner_id, t.runs.c.status == str(RunStatus.stopping))).scalars().all()
        return [r for r in rows if r not in ex]

    def mark_started(self, run_id: str, epoch: int, runner_id: str) -> None:
        now = self.clock()
        with self.db.write() as c:
            r = self._current_run(c, run_id, epoch, runner_id)
            c.execute(t.runs.update().where(t.runs.c.run_id == run_id).values(
                status=str(RUN.next(r.status, "started")), started_at=now))
    # -- exits and leases ------------------------------------------------------------------------
    def report_exit(self, run_id: str, epoch: int, runner_id: str, report: ExitReport) -> dict[str, Any]:
        now = self.clock()
        with self.db.write() as c:
            r = self._current_run(c, run_id, epoch, runner_id)
            ok = report.code == 0 and not report.oom and report.signal is None
            run_status = RUN.next(r.status, "exit_ok" if ok else "exit_fail")
            reason = report.reason or _exit_reason(report)
            c.execute(t.runs.update().where(t.runs.c.run_id == run_id).values(
                status=str(run_status), ended_at=now, active_guard=None, exit_code=report.code,
                exit_signal=report.signal, oom=report.oom, reason=reason, peak_rss_bytes=report.peak_rss_bytes,
                cpu_seconds=report.cpu_seconds, lease_expires_at=None))
            self._end_run_for_strategy(c, r, ok, {"code": report.code, "signal": report.signal, "oom": report.oom,
                                                  "reason": reason}, now, runner_lost=report.runner_shutdown)
            if report.runner_shutdown:
                c.execute(t.runners.update().where(t.runners.c.runner_id == runner_id, t.runners.c.draining_at.is_(None))
                          .values(draining_at=now))
            c.execute(t.api_keys.update().where(t.api_keys.c.run_id == run_id).values(revoked_at=now))
        return {"run_id": run_id, "status": str(run_status)}

    def _end_run_for_strategy(self, c: Connection, run: Any, ok: bool, last_exit: dict[str, Any], now: float,
                              *, runner_lost: bool = False) -> None:
        s = t.strategies
        st = c.execute(sa.select(s).where(s.c.strategy_id == run.strategy_id)).first()
        if st is None or st.current_run_id != run.run_id:
            return
        upd: dict[str, Any] = {"last_exit": last_exit, "updated_at": now}
        if st.status == StrategyStatus.stopping:
            event = "requeue" if st.desired_state == "running" else "stopped"
            status = STRATEGY.next(st.status, event)
            if status == StrategyStatus.queued:
                upd.update(queued_at=now, consecutive_failures=0)
        else:
            status = STRATEGY.next(st.status, "exit_ok" if ok else "exit_fail")
            if status == StrategyStatus.failed:
                restart = restart_after_failure(int(st.consecutive_failures), ran_since=run.started_at or run.claimed_at,
                                                now=now, runner_lost=runner_lost)
                upd.update(consecutive_failures=restart.consecutive_failures, restart_count=int(st.restart_count) + 1,
                           next_restart_at=restart.at)
            else:
                upd.update(consecutive_failures=0, desired_state="stopped")
        upd["status"] = str(status)
        c.execute(s.update().where(s.c.strategy_id == st.strategy_id).values(**upd))

    def begin_lease_grace(self) -> None:
        """Call when the coordinator starts: for one lease period no lease is charged.

        While the coordinator was down no runner could heartbeat, so leases that
        lapsed meanwhile say nothing about the runners; they get one full period
        to check in (a heartbeat renews them) before the reaper may call a run lost.
        """
        self.lease_grace_until = self.clock() + self.lease_seconds

    def stop_charging_leases(self) -> None:
        """The coordinator is stopping (its listener is closed, runners are refused):
        from now on no lease is charged by this process — see api/server.py."""
        self.lease_grace_until = float("inf")

    def expire_leases(self) -> list[str]:
        """Mark runs whose lease lapsed as lost, and fail/re-queue their strategies."""
        now = self.clock()
        q = sa.select(t.runs).where(t.runs.c.active_guard.is_not(None), t.runs.c.lease_expires_at < now)
        if now < self.lease_grace_until:
            # The start grace: no lease is charged — except those a watch close seen here
            # shortened (a runner that died after this coordinator started).
            if not self._watch_cut:
                return []
            q = q.where(t.runs.c.runner_id.in_(list(self._watch_cut)))
        elif self._watch_cut:
            self._watch_cut.clear()
        lost: list[str] = []
        if not self.db.is_sqlite:
            q = q.with_for_update(skip_locked=True)
        with self.db.write() as c:
            for r in c.execute(q).all():
                reason = "runner lost: lease expired"
                c.execute(t.runs.update().where(t.runs.c.run_id == r.run_id).values(
                    status=str(RUN.next(r.status, "lease_expired")), ended_at=now, active_guard=None,
                    reason=reason))
                c.execute(t.api_keys.update().where(t.api_keys.c.run_id == r.run_id).values(revoked_at=now))
                self._end_run_for_strategy(c, r, False, {"code": None, "signal": None, "oom": False, "reason": reason},
                                           now, runner_lost=True)
                lost.append(r.run_id)
        return lost

    def next_due_restart(self) -> float | None:
        s = t.strategies
        with self.db.read() as c:
            return c.execute(sa.select(sa.func.min(s.c.next_restart_at)).where(
                s.c.status == str(StrategyStatus.failed), s.c.desired_state == "running")).scalar()

    # -- reading runs ----------------------------------------------------------------------------
    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.db.read() as c:
            r = c.execute(sa.select(t.runs).where(t.runs.c.run_id == run_id)).first()
        return _row(r) if r else None

    def list_runs(self, client_id: str, strategy_id: str, limit: int = 50, *,
                  before_epoch: int | None = None) -> list[dict[str, Any]]:
        """Newest first (epochs grow with every claim); ``before_epoch`` pages back."""
        q = sa.select(t.runs).where(t.runs.c.strategy_id == strategy_id, t.runs.c.client_id == client_id)
        if before_epoch is not None:
            q = q.where(t.runs.c.epoch < before_epoch)
        with self.db.read() as c:
            return [_row(r) for r in c.execute(q.order_by(t.runs.c.epoch.desc()).limit(limit))]

    def latest_run_id(self, strategy_id: str) -> str | None:
        with self.db.read() as c:
            return c.execute(sa.select(t.runs.c.run_id).where(t.runs.c.strategy_id == strategy_id)
                             .order_by(t.runs.c.epoch.desc()).limit(1)).scalar()

def _exit_reason(report: ExitReport) -> str:
    if report.oom:
        return "oom"
    if report.signal is not None:
        return f"killed by signal {report.signal}"
    if report.code == 0:
        return "exited 0"
    return f"exited with code {report.code}"


__all__ = ["ExitReport", "RunsStore", "request_stop", "run_summary", "run_summary_of"]
