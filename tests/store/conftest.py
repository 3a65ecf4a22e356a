"""Fixtures of the store tests (``store`` itself, over SQLite and PostgreSQL, is tests/conftest.py's)."""

from __future__ import annotations

import pytest

from sequence.store.store import Store
from tests.store.helpers import Clock


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
