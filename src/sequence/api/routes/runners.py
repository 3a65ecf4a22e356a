"""/v1/runners/* — the internal claim protocol between runners and the coordinator.

See docs/runner-protocol.md.  Every write names (run_id, epoch); a write whose
epoch is not the run's current one is rejected with 409 ``stale_run``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Connection

from sequence.api import log_stream
from sequence.api.auth import require_runner, require_runner_of
from sequence.api.errors import ApiError, not_found
from sequence.api.notify import QUEUE, logs_topic, runner_topic, strategy_topic
from sequence.api.openapi import inline_schema
from sequence.api.state import Core, core_of
from sequence.secrets import Sealed, SealingError
from sequence.store.store import ExitReport, LogColumns

router = APIRouter(tags=["runners"], include_in_schema=True)

INT64 = 2**63 - 1
_ERRS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid runner token"},
    404: {"description": "no such runner for this token"},
    409: {"description": "stale_run: the run is not this runner's at this epoch (or a log gap)"},
    422: {"description": "the body does not match the schema"},
}


class Register(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200)
    # One region, or several comma-separated (a local runner serves them all).
    region: str = Field(max_length=200, min_length=1, pattern=r"^[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*$")
    capacity: int = Field(ge=1, le=10_000)
    isolation: dict[str, Any] = Field(default_factory=dict)


class Poll(BaseModel):
    model_config = ConfigDict(extra="forbid")
    free_slots: int = Field(ge=0, le=10_000)
    stopping: list[str] = Field(default_factory=list)
    wait_s: float = Field(20.0, ge=0, le=60)


class RunRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str = Field(max_length=64)
    epoch: int = Field(ge=0, le=INT64)


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runs: list[RunRef] = Field(default_factory=list, max_length=10_000)


class EpochBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epoch: int = Field(ge=0, le=INT64)


class LogLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq: int = Field(ge=1, le=INT64)
    ts: float
    stream: str = Field(pattern="^(stdout|stderr|system)$")
    line: str
    partial: bool = False


class Logs(BaseModel):
    """The record form; the runner sends the columnar one (docs/runner-protocol.md)."""
    model_config = ConfigDict(extra="forbid")
    epoch: int = Field(ge=0, le=INT64)
    lines: list[LogLine] = Field(max_length=100_000)


class Exit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epoch: int = Field(ge=0, le=INT64)
    code: int | None = Field(None, ge=-(2**31), le=2**31 - 1)
    signal: int | None = Field(None, ge=0, le=2**31 - 1)
    oom: bool = False
    reason: str | None = Field(None, max_length=2000)
    peak_rss_bytes: int | None = Field(None, ge=0, le=INT64)
    cpu_seconds: float | None = Field(None, ge=0, le=1e12)


def _runner(core: Core, runner_id: str, token_id: str) -> dict[str, Any]:
    r = core.store.get_runner(runner_id)
    if r is None or r["token_id"] != token_id:
        raise not_found("runner")
    return r


@router.post("/v1/runners/register")
def register(body: Register, request: Request, token_id: str = Depends(require_runner)) -> dict[str, Any]:
    core = core_of(request.app)
    rid = core.store.register_runner(token_id, body.name, body.region, body.capacity, body.isolation)
    return {"runner_id": rid, "heartbeat_seconds": core.settings.heartbeat_seconds,
            "lease_seconds": core.settings.lease_seconds, "api_url": core.settings.api_url}


def _claim_spec(core: Core, row: dict[str, Any]) -> dict[str, Any]:
    sid = row["strategy_id"]
    secrets: dict[str, str] = {}
    if row.get("secrets_ciphertext"):
        secrets = core.keyring.unseal_json(
            Sealed(row["secrets_ciphertext"], row["secrets_nonce"], row["secrets_key_id"]), f"strategy:{sid}:secrets")
    return {
        "run_id": row["run_id"],
        "epoch": row["epoch"],
        "strategy_id": sid,
        "client_id": row["client_id"],
        "name": row["name"],
        "entrypoint": row["entrypoint"],
        "env": row["env"],
        "secrets": secrets,
        "manifest": row["manifest"],
        "memory_mb": row["memory_mb"],
        "disk_mb": row["disk_mb"],
        "egress": row["egress"],
        "log_rate_lines": core.settings.log_rate_lines,
        "log_burst_lines": core.settings.log_burst_lines,
        "stop_timeout_s": row["stop_timeout_s"],
        "is_sandbox": bool(row["is_sandbox"]),
        "api_key": row["run_api_key"],
        "api_url": core.settings.api_url,
        "artifact_sha256": row["artifact_sha256"],
        "artifact_size": row["artifact_size"],
    }


def _claim_once(core: Core, runner: dict[str, Any], free: int) -> dict[str, Any] | None:
    store = core.store

    def mint(conn: Connection, st: Any, run_id: str) -> str:
        mode = "test" if st["is_sandbox"] else "live"
        _row, plaintext = store.create_api_key(st["client_id"], mode, f"run {run_id}", run_id=run_id, conn=conn)
        return plaintext

    row = store.claim(runner["runner_id"], runner["region"].split(","), free, mint_key=mint)
    if row is None:
        return None
    reason = None
    if row.get("api_key_id") and not store.key_is_usable(row["api_key_id"]):
        reason = "the strategy's API key was revoked; redeploy with a valid key"
    else:
        try:
            return _claim_spec(core, row)
        except SealingError as exc:
            reason = f"cannot unseal the strategy's secrets: {exc}"
    store.report_exit(row["run_id"], row["epoch"], runner["runner_id"], ExitReport(code=None, reason=reason))
    return None


@router.post("/v1/runners/{runner_id}/poll")
async def poll(runner_id: str, body: Poll, request: Request, token_id: str = Depends(require_runner)) -> dict[str, Any]:
    """Long-poll: returns as soon as there is a run to start or a run to stop."""
    core = core_of(request.app)
    runner = await anyio.to_thread.run_sync(_runner, core, runner_id, token_id)
    deadline = time.monotonic() + body.wait_s
    while True:
        q_ev = core.notifier.waiter(QUEUE)
        r_ev = core.notifier.waiter(runner_topic(runner_id))
        try:
            claims: list[dict[str, Any]] = []
            free = body.free_slots
            while free > 0:
                spec = await anyio.to_thread.run_sync(_claim_once, core, runner, free)
                if spec is None:
                    break
                claims.append(spec)
                free -= 1
                core.notifier.notify(strategy_topic(spec["strategy_id"]))
            stops = await anyio.to_thread.run_sync(core.store.pending_stops, runner_id, body.stopping)
            if not claims and not stops:
                await anyio.to_thread.run_sync(core.store.touch_runner, runner_id)
            if claims or stops or time.monotonic() >= deadline:
                return {"claims": claims, "stop": stops}
            timeout = deadline - time.monotonic()
            due = await anyio.to_thread.run_sync(core.store.next_due_restart)
            if due is not None:
                timeout = min(timeout, max(0.0, due - core.store.clock()) + 0.005)
            if await request.is_disconnected():
                return {"claims": [], "stop": []}
            # Wake at least once a second to notice a runner that went away.
            with anyio.move_on_after(min(timeout, 1.0)):
                async with anyio.create_task_group() as tg:
                    async def _w(ev: Any) -> None:
                        await ev.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(_w, q_ev)
                    tg.start_soon(_w, r_ev)
        finally:
            core.notifier.release(QUEUE, q_ev)
            core.notifier.release(runner_topic(runner_id), r_ev)


@router.post("/v1/runners/{runner_id}/heartbeat", responses=_ERRS)
def heartbeat(runner_id: str, body: Heartbeat, request: Request,
              token_id: str = Depends(require_runner_of)) -> dict[str, Any]:
    core = core_of(request.app)
    actions = core.store.heartbeat(runner_id, [(r.run_id, r.epoch) for r in body.runs])
    return {"runs": actions, "lease_seconds": core.settings.lease_seconds}


@router.get("/v1/runners/{runner_id}/runs/{run_id}/artifact", responses={
    200: {"description": "the artifact (tar.gz)", "content": {"application/gzip": {}}}, **_ERRS})
def artifact(runner_id: str, run_id: str, request: Request, epoch: int = Query(ge=0, le=INT64),
             token_id: str = Depends(require_runner_of)) -> Response:
    core = core_of(request.app)
    run = core.store.get_run(run_id) if run_id.isprintable() else None
    if run is None or run["epoch"] != epoch or run["runner_id"] != runner_id or run["ended_at"] is not None:
        raise ApiError(409, "stale_run", f"run {run_id} epoch {epoch} is not current")
    got = core.store.artifact(run["artifact_id"]) if run["artifact_id"] else None
    if got is None:
        raise not_found("artifact")
    sha, data = got
    return Response(data, media_type="application/gzip", headers={"X-Artifact-SHA256": sha})


@router.post("/v1/runners/{runner_id}/runs/{run_id}/started", responses=_ERRS)
def started(runner_id: str, run_id: str, body: EpochBody, request: Request,
            token_id: str = Depends(require_runner_of)) -> dict[str, Any]:
    core = core_of(request.app)
    core.store.mark_started(run_id, body.epoch, runner_id)
    run = core.store.get_run(run_id)
    if run:
        core.notifier.notify(strategy_topic(run["strategy_id"]))
    return {"ok": True}


_STREAMS = frozenset({"stdout", "stderr", "system"})
MAX_LOG_BATCH = 100_000

# "system": lines the runner itself adds (rate-limit notices, exit reasons).
_STREAM_CODES = {"o": "stdout", "e": "stderr", "s": "system"}


def _bad(field: str, message: str) -> ApiError:
    return ApiError(422, "validation_error", message, {"field": field})


def _parse_logs(raw: bytes) -> tuple[int, LogColumns]:
    """Validate a log batch by hand: pydantic per line costs more than the insert.

    Two shapes are accepted: the columnar one the runner sends
    (``{epoch, first_seq, ts: [...], streams: "oeo…", lines: [...], partial: [i…]}``)
    and a list of records (``{epoch, lines: [{seq, ts, stream, line, partial?}]}``).
    """
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "request body is not valid JSON", {"field": "body"}) from None
    if not isinstance(body, dict):
        raise _bad("body", "body must be a JSON object")
    epoch, lines = body.get("epoch"), body.get("lines")
    if type(epoch) is not int or not 0 <= epoch <= INT64:
        raise _bad("epoch", "epoch must be an integer")
    if not isinstance(lines, list) or len(lines) > MAX_LOG_BATCH:
        raise _bad("lines", f"lines must be a list of at most {MAX_LOG_BATCH}")
    if "first_seq" in body:
        if set(body) - {"epoch", "first_seq", "ts", "streams", "lines", "partial"}:
            raise _bad("body", "unknown fields in a columnar log batch")
        first, ts, streams, partial = body["first_seq"], body.get("ts"), body.get("streams"), body.get("partial", [])
        n = len(lines)
        if type(first) is not int or not 1 <= first <= INT64 - n:
            raise _bad("first_seq", "first_seq must be an integer >= 1")
        if not isinstance(ts, list) or len(ts) != n or not all(type(x) in (float, int) for x in ts):
            raise _bad("ts", "ts must be a list of numbers, one per line")
        if not isinstance(streams, str) or len(streams) != n or not set(streams) <= _STREAM_CODES.keys():
            raise _bad("streams", "streams must be a string of 'o'/'e'/'s', one per line")
        if not all(type(x) is str for x in lines):
            raise _bad("lines", "lines must be strings")
        if not isinstance(partial, list) or not all(type(i) is int and 0 <= i < n for i in partial):
            raise _bad("partial", "partial must list line indexes")
        if not _storable_batch(lines):
            lines = _storable(lines)
        return epoch, LogColumns(first, ts, [_STREAM_CODES[c] for c in streams], lines, partial)
    if set(body) - {"epoch", "lines"}:
        raise _bad("body", "body must be {epoch, lines}")
    for i, x in enumerate(lines):
        if not (isinstance(x, dict) and type(x.get("seq")) is int and 1 <= x["seq"] <= INT64 - len(lines)
                and type(x.get("ts")) in (int, float) and x.get("stream") in _STREAMS
                and isinstance(x.get("line"), str) and type(x.get("partial", False)) is bool
                and len(x) <= 5):
            raise _bad(f"lines.{i}", f"lines.{i} is not a log record")
        if x["seq"] != lines[0]["seq"] + i:
            raise _bad(f"lines.{i}", "records must have consecutive seq values")
    cols = LogColumns.from_records(lines)
    if not _storable_batch(cols.lines):
        cols = LogColumns(cols.first_seq, cols.ts, cols.streams, _storable(cols.lines), cols.partial)
    return epoch, cols


def _storable_batch(lines: list[str]) -> bool:
    """Whether every line is text a database can hold, checked at C speed for the batch:
    no NUL (PostgreSQL text cannot hold it), no lone surrogate (not UTF-8).  For ASCII
    lines, the usual case, this is one join and one memchr."""
    joined = "".join(lines)
    if "\0" in joined:
        return False
    if joined.isascii():
        return True
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable(lines: list[str]) -> list[str]:
    """Lines a database can hold: NUL and lone surrogates become U+FFFD.  Only called
    for a batch that has one (see _storable_batch)."""
    out = []
    for x in lines:
        x = x.replace("\0", "\ufffd")
        if not x.isascii():
            x = x.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        out.append(x)
    return out


@router.post("/v1/runners/{runner_id}/runs/{run_id}/logs", responses={
    400: {"description": "the body is not JSON"}, **_ERRS}, openapi_extra={"requestBody": {"content": {
        "application/json": {"schema": inline_schema(Logs)}}, "required": True}})
async def logs(runner_id: str, run_id: str, request: Request,
               token_id: str = Depends(require_runner_of)) -> dict[str, Any]:
    """Store a batch of a run's lines.  The run must be this runner's, at this epoch, but
    need not be current: lines of a run that ended or was re-queued are history, kept."""
    core = core_of(request.app)
    epoch, cols = _parse_logs(await request.body())
    nxt = await anyio.to_thread.run_sync(core.store.append_log_columns, run_id, epoch, runner_id, cols)
    core.notifier.notify(logs_topic(run_id))
    if cols.lines:
        run = await anyio.to_thread.run_sync(_run_owner, core, run_id)
        if run is not None:
            # A resent batch (lost response) is stored once; publish it once too.
            start = max(0, run["published"] + 1 - cols.first_seq)
            run["published"] = nxt - 1
            log_stream.publish(core, run, cols, start)
    return {"next_seq": nxt}


_OWNERS: dict[str, dict[str, Any]] = {}


def _run_owner(core: Core, run_id: str) -> dict[str, Any] | None:
    hit = _OWNERS.get(run_id)
    if hit is None:
        run = core.store.get_run(run_id)
        if run is None:
            return None
        if len(_OWNERS) > 10_000:
            _OWNERS.clear()
        hit = _OWNERS[run_id] = {"run_id": run_id, "strategy_id": run["strategy_id"],
                                 "client_id": run["client_id"], "published": 0}
    return hit


@router.post("/v1/runners/{runner_id}/runs/{run_id}/exit", responses=_ERRS)
def exit_report(runner_id: str, run_id: str, body: Exit, request: Request,
                token_id: str = Depends(require_runner_of)) -> dict[str, Any]:
    core = core_of(request.app)
    run = core.store.get_run(run_id)
    out = core.store.report_exit(run_id, body.epoch, runner_id, ExitReport(
        code=body.code, signal=body.signal, oom=body.oom,
        # The reason may quote the strategy's output: NUL cannot be stored (pydantic refuses lone surrogates).
        reason=body.reason.replace("\0", "\ufffd") if body.reason else body.reason,
        peak_rss_bytes=body.peak_rss_bytes, cpu_seconds=body.cpu_seconds))
    core.auth.invalidate()
    core.notifier.notify(QUEUE)
    core.notifier.notify(logs_topic(run_id))
    if run:
        core.notifier.notify(strategy_topic(run["strategy_id"]))
    return out
