"""Log lines: ingest, history, retention (store/logs.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from sequence.store import tables as t
from sequence.store.store import (
    LOG_LINE_OVERHEAD,
    Conflict,
    ExitReport,
    LogColumns,
    StaleWrite,
    Store,
)
from tests.store.helpers import deploy


def _lines(a: int, b: int, width: int = 10) -> LogColumns:
    """Lines ``a`` to ``b - 1``, each its number on ``width`` digits."""
    return LogColumns(a, [float(i) for i in range(a, b)], ["stdout"] * (b - a), [f"{i:0{width}d}" for i in range(a, b)], [])


def test_log_batches_are_deduplicated_and_gaps_refused(store: Store, client_id: str, runner_id: str) -> None:
    deploy(store, client_id)
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


def test_logs_of_an_ended_run_are_history_and_still_stored(store: Store, client_id: str, runner_id: str) -> None:
    deploy(store, client_id)
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


def test_retention_drops_old_runs_first_then_the_current_runs_oldest(store: Store, client_id: str,
                                                                      runner_id: str) -> None:
    store.log_retention_bytes = 100 * (10 + LOG_LINE_OVERHEAD)  # room for 100 lines of 10 characters
    deploy(store, client_id)
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


def test_trimming_while_a_runner_appends_keeps_counts_exact(store: Store, client_id: str, runner_id: str) -> None:
    store.log_retention_bytes = 50 * (10 + LOG_LINE_OVERHEAD)
    deploy(store, client_id)
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
