"""Storage verbs for the controls on real trading: risk limits and kill switches.

A client's row has ``strategy_id`` ``""``; a strategy's row names it. Both are
read by the engine when it starts and written through the API, which keeps
the engine's in-memory copy in step (the engine is the only reader on the
order path: no query per order).
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from sequence.store import tables as t
from sequence.store.db import Database

CLIENT = ""  # the strategy_id of a client-wide row


class ControlsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- risk limits ---------------------------------------------------------------------
    def risk_limits(self, client_id: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        """{(client_id, strategy_id or ""): {limit: value}} — every row, or one client's."""
        q = sa.select(t.risk_limits)
        if client_id is not None:
            q = q.where(t.risk_limits.c.client_id == client_id)
        with self.db.read() as c:
            return {(r.client_id, r.strategy_id): json.loads(r.limits) for r in c.execute(q)}

    def put_risk_limits(self, client_id: str, strategy_id: str | None, limits: dict[str, Any]) -> None:
        """Replace the scope's stored limits (the caller merges changes first)."""
        sid = strategy_id or CLIENT
        r = t.risk_limits
        with self.db.write() as c:
            c.execute(r.delete().where(r.c.client_id == client_id, r.c.strategy_id == sid))
            c.execute(r.insert().values(client_id=client_id, strategy_id=sid, limits=json.dumps(limits),
                                        updated_at=time.time()))

    def delete_risk_limits(self, client_id: str, strategy_id: str) -> None:
        r = t.risk_limits
        with self.db.write() as c:
            c.execute(r.delete().where(r.c.client_id == client_id, r.c.strategy_id == strategy_id))

    # -- kill switches -------------------------------------------------------------------
    def kill_switches(self) -> dict[tuple[str, str], float]:
        """{(client_id, strategy_id or ""): engaged_at} of every engaged switch."""
        with self.db.read() as c:
            return {(r.client_id, r.strategy_id): r.engaged_at for r in c.execute(sa.select(t.kill_switches))}

    def engage_kill(self, client_id: str, strategy_id: str | None) -> float:
        """Engage (idempotent); returns when it was first engaged."""
        sid = strategy_id or CLIENT
        k = t.kill_switches
        with self.db.write() as c:
            cur = c.execute(sa.select(k.c.engaged_at).where(k.c.client_id == client_id,
                                                              k.c.strategy_id == sid)).first()
            if cur is not None:
                return float(cur.engaged_at)
            now = time.time()
            c.execute(k.insert().values(client_id=client_id, strategy_id=sid, engaged_at=now))
            return now

    def release_kill(self, client_id: str, strategy_id: str | None) -> bool:
        """Release the scope's switch (the client's releases only the client-wide one);
        True if one was engaged."""
        sid = strategy_id or CLIENT
        k = t.kill_switches
        with self.db.write() as c:
            n = c.execute(k.delete().where(k.c.client_id == client_id, k.c.strategy_id == sid)).rowcount
        return bool(n)


__all__ = ["CLIENT", "ControlsStore"]
