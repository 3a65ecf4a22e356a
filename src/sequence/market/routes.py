"""HTTP and WebSocket routes of the market API: ``/v1/markets``, ``/v1/quotes``, ``/v1/stream``.

The coordinator app gets the routes from :func:`install_routes` (or includes
:data:`router`, or a router from :func:`build_router`) and provides:

* ``app.state.market`` — the :class:`~sequence.market.service.MarketService`;
* an exception handler for :class:`~sequence.market.errors.MarketError`
  built on :func:`market_error_to_http` (or call :func:`install_error_handler`);
* authentication. :data:`router` calls ``sequence.api.auth.require_principal``
  (``request -> Principal``, raising to refuse) and
  ``sequence.api.auth.authenticate_websocket`` (``websocket -> Principal |
  None``) when that module can be imported, and otherwise refuses everyone.
  :func:`build_router` takes other callables (sync or async). They are called
  directly, not as FastAPI dependencies — see :class:`DirectRoute`.

Stream protocol (API.md): the client sends ``{"op": "subscribe", "channels":
[...]}`` or ``unsubscribe`` (and ``{"op": "ping"}``, answered ``{"type":
"pong"}``); the server answers ``{"type": "subscribed", "channels": [...]}``,
then per channel the current snapshot and every change as ``{"channel",
"data"}``. Anything wrong — malformed JSON, binary frames, unknown ops,
channels or symbols, more than :data:`MAX_SUBSCRIPTIONS` channels — is
answered with ``{"type": "error", "code", "message", ...}`` and the socket
stays open. Keep-alive uses WebSocket ping frames sent by uvicorn
(``ws_ping_interval``; ASGI has no way for an app to send them).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from .errors import BadRequest, MarketError, Unauthorized, shown
from .hub import Hub, Subscription
from .service import DEFAULT_DEPTH, DEFAULT_LIMIT, MarketService

log = logging.getLogger(__name__)

#: Channels one WebSocket may hold at once.
MAX_SUBSCRIPTIONS = 200
#: How many offending channel names an error message lists.
MAX_LISTED = 50

WsAuthenticator = Callable[[WebSocket], Any]


# -- authentication hooks -------------------------------------------------------------------
async def _refuse_principal(request: Request) -> Any:
    raise Unauthorized("authentication is not configured")


def _refuse_websocket(websocket: WebSocket) -> Any:
    return None


def _load_auth() -> tuple[Callable[..., Any], WsAuthenticator]:
    """The coordinator's auth hooks when ``sequence.api.auth`` exists; refuse-all otherwise.

    ``sequence.api.auth`` must not import this module at import time.
    """
    try:
        from sequence.api import auth
    except ImportError:
        return _refuse_principal, _refuse_websocket
    return (
        getattr(auth, "require_principal", _refuse_principal),
        getattr(auth, "authenticate_websocket", _refuse_websocket),
    )


#: Resolves the caller of an HTTP request (``sequence.api.auth.require_principal``):
#: ``request -> principal``, sync or async, raising to refuse.
get_principal, _authenticate_websocket = _load_auth()

#: Resolves the caller of a WebSocket upgrade (``sequence.api.auth.authenticate_websocket``):
#: ``websocket -> principal | None``, sync or async.
get_ws_principal = _authenticate_websocket


# -- errors -------------------------------------------------------------------------------------
def market_error_to_http(exc: MarketError) -> tuple[int, str, str, dict[str, Any]]:
    """``(status, code, message, details)`` for the API's error envelope."""
    return exc.status, exc.code, exc.message, dict(exc.details)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def install_error_handler(app: FastAPI) -> None:
    """Register a ``MarketError`` → JSON envelope handler (the coordinator has its own)."""

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MarketError)
        status, code, message, details = market_error_to_http(exc)
        return JSONResponse(error_body(code, message, details), status_code=status)

    app.add_exception_handler(MarketError, handler)


# -- query parsing (errors name the field; never FastAPI's 422) -----------------------------------
def _int_param(field: str, raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(field, f"{field} must be an integer, got {shown(raw)}") from None


def _bool_param(field: str, raw: str | None) -> bool | None:
    if raw is None or raw == "":
        return None
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise BadRequest(field, f"{field} must be true or false, got {shown(raw)}")


def _service(app: Any) -> MarketService:
    service = getattr(app.state, "market", None)
    if service is None:
        raise RuntimeError("app.state.market is not set")
    return service  # type: ignore[no-any-return]


def _query(request: Request) -> dict[str, str]:
    """The query string's first value per name.

    Starlette's ``query_params`` costs more than a cached quote; this is the
    same parse for the plain ``name=value&...`` strings clients send.
    """
    raw: bytes = request.scope.get("query_string", b"")
    if not raw:
        return {}
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return dict(reversed(parse_qsl(text, keep_blank_values=True, encoding="utf-8")))
    out: dict[str, str] = {}
    for part in text.split("&"):
        name, _, value = part.partition("=")
        if name and name not in out:
            out[name] = value
    return out


def _json(obj: Any) -> Response:
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return Response(body.encode(), media_type="application/json")


# -- stream messages --------------------------------------------------------------------------
def _error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, **extra}


