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
    stored = sum(len(x["line"]) + LOG_LINE_OVERHEAD for run in (old, cur)
                 for x in store.read_logs(run["run_id"], 0, 10_000))
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


def test_retention_cuts_inside_a_batch_line_by_line(store: Store, client_id: str, runner_id: str) -> None:
    """A batch is one stored chunk; retention still drops a prefix of lines, not the whole
    batch, and what is left keeps its seqs, streams, partial flags and times."""
    store.log_retention_bytes = 100 * (10 + LOG_LINE_OVERHEAD)
    deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    n = 300
    streams = ["stdout" if i % 3 else "stderr" for i in range(n)]
    cols = LogColumns(1, [1000.5 + i for i in range(n)], streams, [f"{i:010d}" for i in range(n)],
                      [i for i in range(n) if i % 7 == 0])
    store.append_log_columns(run["run_id"], run["epoch"], runner_id, cols)  # one chunk, three times the limit
    r = store.get_run(run["run_id"])
    assert r is not None and r["dropped_lines"] > 0  # trimmed as it was stored
    kept = store.read_logs(run["run_id"], 0, 1000)
    first = r["dropped_lines"] + 1
    assert [x["seq"] for x in kept] == list(range(first, n + 1))
    assert 80 <= len(kept) <= 100  # back under 7/8 of the limit, not emptied
    for x in kept:
        i = x["seq"] - 1
        assert (x["line"], x["stream"], x["partial"], x["ts"]) == (f"{i:010d}", streams[i], i % 7 == 0, 1000.5 + i)
    assert store.strategy_log_bytes("sid-1") == len(kept) * (10 + LOG_LINE_OVERHEAD)
    # Reading from inside the cut chunk starts at the right line.
    assert [x["seq"] for x in store.read_logs(run["run_id"], first + 4, 3)] == [first + 5, first + 6, first + 7]


def test_a_stored_batch_reads_back_exactly_as_sent_or_resent(store: Store, client_id: str, runner_id: str) -> None:
    """The batch JSON is stored as it came (``raw``) when it is all new, re-encoded when a
    resend overlaps what is stored: both read back the same lines."""
    from sequence import protocol
    from sequence.api.services.logs import parse

    deploy(store, client_id)
    run = store.claim(runner_id, ["us-east-1"], 5)
    assert run is not None
    rid, ep = run["run_id"], run["epoch"]
    recs = [{"seq": i, "ts": 1700000000.123456 + i, "stream": ("stdout", "stderr", "system")[i % 3],
             "line": f"l{i} é 😀 \t \"q\" \\", "partial": i == 2} for i in range(1, 6)]
    epoch, cols = parse(protocol.encode_logs(ep, recs[:3]))
    assert epoch == ep and cols.raw is not None  # stored as it came
    assert store.append_log_columns(rid, ep, runner_id, cols) == 4
    _epoch, cols = parse(protocol.encode_logs(ep, recs[1:]))  # overlaps seqs 2-3: re-encoded from seq 4
    assert store.append_log_columns(rid, ep, runner_id, cols) == 6
    got = store.read_logs(rid, 0, 100)
    assert [(x["seq"], x["ts"], x["stream"], x["line"], x["partial"]) for x in got] == [
        (r["seq"], r["ts"], r["stream"], r["line"], r["partial"]) for r in recs]
    # A NUL is replaced before storing: the re-encoded body, never the raw one.
    _epoch, cols = parse(protocol.encode_logs(ep, [{"seq": 6, "ts": 1.0, "stream": "stdout", "line": "a\0b"}]))
    assert cols.raw is None
    store.append_log_columns(rid, ep, runner_id, cols)
    assert store.read_logs(rid, 5, 10)[0]["line"] == "a\ufffdb"


def test_the_migration_moves_lines_stored_a_row_each_into_chunks(db_url: str) -> None:
    """A database at revision 0007 (a row per line) keeps every line, in order, through
    the upgrade; the downgrade gives them back a row each."""
    from sequence.store.db import Database, alembic_config, upgrade

    db = Database(db_url)
    try:
        with db.engine.begin() as c:  # the suite's PostgreSQL database is shared: start clean
            for name in ("log_chunks", "hosted_strategy_logs", "alembic_version"):
                c.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        with db.engine.begin() as c:
            for table in reversed(t.metadata.sorted_tables):
                c.exec_driver_sql(f"DROP TABLE IF EXISTS {table.name} CASCADE" if not db.is_sqlite
                                  else f"DROP TABLE IF EXISTS {table.name}")
        from alembic import command

        # The run is made by today's store code, at head; then the schema goes back to 0007.
        upgrade(db.engine, "head")
        store = Store(db)
        cid = store.create_client("m")
        deploy(store, cid)
        tid, _ = store.create_runner_token("r")
        rid_runner = store.register_runner(tid, "r", "us-east-1", 1, {})
        run = store.claim(rid_runner, ["us-east-1"], 5)
        assert run is not None
        command.downgrade(alembic_config(db.engine), "0007")
        rows = [{"run_id": run["run_id"], "seq": i, "strategy_id": "sid-1", "ts": 5.25 + i,
                 "stream": "stderr" if i % 2 else "stdout", "line": f"old {i} é", "partial": i == 1500}
                for i in range(1, 2501)]
        old = sa.table("hosted_strategy_logs", *(sa.column(k) for k in rows[0]))
        with db.engine.begin() as c:
            c.execute(old.insert(), rows)
        upgrade(db.engine, "head")
        got = store.read_logs(run["run_id"], 0, 5000)
        assert [(x["seq"], x["ts"], x["stream"], x["line"], x["partial"]) for x in got] == [
            (r["seq"], r["ts"], r["stream"], r["line"], r["partial"]) for r in rows]
        with db.engine.connect() as c:
            assert c.exec_driver_sql("SELECT count(*), sum(nbytes) FROM log_chunks").one() == (
                3, sum(len(r["line"]) + LOG_LINE_OVERHEAD for r in rows))
        command.downgrade(alembic_config(db.engine), "0007")
        with db.engine.connect() as c:
            back = c.execute(sa.select(old).order_by(old.c.seq)).all()
        assert [tuple(r) for r in back] == [tuple(r.values()) for r in rows]
    finally:
        with db.engine.begin() as c:  # leave the shared database at head for the next test
            for name in ("log_chunks", "hosted_strategy_logs"):
                c.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
            for table in reversed(t.metadata.sorted_tables):
                c.exec_driver_sql(f"DROP TABLE IF EXISTS {table.name} CASCADE" if not db.is_sqlite
                                  else f"DROP TABLE IF EXISTS {table.name}")
            c.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        upgrade(db.engine, "head")
        db.dispose()
