"""Run a Starlette app (a fake venue) on loopback in its own thread and loop.

The fake's state lives on the server's loop; tests reach it with
:meth:`FakeServer.call` (sync) or :meth:`FakeServer.acall` (from async code on
another loop), so a scripted scenario never races the server's own tasks.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette

T = TypeVar("T")


class FakeServer:
    """A real uvicorn server on 127.0.0.1:<free port>, started by :meth:`start`."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]
        self._server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="off", ws="websockets-sansio",
                           ws_ping_interval=None, timeout_graceful_shutdown=1)
        )
        self._thread = threading.Thread(target=self._run, name="fake-venue", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._server.serve(sockets=[self._sock]))
        finally:
            self.loop.close()

    def start(self) -> FakeServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake venue server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reaching the server's loop ------------------------------------------------------
    def _submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self.loop is not None, "start() the server first"

        async def run() -> Any:
            out = fn(*args)
            if asyncio.iscoroutine(out):
                out = await out
            return out

        return asyncio.run_coroutine_threadsafe(run(), self.loop)

    def call(self, fn: Callable[..., T | Awaitable[T]], *args: Any, timeout: float = 10) -> T:
        """Run ``fn(*args)`` (sync or async) on the server's loop; its result."""
        return self._submit(fn, *args).result(timeout)  # type: ignore[no-any-return]

    async def acall(self, fn: Callable[..., T | Awaitable[T]], *args: Any) -> T:
        """:meth:`call` from async code running on another loop."""
        return await asyncio.wrap_future(self._submit(fn, *args))  # type: ignore[no-any-return]


async def eventually(check: Callable[[], bool], timeout: float = 10.0, every: float = 0.01) -> None:
    """Wait until ``check()`` is true (a connector catching up with the server)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:g} s: {check}")
        await asyncio.sleep(every)
