"""Strategies: deploy, redeploy, stop, delete (store/strategies.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sequence.store import tables as t
from sequence.store.store import (
    ExitReport,
    LogColumns,
    NotFound,
    Store,
)
from tests.helpers import make_tar
from tests.store.helpers import deploy, fields


def test_redeploy_keeps_the_id_and_replaces_the_artifact(store: Store, client_id: str) -> None:
    r1 = deploy(store, client_id, start=False, sha="a" * 64)
    assert r1["status"] == "stopped"
    r2, created = store.deploy_strategy("sid-1", client_id, fields(sha="b" * 64), make_tar({"main.py": "y"}), start=False)
    assert not created and r2["strategy_id"] == "sid-1" and r2["artifact_sha256"] == "b" * 64
    with store.db.read() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(t.artifacts)).scalar() == 1


def test_strategies_are_scoped_to_their_client(store: Store, client_id: str) -> None:
    deploy(store, client_id)
    other = store.create_client("other")
    assert store.get_strategy(other, "sid-1") is None
    assert store.list_strategies(other) == []
    with pytest.raises(NotFound):
        store.stop_strategy(other, "sid-1")
    with pytest.raises(NotFound):
        store.delete_strategy(other, "sid-1")


def test_stop_of_a_running_strategy_ends_stopped_whatever_the_code(store: Store, client_id: str, runner_id: str) -> None:
    deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    st = store.stop_strategy(client_id, "sid-1")
    assert st["status"] == "stopping"
    assert store.pending_stops(runner_id, []) == [run["run_id"]]
    assert store.pending_stops(runner_id, [run["run_id"]]) == []
    assert store.heartbeat(runner_id, [(run["run_id"], run["epoch"])]) == {run["run_id"]: "stop"}
    store.report_exit(run["run_id"], run["epoch"], runner_id, ExitReport(code=None, signal=15))
    assert store.get_strategy(client_id, "sid-1")["status"] == "stopped"  # type: ignore[index]


def test_delete_purges_artifact_runs_and_logs(store: Store, client_id: str, runner_id: str) -> None:
    deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    store.append_log_columns(run["run_id"], run["epoch"], runner_id, LogColumns(1, [1.0], ["stdout"], ["x"], []))
    store.delete_strategy(client_id, "sid-1")
    with store.db.read() as c:
        for table in (t.strategies, t.runs, t.artifacts, t.log_chunks):
            assert c.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
    assert store.heartbeat(runner_id, [(run["run_id"], run["epoch"])]) == {run["run_id"]: "kill"}
