"""Domain verbs over the tables.  Everything above this module speaks these
verbs; nothing above it writes SQL.

Exceptions::

    StoreError
     ├── NotFound          no such object for this client
     ├── Conflict          the move is not allowed now (state machine, races)
     └── StaleWrite        a runner write whose (run_id, epoch) is not current
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from sequence.lifecycle import (
    HEALTHY_RESET_SECONDS,
    RUN,
    RUN_ACTIVE,
    STRATEGY,
    RunStatus,
    StrategyStatus,
    restart_delay,
)
from sequence.store import tables as t
from sequence.store.engine import Database
from sequence.store.ids import key_prefix, new_token, new_uuid, short_code, token_hash

log = logging.getLogger("sequence.store")


class StoreError(Exception):
    pass


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


class StaleWrite(StoreError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is calling: a client's API key (possibly scoped to one run)."""

    client_id: str
    key_id: str
    mode: str  # live | test
    run_id: str | None = None
    # Set with run_id: the strategy a run-scoped key belongs to (all it may see).
    strategy_id: str | None = None

    @property
    def is_run_key(self) -> bool:
        return self.run_id is not None

    @property
    def is_sandbox(self) -> bool:
        return self.mode == "test"


@dataclass(frozen=True)
class LogColumns:
    """A contiguous batch of log lines as parallel columns, starting at ``first_seq``."""

    first_seq: int
    ts: list[float]
    streams: list[str]
    lines: list[str]
    partial: list[int]  # indexes of lines that are parts of a longer line

    @classmethod
    def from_records(cls, lines: Sequence[Mapping[str, Any]]) -> LogColumns:
        """From ``{seq, ts, stream, line, partial?}`` records, which must be contiguous."""
        if not lines:
            return cls(1, [], [], [], [])
        first = int(lines[0]["seq"])
        for i, x in enumerate(lines):
            if int(x["seq"]) != first + i:
                raise Conflict(f"log gap: batch not contiguous at seq {x['seq']}")
        return cls(first, [float(x["ts"]) for x in lines], [x["stream"] for x in lines], [x["line"] for x in lines],
                   [i for i, x in enumerate(lines) if x.get("partial")])


@dataclass(frozen=True)
class ExitReport:
    code: int | None = None
    signal: int | None = None
    oom: bool = False
    reason: str | None = None
    peak_rss_bytes: int | None = None
    cpu_seconds: float | None = None


def _row(r: Any) -> dict[str, Any]:
    return dict(r._mapping)


# What one stored log line costs besides its text (run_id, strategy_id, seq, ts,
# stream, index entry), for the retention byte count: an estimate, kept in SQL too.
LOG_LINE_OVERHEAD = 64


