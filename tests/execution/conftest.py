"""Fixtures for the graph engine's tests: an engine over a fake market and a real store."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sequence.execution.engine import TradingEngine
from sequence.store.db import Database
from sequence.store.store import Store
from sequence.store.trading import TradingStore
from tests.trading.fakes import FakeMarket


def async_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body on a fresh event loop (no plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


@dataclass
class Env:
    db: Database
    store: Store
    trading: TradingStore
    market: FakeMarket
    client_id: str

    def engine(self, market: FakeMarket | None = None) -> TradingEngine:
        return TradingEngine(self.trading, market or self.market)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    db = Database(f"sqlite:///{tmp_path / 'trading.db'}")
    db.migrate()
    store = Store(db)
    cid = store.create_client("acme")
    yield Env(db, store, TradingStore(db), FakeMarket(), cid)
    db.dispose()


@pytest.fixture
def any_env(db_url: str) -> Iterator[Env]:
    """Like ``env`` on SQLite and PostgreSQL."""
    db = Database(db_url)
    db.migrate()
    store = Store(db)
    cid = store.create_client("acme")
    yield Env(db, store, TradingStore(db), FakeMarket(), cid)
    db.dispose()


async def settle(engine: TradingEngine) -> None:
    """Let scheduled re-matches run and their commits land."""
    for _ in range(3):
        await asyncio.sleep(0)
    await engine.flush()
