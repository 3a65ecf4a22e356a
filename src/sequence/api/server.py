"""The coordinator's HTTP server: uvicorn, plus one rule about stopping.

uvicorn stops in three steps: close the listening sockets, wait for open
connections (long polls, log follows: up to ``timeout_graceful_shutdown``),
then run the app's lifespan shutdown.  Between the first and the last step
runners already get "connection refused" — which they take as "the
coordinator is down, no lease is being charged" (runner/daemon.py) — while
the lease reaper, stopped only by the lifespan, would still expire their
runs.  So a stopping coordinator stops charging leases first.

And one about WebSocket upgrades: uvicorn hands an upgrade request to the
WebSocket library as text, whose parser refuses a line over 8,190 bytes or
over 128 headers, and the connection was then never answered nor closed (a
client could hold thousands so). Such a request is a 400 now, before it is
handed over (:class:`HttpProtocol`).
"""

from __future__ import annotations

import socket

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sequence.api.state import Core

__all__ = ["CoordinatorServer", "HttpProtocol"]

#: The WebSocket library's own limits (websockets' ``MAX_LINE`` and ``MAX_NUM_HEADERS``), with room
#: for the request line's method and version.
MAX_UPGRADE_LINE = 8_000
MAX_UPGRADE_HEADERS = 100


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, answering an upgrade the WebSocket library would choke on."""

    def handle_websocket_upgrade(self) -> None:
        headers = list(self.scope["headers"])
        if (len(self.url) > MAX_UPGRADE_LINE or len(headers) > MAX_UPGRADE_HEADERS
                or any(len(k) + len(v) > MAX_UPGRADE_LINE for k, v in headers)):
            self.send_400_response("WebSocket request line or headers too long.")
            return
        super().handle_websocket_upgrade()


class CoordinatorServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, core: Core) -> None:
        if config.http == "auto":  # httptools is a dependency; h11 would be chosen only without it
            config.http = HttpProtocol
        super().__init__(config)
        self.core = core

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.core.store.stop_charging_leases()
        await super().shutdown(sockets=sockets)