class Store:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time, lease_seconds: float = 12.0,
                 log_retention_bytes: int = 0) -> None:
        self.db = db
        self.clock = clock
        self.lease_seconds = lease_seconds
        # Per strategy, 0 = unlimited.  Checked once a strategy has sent an eighth of
        # it since the last check (per process), not on every batch.
        self.log_retention_bytes = log_retention_bytes
        self._log_bytes_unchecked: dict[str, int] = {}
        # Until then no lease is charged: see begin_lease_grace.
        self.lease_grace_until = float("-inf")

    # ------------------------------------------------------------------ clients & keys
    def create_client(self, name: str, client_id: str | None = None) -> str:
        cid = client_id or short_code(8)
        with self.db.write() as c:
            c.execute(t.clients.insert().values(client_id=cid, name=name, created_at=self.clock()))
        return cid

    def get_client(self, client_id: str) -> dict[str, Any] | None:
        with self.db.read() as c:
            r = c.execute(sa.select(t.clients).where(t.clients.c.client_id == client_id)).first()
        return _row(r) if r else None

    def list_clients(self) -> list[dict[str, Any]]:
        with self.db.read() as c:
            return [_row(r) for r in c.execute(sa.select(t.clients).order_by(t.clients.c.created_at))]

    def create_api_key(self, client_id: str, mode: str, name: str = "", *, run_id: str | None = None,
                       conn: Connection | None = None) -> tuple[dict[str, Any], str]:
        if mode not in ("live", "test"):
            raise ValueError("mode must be live or test")
        plaintext = new_token(key_prefix(mode))
        row = {
            "key_id": "key_" + short_code(12),
            "client_id": client_id,
            "key_hash": token_hash(plaintext),
            "prefix": plaintext[:13],
            "mode": mode,
            "name": name,
            "run_id": run_id,
            "created_at": self.clock(),
        }
        if conn is not None:
            conn.execute(t.api_keys.insert().values(**row))
        else:
            with self.db.write() as c:
                if c.execute(sa.select(t.clients.c.client_id).where(t.clients.c.client_id == client_id)).first() is None:
                    raise NotFound(f"no client {client_id}")
                c.execute(t.api_keys.insert().values(**row))
        return row, plaintext

    def list_api_keys(self, client_id: str) -> list[dict[str, Any]]:
        q = (sa.select(t.api_keys.c.key_id, t.api_keys.c.prefix, t.api_keys.c.mode, t.api_keys.c.name,
                       t.api_keys.c.created_at, t.api_keys.c.revoked_at, t.api_keys.c.last_used_at)
             .where(t.api_keys.c.client_id == client_id, t.api_keys.c.run_id.is_(None))
             .order_by(t.api_keys.c.created_at))
        with self.db.read() as c:
            return [_row(r) for r in c.execute(q)]

    def revoke_api_key(self, client_id: str, key_id: str) -> dict[str, Any]:
        with self.db.write() as c:
            r = c.execute(sa.select(t.api_keys).where(
                t.api_keys.c.client_id == client_id, t.api_keys.c.key_id == key_id, t.api_keys.c.run_id.is_(None))).first()
            if r is None:
                raise NotFound(f"no API key {key_id}")
            now = self.clock()
            revoked_at = r.revoked_at if r.revoked_at is not None else now
            if r.revoked_at is None:
                c.execute(t.api_keys.update().where(t.api_keys.c.key_id == key_id).values(revoked_at=now))
            # Run keys minted from a revoked key die with it.
            c.execute(t.api_keys.update().where(
                t.api_keys.c.run_id.in_(sa.select(t.runs.c.run_id).join(
                    t.strategies, t.strategies.c.strategy_id == t.runs.c.strategy_id).where(
                    t.strategies.c.api_key_id == key_id)), t.api_keys.c.revoked_at.is_(None)).values(revoked_at=now))
        # The revocation time it set (or the earlier one, revoking twice changes nothing).
        return {**_row(r), "revoked_at": revoked_at, "revoked": True}

    def authenticate(self, token: str) -> Principal | None:
        """Resolve a bearer token; run-scoped keys are valid only while their run is current."""
        if not token.startswith(("seq_live_", "seq_test_")):
            return None
        k = t.api_keys
        q = (sa.select(k.c.key_id, k.c.client_id, k.c.mode, k.c.run_id, k.c.revoked_at,
                       t.runs.c.active_guard, t.runs.c.strategy_id, t.strategies.c.current_run_id)
             .select_from(k.outerjoin(t.runs, t.runs.c.run_id == k.c.run_id)
                          .outerjoin(t.strategies, t.strategies.c.strategy_id == t.runs.c.strategy_id))
             .where(k.c.key_hash == token_hash(token)))
        with self.db.read() as c:
            r = c.execute(q).first()
        if r is None or r.revoked_at is not None:
            return None
        if r.run_id is not None and (r.active_guard is None or r.current_run_id != r.run_id):
            return None
        return Principal(r.client_id, r.key_id, r.mode, r.run_id, r.strategy_id if r.run_id is not None else None)

    def key_is_usable(self, key_id: str) -> bool:
        with self.db.read() as c:
            r = c.execute(sa.select(t.api_keys.c.revoked_at).where(t.api_keys.c.key_id == key_id)).first()
        return r is not None and r.revoked_at is None

    # ------------------------------------------------------------------ runner tokens
    def create_runner_token(self, name: str) -> tuple[str, str]:
        plaintext = new_token("seq_runner_")
        tid = "rt_" + short_code(12)
        with self.db.write() as c:
            c.execute(t.runner_tokens.insert().values(token_id=tid, token_hash=token_hash(plaintext), name=name,
                                                      created_at=self.clock()))
        return tid, plaintext

    def list_runner_tokens(self) -> list[dict[str, Any]]:
        with self.db.read() as c:
            return [_row(r) for r in c.execute(sa.select(
                t.runner_tokens.c.token_id, t.runner_tokens.c.name, t.runner_tokens.c.created_at,
                t.runner_tokens.c.revoked_at))]

    def revoke_runner_token(self, token_id: str) -> None:
        with self.db.write() as c:
            n = c.execute(t.runner_tokens.update().where(t.runner_tokens.c.token_id == token_id)
                          .values(revoked_at=self.clock())).rowcount
        if not n:
            raise NotFound(f"no runner token {token_id}")

    def authenticate_runner(self, token: str) -> str | None:
        with self.db.read() as c:
            r = c.execute(sa.select(t.runner_tokens.c.token_id, t.runner_tokens.c.revoked_at)
                          .where(t.runner_tokens.c.token_hash == token_hash(token))).first()
        return r.token_id if r is not None and r.revoked_at is None else None

    def authenticate_runner_as(self, token: str, runner_id: str) -> tuple[str, bool] | None:
        """``(token_id, registered_runner_id)`` for a valid token, else None: one indexed join.

        The flag says whether ``runner_id`` was registered with this token.
        """
        rt, rn = t.runner_tokens, t.runners
        with self.db.read() as c:
            r = c.execute(sa.select(rt.c.token_id, rt.c.revoked_at, rn.c.runner_id)
                          .select_from(rt.outerjoin(rn, sa.and_(rn.c.token_id == rt.c.token_id,
                                                                 rn.c.runner_id == runner_id)))
                          .where(rt.c.token_hash == token_hash(token))).first()
        if r is None or r.revoked_at is not None:
            return None
        return r.token_id, r.runner_id is not None

    # ------------------------------------------------------------------ strategies
    def find_strategy_id(self, client_id: str, name: str) -> str | None:
        with self.db.read() as c:
            return c.execute(sa.select(t.strategies.c.strategy_id).where(
                t.strategies.c.client_id == client_id, t.strategies.c.name == name)).scalar()

    def deploy_strategy(self, strategy_id: str, client_id: str, fields: Mapping[str, Any], artifact: bytes,
                        *, start: bool) -> tuple[dict[str, Any], bool]:
        """Create, or redeploy (same client + name keeps the id).  Returns (row, created)."""
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
                        self._request_stop(c, cur.current_run_id, now)
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
        cols = [col for col in s.c if with_sealed or col.name not in _SEALED_COLUMNS]
        q = sa.select(*cols).where(s.c.strategy_id == strategy_id)
        if client_id is not None:
            q = q.where(s.c.client_id == client_id)
        with self.db.read() as c:
            r = c.execute(q).first()
            if r is None:
                return None
            row = _row(r)
            row["current_run"] = self._run_summary(c, row["current_run_id"])
        return row

    def list_strategies(self, client_id: str, *, limit: int | None = None,
                        after: tuple[float, str] | None = None) -> list[dict[str, Any]]:
        """Oldest first; ``after`` = the (created_at, strategy_id) of the last row seen."""
        s = t.strategies
        cols = [col for col in s.c if col.name not in _SEALED_COLUMNS]
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
                    summaries[r.run_id] = _run_summary_of(_row(r))
            for row in rows:
                row["current_run"] = summaries.get(row["current_run_id"])
        return rows

    def count_strategies_by_status(self) -> dict[str, int]:
        s = t.strategies
        with self.db.read() as c:
            return {r[0]: int(r[1]) for r in c.execute(sa.select(s.c.status, sa.func.count()).group_by(s.c.status))}

    def _run_summary(self, c: Connection, run_id: str | None) -> dict[str, Any] | None:
        if not run_id:
            return None
        r = c.execute(sa.select(t.runs).where(t.runs.c.run_id == run_id)).first()
        return _run_summary_of(_row(r)) if r else None

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
                self._request_stop(c, cur.current_run_id, now)
        row = self.get_strategy(client_id, strategy_id)
        assert row is not None
        return row

    def _request_stop(self, c: Connection, run_id: str, now: float) -> None:
        r = c.execute(sa.select(t.runs.c.status).where(t.runs.c.run_id == run_id)).first()
        if r is not None and r.status in RUN_ACTIVE:
            c.execute(t.runs.update().where(t.runs.c.run_id == run_id).values(
                status=str(RUN.next(r.status, "stop")), stop_requested_at=now))

    def delete_strategy(self, client_id: str, strategy_id: str) -> None:
        with self.db.write() as c:
            self._lock_strategy(c, client_id, strategy_id)
            run_ids = sa.select(t.runs.c.run_id).where(t.runs.c.strategy_id == strategy_id)
            c.execute(t.api_keys.delete().where(t.api_keys.c.run_id.in_(run_ids)))
            c.execute(t.hosted_strategy_logs.delete().where(t.hosted_strategy_logs.c.run_id.in_(run_ids)))
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

    def all_sealed_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Everything sealed, for key rotation: (strategies, venue credentials)."""
        s = t.strategies
        with self.db.read() as c:
            strat = [_row(r) for r in c.execute(sa.select(
                s.c.strategy_id, s.c.secrets_ciphertext, s.c.secrets_nonce, s.c.secrets_key_id,
                s.c.sequence_api_key_ciphertext, s.c.sequence_api_key_nonce, s.c.sequence_api_key_key_id))]
            creds = [_row(r) for r in c.execute(sa.select(t.venue_credentials))]
        return strat, creds

    def reseal(self, strategies: Iterable[Mapping[str, Any]], creds: Iterable[Mapping[str, Any]]) -> None:
        with self.db.write() as c:
            for row in strategies:
                c.execute(t.strategies.update().where(t.strategies.c.strategy_id == row["strategy_id"]).values(
                    {k: v for k, v in row.items() if k != "strategy_id"}))
            for row in creds:
                c.execute(t.venue_credentials.update().where(
                    t.venue_credentials.c.client_id == row["client_id"],
                    t.venue_credentials.c.venue == row["venue"]).values(
                    ciphertext=row["ciphertext"], nonce=row["nonce"], key_id=row["key_id"]))

    # ------------------------------------------------------------------ venue credentials
    def put_venue_credentials(self, client_id: str, venue: str, ciphertext: bytes, nonce: bytes, key_id: str,
                              field_names: Sequence[str]) -> None:
        now = self.clock()
        vc = t.venue_credentials
        with self.db.write() as c:
            exists = c.execute(sa.select(vc.c.venue).where(vc.c.client_id == client_id, vc.c.venue == venue)).first()
            vals = {"ciphertext": ciphertext, "nonce": nonce, "key_id": key_id, "field_names": list(field_names),
                    "updated_at": now}
            if exists:
                c.execute(vc.update().where(vc.c.client_id == client_id, vc.c.venue == venue).values(**vals))
            else:
                c.execute(vc.insert().values(client_id=client_id, venue=venue, created_at=now, **vals))

    def venue_credentials(self, client_id: str) -> list[dict[str, Any]]:
        vc = t.venue_credentials
        with self.db.read() as c:
            return [_row(r) for r in c.execute(sa.select(vc.c.venue, vc.c.field_names, vc.c.created_at, vc.c.updated_at)
                                               .where(vc.c.client_id == client_id))]

    def delete_venue_credentials(self, client_id: str, venue: str) -> bool:
        vc = t.venue_credentials
        with self.db.write() as c:
            return bool(c.execute(vc.delete().where(vc.c.client_id == client_id, vc.c.venue == venue)).rowcount)

    # ------------------------------------------------------------------ runners and runs
    def register_runner(self, token_id: str, name: str, region: str, capacity: int,
                        isolation: Mapping[str, Any]) -> str:
        now = self.clock()
        rid = "runner_" + short_code(12)
        with self.db.write() as c:
            c.execute(t.runners.insert().values(runner_id=rid, token_id=token_id, name=name, region=region,
                                                capacity=capacity, isolation=dict(isolation), registered_at=now,
                                                last_seen_at=now))
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

    def touch_runner(self, runner_id: str) -> None:
        with self.db.write() as c:
            c.execute(t.runners.update().where(t.runners.c.runner_id == runner_id).values(last_seen_at=self.clock()))

    def claim(self, runner_id: str, regions: Sequence[str], free_slots: int, *,
              mint_key: Callable[[Connection, Mapping[str, Any], str], str] | None = None) -> dict[str, Any] | None:
        """Atomically take the oldest runnable strategy this runner may run.

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
        q = (sa.select(s).where(runnable, sa.or_(s.c.region.is_(None), s.c.region.in_(list(regions))))
             .order_by(sa.func.coalesce(s.c.next_restart_at, s.c.queued_at, s.c.created_at)).limit(1))
        if not self.db.is_sqlite:
            q = q.with_for_update(skip_locked=True, of=s)
        with self.db.write() as c:
            active = c.execute(sa.select(sa.func.count()).select_from(t.runs).where(
                t.runs.c.runner_id == runner_id, t.runs.c.active_guard.is_not(None))).scalar_one()
            cap = c.execute(sa.select(t.runners.c.capacity).where(t.runners.c.runner_id == runner_id)).scalar()
            if cap is None or active >= cap:
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
                artifact_id=st.artifact_id,
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
        c.execute(insert(t.counters).values(name=name, value=0).on_conflict_do_nothing())
        c.execute(t.counters.update().where(t.counters.c.name == name).values(value=t.counters.c.value + 1))
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
        """Renew leases.  Answers per run: ``continue``, ``stop`` or ``kill`` (stale: not yours any more)."""
        now = self.clock()
        out: dict[str, str] = {}
        with self.db.write() as c:
            c.execute(t.runners.update().where(t.runners.c.runner_id == runner_id).values(last_seen_at=now))
            for run_id, epoch in runs:
                try:
                    r = self._current_run(c, run_id, epoch, runner_id)
                except StaleWrite:
                    out[run_id] = "kill"
                    continue
                if r.lease_expires_at is not None and r.lease_expires_at < now and now >= self.lease_grace_until:
                    # Too late: the lease has lapsed; expire_leases will (or did) re-queue it.
                    out[run_id] = "kill"
                    continue
                c.execute(t.runs.update().where(t.runs.c.run_id == run_id).values(
                    lease_expires_at=now + self.lease_seconds))
                out[run_id] = "stop" if r.status == RunStatus.stopping else "continue"
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

    def append_logs(self, run_id: str, epoch: int, runner_id: str, lines: Sequence[Mapping[str, Any]]) -> int:
        """Store a batch of log records (``{seq, ts, stream, line, partial?}``); returns the next expected seq.

        Records already stored (seq below the next expected one) are skipped,
        so a retried batch never duplicates; a gap raises Conflict so the
        runner resends from its spool and nothing is reordered.
        """
        return self.append_log_columns(run_id, epoch, runner_id, LogColumns.from_records(lines))

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
        """The columnar form of :meth:`append_logs` (what the runner sends): same rules."""
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
            mark = "?" if self.db.is_sqlite else "%s"
            c.exec_driver_sql(
                "INSERT INTO hosted_strategy_logs (run_id, seq, strategy_id, ts, stream, line, partial) "
                f"VALUES ({', '.join([mark] * 7)})", list(rows))
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
                                                  "reason": reason}, now)
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
            if status == StrategyStatus.failed and runner_lost:
                # Not the strategy's fault: re-queue at once, without growing its backoff.
                upd.update(restart_count=int(st.restart_count) + 1, next_restart_at=now)
            elif status == StrategyStatus.failed:
                healthy = (now - (run.started_at or run.claimed_at)) >= HEALTHY_RESET_SECONDS
                failures = 1 if healthy else int(st.consecutive_failures) + 1
                upd.update(consecutive_failures=failures, restart_count=int(st.restart_count) + 1,
                           next_restart_at=now + restart_delay(failures))
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
        if now < self.lease_grace_until:
            return []
        lost: list[str] = []
        q = sa.select(t.runs).where(t.runs.c.active_guard.is_not(None), t.runs.c.lease_expires_at < now)
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

    def read_logs(self, run_id: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        lg = t.hosted_strategy_logs
        with self.db.read() as c:
            return [_row(r) for r in c.execute(
                sa.select(lg.c.seq, lg.c.ts, lg.c.stream, lg.c.line, lg.c.partial)
                .where(lg.c.run_id == run_id, lg.c.seq > after_seq).order_by(lg.c.seq).limit(limit))]


_SEALED_COLUMNS = frozenset({
    "secrets_ciphertext", "secrets_nonce", "secrets_key_id", "sequence_api_key_ciphertext",
    "sequence_api_key_nonce", "sequence_api_key_key_id",
})


def _run_summary_of(r: Mapping[str, Any]) -> dict[str, Any]:
    return {"run_id": r["run_id"], "status": r["status"], "runner_id": r["runner_id"], "region": r["region"],
            "epoch": r["epoch"], "claimed_at": r["claimed_at"], "started_at": r["started_at"]}


def _exit_reason(report: ExitReport) -> str:
    if report.oom:
        return "oom"
    if report.signal is not None:
        return f"killed by signal {report.signal}"
    if report.code == 0:
        return "exited 0"
    return f"exited with code {report.code}"

