"""Fixtures for the market tests: seeded services on a manual clock, and a real server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from sequence.market import ManualClock, MarketService, RealClock, SimConfig
from sequence.market.standalone import build_app


@dataclass(frozen=True)
class StubPrincipal:
    client_id: str = "client-test"
    key_id: str = "key-test"
    mode: str = "live"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def service(clock: ManualClock) -> MarketService:
    return MarketService.simulated(seed=7, clock=clock)


def run_for(service: MarketService, clock: ManualClock, seconds: float, step: float = 0.1) -> int:
    """Advance the manual clock in steps, pumping each time; returns events applied."""
    n = 0
    for _ in range(round(seconds / step)):
        clock.advance(step)
        n += service.pump()
    return n


class LiveServer:
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

    def start(self) -> LiveServer:
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
def make_server() -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def make(
        *,
        seed: int = 7,
        rate_hz: float = 8.0,
        principal: Any = StubPrincipal(),
        service: MarketService | None = None,
        **config: Any,
    ) -> LiveServer:
        svc = service or MarketService.simulated(
            clock=RealClock(), config=SimConfig(seed=seed, rate_hz=rate_hz)
        )
        srv = LiveServer(svc, principal, **config).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def live_server(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server()
