"""HTTP routes for trading: ``/v1/graphs``, ``/v1/fills``, ``/v1/positions``.

The coordinator includes :data:`router` and runs the graph engine
(:class:`~sequence.execution.engine.TradingEngine`, ``core.trading``) beside
the market service (:mod:`sequence.api.app`). Every route is scoped to the
caller's client (someone else's graph id answers 404) — and for a run-scoped
key to its strategy — and reports errors in the API's one envelope, naming the
field. A ``seq_test_`` key (``is_paper``; ``is_sandbox`` on the wire) trades on paper only.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from sequence.api import cursor as cursors
from sequence.api.auth import require_principal
from sequence.api.errors import (
    ApiError,
    bad_request,
    invalid_json,
    not_found,
    too_large,
    unauthorized,
    unavailable,
)
from sequence.api.query import bool_param, limit_doc, limit_param, param, time_param
from sequence.api.state import core_of
from sequence.execution.engine import TradingEngine
from sequence.store.store import Principal
from sequence.store.trading import Fenced, IdempotencyConflict
from sequence.trading.graphs import TRIGGERS, GraphStatus
from sequence.trading.validation import MAX_EDGES, MAX_NODES, URGENCIES, GraphError
from sequence.trading.wire import fill_json, graph_json

router = APIRouter(tags=["trading"])

MAX_BODY_BYTES = 1 << 20
MAX_IDEMPOTENCY_KEY = 255
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def _engine(request: Request) -> TradingEngine:
    engine = core_of(request.app).trading
    if engine is None or not engine.started:
        raise unavailable("the trading engine is not running")
    return engine


# What the hand-parsed requests accept, for /openapi.json (FastAPI cannot see it).
_ERRS: dict[int | str, dict[str, Any]] = {503: {"description": "the trading engine is starting or stopping"}}


def _hidden() -> Any:
    """A query parameter parsed by hand and documented in ``openapi_extra`` (one FieldInfo each)."""
    return Query(None, include_in_schema=False)


_LIMIT = limit_doc(DEFAULT_LIMIT, MAX_LIMIT)
_CURSOR = param("cursor", {"type": "string"}, "next_cursor of the previous page")
_NODE = {
    "type": "object", "required": ["node_id", "symbol", "side", "qty"], "additionalProperties": False,
    "properties": {
        "node_id": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
        "symbol": {"type": "string", "minLength": 1},
        "side": {"type": "string", "enum": ["buy", "sell"]},
        "qty": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]},
        "venue": {"type": "string"},
        "instrument_type": {"type": "string", "enum": ["spot", "prediction"]},
        "limit_price": {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}]},
        "urgency": {"type": "string", "enum": list(URGENCIES)},
        "activation": {"type": "string", "enum": ["root", "triggered"]},
    },
}
_GRAPH_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["nodes"], "additionalProperties": False,
    "properties": {
        "nodes": {"type": "array", "minItems": 1, "maxItems": MAX_NODES, "items": _NODE},
        "edges": {"type": "array", "maxItems": MAX_EDGES, "items": {
            "type": "object", "required": ["from", "to", "trigger"], "additionalProperties": False,
            "properties": {"from": {"type": "string"}, "to": {"type": "string"},
                           "trigger": {"type": "string", "enum": list(TRIGGERS)}}}},
        "sandbox": {"type": "boolean"},
    }}}}}


# -- graphs ----------------------------------------------------------------------------------


@router.post("/v1/graphs", summary="Submit an execution graph", status_code=201, responses={
    200: {"description": "an idempotent replay: the graph this Idempotency-Key placed"},
    409: {"description": "the Idempotency-Key was used for a different request"},
    413: {"description": "body over 1 MiB"}, **_ERRS}, openapi_extra={"requestBody": _GRAPH_BODY})
async def submit_graph(request: Request, principal: Principal = Depends(require_principal)) -> JSONResponse:
    """Validate and place a graph; answers ``{"graph_id", "status": "active", "node_count", "edge_count"}``.

    An ``Idempotency-Key`` header makes retries safe: the same key (per client)
    answers the original graph and places nothing new; reusing it for a
    different request is a 409.
    """
    engine = _engine(request)
    key = request.headers.get("idempotency-key")
    if key is not None:
        key = key.strip()
        if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
            raise bad_request(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable characters",
                              "Idempotency-Key")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise too_large(f"graph requests are limited to {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        raise invalid_json() from None
    try:
        ack = await engine.submit(body, client_id=principal.client_id, key_id=principal.key_id,
                                  paper_only=principal.is_paper, run_id=principal.run_id,
                                  idempotency_key=key, strategy_id=principal.strategy_id)
    except GraphError as exc:
        raise ApiError(400, exc.code, exc.message, exc.details) from None
    except Fenced as exc:
        raise unauthorized(str(exc), run_id=exc.run_id) from None
    except IdempotencyConflict as exc:
        raise ApiError(409, "idempotency_conflict", str(exc),
                       {"field": "Idempotency-Key", "graph_id": exc.graph_id}) from None
    return JSONResponse(ack, status_code=200 if ack["idempotent_replay"] else 201)


@router.get("/v1/graphs", summary="List your graphs, newest first", responses=_ERRS, openapi_extra={
    "parameters": [param("status", {"type": "string", "enum": [s.value for s in GraphStatus]}, "only this status"),
                   _LIMIT, _CURSOR]})
async def list_graphs(request: Request, principal: Principal = Depends(require_principal),
                      status: str | None = _hidden(), limit: str | None = _hidden(),
                      cursor: str | None = _hidden()) -> dict[str, Any]:
    engine = _engine(request)
    status = status or None  # empty means not given, as for every optional parameter here
    if status is not None and status not in {s.value for s in GraphStatus}:
        raise bad_request(f"status must be one of {', '.join(s.value for s in GraphStatus)}", "status")
    n = limit_param(limit, DEFAULT_LIMIT, MAX_LIMIT)
    cur = cursors.decode(cursor, (float, str))
    before = None if cur is None else (float(cur[0]), str(cur[1]))

    def _read() -> list[dict[str, Any]]:
        return engine.store.list_graphs(principal.client_id, status=status, limit=n + 1, before=before,
                                        strategy_id=principal.strategy_id)

    rows = await anyio.to_thread.run_sync(_read)
    more = len(rows) > n
    rows = rows[:n]
    nxt = cursors.encode(rows[-1]["created_at"], rows[-1]["graph_id"]) if more and rows else None
    return {"graphs": [graph_json(r) for r in rows], "next_cursor": nxt}


@router.get("/v1/graphs/{graph_id}", summary="One graph with per-node state", responses=_ERRS)
async def get_graph(graph_id: str, request: Request,
                    principal: Principal = Depends(require_principal)) -> dict[str, Any]:
    await _visible(request, principal, graph_id)
    out = await _engine(request).graph(principal.client_id, graph_id)
    if out is None:
        raise not_found("graph", graph_id=graph_id)
    return out


async def _visible(request: Request, principal: Principal, graph_id: str) -> None:
    """A run-scoped key sees only its own strategy's graphs: any other id is 404."""
    if principal.strategy_id is not None and not await anyio.to_thread.run_sync(
            _engine(request).store.graph_visible, principal.client_id, graph_id, principal.strategy_id):
        raise not_found("graph", graph_id=graph_id)


