"""/v1/strategies — deploy and manage hosted strategies (the seed's table)."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from sequence import bundle
from sequence.api import cursor as cursors
from sequence.api import present
from sequence.api.auth import require_principal
from sequence.api.errors import ApiError, bad_request, not_found
from sequence.api.notify import QUEUE, logs_topic, strategy_topic
from sequence.api.openapi import inline_schema
from sequence.api.state import Core, core_of
from sequence.store.ids import new_uuid
from sequence.store.store import Principal

router = APIRouter(tags=["strategies"])

INT64_MAX = 2**63 - 1
MAX_MANIFEST_DEPTH = 32
MAX_MANIFEST_BYTES = 1024 * 1024

# What each route can answer besides 200, for the OpenAPI document (and schemathesis).
_E = {400: {"description": "bad input; `details.field` names it"},
      401: {"description": "no key, or a bad or revoked one"},
      403: {"description": "a run-scoped key cannot do this"},
      404: {"description": "no such strategy (or not yours)"},
      409: {"description": "the lifecycle does not allow this now"},
      413: {"description": "artifact (or its unpacked size) over the limit"},
      415: {"description": "neither JSON nor multipart"},
      422: {"description": "the body does not match the schema"}}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: _E[c] for c in codes}


def forbid_run_key(p: Principal, what: str) -> None:
    """Run keys act for one running strategy: reading it and trading, nothing that manages."""
    if p.run_id is not None:
        raise ApiError(403, "forbidden", f"run-scoped keys cannot {what}; a strategy's SEQUENCE_API_KEY may only "
                       "read its own strategy and use the market API — use a client key for this",
                       {"run_id": p.run_id})


def plausible_id(ident: str) -> bool:
    """Ids and names are short printable text; anything else cannot name an object."""
    return 0 < len(ident) <= 128 and ident.isprintable()


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
        raise ApiError(400, "invalid_json", f"{what} is nested too deeply", {"field": field}) from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", f"{what} is not valid JSON", {"field": field}) from None


def _depth(value: Any, limit: int) -> bool:
    """Whether ``value`` nests at most ``limit`` levels (iterative: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            if d > limit:
                return False
            stack.extend((x, d + 1) for x in v)
    return True


def _storable_text(value: Any, field: str) -> None:
    """Every string must be valid Unicode (JSON lets a body smuggle lone surrogates)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{field} contains text that is not valid Unicode (a lone surrogate)", field) from None


class Placement(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    latency_target: list[str] = Field(default_factory=list, max_length=8)


class CreateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(max_length=500)
    runtime: str = Field("python", max_length=64)
    entrypoint: str = Field("main.py", max_length=255)
    artifact_sha256: str = Field(max_length=128)
    env: dict[str, str] = Field(default_factory=dict, max_length=500)
    # None (absent): a redeploy keeps the strategy's sealed secrets; {} clears them.
    secrets: dict[str, str] | None = Field(None, max_length=500)
    manifest: dict[str, Any] = Field(default_factory=dict)
    memory_mb: int = Field(512, ge=64, le=65536)
    stop_timeout_s: float = Field(10.0, gt=0, le=600)
    placement: Placement = Field(default_factory=Placement)
    # Workspace disk quota, enforced by the runner (breach ends the run with the reason).
    disk_mb: int = Field(bundle.DISK_MB_DEFAULT, ge=bundle.DISK_MB_MIN, le=bundle.DISK_MB_MAX)
    # "public": the run may reach public internet addresses through the runner's egress
    # proxy; "none": only the Sequence API.  Private, loopback and metadata ranges: never.
    egress: Literal["public", "none"] = "public"
    sequence_api_key: str | None = Field(None, max_length=200)
    start: bool = False


class CreateJson(CreateSpec):
    artifact_base64: str


def _validate_model(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_input=False, include_context=False)) from None


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _strategy_or_404(core: Core, p: Principal, ident: str) -> dict[str, Any]:
    """The caller's strategy by id or name; a run key sees only its own strategy."""
    if not plausible_id(ident):
        raise not_found("strategy")
    row = core.store.get_strategy(p.client_id, ident)
    if row is None:
        sid = core.store.find_strategy_id(p.client_id, ident)
        row = core.store.get_strategy(p.client_id, sid) if sid else None
    if row is None or (p.strategy_id is not None and row["strategy_id"] != p.strategy_id):
        raise not_found("strategy")
    return row


def _waiting_reason(core: Core, row: dict[str, Any]) -> str | None:
    if row["status"] != "queued":
        return None
    live = core.store.list_runners(seen_within=core.settings.lease_seconds * 2)
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
        live = runners if runners is not None else core.store.list_runners(seen_within=core.settings.lease_seconds * 2)
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


def render(core: Core, row: dict[str, Any], runners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out = present.strategy(row, waiting_reason=_waiting_reason(core, row))
    iso = _isolation(core, row, runners)
    if iso is not None:
        out["isolation"] = iso
    return out


@router.post("/v1/strategies", status_code=201, responses={
    200: {"description": "redeployed (same client and name: the strategy_id is kept)"},
    **_responses(400, 401, 403, 413, 415, 422)}, openapi_extra={"requestBody": {"required": True, "content": {
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
        raise ApiError(413, "payload_too_large", f"artifact exceeds the {core.settings.max_artifact_mb} MiB limit")
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        spec, artifact = await _read_multipart(request, body_limit)
    elif ctype.startswith("application/json") or not ctype:
        raw = await _read_body(request, body_limit)
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
        raise ApiError(415, "unsupported_media_type", "send application/json or multipart/form-data")
    if len(artifact) > limit:
        raise ApiError(413, "payload_too_large",
                       f"artifact is {len(artifact)} bytes; the limit is {core.settings.max_artifact_mb} MiB")
    return await _deploy(core, p, request, spec, artifact)


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
            raise ApiError(413, "payload_too_large", "artifact exceeds the size limit")
        return spec, artifact
    finally:
        await form.close()


async def _deploy(core: Core, p: Principal, request: Request, spec: CreateSpec, artifact: bytes) -> JSONResponse:
    if spec.runtime != "python":
        raise bad_request("runtime must be 'python'", "runtime")
    err = bundle.validate_name(spec.name)
    if err:
        raise bad_request(err, "name")
    err = bundle.validate_entrypoint(spec.entrypoint)
    if err or not spec.entrypoint.isprintable():
        raise bad_request(err or "entrypoint must be printable text", "entrypoint")
    sha = spec.artifact_sha256.lower()
    if bundle.sha256_hex(artifact) != sha:
        raise bad_request("artifact_sha256 does not match the artifact's SHA-256", "artifact_sha256")
    for slot, values in (("env", spec.env), ("secrets", spec.secrets or {})):
        reserved = bundle.reserved_names(values)
        if reserved:
            raise bad_request(f"{slot} uses reserved names: {', '.join(reserved)} (SEQUENCE_* is reserved)",
                              slot, names=reserved)
        bad = bundle.invalid_env_names(values)
        if bad:
            raise bad_request(f"{slot} has invalid variable names: {', '.join(bad[:10])}", slot, names=bad[:50])
        _storable_text(values, slot)
    problem = bundle.env_value_problem({"env": spec.env, "secrets": spec.secrets or {}})
    if problem:
        slot, name, message = problem
        raise bad_request(message, f"{slot}.{name}" if name else slot, **({"name": name} if name else {}))
    unknown = [x for x in spec.placement.latency_target if x not in core.settings.regions]
    if unknown:
        raise bad_request(f"unknown latency_target {', '.join(unknown)}; use one of: "
                          f"{', '.join(sorted(core.settings.regions))}", "placement.latency_target")
    if not _depth(spec.manifest, MAX_MANIFEST_DEPTH):
        raise bad_request(f"manifest nests more than {MAX_MANIFEST_DEPTH} levels deep", "manifest")
    _storable_text(spec.manifest, "manifest")
    if len(json.dumps(spec.manifest)) > MAX_MANIFEST_BYTES:
        raise bad_request("manifest is larger than 1 MiB", "manifest")
    cap = core.settings.max_unpacked_bytes
    try:
        await anyio.to_thread.run_sync(
            lambda: bundle.inspect_archive(artifact, spec.entrypoint, max_unpacked=cap))
    except bundle.ArchiveTooLarge as exc:
        raise ApiError(413, "payload_too_large", f"{exc} (SEQUENCE_MAX_UNPACKED_MB={core.settings.max_unpacked_mb})",
                       {"field": "artifact", "limit_mb": core.settings.max_unpacked_mb}) from None
    except bundle.BundleError as exc:
        raise bad_request(str(exc), "artifact") from None

    # Which key the strategy runs as (its client and mode): the given one, else the caller's.
    key_text = spec.sequence_api_key
    if key_text is None:
        from sequence.api.auth import bearer

        key_text = bearer(request.headers.get("authorization")) or ""
        key_principal: Principal | None = p
    else:
        key_principal = core.auth.resolve(key_text)
        if key_principal is None or key_principal.client_id != p.client_id or key_principal.run_id is not None:
            raise bad_request("sequence_api_key is not a valid API key of this client", "sequence_api_key")
    assert key_principal is not None

    existing = await anyio.to_thread.run_sync(core.store.find_strategy_id, p.client_id, spec.name)
    sid = existing or new_uuid()
    fields: dict[str, Any] = {
        "name": spec.name,
        "runtime": spec.runtime,
        "entrypoint": spec.entrypoint,
        "artifact_sha256": sha,
        "artifact_size": len(artifact),
        "env": spec.env,
        "manifest": spec.manifest,
        "memory_mb": spec.memory_mb,
        "disk_mb": spec.disk_mb,
        "egress": spec.egress,
        "stop_timeout_s": float(spec.stop_timeout_s),
        "placement": {"latency_target": spec.placement.latency_target},
        "region": core.settings.regions[spec.placement.latency_target[0]] if spec.placement.latency_target else None,
        "api_key_id": key_principal.key_id,
        "is_sandbox": key_principal.is_sandbox,
    }
    if spec.secrets:
        sealed = core.keyring.seal_json(spec.secrets, f"strategy:{sid}:secrets")
        fields.update(secrets_ciphertext=sealed.ciphertext, secrets_nonce=sealed.nonce, secrets_key_id=sealed.key_id,
                      secret_names=sorted(spec.secrets))
    elif spec.secrets is not None or existing is None:
        fields.update(secrets_ciphertext=None, secrets_nonce=None, secrets_key_id=None, secret_names=[])
    # else: a redeploy that gives no secrets keeps the sealed ones (they survive deploys)
    sk = core.keyring.seal(key_text.encode(), f"strategy:{sid}:sequence_api_key")
    fields.update(sequence_api_key_ciphertext=sk.ciphertext, sequence_api_key_nonce=sk.nonce,
                  sequence_api_key_key_id=sk.key_id)
    row, created = await anyio.to_thread.run_sync(
        lambda: core.store.deploy_strategy(sid, p.client_id, fields, artifact, start=spec.start))
    core.notifier.notify(QUEUE)
    core.notifier.notify(strategy_topic(sid))
    if row.get("current_run_id"):
        run = await anyio.to_thread.run_sync(core.store.get_run, row["current_run_id"])
        if run and run["runner_id"]:
            from sequence.api.notify import runner_topic

            core.notifier.notify(runner_topic(run["runner_id"]))
    return JSONResponse(render(core, row), status_code=201 if created else 200)


@router.get("/v1/strategies", responses=_responses(400, 401, 422))
def list_strategies(request: Request, p: Principal = Depends(require_principal),
                    limit: int = Query(100, ge=1, le=500), cursor: str | None = Query(None, max_length=500),
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
    return {"strategies": [render(core, r, runners) for r in rows],
            "next_cursor": cursors.encode(rows[-1]["created_at"], rows[-1]["strategy_id"]) if more and rows else None}


@router.get("/v1/strategies/{strategy_id}", responses=_responses(401, 404))
def inspect_strategy(strategy_id: str, request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    core = core_of(request.app)
    return render(core, _strategy_or_404(core, p, strategy_id))


def _wake_runner(core: Core, row: dict[str, Any]) -> None:
    from sequence.api.notify import runner_topic

    core.notifier.notify(QUEUE)
    core.notifier.notify(strategy_topic(row["strategy_id"]))
    cur = row.get("current_run")
    if cur and cur.get("runner_id"):
        core.notifier.notify(runner_topic(cur["runner_id"]))


@router.post("/v1/strategies/{strategy_id}/start", responses=_responses(401, 403, 404, 409))
def start_strategy(strategy_id: str, request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    forbid_run_key(p, "start strategies")
    core = core_of(request.app)
    row = _strategy_or_404(core, p, strategy_id)
    row = core.store.start_strategy(p.client_id, row["strategy_id"])
    _wake_runner(core, row)
    return render(core, row)


@router.post("/v1/strategies/{strategy_id}/stop", responses=_responses(401, 403, 404, 409))
def stop_strategy(strategy_id: str, request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    forbid_run_key(p, "stop strategies")
    core = core_of(request.app)
    row = _strategy_or_404(core, p, strategy_id)
    row = core.store.stop_strategy(p.client_id, row["strategy_id"])
    _wake_runner(core, row)
    return render(core, row)


@router.delete("/v1/strategies/{strategy_id}", responses=_responses(401, 403, 404, 409))
def delete_strategy(strategy_id: str, request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    forbid_run_key(p, "delete strategies")
    core = core_of(request.app)
    row = _strategy_or_404(core, p, strategy_id)
    core.store.delete_strategy(p.client_id, row["strategy_id"])
    core.auth.invalidate()
    _wake_runner(core, row)
    return {"strategy_id": row["strategy_id"], "deleted": True}


@router.get("/v1/strategies/{strategy_id}/runs", responses=_responses(400, 401, 404, 422))
def list_runs(strategy_id: str, request: Request, p: Principal = Depends(require_principal),
              limit: int = Query(50, ge=1, le=500), cursor: str | None = Query(None, max_length=500),
              ) -> dict[str, Any]:
    """Run history, newest first; ``next_cursor`` pages back."""
    core = core_of(request.app)
    before = cursors.decode(cursor, (int,))
    row = _strategy_or_404(core, p, strategy_id)
    runs = core.store.list_runs(p.client_id, row["strategy_id"], limit + 1,
                                before_epoch=None if before is None else before[0])
    more = len(runs) > limit
    runs = runs[:limit]
    return {"strategy_id": row["strategy_id"], "runs": [present.run(r) for r in runs],
            "next_cursor": cursors.encode(runs[-1]["epoch"]) if more and runs else None}


@router.get("/v1/strategies/{strategy_id}/logs", response_model=None, responses={
    200: {"description": "a page of lines (JSON), or with follow=true an NDJSON stream",
          "content": {"application/json": {}, "application/x-ndjson": {}}},
    **_responses(401, 404, 422)})
async def strategy_logs(
    strategy_id: str,
    request: Request,
    p: Principal = Depends(require_principal),
    run_id: str | None = Query(None, max_length=64),
    after_seq: int = Query(0, ge=0, le=INT64_MAX),
    limit: int = Query(1000, ge=1, le=10000),
    follow: bool = False,
) -> Any:
    """A run's lines (the latest run by default).  ``dropped_lines`` counts that run's
    oldest lines removed by log retention (SEQUENCE_LOG_RETENTION_MB)."""
    core = core_of(request.app)
    row = await anyio.to_thread.run_sync(_strategy_or_404, core, p, strategy_id)
    sid = row["strategy_id"]
    run = None
    if run_id is not None:
        run = await anyio.to_thread.run_sync(core.store.get_run, run_id) if plausible_id(run_id) else None
        if run is None or run["strategy_id"] != sid:
            raise not_found("run")
    if not follow:
        if run is None:
            rid = await anyio.to_thread.run_sync(core.store.latest_run_id, sid)
            run = await anyio.to_thread.run_sync(core.store.get_run, rid) if rid else None
        rid = run["run_id"] if run else None
        lines = await anyio.to_thread.run_sync(core.store.read_logs, rid, after_seq, limit) if rid else []
        return {"strategy_id": sid, "run_id": rid, "lines": [present.log_line(x) for x in lines],
                "next_seq": lines[-1]["seq"] if lines else after_seq,
                "dropped_lines": int(run["dropped_lines"]) if run else 0}
    return StreamingResponse(_follow(core, sid, run_id, after_seq), media_type="application/x-ndjson")


async def _follow(core: Core, sid: str, pinned_run: str | None, after_seq: int) -> AsyncIterator[bytes]:
    """Stream a run's lines as NDJSON until it ends for good.

    Without a pinned run, follows the latest run and moves on to the next one
    when the strategy restarts; it ends when the strategy is stopped, or has
    failed and will not be restarted.
    """
    store = core.store
    run_id = pinned_run
    cursor = after_seq
    while True:
        topics = [strategy_topic(sid)] + ([logs_topic(run_id)] if run_id else [])
        events = [(tp, core.notifier.waiter(tp)) for tp in topics]
        try:
            if run_id is None:
                run_id = await anyio.to_thread.run_sync(store.latest_run_id, sid)
                if run_id is not None:
                    continue
            else:
                lines = await anyio.to_thread.run_sync(store.read_logs, run_id, cursor, 2000)
                if lines:
                    cursor = lines[-1]["seq"]
                    yield b"".join(json.dumps(present.log_line(x, run_id)).encode() + b"\n" for x in lines)
                    continue
                run = await anyio.to_thread.run_sync(store.get_run, run_id)
                if run is None:
                    return
                if run["ended_at"] is not None:
                    # Drain anything that raced the exit, then decide whether to go on.
                    if await anyio.to_thread.run_sync(store.read_logs, run_id, cursor, 1):
                        continue
                    if pinned_run is not None:
                        return
                    st = await anyio.to_thread.run_sync(store.get_strategy, None, sid)
                    if st is None:
                        return
                    latest = await anyio.to_thread.run_sync(store.latest_run_id, sid)
                    if latest and latest != run_id:
                        run_id, cursor = latest, 0
                        continue
                    if st["status"] == "stopped" or (st["status"] == "failed" and st["desired_state"] != "running"):
                        return
            with anyio.move_on_after(1.0):
                async with anyio.create_task_group() as tg:
                    async def _wait(ev: Any, scope: Any) -> None:
                        await ev.wait()
                        scope.cancel()

                    for _tp, ev in events:
                        tg.start_soon(_wait, ev, tg.cancel_scope)
        finally:
            for tp, ev in events:
                core.notifier.release(tp, ev)
