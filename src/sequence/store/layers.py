"""Dependency layers: locks, their wheels (stored once), who uploaded which, garbage collection.

A layer row is a lock (:mod:`sequence.deps`); a wheel row is one wheel's bytes,
whoever uploaded it; ``wheel_owners`` says which clients proved they have a
wheel by uploading it. A layer is *complete for a client* when the client owns
every wheel of its lock — only then may that client deploy it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from sequence.store import tables as t
from sequence.store.base import StoreBase
from sequence.store.base import row as _row


class LayersStore(StoreBase):
    def _insert_ignore(self, c: Connection, table: sa.Table, **values: Any) -> None:
        insert = sqlite_insert if self.db.is_sqlite else pg_insert
        c.execute(insert(table).values(**values).on_conflict_do_nothing())

    def register_layer(self, layer_id: str, target: Mapping[str, Any], wheels: Sequence[Mapping[str, Any]],
                       size_bytes: int) -> None:
        """Record a lock (once; a known one is only marked used)."""
        now = self.clock()
        with self.db.write() as c:
            self._insert_ignore(c, t.layers, layer_id=layer_id, target=dict(target), wheels=list(wheels),
                                size_bytes=size_bytes, created_at=now, last_used_at=now)
            c.execute(t.layers.update().where(t.layers.c.layer_id == layer_id).values(last_used_at=now))

    def get_layer(self, layer_id: str) -> dict[str, Any] | None:
        with self.db.read() as c:
            r = c.execute(sa.select(t.layers).where(t.layers.c.layer_id == layer_id)).first()
        return _row(r) if r is not None else None

    def wheels_missing(self, client_id: str, shas: Sequence[str]) -> list[str]:
        """Of *shas*, the wheels this client has not uploaded (in the order given)."""
        with self.db.read() as c:
            have = set(c.execute(sa.select(t.wheel_owners.c.sha256).where(
                t.wheel_owners.c.client_id == client_id, t.wheel_owners.c.sha256.in_(list(shas)))).scalars())
        return [s for s in shas if s not in have]

    def has_wheel(self, sha256: str) -> bool:
        with self.db.read() as c:
            return c.execute(sa.select(t.wheels.c.sha256).where(t.wheels.c.sha256 == sha256)).first() is not None

    def put_wheel(self, client_id: str, sha256: str, data: bytes | None) -> bool:
        """Record that *client_id* has the wheel; store its bytes unless already stored
        (*data* None: the caller saw it stored). Whether bytes were written."""
        with self.db.write() as c:
            stored = c.execute(sa.select(t.wheels.c.sha256).where(t.wheels.c.sha256 == sha256)).first() is not None
            wrote = False
            if not stored:
                if data is None:
                    return False
                self._insert_ignore(c, t.wheels, sha256=sha256, size=len(data), data=data, created_at=self.clock())
                wrote = True
            self._insert_ignore(c, t.wheel_owners, client_id=client_id, sha256=sha256)
        return wrote

    def wheel_data(self, sha256: str) -> bytes | None:
        with self.db.read() as c:
            return c.execute(sa.select(t.wheels.c.data).where(t.wheels.c.sha256 == sha256)).scalar()

    def touch_layer(self, layer_id: str) -> None:
        with self.db.write() as c:
            c.execute(t.layers.update().where(t.layers.c.layer_id == layer_id).values(last_used_at=self.clock()))

    def collect_layers(self, unused_for: float) -> tuple[int, int, int]:
        """Delete layers no strategy or active run uses and nobody touched for *unused_for*
        seconds, then every wheel no remaining layer lists.  ``(layers, wheels, bytes)`` deleted."""
        cutoff = self.clock() - unused_for
        with self.db.write() as c:
            used = sa.union(
                sa.select(t.strategies.c.layer_id).where(t.strategies.c.layer_id.is_not(None)),
                sa.select(t.runs.c.layer_id).where(t.runs.c.layer_id.is_not(None), t.runs.c.active_guard.is_not(None)),
            ).subquery()
            gone = c.execute(t.layers.delete().where(
                t.layers.c.last_used_at < cutoff, t.layers.c.layer_id.not_in(sa.select(used.c[0])))).rowcount
            keep: set[str] = set()
            for wheels in c.execute(sa.select(t.layers.c.wheels)).scalars():
                keep.update(w["sha256"] for w in wheels)
            stored = c.execute(sa.select(t.wheels.c.sha256, t.wheels.c.size)).all()
            drop = [(sha, size) for sha, size in stored if sha not in keep]
            for i in range(0, len(drop), 500):
                part = [sha for sha, _ in drop[i:i + 500]]
                c.execute(t.wheel_owners.delete().where(t.wheel_owners.c.sha256.in_(part)))
                c.execute(t.wheels.delete().where(t.wheels.c.sha256.in_(part)))
        return gone, len(drop), sum(size for _, size in drop)


__all__ = ["LayersStore"]
