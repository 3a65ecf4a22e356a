"""SQLite's WAL checkpoints run on the coordinator's own thread, not inside a commit."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from sequence.store.db import Database
from sequence.store.store import Store


def _autocheckpoint(db: Database) -> int:
    with db.read() as c:
        return int(c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())


def test_the_thread_copies_the_wal_into_the_database_and_commits_do_not(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    assert _autocheckpoint(db) == 1000  # SQLite's default: the committing transaction checkpoints
    db.start_checkpointer(interval_s=0.05)
    try:
        assert db._ckpt_thread is not None and db._ckpt_thread.is_alive()
        assert _autocheckpoint(db) == 0  # left to the thread
        size = os.path.getsize(path)
        with db.write() as c:  # ~4 MB: far past the 1,000 pages after which a commit would checkpoint
            c.exec_driver_sql("CREATE TABLE blobs (i INTEGER PRIMARY KEY, b TEXT)")
            c.exec_driver_sql("INSERT INTO blobs (b) VALUES (?)", [("x" * 4000,) for _ in range(1000)])
        seen = db.checkpoints
        deadline = time.monotonic() + 30
        while db.checkpoints < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        # Only the thread checkpoints now: the pages reached the database file all the same.
        assert os.path.getsize(path) > size + 3_000_000
    finally:
        db.stop_checkpointer()
    assert db._ckpt_thread is None
    assert _autocheckpoint(db) == 1000  # commits checkpoint for themselves again
    db.dispose()
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM blobs").fetchone() == (1000,)
    con.close()


def test_it_runs_on_sqlite_and_does_nothing_on_postgresql(store: Store) -> None:
    """The `store` fixture runs on each backend (a file-backed SQLite, PostgreSQL)."""
    db = store.db
    db.start_checkpointer(interval_s=0.05)
    assert (db._ckpt_thread is not None) == db.is_sqlite
    db.stop_checkpointer()
    assert db._ckpt_thread is None
