"""/v1/deployments — WASM algos (docs/algos.md): HTTP only; the work is
:mod:`sequence.api.services.algos` and :mod:`sequence.algos`.

Not to be confused with ``/v1/strategies`` (hosted Python). The routes mirror
the strategies': deploy (create or redeploy by name), list, inspect, start,
stop, delete, logs.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from sequence.api.auth import require_principal
from sequence.api.errors import bad_request, too_large
from sequence.api.openapi import inline_schema
from sequence.api.query import limit_doc, limit_query
from sequence.api.routes.strategies import _validate_model, loads, read_body
from sequence.api.services import algos
from sequence.api.services.algos import DeployAlgo
from sequence.api.state import core_of
from sequence.store.store import Principal

router = APIRouter(tags=["algos"])

INT64_MAX = 2**63 - 1
_E: dict[int, dict[str, Any]] = {
    400: {"description": "bad input; `details.field` names it (a module the ABI refuses: `details.item` too)"},
    401: {"description": "no key, or a bad or revoked one"},
    403: {"description": "a run-scoped key cannot manage algos"},
    404: {"description": "no such deployment (or not yours)"},
    409: {"description": "a concurrent deploy of the same name"},
    413: {"description": "the module (or the body) is over the limit"},
    422: {"description": "the body does not match the schema"},
    503: {"description": "this coordinator runs without the market, or is compiling as many modules as it may at once (retry)"},
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: _E[c] for c in codes}


@router.post("/v1/deployments", status_code=201, responses={
    200: {"description": "redeployed (same client and name: the deployment_id is kept)"},
    **_errors(400, 401, 403, 409, 413, 422, 503)},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": inline_schema(DeployAlgo)}}}})
async def create_deployment(request: Request, p: Principal = Depends(require_principal)) -> JSONResponse:
    """Deploy a WASM algo: compile and check the module, store it, start it if asked."""
    cl = request.headers.get("content-length")
    if cl and cl.isdigit() and int(cl) > algos.MAX_BODY:
        raise too_large(f"the body is over {algos.MAX_BODY} bytes (a module is at most 4 MiB)")
    data = loads(await read_body(request, algos.MAX_BODY))
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object")
    spec = _validate_model(DeployAlgo, data)
    out, created = await algos.deploy(core_of(request.app), p, spec)
    return JSONResponse(out, status_code=201 if created else 200)


@router.get("/v1/deployments", responses=_errors(401))
def list_deployments(request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    """Your algo deployments, oldest first (a run-scoped key has none)."""
    core = core_of(request.app)
    rows = [] if p.run_id is not None else core.store.list_deployments(p.client_id)
    return {"deployments": [algos.render(core, r) for r in rows]}


@router.get("/v1/deployments/{deployment_id}", responses=_errors(401, 404))
def inspect_deployment(deployment_id: str, request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    """A deployment by id or name, with its live figures while it runs on this coordinator."""
    core = core_of(request.app)
    row = algos.deployment_or_404(core, p, deployment_id)
    out = algos.render(core, row)
    out["recent_graphs"] = core.store.deployment_graphs(p.client_id, row["deployment_id"], limit=20)
    return out


@router.post("/v1/deployments/{deployment_id}/start", responses=_errors(401, 403, 404))
def start_deployment(deployment_id: str, request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    core = core_of(request.app)
    return algos.render(core, algos.set_desired(core, p, deployment_id, "running"))


@router.post("/v1/deployments/{deployment_id}/stop", responses=_errors(401, 403, 404))
def stop_deployment(deployment_id: str, request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    """Stop it: no more calls into the module; its working orders are cancelled."""
    core = core_of(request.app)
    return algos.render(core, algos.set_desired(core, p, deployment_id, "stopped"))


@router.delete("/v1/deployments/{deployment_id}", responses=_errors(401, 403, 404))
def delete_deployment(deployment_id: str, request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    row = algos.delete(core_of(request.app), p, deployment_id)
    return {"deployment_id": row["deployment_id"], "deleted": True}


@router.get("/v1/deployments/{deployment_id}/logs", responses=_errors(400, 401, 404),
            openapi_extra={"parameters": [limit_doc(1000, 10000)]})
async def deployment_logs(deployment_id: str, request: Request, p: Principal = Depends(require_principal),
                          after_seq: int = Query(0, ge=0, le=INT64_MAX),
                          tail: int | None = Query(None, ge=1, le=10000,
                                                   description="only the last N lines (ignores after_seq)"),
                          limit: int = limit_query(1000, 10000)) -> dict[str, Any]:
    """The algo's lines (its ``seq.log`` calls and the platform's ``system`` lines: starts,
    stops, traps, refused orders), oldest first; poll with ``after_seq=next_after_seq``."""
    core = core_of(request.app)
    row = algos.deployment_or_404(core, p, deployment_id)
    lines = await anyio.to_thread.run_sync(lambda: core.store.read_algo_logs(
        row["deployment_id"], after=after_seq, limit=limit, tail=tail))
    return {"deployment_id": row["deployment_id"], "lines": [algos.log_line(r) for r in lines],
            "next_after_seq": lines[-1]["seq"] if lines else after_seq}

