"""The coordinator's HTTP server: uvicorn, plus one rule about stopping.

uvicorn stops in three steps: close the listening sockets, wait for open
connections (long polls, log follows: up to ``timeout_graceful_shutdown``),
then run the app's lifespan shutdown.  Between the first and the last step
runners already get "connection refused" — which they take as "the
coordinator is down, no lease is being charged" (runner/daemon.py) — while
the lease reaper, stopped only by the lifespan, would still expire their
runs.  So a stopping coordinator stops charging leases first.
"""

from __future__ import annotations

import socket

import uvicorn

from sequence.api.state import Core

__all__ = ["CoordinatorServer"]


class CoordinatorServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, core: Core) -> None:
        super().__init__(config)
        self.core = core

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.core.store.stop_charging_leases()
        await super().shutdown(sockets=sockets)
