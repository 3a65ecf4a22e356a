"""``/v1/risk`` and ``/v1/kill``: the controls on real trading (docs/trading.md "Risk limits",
"Kill switch").

Risk limits are read by anyone of the client (a run key reads its strategy's);
changing them, and the kill switch, take a client key. The engine holds the
limits in memory and checks them before every real order; these routes store a
change and hand it to the engine in the same request.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Body, Depends, Query, Request

from sequence.api import present
from sequence.api.auth import require_principal
from sequence.api.errors import ApiError, bad_request, forbidden, unavailable
from sequence.api.services import deploy
from sequence.api.services.deploy import forbid_run_key, strategy_or_404
from sequence.api.state import Core, core_of
from sequence.execution.engine import TradingEngine
from sequence.lifecycle import IllegalTransition
from sequence.store.controls import ControlsStore
from sequence.store.store import Principal
from sequence.trading.risk import DEFAULT_LIMITS, LIMIT_FIELDS, parse_limits

router = APIRouter(tags=["controls"])

_E: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad input; `details.field` names it"},
    401: {"description": "missing or invalid API key"},
    403: {"description": "a run-scoped key cannot change limits or use the kill switch"},
    404: {"description": "no such strategy (or not yours)"},
    503: {"description": "the platform runs without the market (no trading engine)"},
}
_STRATEGY = Query(None, min_length=1, max_length=200, description="a strategy's name or id: its own limits (default: the client's)")


def _forbid_test_key(p: Principal, what: str) -> None:
    """Live protections are a live key's to loosen: a ``seq_test_`` key trades on paper only
    (it may still engage the kill switch: that only stops trading)."""
    if p.is_paper:
        raise forbidden(f"a seq_test_ key trades on paper only and cannot {what}: use a seq_live_ key")


def _engine(core: Core) -> TradingEngine:
    if core.trading is None:
        raise unavailable("trading is not enabled on this coordinator")
    return core.trading


def _scope(core: Core, p: Principal, strategy: str | None) -> str | None:
    """The strategy id the call is about (a run key: always its own), or None for the client."""
    if strategy:
        return str(strategy_or_404(core, p, strategy)["strategy_id"])
    return p.strategy_id


def _limits_json(engine: TradingEngine, client_id: str, strategy_id: str | None) -> dict[str, Any]:
    limits = engine.limits(client_id, strategy_id)
    e = engine.exposure(client_id, strategy_id)
    return {
        "scope": "strategy" if strategy_id else "client",
        "strategy_id": strategy_id,
        "limits": None if limits is None else limits.as_dict(),
        "defaults": DEFAULT_LIMITS.as_dict() if not strategy_id else None,
        "cancel_on_stop": engine.cancel_on_stop(client_id, strategy_id),
        "exposure": {
            "open_orders": e.open_orders,
            "positions": {s: float(q) for s, q in sorted(e.positions.items()) if q},
            "realized_today": round(float(e.realized_today), 8),
        },
    }


@router.get("/v1/risk", responses={k: _E[k] for k in (401, 404, 503)})
def get_risk(request: Request, strategy: str | None = _STRATEGY,
             p: Principal = Depends(require_principal)) -> dict[str, Any]:
    """The limits in force for real orders, and the exposure they are checked against."""
    core = core_of(request.app)
    engine = _engine(core)
    return _limits_json(engine, p.client_id, _scope(core, p, strategy))


@router.put("/v1/risk", responses={k: _E[k] for k in (400, 401, 403, 404, 503)},
            openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "minProperties": 1, "additionalProperties": False,
                "properties": {**{name: {"type": ["integer" if name == "max_open_orders" else "number", "null"],
                                         "minimum": 0, "maximum": 1e12} for name in LIMIT_FIELDS},
                               "cancel_on_stop": {"type": "boolean"}}}}}}})
def put_risk(request: Request, body: Any = Body(None), strategy: str | None = _STRATEGY,
             p: Principal = Depends(require_principal)) -> dict[str, Any]:
    """Change some limits (a number, or null for none); the others stay as they are."""
    forbid_run_key(p, "change risk limits")
    _forbid_test_key(p, "change risk limits")
    core = core_of(request.app)
    engine = _engine(core)
    try:
        changes = parse_limits(body)
    except ValueError as exc:
        field, message = exc.args
        raise bad_request(message, field) from None
    sid = _scope(core, p, strategy)
    controls = ControlsStore(core.store.db)
    stored = dict(controls.risk_limits(p.client_id).get((p.client_id, sid or ""), {}))
    stored.update(changes)
    controls.put_risk_limits(p.client_id, sid, stored)
    engine.set_limits(p.client_id, sid, stored)
    return _limits_json(engine, p.client_id, sid)


@router.delete("/v1/risk", responses={k: _E[k] for k in (401, 403, 404, 503)})
def delete_risk(request: Request, strategy: str | None = _STRATEGY,
                p: Principal = Depends(require_principal)) -> dict[str, Any]:
    """Forget the scope's changes: a client's limits go back to the defaults, a strategy's go."""
    forbid_run_key(p, "change risk limits")
    _forbid_test_key(p, "change risk limits")
    core = core_of(request.app)
    engine = _engine(core)
    sid = _scope(core, p, strategy)
    ControlsStore(core.store.db).delete_risk_limits(p.client_id, sid or "")
    engine.set_limits(p.client_id, sid, None)
    return _limits_json(engine, p.client_id, sid)


