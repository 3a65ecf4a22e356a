"""Clients, API keys, runner tokens, venue credentials and key rotation (store/keys.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from typing import Any

import pytest
import sqlalchemy as sa

from sequence.secrets import (
    Keyring,
    UnsealError,
    sealed_in,
    sealed_values,
    strategy_api_key_label,
    strategy_secrets_label,
    venue_credentials_label,
)
from sequence.store import tables as t
from sequence.store.store import (
    ExitReport,
    NotFound,
    Store,
)
from tests.store.helpers import deploy


def test_keys_are_stored_hashed_and_resolve_to_their_client(store: Store, client_id: str) -> None:
    row, key = store.create_api_key(client_id, "test")
    assert key.startswith("seq_test_") and len(key) > 40
    with store.db.read() as c:
        stored = c.execute(sa.select(t.api_keys.c.key_hash)).scalars().all()
    assert key not in stored and all(len(h) == 64 for h in stored)
    p = store.authenticate(key)
    assert p is not None and p.client_id == client_id and p.is_paper
    store.revoke_api_key(client_id, row["key_id"])
    assert store.authenticate(key) is None
    assert store.authenticate("seq_live_nope") is None
    assert store.authenticate("garbage") is None


def test_revoking_another_clients_key_is_not_found(store: Store, client_id: str) -> None:
    other = store.create_client("other")
    row, _ = store.create_api_key(other, "live")
    with pytest.raises(NotFound):
        store.revoke_api_key(client_id, row["key_id"])


def test_run_scoped_key_dies_with_its_run(store: Store, client_id: str, runner_id: str) -> None:
    deploy(store, client_id)
    keys: list[str] = []

    def mint(conn: Any, st: Any, run_id: str) -> str:
        _r, k = store.create_api_key(st["client_id"], "live", run_id=run_id, conn=conn)
        keys.append(k)
        return k

    run = store.claim(runner_id, ["us-east-1"], 5, mint_key=mint)
    assert run is not None
    p = store.authenticate(keys[0])
    assert p is not None and p.run_id == run["run_id"]
    store.report_exit(run["run_id"], run["epoch"], runner_id, ExitReport(code=1))
    assert store.authenticate(keys[0]) is None


def test_runner_tokens_authenticate_as_their_own_runners_only(store: Store, runner_id: str) -> None:
    tid, token = store.create_runner_token("x")
    mine = store.register_runner(tid, "x", "us-east-1", 1, {})
    assert store.authenticate_runner_as(token, mine) == (tid, True)
    assert store.authenticate_runner_as(token, runner_id) == (tid, False)
    assert store.authenticate_runner_as("seq_runner_nope", mine) is None
    store.revoke_runner_token(tid)
    assert store.authenticate_runner_as(token, mine) is None


def test_reseal_all_moves_every_sealed_value_to_the_new_key_in_one_go(store: Store, client_id: str) -> None:
    old, new = Keyring(os.urandom(32)), Keyring(os.urandom(32))
    sid = "sid-1"
    sec = old.seal_json({"A": "1"}, strategy_secrets_label(sid))
    key = old.seal(b"seq_live_x", strategy_api_key_label(sid))
    deploy(store, client_id, sid, start=False, **sealed_values(sec, "secrets"), **sealed_values(key, "sequence_api_key"))
    deploy(store, client_id, "sid-2", start=False, name="plain")  # nothing sealed: left as it is
    cred = old.seal_json({"api_key": "k"}, venue_credentials_label(client_id, "kalshi"))
    store.put_venue_credentials(client_id, "kalshi", cred.ciphertext, cred.nonce, cred.key_id, ["api_key"])

    assert store.reseal_all(old, new) == (2, 1)

    row = store.get_strategy(None, sid, with_sealed=True)
    assert row is not None
    sealed = sealed_in(row, "secrets")
    assert sealed is not None and sealed.key_id == new.primary_id
    assert new.unseal_json(sealed, strategy_secrets_label(sid)) == {"A": "1"}
    api_key = sealed_in(row, "sequence_api_key")
    assert api_key is not None and new.unseal(api_key, strategy_api_key_label(sid)) == b"seq_live_x"
    plain = store.get_strategy(None, "sid-2", with_sealed=True)
    assert plain is not None and sealed_in(plain, "secrets") is None
    with store.db.read() as c:
        opened = sealed_in(c.execute(sa.select(t.venue_credentials)).one()._mapping)
    assert opened is not None and new.unseal_json(opened, venue_credentials_label(client_id, "kalshi")) == {"api_key": "k"}
    with pytest.raises(UnsealError):  # a label names its row: another client's label does not open it
        new.unseal(opened, venue_credentials_label("someone-else", "kalshi"))
    # A ring without the key the values are sealed with aborts before writing anything.
    with pytest.raises(UnsealError):
        store.reseal_all(old, Keyring(os.urandom(32)))
    assert store.get_strategy(None, sid, with_sealed=True) == row
