"""WASM algo deployments: deploy, start, stop, delete, which coordinator runs each, their logs.

A deployment wants to be ``running`` or ``stopped`` (``desired_state``); its
``status`` says what it is: ``queued`` (wanted, not running yet), ``running``
(a coordinator holds it: ``owner``, ``lease_expires_at``), ``failed`` (its last
start ended in a trap; ``next_attempt_at`` says when it starts again) or
``stopped``. A coordinator takes a deployment with :meth:`AlgosStore.claim_deployment`
— one conditional UPDATE, so two replicas never both run it — renews its lease
while it runs it, and gives it back with :meth:`AlgosStore.release_deployment`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from sequence.lifecycle import restart_after_failure
from sequence.store import tables as t
from sequence.store.base import StoreBase
from sequence.store.base import row as _row
from sequence.store.errors import Conflict, NotFound, QuotaExceeded
from sequence.store.ids import short_code

D = t.deployments
#: Log lines kept per deployment; older ones are dropped as new ones come.
LOG_LINES_KEPT = 20_000


def _text(value: str | None) -> str | None:
    """Text a module wrote (a log line, a trap's message): PostgreSQL stores no NUL character."""
    return None if value is None else value.replace("\x00", "\ufffd")


def deployment_id() -> str:
    return "dep_" + short_code(20)


class AlgosStore(StoreBase):
    # -- the user's verbs ------------------------------------------------------------------
    def deploy_algo(self, client_id: str, key_id: str, name: str, wasm: bytes, wasm_sha256: str,
                    symbols: Sequence[str], params: Mapping[str, str], sandbox: bool,
                    start: bool, max_per_client: int | None = None) -> tuple[dict[str, Any], bool]:
        """Create the deployment *name*, or replace its module, symbols and params (a running
        one restarts with them). Returns the row and whether it was created. A new one past
        the client's *max_per_client* raises :class:`QuotaExceeded`."""
        now = self.clock()
        values: dict[str, Any] = dict(key_id=key_id, wasm=wasm, wasm_sha256=wasm_sha256, wasm_size=len(wasm),
                                      symbols=list(symbols), params=dict(params), sandbox=sandbox, updated_at=now)
        with self.db.write() as c:
            existing = c.execute(sa.select(D.c.deployment_id, D.c.desired_state)
                                 .where(D.c.client_id == client_id, D.c.name == name)).first()
            if existing is None:
                if max_per_client is not None and c.execute(
                        sa.select(sa.func.count()).select_from(D).where(D.c.client_id == client_id)
                ).scalar_one() >= max_per_client:
                    raise QuotaExceeded(max_per_client)
                dep_id = deployment_id()
                try:
                    c.execute(D.insert().values(
                        deployment_id=dep_id, client_id=client_id, name=name,
                        desired_state="running" if start else "stopped",
                        status="queued" if start else "stopped", created_at=now, **values))
                except IntegrityError:  # a concurrent deploy of the same name won
                    raise Conflict(f"deployment {name!r} is being deployed concurrently; retry") from None
                created = True
            else:
                dep_id = existing.deployment_id
                if start:
                    values.update(desired_state="running", consecutive_failures=0, next_attempt_at=None)
                    if existing.desired_state != "running":
                        values["status"] = "queued"
                c.execute(D.update().where(D.c.deployment_id == dep_id).values(**values))
                created = False
            r = c.execute(sa.select(D).where(D.c.deployment_id == dep_id)).one()
        return _row(r), created

    def list_deployments(self, client_id: str) -> list[dict[str, Any]]:
        cols = [c for c in D.c if c.name != "wasm"]
        with self.db.read() as c:
            rows = c.execute(sa.select(*cols).where(D.c.client_id == client_id).order_by(D.c.created_at)).all()
        return [_row(r) for r in rows]

    def get_deployment(self, client_id: str, ref: str, *, with_wasm: bool = False) -> dict[str, Any]:
        """The client's deployment by id or name (:class:`NotFound` otherwise)."""
        cols = list(D.c) if with_wasm else [c for c in D.c if c.name != "wasm"]
        with self.db.read() as c:
            r = c.execute(sa.select(*cols).where(D.c.client_id == client_id,
                                                 sa.or_(D.c.deployment_id == ref, D.c.name == ref))).first()
        if r is None:
            raise NotFound(f"no deployment {ref!r}")
        return _row(r)

    def set_algo_desired(self, client_id: str, dep_id: str, desired: str, *, key_id: str | None = None) -> dict[str, Any]:
        """Start (``running``) or stop (``stopped``) a deployment. A start clears its failure
        series (and, given *key_id*, makes that key the one it runs as); a stop of a deployment
        no coordinator runs ends it at once."""
        now = self.clock()
        with self.db.write() as c:
            r = c.execute(sa.select(D.c.status, D.c.owner).where(D.c.client_id == client_id,
                                                                 D.c.deployment_id == dep_id)).first()
            if r is None:
                raise NotFound(f"no deployment {dep_id!r}")
            values: dict[str, Any] = {"desired_state": desired, "updated_at": now}
            if desired == "running":
                values.update(consecutive_failures=0, next_attempt_at=None)
                if key_id is not None:
                    values["key_id"] = key_id
                if r.status in ("stopped", "failed"):
                    values["status"] = "queued"
            elif r.status != "running":
                values.update(status="stopped", next_attempt_at=None)
            c.execute(D.update().where(D.c.deployment_id == dep_id).values(**values))
        return self.get_deployment(client_id, dep_id)

    def delete_deployment(self, client_id: str, dep_id: str) -> None:
        with self.db.write() as c:
            n = c.execute(D.delete().where(D.c.client_id == client_id, D.c.deployment_id == dep_id)).rowcount
            c.execute(t.deployment_logs.delete().where(t.deployment_logs.c.deployment_id == dep_id))
        if not n:
            raise NotFound(f"no deployment {dep_id!r}")

    # -- the coordinators' verbs -----------------------------------------------------------
    def wanted_deployments(self, owner: str) -> list[dict[str, Any]]:
        """Deployments this coordinator should run now: wanted running, due, and not held by
        another coordinator whose lease is still good (module bytes included)."""
        now = self.clock()
        with self.db.read() as c:
            rows = c.execute(sa.select(D).where(
                D.c.desired_state == "running",
                sa.or_(D.c.next_attempt_at.is_(None), D.c.next_attempt_at <= now),
                sa.or_(D.c.owner.is_(None), D.c.owner == owner, D.c.lease_expires_at < now),
            ).order_by(D.c.created_at)).all()
        return [_row(r) for r in rows]

    def deployment_states(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """What the coordinator running *ids* must compare: desired state, module hash, owner,
        symbols, params and paper flag (a deleted deployment is absent)."""
        if not ids:
            return {}
        k = t.api_keys
        cols = [D.c.deployment_id, D.c.desired_state, D.c.wasm_sha256, D.c.owner, D.c.symbols, D.c.params,
                D.c.sandbox, D.c.epoch, D.c.key_id, (k.c.revoked_at.is_not(None)).label("key_revoked")]
        out: dict[str, dict[str, Any]] = {}
        with self.db.read() as c:
            for i in range(0, len(ids), 500):
                q = (sa.select(*cols).select_from(D.outerjoin(k, k.c.key_id == D.c.key_id))
                     .where(D.c.deployment_id.in_(list(ids[i:i + 500]))))
                for r in c.execute(q):
                    out[r.deployment_id] = {**_row(r), "key_revoked": bool(r.key_revoked)}
        return out

    def claim_deployment(self, dep_id: str, owner: str, lease_seconds: float) -> int | None:
        """Take *dep_id* for *owner* if no other coordinator holds it; its new epoch, or None."""
        now = self.clock()
        with self.db.write() as c:
            n = c.execute(D.update().where(
                D.c.deployment_id == dep_id, D.c.desired_state == "running",
                sa.or_(D.c.owner.is_(None), D.c.owner == owner, D.c.lease_expires_at < now),
            ).values(owner=owner, lease_expires_at=now + lease_seconds, status="running", epoch=D.c.epoch + 1,
                     started_at=now, next_attempt_at=None, updated_at=now)).rowcount
            if not n:
                return None
            return int(c.execute(sa.select(D.c.epoch).where(D.c.deployment_id == dep_id)).scalar_one())

    def renew_deployments(self, owner: str, ids: Sequence[str], lease_seconds: float) -> set[str]:
        """Extend *owner*'s lease on *ids*; returns the ids it still holds (the others were lost)."""
        if not ids:
            return set()
        now = self.clock()
        held: set[str] = set()
        with self.db.write() as c:
            for i in range(0, len(ids), 500):
                chunk = list(ids[i:i + 500])
                c.execute(D.update().where(D.c.deployment_id.in_(chunk), D.c.owner == owner)
                          .values(lease_expires_at=now + lease_seconds))
                held.update(c.execute(sa.select(D.c.deployment_id).where(
                    D.c.deployment_id.in_(chunk), D.c.owner == owner)).scalars())
        return held

    def release_deployment(self, dep_id: str, owner: str, *, reason: str | None, failed: bool) -> None:
        """*owner* stopped running *dep_id*: ``failed`` (a trap) schedules its restart with
        backoff; otherwise it is stopped if it was asked to stop, else queued for any coordinator."""
        now = self.clock()
        with self.db.write() as c:
            r = c.execute(sa.select(D.c.desired_state, D.c.consecutive_failures, D.c.started_at, D.c.restarts)
                          .where(D.c.deployment_id == dep_id, D.c.owner == owner)).first()
            if r is None:
                return
            values: dict[str, Any] = {"owner": None, "lease_expires_at": None, "updated_at": now,
                                      "last_reason": _text(reason), "last_exit_at": now}
            if failed:
                restart = restart_after_failure(int(r.consecutive_failures), ran_since=float(r.started_at or now),
                                                now=now)
                values.update(status="failed", consecutive_failures=restart.consecutive_failures)
                if r.desired_state == "running":
                    values.update(next_attempt_at=restart.at, restarts=int(r.restarts) + 1)
                else:
                    values["next_attempt_at"] = None
            elif r.desired_state == "running":
                values["status"] = "queued"
            else:
                values.update(status="stopped", next_attempt_at=None)
            c.execute(D.update().where(D.c.deployment_id == dep_id, D.c.owner == owner).values(**values))

    def deployment_graphs(self, client_id: str, dep_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The deployment's newest graphs: id, status, paper flag, node count, when."""
        G = t.graphs
        with self.db.read() as c:
            rows = c.execute(sa.select(G.c.graph_id, G.c.status, G.c.sandbox, G.c.node_count, G.c.created_at,
                                       G.c.ended_at)
                             .where(G.c.client_id == client_id, G.c.deployment_id == dep_id)
                             .order_by(G.c.created_at.desc()).limit(limit)).all()
        return [{"graph_id": r.graph_id, "status": r.status, "sandbox": bool(r.sandbox), "node_count": r.node_count,
                 "created_at": r.created_at, "ended_at": r.ended_at} for r in rows]

    # -- logs ------------------------------------------------------------------------------
    def next_algo_log_seq(self, dep_id: str) -> int:
        with self.db.read() as c:
            v = c.execute(sa.select(sa.func.max(t.deployment_logs.c.seq))
                          .where(t.deployment_logs.c.deployment_id == dep_id)).scalar()
        return int(v or 0) + 1

    def append_algo_logs(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert log rows (``deployment_id, seq, epoch, ts, stream, line``); keeps the newest
        :data:`LOG_LINES_KEPT` of each deployment."""
        if not rows:
            return
        L = t.deployment_logs
        last: dict[str, int] = {}
        for r in rows:
            last[r["deployment_id"]] = max(last.get(r["deployment_id"], 0), int(r["seq"]))
        # A line whose (deployment, seq) is taken (a coordinator that lost the deployment while
        # its lines waited) is dropped, not the whole batch.
        insert = (sqlite_insert if self.db.is_sqlite else pg_insert)(L).on_conflict_do_nothing()
        with self.db.write() as c:
            c.execute(insert, [{**r, "line": _text(r["line"])} for r in rows])
            for dep_id, seq in last.items():
                if seq > LOG_LINES_KEPT and seq % 1000 < len(rows) + 1:
                    c.execute(L.delete().where(L.c.deployment_id == dep_id, L.c.seq <= seq - LOG_LINES_KEPT))

    def read_algo_logs(self, dep_id: str, *, after: int = 0, limit: int = 1000,
                       tail: int | None = None) -> list[dict[str, Any]]:
        """Lines with ``seq > after``, oldest first (``tail``: only the last *tail* lines, whatever
        *after* says, as the API documents)."""
        L = t.deployment_logs
        q = sa.select(L.c.seq, L.c.epoch, L.c.ts, L.c.stream, L.c.line).where(L.c.deployment_id == dep_id,
                                                                             L.c.seq > (0 if tail else after))
        with self.db.read() as c:
            if tail is not None:
                rows = c.execute(q.order_by(L.c.seq.desc()).limit(tail)).all()[::-1]
            else:
                rows = c.execute(q.order_by(L.c.seq).limit(limit)).all()
        return [_row(r) for r in rows]


__all__ = ["LOG_LINES_KEPT", "AlgosStore", "deployment_id"]
