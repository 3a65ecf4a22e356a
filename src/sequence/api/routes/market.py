"""HTTP routes of the market API: ``/v1/markets`` and ``/v1/quotes``.

The coordinator adds them with :func:`install_routes` (the standalone market
app too, :mod:`sequence.api.standalone`); :func:`build_router` gives an
``APIRouter`` for apps that prefer ``include_router``. Both read
``app.state.market`` — the :class:`~sequence.market.service.MarketService` —
and authenticate with ``sequence.api.auth.require_principal`` unless given
another callable (``request -> principal``, sync or async, raising to
refuse). Market-data errors (:class:`~sequence.market.errors.MarketError`)
leave through the API's one error envelope (:mod:`sequence.api.errors`).

The WebSocket ``/v1/stream`` is :mod:`sequence.api.routes.stream`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from sequence.api import auth
from sequence.api.errors import bad_request
from sequence.api.query import bool_param, int_param, param, query
from sequence.market.service import DEFAULT_DEPTH, DEFAULT_LIMIT, MarketService
from sequence.venues import VENUES

Resolver = Callable[[Request], Any]


def _service(app: Any) -> MarketService:
    service = getattr(app.state, "market", None)
    if service is None:
        raise RuntimeError("app.state.market is not set")
    return service  # type: ignore[no-any-return]


def _json(obj: Any) -> Response:
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return Response(body.encode(), media_type="application/json")


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


async def _resolve(resolver: Resolver, request: Request) -> Any:
    principal = resolver(request)
    if inspect.isawaitable(principal):
        principal = await principal
    return principal


_MARKETS_PARAMS = [
    param("venue", {"type": "string", "enum": list(VENUES)}, "only this venue"),
    param("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": DEFAULT_LIMIT}, "page size"),
    param("order", {"type": "string", "enum": ["volume", "liquidity", "close_time"], "default": "volume"},
          "volume and liquidity descending, close_time ascending"),
    param("active", {"type": "boolean"}, "only active (true) or inactive (false) markets"),
    param("expand", {"type": "string", "enum": ["outcomes"]},
          "one row per outcome instead of one per multi-outcome event"),
    param("q", {"type": "string"}, "case-insensitive text search"),
    param("cursor", {"type": "string"}, "next_cursor of the previous page"),
]
_QUOTES_PARAMS = [
    param("symbol", {"type": "string", "minLength": 1}, "token id, Kalshi ticker or product id", required=True),
    param("depth", {"type": "integer", "minimum": 0, "maximum": 100, "default": DEFAULT_DEPTH},
          "levels per side"),
]


def _register(target: APIRouter, *, principal: Resolver | None) -> None:
    resolve_principal = principal or auth.require_principal

    # Query parameters are read from the query string and the principal is resolved
    # in the endpoint (see DirectRoute): FastAPI's per-request solving costs more than
    # the whole quote. ``openapi_extra`` keeps the parameters in /openapi.json.
    async def list_markets(request: Request) -> Response:
        """``{"markets": [...], "next_cursor": str | null}``; see API.md for the row fields."""
        await _resolve(resolve_principal, request)
        qp = query(request)
        result = _service(request.app).markets(
            venue=qp.get("venue") or None,
            limit=int_param("limit", qp.get("limit"), DEFAULT_LIMIT),
            order=qp.get("order") or "volume",
            active=bool_param("active", qp.get("active")),
            expand=qp.get("expand") or None,
            q=qp.get("q") or None,
            cursor=qp.get("cursor") or None,
        )
        return _json(result)

    async def get_quote(request: Request) -> Response:
        """NBBO and ``depth`` levels per side, best first; ``null`` prices for empty sides."""
        await _resolve(resolve_principal, request)
        qp = query(request)
        symbol = qp.get("symbol")
        if not symbol:
            raise bad_request("symbol is required", "symbol")
        svc = _service(request.app)
        depth = int_param("depth", qp.get("depth"), DEFAULT_DEPTH)
        if not svc.ensure(symbol):  # a live book not fed yet: wait for its snapshot, or 503
            await svc.require_ready(symbol)
        body = svc.quote_json(symbol, depth)
        return Response(body, media_type="application/json")

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
        responses={**bad_input, 404: {"description": "unknown symbol"},
                   503: {"description": "a live venue has not sent this book yet (`market_unavailable`)"}},
        route_class_override=DirectRoute,
    )


def build_router(*, principal: Resolver | None = None) -> APIRouter:
    """The market routes, authenticated by ``principal`` (default: the coordinator's).

    A sync ``principal`` runs on the event loop, so it must not block (the
    coordinator's ``require_principal`` answers from a cache).
    """
    router = APIRouter()
    _register(router, principal=principal)
    return router


def install_routes(app: FastAPI, *, principal: Resolver | None = None) -> None:
    """Add the market routes to ``app`` itself, ahead of every route already there.

    Same routes as :func:`build_router`, but registered on the app's own router
    instead of included: an included router costs ~10 µs per request to traverse
    and the app tries its routes in order, while quotes are the API's hottest
    path (bench/market_quotes.py). The market paths overlap no other route's.
    """
    routes = app.router.routes
    before = len(routes)
    _register(app.router, principal=principal)
    added = routes[before:]
    del routes[before:]
    routes[:0] = added


__all__ = ["DirectRoute", "build_router", "install_routes"]
