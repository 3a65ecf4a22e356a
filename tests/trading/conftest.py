"""Fixtures for trading tests: an engine over a fake market, and a coordinator with trading."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sequence.market.engine import TradingEngine
from sequence.store.engine import Database
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


# -- a real coordinator with trading attached ---------------------------------------------------


def start_trading_server(data_dir: Path, database_url: str | None = None, **settings_kw: Any) -> Any:
    """``tests.helpers.start_server`` plus :func:`attach_trading` (a no-op once the lead's
    app factory attaches trading itself: the function is idempotent)."""
    import threading
    import time

    import uvicorn

    from sequence.api.app import build_core, create_app
    from sequence.market.trading_routes import attach_trading
    from sequence.settings import Settings
    from tests.helpers import LiveServer, free_socket

    sock = free_socket()
    port = sock.getsockname()[1]
    settings = Settings.from_env({}, data_dir=data_dir, database_url=database_url, port=port, **settings_kw)
    core = build_core(settings, {})
    clients = core.store.list_clients()
    # A restart on the same data keeps the client (with fresh keys).
    cid = clients[0]["client_id"] if clients else core.store.create_client("test client")
    _r, live = core.store.create_api_key(cid, "live", "live")
    _r, test = core.store.create_api_key(cid, "test", "test")
    app = create_app(settings, core=core)
    attach_trading(app, core)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not th.is_alive():
            raise RuntimeError("coordinator did not start")
        time.sleep(0.02)
    return LiveServer(settings, core, f"http://127.0.0.1:{port}", live, test, cid, server, th, sock)


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Any]:
    """A coordinator with the simulated venues and the trading engine, on SQLite."""
    srv = start_trading_server(tmp_path / "data")
    yield srv
    srv.stop()


@pytest.fixture
def any_coord(db_url: str, tmp_path: Path) -> Iterator[Any]:
    srv = start_trading_server(tmp_path / "data", database_url=db_url)
    yield srv
    srv.stop()