def handle_client_message(hub: Hub, sub: Subscription, text: str) -> list[dict[str, Any]]:
    """Act on one client text frame; returns the control replies (never raises)."""
    try:
        msg = json.loads(text)
    except ValueError as exc:
        return [_error("bad_json", f"malformed JSON: {exc}")]
    if not isinstance(msg, dict):
        return [
            _error("bad_message", 'expected a JSON object like {"op": "subscribe", "channels": [...]}')
        ]
    op = msg.get("op")
    if op == "ping":
        return [{"type": "pong"}]
    if op not in ("subscribe", "unsubscribe"):
        return [_error("unknown_op", f"unknown op {op!r}; expected subscribe, unsubscribe or ping")]
    channels = msg.get("channels")
    if isinstance(channels, str):
        channels = [channels]
    if not isinstance(channels, list) or not channels:
        return [_error("bad_message", '"channels" must be a non-empty list of channel names')]
    if op == "unsubscribe":
        return [{"type": "unsubscribed", "channels": hub.unsubscribe(sub, channels)}]
    res = hub.subscribe(sub, channels)
    out: list[dict[str, Any]] = []
    if res.accepted:
        out.append({"type": "subscribed", "channels": res.accepted})
    by_code: dict[str, list[tuple[str, str]]] = {}
    for channel, code, message in res.rejected:
        by_code.setdefault(code, []).append((channel, message))
    for code, items in by_code.items():
        message = items[0][1]
        if len(items) > 1:
            message += f" (and {len(items) - 1} more)"
        out.append(_error(code, message, channels=[c for c, _ in items[:MAX_LISTED]]))
    if res.over_limit:
        out.append(
            _error(
                "subscription_limit",
                f"subscription limit of {sub.max_channels} channels per connection reached; "
                f"{len(res.over_limit)} channel(s) not subscribed",
                channels=res.over_limit[:MAX_LISTED],
                limit=sub.max_channels,
            )
        )
    return out


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
    body = error_body("unauthorized", "missing or invalid API key")
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(body, status_code=401))
    else:  # pragma: no cover - servers without the denial extension answer 403
        await websocket.close(code=1008)


async def serve_stream(
    websocket: WebSocket, principal: Any, *, max_subscriptions: int = MAX_SUBSCRIPTIONS
) -> None:
    """Run one accepted-or-acceptable ``/v1/stream`` connection for ``principal``."""
    hub = _service(websocket.app).hub
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
                sub.notify(_error("binary_frame", "binary frames are not supported; send JSON text"))
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


