"""Runs: claims, epochs, heartbeats and leases, exits and restarts (store/runs.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from sequence.store import tables as t
from sequence.store.store import (
    ExitReport,
    LogColumns,
    NotFound,
    StaleWrite,
    Store,
)
from tests.store.helpers import Clock, deploy


def test_claim_is_atomic_and_epochs_increase(store: Store, client_id: str, runner_id: str) -> None:
    deploy(store, client_id, sid="a", name="a")
    deploy(store, client_id, sid="b", name="b")
    c1 = store.claim(runner_id, ["us-east-1"], 5)
    c2 = store.claim(runner_id, ["us-east-1"], 5)
    assert c1 and c2 and {c1["strategy_id"], c2["strategy_id"]} == {"a", "b"}
    assert c2["epoch"] > c1["epoch"]
    assert store.claim(runner_id, ["us-east-1"], 5) is None
    assert store.get_strategy(client_id, "a")["status"] == "running"  # type: ignore[index]


def test_the_database_refuses_two_active_runs_of_one_strategy(store: Store, client_id: str, runner_id: str) -> None:
    deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    with pytest.raises(IntegrityError), store.db.write() as c:
        c.execute(t.runs.insert().values(
            run_id="dup", strategy_id="sid-1", client_id=client_id, epoch=999, status="starting",
            artifact_sha256="x", claimed_at=0.0, active_guard="A"))


def test_concurrent_claims_never_hand_out_a_strategy_twice(store: Store, client_id: str) -> None:
    for i in range(12):
        deploy(store, client_id, sid=f"s{i}", name=f"s{i}")
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
    deploy(store, client_id, sid="eu", name="eu", region="eu-west-1")
    deploy(store, client_id, sid="any1", name="any1")
    deploy(store, client_id, sid="any2", name="any2")
    tid, _ = store.create_runner_token("r")
    us = store.register_runner(tid, "us", "us-east-1", 1, {})
    c = store.claim(us, ["us-east-1"], 1)
    assert c is not None and c["strategy_id"] != "eu"
    assert store.claim(us, ["us-east-1"], 1) is None  # capacity 1 reached
    eu = store.register_runner(tid, "eu", "eu-west-1", 5, {})
    claimed = {store.claim(eu, ["eu-west-1"], 5)["strategy_id"], store.claim(eu, ["eu-west-1"], 5)["strategy_id"]}  # type: ignore[index]
    assert "eu" in claimed


def test_stale_epoch_writes_are_rejected(store: Store, client_id: str, runner_id: str) -> None:
    deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    with pytest.raises(StaleWrite):
        store.append_log_columns(run["run_id"], run["epoch"] + 1, runner_id, LogColumns(1, [1.0], ["stdout"], ["x"], []))
    with pytest.raises(StaleWrite):
        store.report_exit(run["run_id"], run["epoch"] - 1, runner_id, ExitReport(code=0))
    assert store.heartbeat(runner_id, [(run["run_id"], run["epoch"] + 7)]) == {run["run_id"]: "kill"}


def test_exit_zero_stops_and_nonzero_fails_with_backoff(store: Store, client_id: str, runner_id: str, clock: Clock) -> None:
    deploy(store, client_id)
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


def test_expired_lease_fails_the_run_and_requeues(store: Store, client_id: str, runner_id: str, clock: Clock) -> None:
    deploy(store, client_id)
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


def test_a_fresh_coordinator_charges_no_lease_for_one_lease_period(store: Store, client_id: str, runner_id: str,
                                                                   clock: Clock) -> None:
    deploy(store, client_id)
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
    deploy(store, client_id)
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


def test_runs_page_newest_first_by_epoch(store: Store, client_id: str, runner_id: str, clock: Clock) -> None:
    deploy(store, client_id)
    epochs = []
    for _ in range(3):
        run = store.claim(runner_id, ["us-east-1"], 5)
        assert run is not None
        epochs.append(run["epoch"])
        store.report_exit(run["run_id"], run["epoch"], runner_id, ExitReport(code=1))
        clock.now += 100
    assert [r["epoch"] for r in store.list_runs(client_id, "sid-1", 2)] == epochs[:0:-1]
    assert [r["epoch"] for r in store.list_runs(client_id, "sid-1", 2, before_epoch=epochs[1])] == [epochs[0]]


def _a_run_each(store: Store, client_id: str, runner_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two strategies, one claimed by ``runner_id`` and one by another runner."""
    deploy(store, client_id, sid="a", name="a")
    deploy(store, client_id, sid="b", name="b")
    tid, _ = store.create_runner_token("other")
    other = store.register_runner(tid, "r2", "us-east-1", 10, {})
    mine = store.claim(runner_id, ["us-east-1"], 5)
    theirs = store.claim(other, ["us-east-1"], 5)
    assert mine and theirs
    return mine, theirs


