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
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket

from sequence.api import auth
from sequence.api.errors import envelope
from sequence.stream import Hub, Subscription
from sequence.stream.protocol import MAX_SUBSCRIPTIONS, error, handle_client_message

WsAuthenticator = Callable[[WebSocket], Any]
#: How often an open stream's key (or session) is checked again.
REVALIDATE_S = 1.0
#: Streams one client may have open at once (each holds descriptors and queues: one key
#: opened 2,000 in 1.7 s). The SDK and the dashboard use one or two.
MAX_STREAMS_PER_CLIENT = 100


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
            try:
                await websocket.send_text(text)
            except UnicodeEncodeError:  # a lone surrogate (from a venue's text, say): replaced, not fatal
                await websocket.send_text(text.encode("utf-8", "replace").decode("utf-8"))


async def _deny(websocket: WebSocket, status: int = 401, code: str = "unauthorized",
                message: str = "missing or invalid API key") -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(envelope(status, code, message))
    else:  # pragma: no cover - servers without the denial extension answer 403
        await websocket.close(code=1008)


async def _valid(check: Callable[[], Any]) -> bool:
    result = check()
    if inspect.isawaitable(result):
        result = await result
    return result is not None and result is not False


async def _watch(websocket: WebSocket, sub: Subscription, hub: Hub, check: Callable[[], Any]) -> None:
    """End the connection within a second of its key being revoked or its session ending
    (they were checked only at connect: a revoked socket kept its data and could subscribe)."""
    while not sub.closed:
        await asyncio.sleep(REVALIDATE_S)
        if not await _valid(check):
            hub.close(sub)  # no more data, at once
            with contextlib.suppress(Exception):
                await websocket.send_text(json.dumps(error("unauthorized", "the key was revoked or the session "
                                                           "ended: connect again with a valid key")))
            with contextlib.suppress(Exception):
                await websocket.close(code=4401)
            return


async def serve_stream(
    websocket: WebSocket, principal: Any, *, max_subscriptions: int = MAX_SUBSCRIPTIONS,
    still_valid: Callable[[], Any] | None = None,
) -> None:
    """Run one accepted-or-acceptable ``/v1/stream`` connection for ``principal``; with
    *still_valid* (the authenticator again: a principal, or None), it ends when that fails."""
    hub = _hub(websocket.app)
    await websocket.accept()
    sub = hub.open(client_id=_client_id(principal), max_channels=max_subscriptions, principal=principal)
    writer = asyncio.create_task(_writer(websocket, sub), name=f"stream-writer-{sub.id}")
    watcher = (asyncio.create_task(_watch(websocket, sub, hub, still_valid), name=f"stream-auth-{sub.id}")
               if still_valid is not None else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect" or sub.closed:
                break
            text = message.get("text")
            if text is None:
                sub.notify(error("binary_frame", "binary frames are not supported; send JSON text"))
                continue
            if still_valid is not None and not await _valid(still_valid):  # a subscribe, checked now
                break
            for reply in handle_client_message(hub, sub, text):
                sub.notify(reply)
            if writer.done():  # the peer stopped accepting data
                break
    finally:
        hub.close(sub)
        for task in (writer, watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _register(target: APIRouter, *, ws_authenticator: WsAuthenticator | None, max_subscriptions: int) -> None:
    resolve = ws_authenticator or auth.authenticate_websocket

    async def stream(websocket: WebSocket) -> None:
        result = resolve(websocket)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            await _deny(websocket)
            return
        if _hub(websocket.app).open_count(_client_id(result)) >= MAX_STREAMS_PER_CLIENT:
            await _deny(websocket, 429, "rate_limited", f"at most {MAX_STREAMS_PER_CLIENT} open streams a client: "
                        "close some (one stream carries every channel you need)")
            return
        await serve_stream(websocket, result, max_subscriptions=max_subscriptions,
                           still_valid=lambda: resolve(websocket))

    target.add_api_websocket_route("/v1/stream", stream)


def install_route(app: FastAPI, *, ws_authenticator: WsAuthenticator | None = None,
                  max_subscriptions: int = MAX_SUBSCRIPTIONS) -> None:
    """Add ``/v1/stream`` to ``app`` (which must set ``app.state.hub``)."""
    _register(app.router, ws_authenticator=ws_authenticator, max_subscriptions=max_subscriptions)


__all__ = ["install_route", "serve_stream"]
