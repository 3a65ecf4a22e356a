"""/v1/runners/* — the internal claim protocol between runners and the coordinator: HTTP only.

See docs/runner-protocol.md. Each route checks the runner's token and calls
:mod:`sequence.api.services.claims` (where a claim is decided) or
:mod:`sequence.api.services.logs` (log ingest). Every write names
(run_id, epoch); a write whose epoch is not the run's current one is rejected
with 409 ``stale_run``. The wire shapes are :mod:`sequence.protocol`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from sequence.api.auth import require_runner, require_runner_of
from sequence.api.openapi import inline_schema
from sequence.api.services import claims, layers, logs
from sequence.api.state import core_of
from sequence.protocol import INT64_MAX, MAX_LOG_BATCH, WATCH_KEEPALIVE_S, ExitReport

router = APIRouter(tags=["runners"], include_in_schema=True)
log = logging.getLogger("sequence.coordinator")

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
    # The runner heartbeats when idle too (older runners did not, and send no "beats"): claims then require
    # a recent heartbeat.
    beats: bool = False


class RunRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str = Field(max_length=64)
    epoch: int = Field(ge=0, le=INT64_MAX)
    # Optional, for the dashboard: the run's memory now and CPU time so far.
    rss_bytes: int | None = Field(None, ge=0, le=INT64_MAX)
    cpu_seconds: float | None = Field(None, ge=0, le=1e12)


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runs: list[RunRef] = Field(default_factory=list, max_length=10_000)


class EpochBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epoch: int = Field(ge=0, le=INT64_MAX)


class Exit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epoch: int = Field(ge=0, le=INT64_MAX)
    code: int | None = Field(None, ge=-(2**31), le=2**31 - 1)
    signal: int | None = Field(None, ge=0, le=2**31 - 1)
    oom: bool = False
    reason: str | None = Field(None, max_length=2000)
    peak_rss_bytes: int | None = Field(None, ge=0, le=INT64_MAX)
    cpu_seconds: float | None = Field(None, ge=0, le=1e12)
    runner_shutdown: bool = False


class LogBatch(BaseModel):
    """The columnar log batch, for /openapi.json only: the route checks it by hand
    (:func:`sequence.protocol.decode_logs`), as pydantic per line costs more than the insert."""
    model_config = ConfigDict(extra="forbid")
    epoch: int = Field(ge=0, le=INT64_MAX)
    first_seq: int = Field(ge=1, le=INT64_MAX)
    ts: list[float] = Field(max_length=MAX_LOG_BATCH)
    streams: str = Field(pattern="^[oes]*$", description="one of o (stdout), e (stderr), s (system) per line")
    lines: list[str] = Field(max_length=MAX_LOG_BATCH)
    partial: list[int] = Field(default_factory=list, description="indexes of lines continued in the next one")


@router.post("/v1/runners/register")
def register(body: Register, request: Request, token_id: str = Depends(require_runner)) -> dict[str, Any]:
    return claims.register(core_of(request.app), token_id, body.name, body.region, body.capacity, body.isolation)


@router.post("/v1/runners/{runner_id}/poll")
async def poll(runner_id: str, body: Poll, request: Request, token_id: str = Depends(require_runner)) -> dict[str, Any]:
    """Long-poll: returns as soon as there is a run to start or a run to stop."""
    answer = await claims.poll(core_of(request.app), runner_id, token_id, body.free_slots, body.stopping,
                               body.wait_s, request.is_disconnected, beats=body.beats)
    return cast(dict[str, Any], answer)


# Lease renewals come before everything else: they get threads of their own rather than a
# place in the shared pool, where a burst of log uploads (a runner delivering its spool after
# an outage) could keep them waiting until a lease lapsed.
_LEASES = ThreadPoolExecutor(max_workers=2, thread_name_prefix="leases")


async def _lease_runner(request: Request, runner_id: str) -> str:
    """:func:`require_runner_of`, on the lease threads (checked before the body, as everywhere)."""
    return await asyncio.get_running_loop().run_in_executor(_LEASES, require_runner_of, request, runner_id)


@router.post("/v1/runners/{runner_id}/heartbeat", responses=_ERRS)
async def heartbeat(runner_id: str, body: Heartbeat, request: Request,
                    token_id: str = Depends(_lease_runner)) -> dict[str, Any]:
    core = core_of(request.app)
    usage = {r.run_id: (r.rss_bytes, r.cpu_seconds) for r in body.runs if r.rss_bytes is not None}
    runs = [(r.run_id, r.epoch) for r in body.runs]
    return await asyncio.get_running_loop().run_in_executor(
        _LEASES, lambda: claims.heartbeat(core, runner_id, runs, usage))


@router.get("/v1/runners/{runner_id}/watch", responses={
    200: {"description": "a first line `{\"watch\": epoch}`, then a newline every "
                         f"{WATCH_KEEPALIVE_S} s for as long as the runner holds it open",
          "content": {"application/x-ndjson": {}}}, **_ERRS})
async def watch(runner_id: str, request: Request, token_id: str = Depends(_lease_runner)) -> StreamingResponse:
    """The runner's watch connection: held open for as long as the runner lives. A close is
    the fast failover signal (see :data:`sequence.protocol.WATCH_GRACE_S`)."""
    core = core_of(request.app)
    loop = asyncio.get_running_loop()
    epoch = await loop.run_in_executor(_LEASES, claims.open_watch, core, runner_id)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b'{"watch": %d}\n' % epoch  # sent after open_watch committed: the runner may stop fencing
            while not claims.stopping(core):  # a stopping coordinator ends its watches (and shortens nothing)
                await asyncio.sleep(WATCH_KEEPALIVE_S)
                yield b"\n"
        finally:
            # Not awaited: this runs while the response is being cancelled (the client left).
            fut = loop.run_in_executor(_LEASES, claims.watch_closed, core, runner_id, epoch)
            fut.add_done_callback(_log_failure)

    return StreamingResponse(body(), media_type="application/x-ndjson",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _log_failure(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("could not record a runner's closed watch: %s", fut.exception())


@router.get("/v1/runners/{runner_id}/runs/{run_id}/artifact", responses={
    200: {"description": "the artifact (tar.gz)", "content": {"application/gzip": {}}}, **_ERRS})
def artifact(runner_id: str, run_id: str, request: Request, epoch: int = Query(ge=0, le=INT64_MAX),
             token_id: str = Depends(require_runner_of)) -> Response:
    sha, data = claims.artifact(core_of(request.app), runner_id, run_id, epoch)
    return Response(data, media_type="application/gzip", headers={"X-Artifact-SHA256": sha})


@router.get("/v1/runners/{runner_id}/runs/{run_id}/wheels/{sha256}", responses={
    200: {"description": "one wheel of the run's dependency layer", "content": {"application/octet-stream": {}}},
    **_ERRS})
def wheel(runner_id: str, run_id: str, sha256: str, request: Request, epoch: int = Query(ge=0, le=INT64_MAX),
          token_id: str = Depends(require_runner_of)) -> Response:
    data = layers.runner_wheel(core_of(request.app), runner_id, run_id, epoch, sha256)
    return Response(data, media_type="application/octet-stream")


@router.post("/v1/runners/{runner_id}/runs/{run_id}/started", responses=_ERRS)
def started(runner_id: str, run_id: str, body: EpochBody, request: Request,
            token_id: str = Depends(require_runner_of)) -> dict[str, Any]:
    claims.started(core_of(request.app), runner_id, run_id, body.epoch)
    return {"ok": True}


@router.post("/v1/runners/{runner_id}/runs/{run_id}/logs", responses={
    400: {"description": "the body is not JSON"}, **_ERRS}, openapi_extra={"requestBody": {"content": {
        "application/json": {"schema": inline_schema(LogBatch)}}, "required": True}})
async def store_logs(runner_id: str, run_id: str, request: Request,
                     token_id: str = Depends(require_runner_of)) -> dict[str, Any]:
    """Store a batch of a run's lines.  The run must be this runner's, at this epoch, but
    need not be current: lines of a run that ended or was re-queued are history, kept."""
    return {"next_seq": await logs.ingest(core_of(request.app), runner_id, run_id, await request.body())}


@router.post("/v1/runners/{runner_id}/runs/{run_id}/exit", responses=_ERRS)
def exit_report(runner_id: str, run_id: str, body: Exit, request: Request,
                token_id: str = Depends(require_runner_of)) -> dict[str, Any]:
    report: ExitReport = {"code": body.code, "signal": body.signal, "oom": body.oom, "reason": body.reason,
                          "peak_rss_bytes": body.peak_rss_bytes, "cpu_seconds": body.cpu_seconds,
                          "runner_shutdown": body.runner_shutdown}
    return claims.exited(core_of(request.app), runner_id, run_id, body.epoch, report)
