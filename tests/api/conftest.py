"""Fixtures for the API tests: the standalone market app, and a coordinator with trading."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from sequence.api.standalone import build_app
from sequence.market import MarketService, RealClock, SimConfig

# -- the market API alone (no store; every caller is one principal) -----------------------------


@dataclass(frozen=True)
class StubPrincipal:
    client_id: str = "client-test"
    key_id: str = "key-test"
    mode: str = "live"


class MarketServer:
    """uvicorn serving ``build_app(service)`` on 127.0.0.1:<random port> in a thread."""

    def __init__(self, service: MarketService, principal: Any = StubPrincipal(), **config: Any):
        self.service = service
        self.app = build_app(service, principal=principal)
        self.config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", **config
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> MarketServer:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn exited during startup")
            threading.Event().wait(0.01)
        else:
            raise RuntimeError("uvicorn did not start")
        sock = self.server.servers[0].sockets[0]
        self.port = sock.getsockname()[1]
        return self

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop thread and return its result."""
        done = threading.Event()
        box: dict[str, Any] = {}

        async def runner() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # pragma: no cover - surfaced below
                box["error"] = exc
            finally:
                done.set()

        loop = self.service._task.get_loop() if self.service._task else None
        assert loop is not None, "service is not running"
        asyncio.run_coroutine_threadsafe(runner(), loop)
        assert done.wait(10)
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def make_server() -> Iterator[Callable[..., MarketServer]]:
    servers: list[MarketServer] = []

    def make(
        *,
        seed: int = 7,
        rate_hz: float = 8.0,
        principal: Any = StubPrincipal(),
        service: MarketService | None = None,
        **config: Any,
    ) -> MarketServer:
        svc = service or MarketService.simulated(
            clock=RealClock(), config=SimConfig(seed=seed, rate_hz=rate_hz)
        )
        srv = MarketServer(svc, principal, **config).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def live_server(make_server: Callable[..., MarketServer]) -> MarketServer:
    return make_server()


# -- a real coordinator (market service and graph engine included) -------------------------------


def start_trading_server(data_dir: Path, database_url: str | None = None, **settings_kw: Any) -> Any:
    """Like ``tests.helpers.start_server``, but a restart on the same data keeps the client."""
    import threading
    import time

    import uvicorn

    from sequence.api.app import build_core, create_app
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
