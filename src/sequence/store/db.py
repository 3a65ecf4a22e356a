"""The database: engine creation, transactions and migrations, for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: How often the coordinator checkpoints SQLite's WAL (Database.start_checkpointer).
CHECKPOINT_INTERVAL_S = 1.0
log = logging.getLogger(__name__)


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` / ``postgres://`` and use the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def create_engine(url: str, checkpointing: threading.Event | None = None) -> Engine:
    """The engine; on SQLite, connections made while *checkpointing* is set leave WAL
    checkpoints to the caller's thread instead of the committing transaction."""
    checkpointing = checkpointing or threading.Event()
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            max_overflow=16,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            # Take transaction control away from pysqlite so BEGIN IMMEDIATE works.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            if checkpointing.is_set():  # the coordinator's checkpointer thread does it (Database.start_checkpointer)
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))

        return engine
    return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


class Database:
    """Owns the engine and hands out transactions.

    On SQLite, writers are serialised by a process-wide lock and start with
    ``BEGIN IMMEDIATE``: the "single writer transaction" that makes claims
    atomic.  On PostgreSQL, row locks (``FOR UPDATE SKIP LOCKED``) do that.
    """

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self._checkpointing = threading.Event()
        self.engine = create_engine(self.url, self._checkpointing)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._write_lock = threading.RLock() if self.is_sqlite else None
        self._ckpt_stop = threading.Event()
        self._ckpt_thread: threading.Thread | None = None
        self.checkpoints = 0  # checkpoints the thread ran (for tests and curiosity)

    # -- SQLite: WAL checkpoints off the commit path ---------------------------------------
    def start_checkpointer(self, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        """SQLite: checkpoint the WAL from a thread of its own every *interval_s*.

        By default SQLite checkpoints inside the commit that grows the WAL past 1,000
        pages, and that commit pays for copying the pages and syncing the database file:
        a few milliseconds on whichever order or log batch happens to commit then (the
        p99 of ``bench/trading_submit.py``). A PASSIVE checkpoint here does the same work
        beside the writers. No-op on PostgreSQL or an in-memory database.
        """
        path = self.engine.url.database
        if not self.is_sqlite or not path or path == ":memory:" or self._ckpt_thread is not None:
            return
        self._checkpointing.set()
        self.engine.dispose()  # pooled connections reopen with wal_autocheckpoint=0
        self._ckpt_stop.clear()
        self._ckpt_thread = threading.Thread(target=self._checkpoint_loop, args=(path, interval_s),
                                             name="sqlite-checkpoint", daemon=True)
        self._ckpt_thread.start()

    def stop_checkpointer(self) -> None:
        """Stop the thread after a last checkpoint; commits checkpoint for themselves again."""
        thread, self._ckpt_thread = self._ckpt_thread, None
        if thread is None:
            return
        self._ckpt_stop.set()
        thread.join(timeout=30)
        self._checkpointing.clear()
        self.engine.dispose()

    def _checkpoint_loop(self, path: str, interval_s: float) -> None:
        import sqlite3

        con = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            while True:
                stopping = self._ckpt_stop.wait(interval_s)
                try:
                    # PASSIVE: copies what no reader still needs, never waits for writers.
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # a busy or broken file: try again next time
                    log.warning("SQLite WAL checkpoint failed: %s", exc)
                if stopping:
                    return
        finally:
            con.close()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        lock = self._write_lock if self._write_lock is not None else nullcontext()
        with lock, self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def migrate(self) -> None:
        upgrade(self.engine)

    # -- PostgreSQL notifications between coordinator replicas ------------------------------
    def notify(self, channel: str) -> None:
        """``NOTIFY channel`` (PostgreSQL; *channel* is a constant identifier of ours)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql(f"NOTIFY {channel}")
            conn.commit()

    def listen(self, channel: str, stop: threading.Event) -> Iterator[str]:
        """``LISTEN channel`` on a connection of its own: yields ``"listening"`` once subscribed,
        then each notification's payload, until *stop* is set (checked every second).
        Connection errors propagate (the caller reconnects)."""
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"LISTEN {channel}")
            yield "listening"
            while not stop.is_set():
                for n in conn.notifies(timeout=1.0, stop_after=1):
                    yield n.payload

    def dispose(self) -> None:
        self.stop_checkpointer()
        self.engine.dispose()


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)