@router.get("/v1/kill", responses={k: _E[k] for k in (401, 503)})
def kill_status(request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    """The client's engaged kill switches (``strategy_id`` null: the client-wide one)."""
    core = core_of(request.app)
    _engine(core)
    engaged = ControlsStore(core.store.db).kill_switches()
    return {"engaged": [{"strategy_id": sid or None, "engaged_at": present.iso(at)}
                        for (cid, sid), at in sorted(engaged.items()) if cid == p.client_id]}


@router.post("/v1/kill", responses={k: _E[k] for k in (400, 401, 403, 404, 503)},
             openapi_extra={"requestBody": {"required": False, "content": {"application/json": {"schema": {
                 "type": "object", "additionalProperties": False,
                 "properties": {"strategy": {"type": "string", "minLength": 1, "maxLength": 200}}}}}}})
async def kill(request: Request, body: Any = Body(None), p: Principal = Depends(require_principal)) -> dict[str, Any]:
    """Cancel every working order of the client (or one strategy) at every venue, stop its
    strategies, and refuse new real orders until released (``DELETE /v1/kill``)."""
    forbid_run_key(p, "use the kill switch")
    core = core_of(request.app)
    engine = _engine(core)
    if (body is not None or (await request.body()).strip()) and not isinstance(body, dict):
        raise bad_request("the body is an optional JSON object: {\"strategy\": NAME}", "body")
    body = body or {}
    unknown = sorted(set(body) - {"strategy"})
    if unknown:
        raise bad_request(f"unknown field {unknown[0][:40]!r}; the body takes only \"strategy\"", unknown[0][:40])
    strategy = body.get("strategy")
    if "strategy" in body and (not isinstance(strategy, str) or not strategy or len(strategy) > 200):
        raise bad_request("strategy must be a strategy's name or id", "strategy")
    sid = None
    if strategy:
        row = await anyio.to_thread.run_sync(strategy_or_404, core, p, strategy)
        sid = str(row["strategy_id"])
    report = await engine.kill(p.client_id, sid)
    report["strategies_stopped"] = await anyio.to_thread.run_sync(_stop_all, core, p, sid)
    report["strategy_id"] = sid
    return report


def _stop_all(core: Core, p: Principal, strategy_id: str | None) -> list[str]:
    """Stop the scope's strategies that are running or meant to run; their names."""
    rows = ([core.store.get_strategy(p.client_id, strategy_id)] if strategy_id
            else core.store.list_strategies(p.client_id))
    stopped = []
    for row in rows:
        if row is None or row.get("desired_state") != "running":
            continue
        try:
            deploy.stop(core, p, row["strategy_id"])
        except (IllegalTransition, ApiError):
            continue
        stopped.append(str(row["name"]))
    return stopped


@router.delete("/v1/kill", responses={k: _E[k] for k in (401, 403, 404, 503)})
async def release(request: Request, strategy: str | None = _STRATEGY,
                  p: Principal = Depends(require_principal)) -> dict[str, Any]:
    """Release the client's kill switch (or one strategy's). Strategies stay stopped: start
    them again with ``sequence strategy start``."""
    forbid_run_key(p, "use the kill switch")
    _forbid_test_key(p, "release the kill switch")
    core = core_of(request.app)
    engine = _engine(core)
    sid = None
    if strategy:
        row = await anyio.to_thread.run_sync(strategy_or_404, core, p, strategy)
        sid = str(row["strategy_id"])
    return {"released": await engine.release(p.client_id, sid), "strategy_id": sid}


__all__ = ["router"]
