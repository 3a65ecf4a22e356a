"""A small app serving only the market API, for tests, benchmarks and demos.

Not the coordinator: no store, and authentication is whatever ``principal``
says (every caller is that principal). It has the coordinator's market routes
(:mod:`sequence.api.routes.market`), its ``/v1/stream``
(:mod:`sequence.api.routes.stream`) and its one error envelope
(:mod:`sequence.api.errors`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket

from sequence.api import errors
from sequence.api.routes import market, stream
from sequence.market.service import MarketService
from sequence.stream.protocol import MAX_SUBSCRIPTIONS


def build_app(
    service: MarketService,
    *,
    principal: Any,
    manage_service: bool = True,
    max_subscriptions: int = MAX_SUBSCRIPTIONS,
) -> FastAPI:
    """FastAPI app with ``/v1/markets``, ``/v1/quotes`` and ``/v1/stream``.

    ``principal`` is returned for every request (``None`` refuses everyone). With
    ``manage_service`` the app's lifespan starts and stops ``service``.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_service:
            await service.start()
        try:
            yield
        finally:
            if manage_service:
                await service.stop()

    async def http_principal(request: Request) -> Any:
        if principal is None:
            raise errors.unauthorized("no principal configured")
        return principal

    def ws_principal(websocket: WebSocket) -> Any:
        return principal

    app = FastAPI(title="Sequence market (standalone)", lifespan=lifespan)
    app.state.market = service
    app.state.hub = service.hub
    errors.install(app)
    market.install_routes(app, principal=http_principal)
    stream.install_route(app, ws_authenticator=ws_principal, max_subscriptions=max_subscriptions)
    return app
