"""Where a claim is decided, and the rest of a run's life as its runner reports it.

A runner long-polls (:func:`poll`); each free slot is one :func:`claim_once`:
``Store.claim`` picks the oldest runnable strategy the runner may take in one
transaction (bumps the epoch, inserts the run, mints its run-scoped key), and
this module turns the row into the :class:`~sequence.protocol.ClaimSpec` the
runner starts — or, when the strategy cannot run (its key was revoked, its
secrets cannot be unsealed), ends the run at once with the reason. Heartbeats
renew leases (:func:`heartbeat`); :func:`started` and :func:`exited` record
what the runner reports. Every write names ``(run_id, epoch)``; the store
refuses a stale one (409 ``stale_run``). See docs/runner-protocol.md.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from sqlalchemy.engine import Connection

from sequence import protocol
from sequence.api.errors import not_found, stale_run
from sequence.api.notify import QUEUE, USAGE, logs_topic, runner_topic, strategy_topic
from sequence.api.services import layers
from sequence.api.state import Core
from sequence.secrets import SealingError, sealed_in, strategy_secrets_label
from sequence.store.store import ExitReport

log = logging.getLogger("sequence.coordinator")


def runner_or_404(core: Core, runner_id: str, token_id: str) -> dict[str, Any]:
    """The runner this token registered as ``runner_id``."""
    r = core.store.get_runner(runner_id)
    if r is None or r["token_id"] != token_id:
        raise not_found("runner")
    return r


def register(core: Core, token_id: str, name: str, region: str, capacity: int,
             isolation: dict[str, Any]) -> dict[str, Any]:
    """Register a runner; its id and the timings it must keep."""
    rid = core.store.register_runner(token_id, name, region, capacity, isolation)
    return {"runner_id": rid, "heartbeat_seconds": core.settings.heartbeat_seconds,
            "lease_seconds": core.settings.lease_seconds, "api_url": core.settings.api_url}


def claim_spec(core: Core, row: dict[str, Any]) -> protocol.ClaimSpec:
    """What the runner needs to start a claimed run (secrets unsealed here, for it alone)."""
    sid = row["strategy_id"]
    secrets: dict[str, str] = {}
    sealed = sealed_in(row, "secrets")
    if sealed is not None:
        secrets = core.keyring.unseal_json(sealed, strategy_secrets_label(sid))
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
        "artifact_base64": _inline_artifact(core, row),
        "layer": layers.claim_layer(core, row.get("layer_id")),
    }


def _inline_artifact(core: Core, row: dict[str, Any]) -> str | None:
    """A small artifact, for the claim spec itself: the runner starts without fetching it."""
    if not row.get("artifact_id") or (row.get("artifact_size") or 0) > protocol.INLINE_ARTIFACT_MAX:
        return None
    got = core.store.artifact(row["artifact_id"])
    return base64.b64encode(got[1]).decode("ascii") if got is not None else None


def claim_once(core: Core, runner: dict[str, Any], free: int, *, beats: bool = False) -> protocol.ClaimSpec | None:
    """The claim decision: one runnable strategy for this runner, or None."""
    store = core.store

    def mint(conn: Connection, st: Any, run_id: str) -> str:
        mode = "test" if st["is_sandbox"] else "live"
        _row, plaintext = store.create_api_key(st["client_id"], mode, f"run {run_id}", run_id=run_id, conn=conn)
        return plaintext

    row = store.claim(runner["runner_id"], runner["region"].split(","), free, mint_key=mint, beats=beats)
    if row is None:
        return None
    reason = None
    if row.get("api_key_id") and not store.key_is_usable(row["api_key_id"]):
        reason = "the strategy's API key was revoked; redeploy with a valid key"
    else:
        try:
            return claim_spec(core, row)
        except SealingError as exc:
            reason = f"cannot unseal the strategy's secrets: {exc}"
        except layers.LayerGone as exc:
            reason = str(exc)
    store.report_exit(row["run_id"], row["epoch"], runner["runner_id"], ExitReport(code=None, reason=reason))
    return None


def _claims_and_stops(core: Core, runner: dict[str, Any], free: int, stopping: list[str],
                      beats: bool = False) -> tuple[list[protocol.ClaimSpec], list[str]]:
    """Up to *free* claims, then the runner's runs to stop."""
    claims: list[protocol.ClaimSpec] = []
    while free > 0:
        spec = claim_once(core, runner, free, beats=beats)
        if spec is None:
            break
        claims.append(spec)
        free -= 1
    return claims, core.store.pending_stops(runner["runner_id"], stopping)


async def poll(core: Core, runner_id: str, token_id: str, free_slots: int, stopping: list[str], wait_s: float,
               disconnected: Callable[[], Awaitable[bool]], *, beats: bool = False) -> protocol.PollAnswer:
    """Long-poll: ``{"claims": [...], "stop": [...]}`` as soon as there is a run to start
    or to stop, or empty after ``wait_s``. ``disconnected``: whether the runner went away.
    *beats*: the runner heartbeats when idle too, so one whose heartbeats stopped is given no run."""
    arrived = time.monotonic()
    runner = await anyio.to_thread.run_sync(runner_or_404, core, runner_id, token_id)
    deadline = time.monotonic() + wait_s
    while True:
        q_ev = core.notifier.waiter(QUEUE)
        r_ev = core.notifier.waiter(runner_topic(runner_id))
        try:
            # One thread hop for the whole decision: each hop is a turn of a busy loop on the deploy path.
            claims, stops = await anyio.to_thread.run_sync(_claims_and_stops, core, runner, free_slots, stopping,
                                                           beats)
            for spec in claims:
                core.notifier.notify(strategy_topic(spec["strategy_id"]))
            if not claims and not stops:
                await anyio.to_thread.run_sync(core.store.touch_runner, runner_id)
            if claims or stops or time.monotonic() >= deadline:
                return {"claims": claims, "stop": stops, "waited_s": round(time.monotonic() - arrived, 3)}
            timeout = deadline - time.monotonic()
            due = await anyio.to_thread.run_sync(core.store.next_due_restart)
            if due is not None:
                timeout = min(timeout, max(0.0, due - core.store.clock()) + 0.005)
            if await disconnected():
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


