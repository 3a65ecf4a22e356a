"""Clients, their API keys, runner tokens and venue credentials: who may call, and with what.

Also key rotation: every sealed column re-sealed under a new key in one
transaction (:meth:`KeysStore.reseal_all`; the labels and the re-sealing itself
are :mod:`sequence.secrets`').
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sequence.secrets import STRATEGY_SEALED, Keyring, reseal_rows, sealed_columns
from sequence.store import tables as t
from sequence.store.base import StoreBase
from sequence.store.base import row as _row
from sequence.store.errors import NotFound
from sequence.store.ids import key_prefix, new_token, short_code, token_hash

KEY_REVOKED = "stopped: the key it runs as was revoked (start it again with another key)"


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
    def is_paper(self) -> bool:
        """A ``seq_test_`` key: it trades on paper only."""
        return self.mode == "test"

    @property
    def is_sandbox(self) -> bool:
        """Old name of :attr:`is_paper` (the wire's ``is_sandbox``), kept for callers in api/."""
        return self.is_paper


class KeysStore(StoreBase):
    # -- clients & keys --------------------------------------------------------------------------
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
            # So do the algos it runs: stopped (their coordinator ends them on its next pass,
            # cancelling their orders, and says why); one that no coordinator holds ends now.
            D = t.deployments
            wanted = sa.and_(D.c.key_id == key_id, D.c.desired_state == "running")
            c.execute(D.update().where(wanted, D.c.status != "running").values(
                status="stopped", next_attempt_at=None, last_reason=KEY_REVOKED, last_exit_at=now))
            c.execute(D.update().where(wanted).values(desired_state="stopped", updated_at=now))
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

    # -- runner tokens ---------------------------------------------------------------------------
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

    # -- key rotation: every sealed column -------------------------------------------------------
    def reseal_all(self, old: Keyring, new: Keyring) -> tuple[int, int]:
        """Re-seal every stored secret under ``new`` in one transaction (key rotation):
        the rows are read, re-sealed by :func:`sequence.secrets.reseal_rows` and written
        under one write lock, so a value sealed meanwhile cannot be missed. Raises
        :class:`~sequence.secrets.SealingError` with nothing written. Returns how many
        (strategies, venue credentials) rows it re-sealed."""
        with self.db.write() as c:
            strategies, creds = reseal_rows(old, new, *self._sealed_rows(c))
            self._write_sealed(c, strategies, creds)
        return len(strategies), len(creds)

    def sealed_key_ids(self) -> dict[str, int]:
        """How many stored sealed values each credential key id holds (key rotation keeps the
        keys still in use; a coordinator warns at start about ids it cannot open)."""
        counts: dict[str, int] = {}
        s = t.strategies
        cols = [s.c[sealed_columns(prefix)[2]] for prefix in STRATEGY_SEALED] + [t.venue_credentials.c.key_id]
        with self.db.read() as c:
            for col in cols:
                q = sa.select(col, sa.func.count()).where(col.is_not(None)).group_by(col)
                for key_id, n in c.execute(q):
                    counts[key_id] = counts.get(key_id, 0) + int(n)
        return counts

    @staticmethod
    def _sealed_rows(c: Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        s = t.strategies
        cols = [s.c[name] for prefix in STRATEGY_SEALED for name in sealed_columns(prefix)]
        strat = [_row(r) for r in c.execute(sa.select(s.c.strategy_id, *cols))]
        creds = [_row(r) for r in c.execute(sa.select(t.venue_credentials))]
        return strat, creds

    @staticmethod
    def _write_sealed(c: Connection, strategies: Iterable[Mapping[str, Any]],
                      creds: Iterable[Mapping[str, Any]]) -> None:
        for row in strategies:
            values = {k: v for k, v in row.items() if k != "strategy_id"}
            if values:  # a strategy with nothing sealed has nothing to write
                c.execute(t.strategies.update().where(t.strategies.c.strategy_id == row["strategy_id"]).values(values))
        vc = t.venue_credentials
        for row in creds:
            c.execute(vc.update().where(vc.c.client_id == row["client_id"], vc.c.venue == row["venue"]).values(
                {k: row[k] for k in sealed_columns()}))

    # -- venue credentials -----------------------------------------------------------------------
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

    def sealed_venue_credentials(self, client_id: str, venue: str) -> dict[str, Any] | None:
        """The sealed blob (``ciphertext``, ``nonce``, ``key_id``) of one client's venue credentials,
        for the order router to unseal; None if the client has none for the venue."""
        vc = t.venue_credentials
        with self.db.read() as c:
            r = c.execute(sa.select(vc.c.ciphertext, vc.c.nonce, vc.c.key_id)
                          .where(vc.c.client_id == client_id, vc.c.venue == venue)).first()
        return None if r is None else _row(r)

    def delete_venue_credentials(self, client_id: str, venue: str) -> bool:
        vc = t.venue_credentials
        with self.db.write() as c:
            return bool(c.execute(vc.delete().where(vc.c.client_id == client_id, vc.c.venue == venue)).rowcount)

__all__ = ["KeysStore", "Principal"]
