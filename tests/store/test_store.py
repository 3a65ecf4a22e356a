"""The storage layer, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

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
    LOG_LINE_OVERHEAD,
    Conflict,
    ExitReport,
    LogColumns,
    NotFound,
    StaleWrite,
    Store,
)
from tests.helpers import make_tar


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _fields(name: str = "s1", sha: str = "a" * 64, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name, "runtime": "python", "entrypoint": "main.py", "artifact_sha256": sha, "artifact_size": 10,
        "env": {"A": "1"}, "manifest": {"m": [1]}, "secret_names": [], "memory_mb": 512, "stop_timeout_s": 10.0,
        "placement": {"latency_target": []}, "region": None, "api_key_id": None, "is_sandbox": False,
    }
    base.update(kw)
    return base


@pytest.fixture
def clock(store: Store) -> Clock:
    c = Clock()
    store.clock = c
    return c


@pytest.fixture
def client_id(store: Store) -> str:
    return store.create_client("acme")


@pytest.fixture
def runner_id(store: Store) -> str:
    tid, _tok = store.create_runner_token("r")
    return store.register_runner(tid, "r1", "us-east-1", 10, {})


def _deploy(store: Store, cid: str, sid: str = "sid-1", start: bool = True, **kw: Any) -> dict[str, Any]:
    row, _created = store.deploy_strategy(sid, cid, _fields(**kw), make_tar({"main.py": "x"}), start=start)
    return row


def test_migrations_produce_the_declared_schema(store: Store) -> None:
    with store.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), t.metadata)
    assert diff == []


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


def test_redeploy_keeps_the_id_and_replaces_the_artifact(store: Store, client_id: str) -> None:
    r1 = _deploy(store, client_id, start=False, sha="a" * 64)
    assert r1["status"] == "stopped"
    r2, created = store.deploy_strategy("sid-1", client_id, _fields(sha="b" * 64), make_tar({"main.py": "y"}), start=False)
    assert not created and r2["strategy_id"] == "sid-1" and r2["artifact_sha256"] == "b" * 64
    with store.db.read() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(t.artifacts)).scalar() == 1


def test_strategies_are_scoped_to_their_client(store: Store, client_id: str) -> None:
    _deploy(store, client_id)
    other = store.create_client("other")
    assert store.get_strategy(other, "sid-1") is None
    assert store.list_strategies(other) == []
    with pytest.raises(NotFound):
        store.stop_strategy(other, "sid-1")
    with pytest.raises(NotFound):
        store.delete_strategy(other, "sid-1")


def test_claim_is_atomic_and_epochs_increase(store: Store, client_id: str, runner_id: str) -> None:
    _deploy(store, client_id, sid="a", name="a")
    _deploy(store, client_id, sid="b", name="b")
    c1 = store.claim(runner_id, ["us-east-1"], 5)
    c2 = store.claim(runner_id, ["us-east-1"], 5)
    assert c1 and c2 and {c1["strategy_id"], c2["strategy_id"]} == {"a", "b"}
    assert c2["epoch"] > c1["epoch"]
    assert store.claim(runner_id, ["us-east-1"], 5) is None
    assert store.get_strategy(client_id, "a")["status"] == "running"  # type: ignore[index]


def test_the_database_refuses_two_active_runs_of_one_strategy(store: Store, client_id: str, runner_id: str) -> None:
    _deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    with pytest.raises(IntegrityError), store.db.write() as c:
        c.execute(t.runs.insert().values(
            run_id="dup", strategy_id="sid-1", client_id=client_id, epoch=999, status="starting",
            artifact_sha256="x", claimed_at=0.0, active_guard="A"))


def test_concurrent_claims_never_hand_out_a_strategy_twice(store: Store, client_id: str) -> None:
    for i in range(12):
        _deploy(store, client_id, sid=f"s{i}", name=f"s{i}")
    tid, _ = store.create_runner_token("r")
    runners = [store.register_runner(tid, f"r{i}", "us-east-1", 100, {}) for i in range(4)]
    got: list[str] = []
    lock = threading.Lock()

    def worker(rid: str) -> None:
        while True:
            c = store.claim(rid, ["us-east-1"], 10)
            if c is None:
                return
            with lock:
                got.append(c["strategy_id"])

    threads = [threading.Thread(target=worker, args=(r,)) for r in runners]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(got) == sorted(f"s{i}" for i in range(12))


def test_claims_respect_region_and_capacity(store: Store, client_id: str) -> None:
    _deploy(store, client_id, sid="eu", name="eu", region="eu-west-1")
    _deploy(store, client_id, sid="any1", name="any1")
    _deploy(store, client_id, sid="any2", name="any2")
    tid, _ = store.create_runner_token("r")
    us = store.register_runner(tid, "us", "us-east-1", 1, {})
    c = store.claim(us, ["us-east-1"], 1)
    assert c is not None and c["strategy_id"] != "eu"
    assert store.claim(us, ["us-east-1"], 1) is None  # capacity 1 reached
    eu = store.register_runner(tid, "eu", "eu-west-1", 5, {})
    claimed = {store.claim(eu, ["eu-west-1"], 5)["strategy_id"], store.claim(eu, ["eu-west-1"], 5)["strategy_id"]}  # type: ignore[index]
    assert "eu" in claimed


def test_stale_epoch_writes_are_rejected(store: Store, client_id: str, runner_id: str) -> None:
    _deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    with pytest.raises(StaleWrite):
        store.append_log_columns(run["run_id"], run["epoch"] + 1, runner_id, LogColumns(1, [1.0], ["stdout"], ["x"], []))
    with pytest.raises(StaleWrite):
        store.report_exit(run["run_id"], run["epoch"] - 1, runner_id, ExitReport(code=0))
    assert store.heartbeat(runner_id, [(run["run_id"], run["epoch"] + 7)]) == {run["run_id"]: "kill"}


def test_log_batches_are_deduplicated_and_gaps_refused(store: Store, client_id: str, runner_id: str) -> None:
    _deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    rid, ep = run["run_id"], run["epoch"]

    def lines(a: int, b: int) -> LogColumns:
        return LogColumns(a, [float(i) for i in range(a, b)], ["stdout"] * (b - a), [f"l{i}" for i in range(a, b)], [])

    assert store.append_log_columns(rid, ep, runner_id, lines(1, 4)) == 4
    assert store.append_log_columns(rid, ep, runner_id, lines(1, 6)) == 6  # resent overlap: no duplicates
    with pytest.raises(Conflict):
        store.append_log_columns(rid, ep, runner_id, lines(8, 9))
    got = store.read_logs(rid, 0, 100)
    assert [x["line"] for x in got] == [f"l{i}" for i in range(1, 6)]
    assert [x["line"] for x in store.read_logs(rid, 3, 100)] == ["l4", "l5"]


def test_exit_zero_stops_and_nonzero_fails_with_backoff(store: Store, client_id: str, runner_id: str, clock: Clock) -> None:
    _deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    store.report_exit(run["run_id"], run["epoch"], runner_id, ExitReport(code=3))
    st = store.get_strategy(client_id, "sid-1")
    assert st is not None and st["status"] == "failed" and st["restart_count"] == 1
    assert st["next_restart_at"] == pytest.approx(clock.now + 1.0)
    assert store.claim(runner_id, ["us-east-1"], 5) is None  # backoff not elapsed
    clock.now += 1.01
    run2 = store.claim(runner_id, ["us-east-1"], 5)
    assert run2 is not None and run2["epoch"] > run["epoch"]
    store.report_exit(run2["run_id"], run2["epoch"], runner_id, ExitReport(code=None, signal=9))
    st = store.get_strategy(client_id, "sid-1")
    assert st["next_restart_at"] == pytest.approx(clock.now + 2.0)  # type: ignore[index]
    clock.now += 2.01
    run3 = store.claim(runner_id, ["us-east-1"], 5)
    assert run3 is not None
    store.report_exit(run3["run_id"], run3["epoch"], runner_id, ExitReport(code=0))
    st = store.get_strategy(client_id, "sid-1")
    assert st["status"] == "stopped" and st["desired_state"] == "stopped"  # type: ignore[index]
    clock.now += 100
    assert store.claim(runner_id, ["us-east-1"], 5) is None  # exit 0: never restarted


def test_stop_of_a_running_strategy_ends_stopped_whatever_the_code(store: Store, client_id: str, runner_id: str) -> None:
    _deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    st = store.stop_strategy(client_id, "sid-1")
    assert st["status"] == "stopping"
    assert store.pending_stops(runner_id, []) == [run["run_id"]]
    assert store.pending_stops(runner_id, [run["run_id"]]) == []
    assert store.heartbeat(runner_id, [(run["run_id"], run["epoch"])]) == {run["run_id"]: "stop"}
    store.report_exit(run["run_id"], run["epoch"], runner_id, ExitReport(code=None, signal=15))
    assert store.get_strategy(client_id, "sid-1")["status"] == "stopped"  # type: ignore[index]


def test_expired_lease_fails_the_run_and_requeues(store: Store, client_id: str, runner_id: str, clock: Clock) -> None:
    _deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    clock.now += store.lease_seconds + 1
    assert store.expire_leases() == [run["run_id"]]
    st = store.get_strategy(client_id, "sid-1")
    assert st is not None and st["status"] == "failed" and "runner lost" in st["last_exit"]["reason"]
    assert store.get_run(run["run_id"])["status"] == "lost"  # type: ignore[index]
    # The lost runner's late writes are refused.
    with pytest.raises(StaleWrite):
        store.report_exit(run["run_id"], run["epoch"], runner_id, ExitReport(code=0))
    # A lost runner is not the strategy's fault: claimable at once, backoff not grown.
    assert st["next_restart_at"] == clock.now and st["restart_count"] == 1
    assert st["consecutive_failures"] == 0
    assert store.claim(runner_id, ["us-east-1"], 5) is not None


def test_run_scoped_key_dies_with_its_run(store: Store, client_id: str, runner_id: str) -> None:
    _deploy(store, client_id)
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


def test_delete_purges_artifact_runs_and_logs(store: Store, client_id: str, runner_id: str) -> None:
    _deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    store.append_log_columns(run["run_id"], run["epoch"], runner_id, LogColumns(1, [1.0], ["stdout"], ["x"], []))
    store.delete_strategy(client_id, "sid-1")
    with store.db.read() as c:
        for table in (t.strategies, t.runs, t.artifacts, t.hosted_strategy_logs):
            assert c.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
    assert store.heartbeat(runner_id, [(run["run_id"], run["epoch"])]) == {run["run_id"]: "kill"}


def test_a_fresh_coordinator_charges_no_lease_for_one_lease_period(store: Store, client_id: str, runner_id: str,
                                                                   clock: Clock) -> None:
    _deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    clock.now += store.lease_seconds * 3  # the coordinator was down; nobody could heartbeat
    restarted = Store(store.db, clock=clock, lease_seconds=store.lease_seconds)
    restarted.begin_lease_grace()
    assert restarted.expire_leases() == []
    clock.now += store.lease_seconds - 0.01
    assert restarted.expire_leases() == []
    clock.now += 0.02  # grace over, no heartbeat came: lost as before
    assert restarted.expire_leases() == [run["run_id"]]


def test_a_heartbeat_within_the_grace_renews_a_lapsed_lease(store: Store, client_id: str, runner_id: str,
                                                            clock: Clock) -> None:
    _deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    clock.now += store.lease_seconds * 3
    assert store.heartbeat(runner_id, [(run["run_id"], run["epoch"])]) == {run["run_id"]: "kill"}  # no grace
    restarted = Store(store.db, clock=clock, lease_seconds=store.lease_seconds)
    restarted.begin_lease_grace()
    clock.now += 1
    assert restarted.heartbeat(runner_id, [(run["run_id"], run["epoch"])]) == {run["run_id"]: "continue"}
    clock.now += store.lease_seconds  # past the grace, inside the renewed lease
    assert restarted.expire_leases() == []
    clock.now += 1
    assert restarted.expire_leases() == [run["run_id"]]


def _lines(a: int, b: int, width: int = 10) -> LogColumns:
    """Lines ``a`` to ``b - 1``, each its number on ``width`` digits."""
    return LogColumns(a, [float(i) for i in range(a, b)], ["stdout"] * (b - a), [f"{i:0{width}d}" for i in range(a, b)], [])


def test_logs_of_an_ended_run_are_history_and_still_stored(store: Store, client_id: str, runner_id: str) -> None:
    _deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    rid, ep = run["run_id"], run["epoch"]
    store.append_log_columns(rid, ep, runner_id, _lines(1, 3))
    store.report_exit(rid, ep, runner_id, ExitReport(code=0))
    assert store.append_log_columns(rid, ep, runner_id, _lines(2, 5)) == 5  # late, overlapping: stored once
    with pytest.raises(Conflict):
        store.append_log_columns(rid, ep, runner_id, _lines(7, 8))
    with pytest.raises(StaleWrite):
        store.append_log_columns(rid, ep + 1, runner_id, _lines(5, 6))
    tid, _ = store.create_runner_token("other")
    other = store.register_runner(tid, "other", "us-east-1", 1, {})
    with pytest.raises(StaleWrite):
        store.append_log_columns(rid, ep, other, _lines(5, 6))
    assert [x["seq"] for x in store.read_logs(rid, 0, 100)] == [1, 2, 3, 4]


def test_runner_tokens_authenticate_as_their_own_runners_only(store: Store, runner_id: str) -> None:
    tid, token = store.create_runner_token("x")
    mine = store.register_runner(tid, "x", "us-east-1", 1, {})
    assert store.authenticate_runner_as(token, mine) == (tid, True)
    assert store.authenticate_runner_as(token, runner_id) == (tid, False)
    assert store.authenticate_runner_as("seq_runner_nope", mine) is None
    store.revoke_runner_token(tid)
    assert store.authenticate_runner_as(token, mine) is None


def test_retention_drops_old_runs_first_then_the_current_runs_oldest(store: Store, client_id: str,
                                                                      runner_id: str) -> None:
    store.log_retention_bytes = 100 * (10 + LOG_LINE_OVERHEAD)  # room for 100 lines of 10 characters
    _deploy(store, client_id)
    old = store.claim(runner_id, ["us-east-1"], 5)
    assert old is not None
    store.append_log_columns(old["run_id"], old["epoch"], runner_id, _lines(1, 61))
    store.report_exit(old["run_id"], old["epoch"], runner_id, ExitReport(code=1))
    store.start_strategy(client_id, "sid-1")
    store.clock = lambda: 10**10  # past the restart backoff
    cur = store.claim(runner_id, ["us-east-1"], 5)
    assert cur is not None
    for a in range(1, 201, 20):
        store.append_log_columns(cur["run_id"], cur["epoch"], runner_id, _lines(a, a + 20))
    store.enforce_log_retention("sid-1")
    assert store.strategy_log_bytes("sid-1") <= store.log_retention_bytes
    old_run, cur_run = store.get_run(old["run_id"]), store.get_run(cur["run_id"])
    assert old_run is not None and cur_run is not None
    assert old_run["dropped_lines"] == 60 and store.read_logs(old["run_id"], 0, 1000) == []
    kept = [x["seq"] for x in store.read_logs(cur["run_id"], 0, 1000)]
    assert kept == list(range(cur_run["dropped_lines"] + 1, 201))  # the newest, contiguous
    assert cur_run["dropped_lines"] > 0 and len(kept) >= 80
    # Appends go on after a trim, and the counter keeps matching what is stored.
    store.append_log_columns(cur["run_id"], cur["epoch"], runner_id, _lines(201, 202))
    with store.db.read() as c:
        stored = c.execute(sa.select(sa.func.sum(sa.func.length(t.hosted_strategy_logs.c.line))
                                     + LOG_LINE_OVERHEAD * sa.func.count())).scalar()
    assert store.strategy_log_bytes("sid-1") == stored


def test_runs_page_newest_first_by_epoch(store: Store, client_id: str, runner_id: str, clock: Clock) -> None:
    _deploy(store, client_id)
    epochs = []
    for _ in range(3):
        run = store.claim(runner_id, ["us-east-1"], 5)
        assert run is not None
        epochs.append(run["epoch"])
        store.report_exit(run["run_id"], run["epoch"], runner_id, ExitReport(code=1))
        clock.now += 100
    assert [r["epoch"] for r in store.list_runs(client_id, "sid-1", 2)] == epochs[:0:-1]
    assert [r["epoch"] for r in store.list_runs(client_id, "sid-1", 2, before_epoch=epochs[1])] == [epochs[0]]


def test_trimming_while_a_runner_appends_keeps_counts_exact(store: Store, client_id: str, runner_id: str) -> None:
    store.log_retention_bytes = 50 * (10 + LOG_LINE_OVERHEAD)
    _deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    errors: list[BaseException] = []
    done = threading.Event()

    def trim() -> None:
        try:
            while not done.is_set():
                store.enforce_log_retention("sid-1")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    th = threading.Thread(target=trim)
    th.start()
    try:
        for a in range(1, 2001, 20):
            store.append_log_columns(run["run_id"], run["epoch"], runner_id, _lines(a, a + 20))
    finally:
        done.set()
        th.join()
    assert errors == []
    store.enforce_log_retention("sid-1")
    r = store.get_run(run["run_id"])
    assert r is not None and r["log_lines"] == 2000
    kept = [x["seq"] for x in store.read_logs(run["run_id"], 0, 5000)]
    assert kept == list(range(r["dropped_lines"] + 1, 2001))
    assert store.strategy_log_bytes("sid-1") == len(kept) * (10 + LOG_LINE_OVERHEAD) <= store.log_retention_bytes


def test_reseal_all_moves_every_sealed_value_to_the_new_key_in_one_go(store: Store, client_id: str) -> None:
    old, new = Keyring(os.urandom(32)), Keyring(os.urandom(32))
    sid = "sid-1"
    sec = old.seal_json({"A": "1"}, strategy_secrets_label(sid))
    key = old.seal(b"seq_live_x", strategy_api_key_label(sid))
    _deploy(store, client_id, sid, start=False, **sealed_values(sec, "secrets"), **sealed_values(key, "sequence_api_key"))
    _deploy(store, client_id, "sid-2", start=False, name="plain")  # nothing sealed: left as it is
    cred = old.seal_json({"api_key": "k"}, venue_credentials_label(client_id, "kalshi"))
    store.put_venue_credentials(client_id, "kalshi", cred.ciphertext, cred.nonce, cred.key_id, ["api_key"])

    assert store.reseal_all(old, new) == (2, 1)

    strategies, creds = store.all_sealed_rows()
    row = next(r for r in strategies if r["strategy_id"] == sid)
    sealed = sealed_in(row, "secrets")
    assert sealed is not None and sealed.key_id == new.primary_id
    assert new.unseal_json(sealed, strategy_secrets_label(sid)) == {"A": "1"}
    api_key = sealed_in(row, "sequence_api_key")
    assert api_key is not None and new.unseal(api_key, strategy_api_key_label(sid)) == b"seq_live_x"
    assert sealed_in(next(r for r in strategies if r["strategy_id"] == "sid-2"), "secrets") is None
    opened = sealed_in(creds[0])
    assert opened is not None and new.unseal_json(opened, venue_credentials_label(client_id, "kalshi")) == {"api_key": "k"}
    with pytest.raises(UnsealError):  # a label names its row: another client's label does not open it
        new.unseal(opened, venue_credentials_label("someone-else", "kalshi"))
    # A ring without the key the values are sealed with aborts before writing anything.
    with pytest.raises(UnsealError):
        store.reseal_all(old, Keyring(os.urandom(32)))
    assert store.all_sealed_rows()[0] == strategies
