"""/v1/strategies — deploy and manage hosted strategies: HTTP only.

Each route reads its request, checks the key, calls :mod:`sequence.api.services`
(:mod:`~sequence.api.services.deploy` for deploys and the lifecycle,
:mod:`~sequence.api.services.logs` for a run's lines) and presents the answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from sequence.api import cursor as cursors
from sequence.api import present
from sequence.api.auth import bearer, require_principal, still_valid
from sequence.api.errors import bad_request, invalid_json, too_large, unsupported_media_type
from sequence.api.openapi import inline_schema
from sequence.api.query import bool_param, limit_doc, limit_query, param
from sequence.api.services import deploy, layers, logs
from sequence.api.services.deploy import CreateJson, CreateSpec, forbid_run_key, strategy_or_404
from sequence.api.state import Core, core_of
from sequence.store.store import Principal

router = APIRouter(tags=["strategies"])

INT64_MAX = 2**63 - 1

# What each route can answer besides 200, for the OpenAPI document (and schemathesis).
_E = {400: {"description": "bad input; `details.field` names it"},
      401: {"description": "no key, or a bad or revoked one"},
      403: {"description": "a run-scoped key cannot do this"},
      404: {"description": "no such strategy (or not yours)"},
      409: {"description": "the lifecycle does not allow this now"},
      413: {"description": "artifact (or its unpacked size) over the limit"},
      415: {"description": "neither JSON nor multipart"},
      422: {"description": "the body does not match the schema"}}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: _E[c] for c in codes}


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError("number out of range")
    return v


def _no_constant(_name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def loads(raw: bytes | str, what: str = "request body", field: str = "body") -> Any:
    """Strict JSON: no NaN/Infinity, no overflowing floats, bounded nesting; 400 otherwise."""
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise invalid_json(f"{what} is nested too deeply", field) from None
    except (ValueError, UnicodeDecodeError):
        raise invalid_json(f"{what} is not valid JSON", field) from None


def _validate_model(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_input=False, include_context=False)) from None


async def read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _live_runners(core: Core) -> list[dict[str, Any]]:
    return core.store.list_runners(seen_within=core.settings.lease_seconds * 2)


def _waiting_reason(core: Core, row: dict[str, Any], runners: list[dict[str, Any]] | None = None) -> str | None:
    if row["status"] != "queued":
        return None
    live = runners if runners is not None else _live_runners(core)
    region = row["region"]
    fit = [r for r in live if region is None or region in r["region"].split(",")]
    if not live:
        return "waiting for a runner: none is connected"
    if not fit:
        return f"waiting for a runner in region {region}: none is connected (connected: " + \
            ", ".join(sorted({r['region'] for r in live})) + ")"
    busy = core.store.runners_at_capacity([r["runner_id"] for r in fit])
    if len(busy) < len(fit):
        return None  # a runner with room is connected: the claim is imminent
    return "waiting for a free slot: every runner" + ("" if region is None else f" in region {region}") + \
        " is at capacity"


_LEVELS = ("none", "partial", "full")


def _isolation(core: Core, row: dict[str, Any], runners: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """How isolated this strategy's runs are: its runner's level, or (not running) the
    weakest of the connected runners that could claim it. None: no runner to judge by."""
    cur = row.get("current_run")
    if cur and cur.get("runner_id"):
        one = core.store.get_runner(cur["runner_id"])
        candidates = [one] if one else []
    else:
        live = runners if runners is not None else _live_runners(core)
        region = row["region"]
        candidates = [r for r in live if region is None or region in r["region"].split(",")]
    levels = [(r, (r.get("isolation") or {}).get("level")) for r in candidates]
    levels = [(r, lv) for r, lv in levels if lv in _LEVELS]
    if not levels:
        return None
    runner, level = min(levels, key=lambda x: _LEVELS.index(x[1]))
    out: dict[str, Any] = {"level": level}
    if level != "full":
        missing = [m.get("name") for m in (runner.get("isolation") or {}).get("missing", []) if isinstance(m, dict)]
        if not (runner.get("isolation") or {}).get("bubblewrap"):
            out["warning"] = (f"runs on runner {runner['name']} are NOT isolated (no bubblewrap: it was started "
                              "with --unsandboxed): the strategy can read the runner's files and reach its network")
        else:
            out["warning"] = (f"runs on runner {runner['name']} are only partly isolated; missing: "
                              + (", ".join(x for x in missing if x) or "see `sequence doctor` on that host"))
    return out


def render(core: Core, row: dict[str, Any], runners: list[dict[str, Any]] | None = None,
           layer_memo: dict[str, Any] | None = None) -> dict[str, Any]:
    """A strategy as the API shows it. *runners* and *layer_memo* (layer id → its description)
    are shared by the rows of one list, so a page reads each layer once, not once per row."""
    cur = row.get("current_run")
    if runners is None and (row["status"] == "queued" or not (cur and cur.get("runner_id"))):
        runners = _live_runners(core)  # read once for both questions below
    out = present.strategy(row, waiting_reason=_waiting_reason(core, row, runners))
    lid = row.get("layer_id")
    memo = {} if layer_memo is None else layer_memo
    if lid and lid not in memo:
        memo[lid] = layers.describe(core.store.get_layer(lid))
    out["dependencies"] = memo[lid] if lid else None
    iso = _isolation(core, row, runners)
    if iso is not None:
        out["isolation"] = iso
    return out


@router.post("/v1/strategies", status_code=201, responses={
    200: {"description": "redeployed (same client and name: the strategy_id is kept)"},
    **error_responses(400, 401, 403, 413, 415, 422)}, openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": inline_schema(CreateJson)},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["artifact", "spec"],
            "properties": {"artifact": {"type": "string", "format": "binary"},
                           "spec": {"type": "string", "description": "CreateSpec as JSON"}}}}}}})
async def create_strategy(request: Request, p: Principal = Depends(require_principal)) -> JSONResponse:
    """Create or redeploy a strategy (JSON with ``artifact_base64``, or multipart ``artifact`` + ``spec``)."""
    forbid_run_key(p, "deploy strategies")
    core = core_of(request.app)
    limit = core.settings.max_artifact_bytes
    body_limit = limit * 4 // 3 + 4 * 1024 * 1024
    cl = request.headers.get("content-length")
    if cl and cl.isdigit() and int(cl) > body_limit:
        raise too_large(f"artifact exceeds the {core.settings.max_artifact_mb} MiB limit")
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        spec, artifact = await _read_multipart(request, body_limit)
    elif ctype.startswith("application/json") or not ctype:
        raw = await read_body(request, body_limit)
        data = loads(raw)
        if not isinstance(data, dict):
            raise bad_request("request body must be a JSON object")
        full = _validate_model(CreateJson, data)
        try:
            artifact = base64.b64decode(full.artifact_base64, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("artifact_base64 is not valid base64", "artifact_base64") from None
        spec = CreateSpec.model_validate(full.model_dump(exclude={"artifact_base64"}))
    else:
        raise unsupported_media_type("send application/json or multipart/form-data")
    if len(artifact) > limit:
        raise too_large(f"artifact is {len(artifact)} bytes; the limit is {core.settings.max_artifact_mb} MiB")
    row, created = await deploy.deploy(core, p, spec, artifact, bearer(request.headers.get("authorization")) or "")
    # Rendered off the loop: the runner woken by the deploy claims on the loop meanwhile.
    body = await anyio.to_thread.run_sync(render, core, row)
    return JSONResponse(body, status_code=201 if created else 200)


async def _read_multipart(request: Request, limit: int) -> tuple[CreateSpec, bytes]:
    try:
        form = await request.form(max_files=1, max_fields=4, max_part_size=4 * 1024 * 1024)
    except Exception as exc:
        raise bad_request(f"malformed multipart body: {exc.__class__.__name__}") from None
    try:
        up = form.get("artifact")
        spec_raw = form.get("spec")
        if not isinstance(up, UploadFile):
            raise bad_request("multipart body needs an 'artifact' file part", "artifact")
        if spec_raw is None:
            raise bad_request("multipart body needs a 'spec' JSON part", "spec")
        spec_text = spec_raw if isinstance(spec_raw, str) else (await spec_raw.read()).decode("utf-8", "replace")
        data = loads(spec_text, "the 'spec' part", "spec")
        if not isinstance(data, dict):
            raise bad_request("the 'spec' part must be a JSON object", "spec")
        spec = _validate_model(CreateSpec, data)
        artifact = await up.read(limit + 1)
        if len(artifact) > limit:
            raise too_large("artifact exceeds the size limit")
        return spec, artifact
    finally:
        await form.close()


@router.get("/v1/strategies", responses=error_responses(400, 401),
            openapi_extra={"parameters": [limit_doc(100, 500)]})
def list_strategies(request: Request, p: Principal = Depends(require_principal),
                    limit: int = limit_query(100, 500), cursor: str | None = Query(None, max_length=500),
                    ) -> dict[str, Any]:
    """Your strategies, oldest first (a run-scoped key lists only its own strategy)."""
    core = core_of(request.app)
    cur = cursors.decode(cursor, (float, str))
    after = None if cur is None else (float(cur[0]), str(cur[1]))
    if p.strategy_id is not None:
        own = core.store.get_strategy(p.client_id, p.strategy_id)
        return {"strategies": [render(core, own)] if own and after is None else [], "next_cursor": None}
    rows = core.store.list_strategies(p.client_id, limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    runners = core.store.list_runners(seen_within=core.settings.lease_seconds * 2)
    memo: dict[str, Any] = {}
    return {"strategies": [render(core, r, runners, memo) for r in rows],
            "next_cursor": cursors.encode(rows[-1]["created_at"], rows[-1]["strategy_id"]) if more and rows else None}


@router.get("/v1/strategies/{strategy_id}", responses=error_responses(401, 404))
def inspect_strategy(strategy_id: str, request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    core = core_of(request.app)
    return render(core, strategy_or_404(core, p, strategy_id))


@router.post("/v1/strategies/{strategy_id}/start", responses=error_responses(401, 403, 404, 409))
def start_strategy(strategy_id: str, request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    core = core_of(request.app)
    return render(core, deploy.start(core, p, strategy_id))


@router.post("/v1/strategies/{strategy_id}/stop", responses=error_responses(401, 403, 404, 409))
def stop_strategy(strategy_id: str, request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    core = core_of(request.app)
    return render(core, deploy.stop(core, p, strategy_id))


@router.delete("/v1/strategies/{strategy_id}", responses=error_responses(401, 403, 404, 409))
async def delete_strategy(strategy_id: str, request: Request,
                          p: Principal = Depends(require_principal)) -> dict[str, Any]:
    """A running strategy is stopped first (SIGTERM, its stop timeout): the answer comes once
    its run ended."""
    row = await deploy.delete(core_of(request.app), p, strategy_id)
    return {"strategy_id": row["strategy_id"], "deleted": True}


@router.get("/v1/strategies/{strategy_id}/runs", responses=error_responses(400, 401, 404),
            openapi_extra={"parameters": [limit_doc(50, 500)]})
def list_runs(strategy_id: str, request: Request, p: Principal = Depends(require_principal),
              limit: int = limit_query(50, 500), cursor: str | None = Query(None, max_length=500),
              ) -> dict[str, Any]:
    """Run history, newest first; ``next_cursor`` pages back."""
    core = core_of(request.app)
    before = cursors.decode(cursor, (int,))
    row = strategy_or_404(core, p, strategy_id)
    runs = core.store.list_runs(p.client_id, row["strategy_id"], limit + 1,
                                before_epoch=None if before is None else before[0])
    more = len(runs) > limit
    runs = runs[:limit]
    return {"strategy_id": row["strategy_id"], "runs": [present.run(r) for r in runs],
            "next_cursor": cursors.encode(runs[-1]["epoch"]) if more and runs else None}


@router.get("/v1/strategies/{strategy_id}/logs", response_model=None, responses={
    200: {"description": "a page of lines (JSON), or with follow=true an NDJSON stream",
          "content": {"application/json": {}, "application/x-ndjson": {}}},
    **error_responses(400, 401, 404)}, openapi_extra={"parameters": [
        limit_doc(1000, 10000),
        param("follow", {"type": "boolean", "default": False}, "stream NDJSON until the strategy ends for good")]})
async def strategy_logs(
    strategy_id: str,
    request: Request,
    p: Principal = Depends(require_principal),
    run_id: str | None = Query(None, max_length=64),
    after_seq: int = Query(0, ge=0, le=INT64_MAX),
    limit: int = limit_query(1000, 10000),
    follow: str | None = Query(None, include_in_schema=False),
) -> Any:
    """A run's lines (the latest run by default).  ``dropped_lines`` counts that run's
    oldest lines removed by log retention (SEQUENCE_LOG_RETENTION_MB)."""
    core = core_of(request.app)
    sid, run = await logs.strategy_and_run(core, p, strategy_id, run_id)
    if not bool_param("follow", follow):
        # JSONResponse: the lines are plain JSON already (FastAPI's encoder walks each one).
        return JSONResponse(await logs.page(core, sid, run, after_seq, limit))
    return StreamingResponse(logs.follow(core, sid, run_id, after_seq, still_allowed=still_valid(request)),
                             media_type="application/x-ndjson")
