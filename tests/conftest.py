"""Shared fixtures: the two store backends and a live coordinator."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sequence.store.db import Database, normalize_url
from sequence.store.store import Store
from sequence.store.tables import metadata
from tests.helpers import LiveServer, start_server

PG_ADMIN_URL = os.environ.get("SEQUENCE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
#: The interpreter's recursion limit as the suite starts. The local Polymarket venue (and eth_account
#: in tests) import py_ecc, which raises it to 100,000: in-process coordinators would then crash on
#: the hostile deeply nested JSON the security tests send, instead of answering 400 as they do in
#: production (sequence.execution.venues.order_venue puts the limit back after that import).
RECURSION_LIMIT = sys.getrecursionlimit()


def pytest_collection_finish(session: pytest.Session) -> None:
    sys.setrecursionlimit(RECURSION_LIMIT)


@pytest.fixture(autouse=True)
def _recursion_limit() -> Iterator[None]:
    yield
    if sys.getrecursionlimit() != RECURSION_LIMIT:
        sys.setrecursionlimit(RECURSION_LIMIT)


def _pg_available() -> bool:
    try:
        eng = sa.create_engine(normalize_url(PG_ADMIN_URL), connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    if not _pg_available():
        if os.environ.get("SEQUENCE_TEST_SKIP_PG") == "1":
            pytest.skip("PostgreSQL not reachable and SEQUENCE_TEST_SKIP_PG=1")
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}; start it (make test does) "
                    "or set SEQUENCE_TEST_SKIP_PG=1 to skip the PostgreSQL half knowingly")
    name = f"seq_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = sa.create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def _pg_db(pg_url: str) -> Iterator[Database]:
    db = Database(pg_url)
    db.migrate()
    yield db
    db.dispose()


def _truncate(db: Database) -> None:
    with db.write() as c:
        for table in reversed(metadata.sorted_tables):
            c.execute(table.delete())


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    db: Database = request.getfixturevalue("_pg_db")
    _truncate(db)
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    db = Database(db_url)
    db.migrate()
    yield Store(db)
    db.dispose()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """A coordinator on SQLite (the default), fresh per test."""
    srv = start_server(tmp_path / "data", environ={})
    yield srv
    srv.stop()


@pytest.fixture
def any_server(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A coordinator on each backend."""
    srv = start_server(tmp_path / "data", database_url=db_url, environ={})
    yield srv
    srv.stop()