def test_a_closed_watch_shortens_its_runners_leases_unless_a_newer_one_is_open(
        store: Store, client_id: str, runner_id: str, clock: Clock) -> None:
    mine, theirs = _a_run_each(store, client_id, runner_id)
    first = store.open_watch(runner_id)
    assert store.open_watch(runner_id) == first + 1  # each open is a new epoch
    # An older watch closing changes nothing: a newer one is open.
    assert store.watch_closed(runner_id, first, 2.0) == 0
    assert store.get_run(mine["run_id"])["lease_expires_at"] == clock.now + store.lease_seconds  # type: ignore[index]
    # The current one closing: this runner's leases end 2 s from now; the other runner's do not.
    assert store.watch_closed(runner_id, first + 1, 2.0) == 1
    assert store.get_run(mine["run_id"])["lease_expires_at"] == clock.now + 2.0  # type: ignore[index]
    assert store.get_run(theirs["run_id"])["lease_expires_at"] == clock.now + store.lease_seconds  # type: ignore[index]
    assert store.watch_closed(runner_id, first + 1, 5.0) == 0  # never later than it was
    clock.now += 2.01
    assert store.expire_leases() == [mine["run_id"]]
    assert store.get_run(mine["run_id"])["status"] == "lost"  # type: ignore[index]


def test_opening_a_watch_renews_live_leases_but_revives_no_lapsed_one(
        store: Store, client_id: str, runner_id: str, clock: Clock) -> None:
    deploy(store, client_id, sid="a", name="a")
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run
    epoch = store.open_watch(runner_id)
    store.watch_closed(runner_id, epoch, 2.0)  # the close was recorded first ...
    clock.now += 1.0
    store.open_watch(runner_id)  # ... then the runner came back: the shortened lease is renewed
    assert store.get_run(run["run_id"])["lease_expires_at"] == clock.now + store.lease_seconds  # type: ignore[index]
    epoch = store.open_watch(runner_id)
    store.watch_closed(runner_id, epoch, 2.0)
    clock.now += 2.5  # lapsed: the reaper has it, a late watch does not bring it back
    store.open_watch(runner_id)
    assert store.get_run(run["run_id"])["lease_expires_at"] < clock.now  # type: ignore[index]
    assert store.expire_leases() == [run["run_id"]]
    with pytest.raises(NotFound):
        store.open_watch("runner_nope")


def test_within_the_start_grace_only_leases_a_watch_close_cut_here_are_charged(
        store: Store, client_id: str, runner_id: str, clock: Clock) -> None:
    mine, theirs = _a_run_each(store, client_id, runner_id)
    clock.now += store.lease_seconds * 3  # the coordinator was down: both leases lapsed meanwhile
    restarted = Store(store.db, clock=clock, lease_seconds=store.lease_seconds)
    restarted.begin_lease_grace()
    epoch = restarted.open_watch(runner_id)  # my runner connects to the new coordinator ...
    assert restarted.get_run(mine["run_id"])["lease_expires_at"] < clock.now  # type: ignore[index]
    assert restarted.heartbeat(runner_id, [(mine["run_id"], mine["epoch"])]) == {mine["run_id"]: "continue"}
    assert restarted.watch_closed(runner_id, epoch, 2.0) == 1  # ... and dies, within the grace
    clock.now += 2.01
    assert restarted.expire_leases() == [mine["run_id"]]  # charged: seen here, after the start
    assert restarted.expire_leases() == []  # the other runner's lapsed lease still has its grace
    clock.now += store.lease_seconds
    assert restarted.expire_leases() == [theirs["run_id"]]


@pytest.mark.parametrize("returning", [True, False])
def test_the_epoch_counter_counts_up_with_or_without_returning(store: Store, returning: bool,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """One UPDATE … RETURNING where the database has it; three statements on an SQLite before 3.35."""
    monkeypatch.setattr(store.db.engine.dialect, "update_returning", returning)
    got = []
    for _ in range(3):
        with store.db.write() as c:
            got.append(store._bump(c, "test_counter"))
    assert got == [1, 2, 3]


def test_a_runner_whose_heartbeats_stopped_or_that_is_shutting_down_is_given_no_run(
        store: Store, clock: Clock, client_id: str) -> None:
    """A poll left open by a frozen or cut-off runner took the run a lapsed lease re-queued:
    failover waited out a second lease, and the claim could start late as a second copy."""
    tid, _tok = store.create_runner_token("r")
    frozen = store.register_runner(tid, "frozen", "us-east-1", 10, {})
    deploy(store, client_id)
    clock.now += store.lease_seconds / 2 + 1  # no heartbeat since it registered
    assert store.claim(frozen, ["us-east-1"], 5, beats=True) is None
    assert store.claim(frozen, ["us-east-1"], 5) is not None  # a runner that does not beat when idle (older)
    deploy(store, client_id, "sid-2", name="two")
    store.heartbeat(frozen, [])  # an idle heartbeat
    assert store.claim(frozen, ["us-east-1"], 5, beats=True) is not None
    # A runner that said it is shutting down (an exit with runner_shutdown) gets nothing more.
    deploy(store, client_id, "sid-3", name="three")
    run = store.get_strategy(client_id, "sid-1")["current_run"]  # type: ignore[index]
    store.report_exit(run["run_id"], run["epoch"], frozen, ExitReport(code=None, signal=15, runner_shutdown=True))
    assert store.claim(frozen, ["us-east-1"], 5, beats=True) is None
    fresh = store.register_runner(tid, "next", "us-east-1", 10, {})
    taken = {store.claim(fresh, ["us-east-1"], 5, beats=True)["strategy_id"] for _ in range(2)}  # type: ignore[index]
    assert taken == {"sid-1", "sid-3"}  # the shut-down runner's run, at once, and the new one