# -- router -------------------------------------------------------------------------------------
class DirectRoute(APIRoute):
    """An ``APIRoute`` whose endpoint *is* the request handler.

    It is documented in OpenAPI like any route (parameters via ``openapi_extra``),
    but requests skip FastAPI's per-request dependency solving and response
    handling: the endpoint takes the ``Request``, authenticates it itself and
    returns a ``Response``. That halves the cost of ``/v1/quotes``
    (bench/market_quotes.py).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


async def _resolve(resolver: Callable[[Request], Any], request: Request) -> Any:
    principal = resolver(request)
    if inspect.isawaitable(principal):
        principal = await principal
    return principal


def _param(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    out = {"name": name, "in": "query", "required": required, "schema": schema, "description": description}
    if not required:
        out["allowEmptyValue"] = True  # an empty optional parameter means "not given"
    return out


_MARKETS_PARAMS = [
    _param("venue", {"type": "string", "enum": ["kalshi", "polymarket", "coinbase"]}, "only this venue"),
    _param("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": DEFAULT_LIMIT}, "page size"),
    _param("order", {"type": "string", "enum": ["volume", "liquidity", "close_time"], "default": "volume"},
           "volume and liquidity descending, close_time ascending"),
    _param("active", {"type": "boolean"}, "only active (true) or inactive (false) markets"),
    _param("expand", {"type": "string", "enum": ["outcomes"]},
           "one row per outcome instead of one per multi-outcome event"),
    _param("q", {"type": "string"}, "case-insensitive text search"),
    _param("cursor", {"type": "string"}, "next_cursor of the previous page"),
]
_QUOTES_PARAMS = [
    _param("symbol", {"type": "string", "minLength": 1}, "token id, Kalshi ticker or product id", required=True),
    _param("depth", {"type": "integer", "minimum": 0, "maximum": 100, "default": DEFAULT_DEPTH},
           "levels per side"),
]


def _register(
    target: APIRouter,
    *,
    principal: Callable[[Request], Any] | None,
    ws_authenticator: Callable[[WebSocket], Any] | None,
    max_subscriptions: int,
) -> None:
    resolve_principal = principal or get_principal
    resolve_ws_principal = ws_authenticator or get_ws_principal

    # Query parameters are read from the query string and the principal is resolved
    # in the endpoint (see DirectRoute): FastAPI's per-request solving costs more than
    # the whole quote. ``openapi_extra`` keeps the parameters in /openapi.json.
    async def list_markets(request: Request) -> Response:
        """``{"markets": [...], "next_cursor": str | null}``; see API.md for the row fields."""
        await _resolve(resolve_principal, request)
        qp = _query(request)
        result = _service(request.app).markets(
            venue=qp.get("venue") or None,
            limit=_int_param("limit", qp.get("limit"), DEFAULT_LIMIT),
            order=qp.get("order") or "volume",
            active=_bool_param("active", qp.get("active")),
            expand=qp.get("expand") or None,
            q=qp.get("q") or None,
            cursor=qp.get("cursor") or None,
        )
        return _json(result)

    async def get_quote(request: Request) -> Response:
        """NBBO and ``depth`` levels per side, best first; ``null`` prices for empty sides."""
        await _resolve(resolve_principal, request)
        qp = _query(request)
        symbol = qp.get("symbol")
        if not symbol:
            raise BadRequest("symbol", "symbol is required")
        body = _service(request.app).quote_json(
            symbol, _int_param("depth", qp.get("depth"), DEFAULT_DEPTH)
        )
        return Response(body, media_type="application/json")

    async def stream(websocket: WebSocket) -> None:
        result = resolve_ws_principal(websocket)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            await _deny(websocket)
            return
        await serve_stream(websocket, result, max_subscriptions=max_subscriptions)

    bad_input: dict[int | str, dict[str, Any]] = {
        400: {"description": "bad input; `details.field` names it"}
    }
    target.add_api_route(
        "/v1/markets",
        list_markets,
        methods=["GET"],
        summary="List markets",
        tags=["market"],
        openapi_extra={"parameters": _MARKETS_PARAMS},
        responses=bad_input,
        route_class_override=DirectRoute,
    )
    target.add_api_route(
        "/v1/quotes",
        get_quote,
        methods=["GET"],
        summary="One book snapshot",
        tags=["market"],
        openapi_extra={"parameters": _QUOTES_PARAMS},
        responses={**bad_input, 404: {"description": "unknown symbol"}},
        route_class_override=DirectRoute,
    )
    target.add_api_websocket_route("/v1/stream", stream)


def build_router(
    *,
    principal: Callable[[Request], Any] | None = None,
    ws_authenticator: Callable[[WebSocket], Any] | None = None,
    max_subscriptions: int = MAX_SUBSCRIPTIONS,
) -> APIRouter:
    """The market routes, authenticated by ``principal`` (``request -> principal``, sync or
    async, raising to refuse) and ``ws_authenticator`` (``websocket -> principal | None``,
    sync or async). Defaults: the coordinator's (see the module docstring).

    A sync ``principal`` runs on the event loop, so it must not block (the
    coordinator's ``require_principal`` answers from a cache).
    """
    router = APIRouter()
    _register(
        router,
        principal=principal,
        ws_authenticator=ws_authenticator,
        max_subscriptions=max_subscriptions,
    )
    return router


def install_routes(
    app: FastAPI,
    *,
    principal: Callable[[Request], Any] | None = None,
    ws_authenticator: Callable[[WebSocket], Any] | None = None,
    max_subscriptions: int = MAX_SUBSCRIPTIONS,
) -> None:
    """Add the market routes to ``app`` itself, ahead of every route already there.

    Same routes as :func:`build_router`, but registered on the app's own router
    instead of included: an included router costs ~10 µs per request to traverse
    and the app tries its routes in order, while quotes are the API's hottest
    path (bench/market_quotes.py). The market paths overlap no other route's.
    """
    routes = app.router.routes
    before = len(routes)
    _register(
        app.router,
        principal=principal,
        ws_authenticator=ws_authenticator,
        max_subscriptions=max_subscriptions,
    )
    added = routes[before:]
    del routes[before:]
    routes[:0] = added


#: The routes wired to the coordinator's auth (see the module docstring).
router = build_router()

__all__ = [
    "MAX_SUBSCRIPTIONS",
    "DirectRoute",
    "build_router",
    "error_body",
    "get_principal",
    "get_ws_principal",
    "handle_client_message",
    "install_error_handler",
    "install_routes",
    "market_error_to_http",
    "router",
    "serve_stream",
]