async def _cancel(graph_id: str, request: Request, principal: Principal) -> dict[str, Any]:
    await _visible(request, principal, graph_id)
    out = await _engine(request).cancel(principal.client_id, graph_id)
    if out is None:
        raise not_found("graph", graph_id=graph_id)
    return out


@router.post("/v1/graphs/{graph_id}/cancel", summary="Cancel every working node", responses=_ERRS)
async def cancel_graph(graph_id: str, request: Request,
                       principal: Principal = Depends(require_principal)) -> dict[str, Any]:
    """Idempotent: cancelling an ended graph answers its state unchanged."""
    return await _cancel(graph_id, request, principal)


@router.delete("/v1/graphs/{graph_id}", summary="Cancel every working node (same as POST …/cancel)",
                responses=_ERRS)
async def delete_graph(graph_id: str, request: Request,
                       principal: Principal = Depends(require_principal)) -> dict[str, Any]:
    return await _cancel(graph_id, request, principal)


# -- fills & positions ----------------------------------------------------------------------


@router.get("/v1/fills", summary="Your fills, newest first", responses=_ERRS, openapi_extra={"parameters": [
    param("symbol", {"type": "string"}, "only this symbol"), param("graph_id", {"type": "string"}, "only this graph"),
    _LIMIT, param("since", {"anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]},
                  "epoch seconds or ISO-8601 with a timezone; inclusive"), _CURSOR]})
async def list_fills(request: Request, principal: Principal = Depends(require_principal),
                     symbol: str | None = _hidden(), graph_id: str | None = _hidden(), limit: str | None = _hidden(),
                     since: str | None = _hidden(), cursor: str | None = _hidden()) -> dict[str, Any]:
    """``{"fills": [...], "next_cursor"}``. ``since`` (epoch seconds or ISO-8601) is inclusive."""
    engine = _engine(request)
    n = limit_param(limit, DEFAULT_LIMIT, MAX_LIMIT)
    t0 = time_param("since", since)
    cur = cursors.decode(cursor, (float, int))
    before = None if cur is None else (float(cur[0]), int(cur[1]))

    def _read() -> list[dict[str, Any]]:
        return engine.store.list_fills(principal.client_id, symbol=symbol or None, graph_id=graph_id or None,
                                       since=t0, limit=n + 1, before=before, strategy_id=principal.strategy_id)

    rows = await anyio.to_thread.run_sync(_read)
    more = len(rows) > n
    rows = rows[:n]
    nxt = cursors.encode(rows[-1]["ts"], rows[-1]["seq"]) if more and rows else None
    return {"fills": [fill_json(r) for r in rows], "next_cursor": nxt}


@router.get("/v1/positions", summary="Net positions and P&L per symbol", responses=_ERRS, openapi_extra={
    "parameters": [param("sandbox", {"type": "boolean"}, "only sandbox (true) or live (false) rows"),
                   param("symbol", {"type": "string"}, "only this symbol")]})
async def list_positions(request: Request, principal: Principal = Depends(require_principal),
                         sandbox: str | None = _hidden(), symbol: str | None = _hidden()) -> dict[str, Any]:
    """Net quantity, average price, realized and unrealized P&L (marked to mid), per symbol;
    sandbox and live rows apart. A ``seq_test_`` key sees its sandbox rows only."""
    engine = _engine(request)
    paper = bool_param("sandbox", sandbox)
    if principal.is_paper:
        if paper is False:
            raise bad_request("a seq_test_ key trades in the sandbox only; it has no live positions", "sandbox")
        paper = True

    def _read() -> list[dict[str, Any]]:
        return engine.store.positions(principal.client_id, paper=paper, symbol=symbol or None,
                                      strategy_id=principal.strategy_id)

    rows = await anyio.to_thread.run_sync(_read)
    return {"positions": engine.positions_json(rows)}


__all__ = ["router"]
