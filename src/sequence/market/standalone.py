"""A small app serving only the market routes, for tests, benchmarks and demos.

Not the coordinator: no store, and authentication is whatever ``principal``
says (every caller is that principal). The coordinator includes the routes
through :mod:`sequence.market.wiring` instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket

from .errors import Unauthorized
from .routes import MAX_SUBSCRIPTIONS, install_error_handler, install_routes
from .service import MarketService


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
            raise Unauthorized("no principal configured")
        return principal

    def ws_principal(websocket: WebSocket) -> Any:
        return principal

    app = FastAPI(title="Sequence market (standalone)", lifespan=lifespan)
    app.state.market = service
    install_routes(
        app,
        principal=http_principal,
        ws_authenticator=ws_principal,
        max_subscriptions=max_subscriptions,
    )
    install_error_handler(app)
    return app