def heartbeat(core: Core, runner_id: str, runs: list[tuple[str, int]],
              usage: Mapping[str, tuple[int | None, float | None]] | None = None) -> dict[str, Any]:
    """Renew the leases of the runs the runner still runs; what to do with each.
    ``usage``: run id -> (memory bytes, CPU seconds), kept in memory for the dashboard."""
    actions = core.store.heartbeat(runner_id, runs)
    if usage:
        _record_usage(core, actions, usage)
    return {"runs": actions, "lease_seconds": core.settings.lease_seconds}


def open_watch(core: Core, runner_id: str) -> int:
    """The runner opened its watch: its epoch (and its live leases renewed, :meth:`RunsStore.open_watch`)."""
    return core.store.open_watch(runner_id)


def stopping(core: Core) -> bool:
    """This coordinator is stopping (:meth:`RunsStore.stop_charging_leases` was called)."""
    return core.store.lease_grace_until == float("inf")


def watch_closed(core: Core, runner_id: str, epoch: int) -> None:
    """Watch ``epoch`` of the runner closed: its leases end :data:`~sequence.protocol.WATCH_GRACE_S`
    from now, unless a newer watch is open — or this coordinator is the one stopping (its own
    shutdown closes every watch: the runners did nothing)."""
    if stopping(core):
        return
    n = core.store.watch_closed(runner_id, epoch, protocol.WATCH_GRACE_S)
    if n:
        log.warning("runner %s: its watch connection closed; %d lease(s) end in %.1f s unless it is back",
                    runner_id, n, protocol.WATCH_GRACE_S)


def _record_usage(core: Core, actions: dict[str, str], usage: Mapping[str, tuple[int | None, float | None]]) -> None:
    now = time.monotonic()
    table = core.run_usage
    for run_id, (rss, cpu) in usage.items():
        if actions.get(run_id) not in ("continue", "stop"):
            table.pop(run_id, None)
            continue
        prev = table.get(run_id)
        pct = None
        if prev is not None and cpu is not None and prev.get("cpu_seconds") is not None and now > prev["at"]:
            pct = round(max(0.0, (cpu - prev["cpu_seconds"]) / (now - prev["at"]) * 100.0), 1)
        table[run_id] = {"rss_bytes": rss, "cpu_seconds": cpu, "cpu_percent": pct, "at": now}
    if len(table) > 50_000:  # runs that vanished without an exit report (a lost runner)
        for run_id in [r for r, u in table.items() if now - u["at"] > 60.0]:
            table.pop(run_id, None)
    core.notifier.notify(USAGE)


def artifact(core: Core, runner_id: str, run_id: str, epoch: int) -> tuple[str, bytes]:
    """A current run's bundle, ``(sha256, bytes)``."""
    run = core.store.get_run(run_id) if run_id.isprintable() else None
    if run is None or run["epoch"] != epoch or run["runner_id"] != runner_id or run["ended_at"] is not None:
        raise stale_run(f"run {run_id} epoch {epoch} is not current")
    got = core.store.artifact(run["artifact_id"]) if run["artifact_id"] else None
    if got is None:
        raise not_found("artifact")
    return got


def started(core: Core, runner_id: str, run_id: str, epoch: int) -> None:
    core.store.mark_started(run_id, epoch, runner_id)
    run = core.store.get_run(run_id)
    if run:
        core.notifier.notify(strategy_topic(run["strategy_id"]))


def exited(core: Core, runner_id: str, run_id: str, epoch: int, report: protocol.ExitReport) -> dict[str, Any]:
    """Record how a run ended; the strategy is re-queued, stopped or failed by its policy."""
    run = core.store.get_run(run_id)
    reason = report["reason"]
    out = core.store.report_exit(run_id, epoch, runner_id, ExitReport(
        code=report["code"], signal=report["signal"], oom=report["oom"],
        # The reason may quote the strategy's output: NUL cannot be stored (pydantic refuses lone surrogates).
        reason=reason.replace("\0", "\ufffd") if reason else reason,
        peak_rss_bytes=report.get("peak_rss_bytes"), cpu_seconds=report.get("cpu_seconds"),
        runner_shutdown=bool(report.get("runner_shutdown"))))
    core.auth.invalidate()
    core.run_usage.pop(run_id, None)
    core.notifier.notify(QUEUE)
    core.notifier.notify(logs_topic(run_id))
    if run:
        core.notifier.notify(strategy_topic(run["strategy_id"]))
    if core.trading is not None:  # an ended run's real orders must not keep working
        core.trading.cancel_run_soon(run_id)
    return out
