"""The ``/v1/stream`` WebSocket: one connection, one hub subscription.

The protocol (ops, replies, error codes, the channel limit) is
:mod:`sequence.stream.protocol`; the channels are
:mod:`sequence.stream.channels`. This module accepts the socket, resolves its
principal (``sequence.api.auth.authenticate_websocket`` unless given another
``websocket -> principal | None``, sync or async), and moves frames between
the socket and the hub found at ``app.state.hub``.

A bad or missing key is refused before the upgrade with a 401 in the API's
error envelope. Keep-alive uses WebSocket ping frames sent by uvicorn
(``ws_ping_interval``; ASGI has no way for an app to send them).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket

from sequence.api import auth
from sequence.api.errors import envelope
from sequence.stream import Hub, Subscription
from sequence.stream.protocol import MAX_SUBSCRIPTIONS, error, handle_client_message

WsAuthenticator = Callable[[WebSocket], Any]


def _hub(app: Any) -> Hub:
    hub = getattr(app.state, "hub", None)
    if hub is None:
        raise RuntimeError("app.state.hub is not set")
    return hub  # type: ignore[no-any-return]


def _client_id(principal: Any) -> str | None:
    cid = getattr(principal, "client_id", None)
    if cid is None and isinstance(principal, dict):
        cid = principal.get("client_id")
    return None if cid is None else str(cid)


async def _writer(websocket: WebSocket, sub: Subscription) -> None:
    while not sub.closed:
        await sub.wait()
        for text in sub.drain():
            await websocket.send_text(text)


async def _deny(websocket: WebSocket) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(envelope(401, "unauthorized", "missing or invalid API key"))
    else:  # pragma: no cover - servers without the denial extension answer 403
        await websocket.close(code=1008)


async def serve_stream(
    websocket: WebSocket, principal: Any, *, max_subscriptions: int = MAX_SUBSCRIPTIONS
) -> None:
    """Run one accepted-or-acceptable ``/v1/stream`` connection for ``principal``."""
    hub = _hub(websocket.app)
    await websocket.accept()
    sub = hub.open(client_id=_client_id(principal), max_channels=max_subscriptions, principal=principal)
    writer = asyncio.create_task(_writer(websocket, sub), name=f"stream-writer-{sub.id}")
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                sub.notify(error("binary_frame", "binary frames are not supported; send JSON text"))
                continue
            for reply in handle_client_message(hub, sub, text):
                sub.notify(reply)
            if writer.done():  # the peer stopped accepting data
                break
    finally:
        hub.close(sub)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer


def _register(target: APIRouter, *, ws_authenticator: WsAuthenticator | None, max_subscriptions: int) -> None:
    resolve = ws_authenticator or auth.authenticate_websocket

    async def stream(websocket: WebSocket) -> None:
        result = resolve(websocket)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            await _deny(websocket)
            return
        await serve_stream(websocket, result, max_subscriptions=max_subscriptions)

    target.add_api_websocket_route("/v1/stream", stream)


def install_route(app: FastAPI, *, ws_authenticator: WsAuthenticator | None = None,
                  max_subscriptions: int = MAX_SUBSCRIPTIONS) -> None:
    """Add ``/v1/stream`` to ``app`` (which must set ``app.state.hub``)."""
    _register(app.router, ws_authenticator=ws_authenticator, max_subscriptions=max_subscriptions)


__all__ = ["install_route", "serve_stream"]
