"""The runner daemon: claim runs, start them in the sandbox, keep their leases,
ship their logs, report their exits — and never let a strategy run twice.

It talks to the coordinator over HTTP only (``client.py``).  Three loops run
concurrently: the **poll** loop long-polls for claims and stop requests, the
**heartbeat** loop renews leases (and fences: a run whose lease could not be
renewed for ``FENCE_FRACTION`` of the lease is killed here before the
coordinator can hand it to another runner), and one **task per run** drives
its life: artifact → sandbox → started → wait → flush logs → exit report.

Overload degrades, it does not collapse.  Lease renewal comes before
everything else: the heartbeat loop runs on its **own thread**, event loop
and HTTP connections, so a main loop busy starting many runs (forking,
unpacking, writing memfds) never delays a renewal — a slow start is not a
lost runner.  And the runner claims only what it can start: at most
``max_starting`` runs are being started at once (the poll asks for no more),
the rest stay queued on the coordinator for this or another runner.

Fencing and outages.  A run whose lease the coordinator could expire must be
dead before it can: the runner kills a run it could not renew for
``FENCE_FRACTION`` of the lease.  A coordinator that is *down* expires
nothing — and after its own start it grants every lease one more period
(store: the reaper's start grace) — so a heartbeat answered by "connection
refused" (:class:`CoordinatorDown`: nothing listens at the coordinator's
address, or a proxy says no replica is up) counts as a renewal: an outage
does not kill strategies.  Timeouts and every other failure do not count
(a partition looks like that), so fencing still holds.  Assumption, in
docs/design.md: a partition drops packets; it does not refuse connections
on the coordinator's behalf.

Logs spool to disk while the coordinator cannot take them, and spools left
by an earlier runner process on this data dir are delivered after start.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sequence.protocol import WATCH_FENCE_S, ClaimSpec, ExitReport
from sequence.runner.client import (
    CoordinatorClient,
    CoordinatorDown,
    CoordinatorError,
    CoordinatorUnavailable,
    Rejected,
    StaleRun,
)
from sequence.runner.errors import RunnerError
from sequence.runner.logs.uploader import LogUploader, deliver_spools
from sequence.runner.process import ExitInfo, RunHandle
from sequence.runner.sandbox import RunSpec, Sandbox

log = logging.getLogger("sequence.runner")

# Runs being started at once (claimed, not yet running): what the runner can start
# without starving itself; the poll asks for no more.
DEFAULT_MAX_STARTING = 8

# Kill a run whose lease we failed to renew for this fraction of the lease:
# well before the coordinator expires it and lets another runner claim it.
FENCE_FRACTION = 0.6
# The supervisor's own deadline (a watchdog for when this process cannot fence: frozen,
# stalled): later than ours, so the runner fences first and says why, and still well
# before the coordinator's lease (1.0) lets another runner start the strategy.
SUPERVISOR_FENCE_FRACTION = 0.8
POLL_WAIT_S = 20.0
# Each heartbeat carries the memory and CPU of at most this many runs, in turn: three
# cgroup files per run every beat cost a 1,000-strategy runner several % of a core, and
# the dashboard's figures need not be fresher than every few beats on such a runner.
USAGE_PER_BEAT = 100
LOG_FLUSH_TIMEOUT_S = 30.0
# How often the lines of ended runs left in a spool (the coordinator was away) are looked for.
SPOOL_SCAN_S = 15.0


@dataclass
class ActiveRun:
    run_id: str
    epoch: int
    strategy_id: str
    name: str
    stop_timeout_s: float
    renewed_at: float
    handle: RunHandle | None = None
    stopping: bool = False
    stale: bool = False  # the coordinator no longer considers this run ours
    shutdown: bool = False  # stopped because this runner is shutting down, not by the user
    start_done: bool = False  # counted out of RunnerDaemon.starting
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    uploader: LogUploader | None = field(default=None, repr=False)


def _usage(runs: list[ActiveRun]) -> dict[str, dict[str, Any]]:
    """Each running run's memory and CPU so far, for the heartbeat (the dashboard shows them)."""
    out: dict[str, dict[str, Any]] = {}
    for r in runs:
        if r.handle is None:
            continue
        try:
            u = r.handle.usage()
        except Exception:  # a run ending under us: no figures this beat
            continue
        if u.get("memory_bytes") is not None:
            out[r.run_id] = {"rss_bytes": u["memory_bytes"], "cpu_seconds": u.get("cpu_seconds")}
    return out


class RunnerDaemon:
    def __init__(self, client: CoordinatorClient, sandbox: Sandbox, *, name: str, region: str,
                 capacity: int, layer_retention_s: float = 7 * 86400.0,
                 max_starting: int = DEFAULT_MAX_STARTING) -> None:
        self.client = client
        self.sandbox = sandbox
        self.name = name
        self.region = region
        self.capacity = capacity
        self.runs: dict[str, ActiveRun] = {}
        self.heartbeat_s = 2.0
        self.lease_s = 15.0
        self._closing = asyncio.Event()
        self._beat_stop = threading.Event()
        self.registered = asyncio.Event()
        self._bg: set[asyncio.Task[Any]] = set()
        self.layer_retention_s = layer_retention_s
        self.max_starting = max(1, max_starting)
        self.starting = 0  # runs claimed and not yet started (or failed to start)
        self._start_slot = asyncio.Event()  # set when a start ends
        self._loop: asyncio.AbstractEventLoop | None = None
        # Since when the watch connection is not held (monotonic; None: held, or never
        # opened, or the coordinator is down). See _watch_loop.
        self._watch_down_since: float | None = None
        self._usage_cursor = 0  # the next run whose usage a heartbeat reports (see USAGE_PER_BEAT)
        self._delivering: set[str] = set()  # runs whose spooled lines a task is delivering

    # ------------------------------------------------------------------ main
    async def run(self, stop: asyncio.Event) -> None:
        report = await asyncio.to_thread(self.sandbox.check)
        if not report.can_run:
            raise RunnerError("strategies cannot run on this host:\n" + report.render())
        if report.level != "full":
            log.warning("runner isolation is %s; missing: %s", report.level.upper(),
                        ", ".join(p.name for p in report.missing))
        spools = await asyncio.to_thread(self._cleanup_previous)
        await self._register(report.to_dict(), stop)
        if stop.is_set():
            return
        if spools:
            self._deliver_spools(spools)
        self._loop = asyncio.get_running_loop()
        poll = asyncio.create_task(self._poll_loop(), name="runner-poll")
        beat = asyncio.create_task(asyncio.to_thread(self._heartbeat_thread), name="runner-heartbeat")
        self._spawn(self._collect_layers_loop())
        self._spawn(self._spool_loop())
        await stop.wait()
        log.info("runner %s shutting down: stopping %d run(s)", self.client.runner_id, len(self.runs))
        self._closing.set()
        poll.cancel()
        for r in list(self.runs.values()):
            r.shutdown = True
            self._request_stop(r)
        tasks = [r.task for r in self.runs.values() if r.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._beat_stop.set()
        for t in (poll, beat):
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def _cleanup_previous(self) -> dict[str, tuple[Path, dict[str, Any]]]:
        """Leftovers of an earlier runner process: its runs died with it (bubblewrap's
        die-with-parent), so their leases will expire; kill leftover cgroups and drop
        run dirs — but keep undelivered log spools, returned for :func:`deliver_spools`."""
        self.sandbox.cleanup_stale(set())
        return self.sandbox.pending_spools()

    async def _register(self, isolation: dict[str, Any], stop: asyncio.Event) -> None:
        delay = 0.2
        while not stop.is_set():
            try:
                info = await self.client.register(self.name, self.region, self.capacity, isolation)
                self.heartbeat_s = float(info["heartbeat_seconds"])
                self.lease_s = float(info["lease_seconds"])
                log.info("registered as %s (region %s, capacity %d)", info["runner_id"], self.region, self.capacity)
                self.registered.set()
                return
            except CoordinatorUnavailable as exc:
                log.warning("coordinator unavailable (%s); retrying in %.1fs", exc, delay)
            await _sleep_or(stop, delay)
            delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------------ loops
    async def _poll_loop(self) -> None:
        delay = 0.2
        while not self._closing.is_set():
            if self.starting >= self.max_starting:
                # Claim only what we can start: wait for a start to end (stops still
                # arrive through the heartbeat's answers meanwhile).
                self._start_slot.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._start_slot.wait(), 1.0)
                continue
            free = min(self.capacity - len(self.runs), self.max_starting - self.starting)
            stopping = [r.run_id for r in self.runs.values() if r.stopping]
            sent_at = time.monotonic()
            try:
                resp = await self.client.poll(max(free, 0), stopping, POLL_WAIT_S)
                delay = 0.2
            except CoordinatorError as exc:
                if isinstance(exc, Rejected) and exc.status == 404:
                    log.error("the coordinator does not know this runner any more; re-registering")
                    await self._register({}, self._closing)
                else:
                    log.warning("poll failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay + random.uniform(0, delay / 2))
                delay = min(delay * 2, 5.0)
                continue
            # The claims' leases began no earlier than this (our clock): a poll answered late
            # (a partition that healed) carries claims the coordinator may have given away since.
            granted_at = sent_at + float(resp.get("waited_s") or 0.0)
            for spec in resp["claims"]:
                self._start(spec, granted_at)
            for run_id in resp["stop"]:
                r = self.runs.get(run_id)
                if r is not None:
                    self._request_stop(r)

    def _deliver_spools(self, spools: dict[str, tuple[Path, dict[str, Any]]]) -> None:
        todo = {k: v for k, v in spools.items() if k not in self._delivering}
        if not todo:
            return
        self._delivering.update(todo)

        async def deliver() -> None:
            try:
                await deliver_spools(self.client, todo, self._closing)
            finally:
                self._delivering.difference_update(todo)

        self._spawn(deliver())

    async def _spool_loop(self, every: float = SPOOL_SCAN_S) -> None:
        """Deliver the lines of ended runs that were spooled because the coordinator was away
        when they ended (they waited for the next runner process, however long this one lived)."""
        while not self._closing.is_set():
            await _sleep_or(self._closing, every)
            if self._closing.is_set():
                return
            try:
                spools = await asyncio.to_thread(self.sandbox.pending_spools)
            except Exception:
                log.exception("could not look for spooled log lines")
                continue
            self._deliver_spools({k: v for k, v in spools.items() if k not in self.runs})

    async def _collect_layers_loop(self, every: float = 600.0) -> None:
        """Remove cached dependency layers no run used for the retention period (at start, then every 10 min)."""
        while not self._closing.is_set():
            try:
                await asyncio.to_thread(self.sandbox.layers.collect, self.layer_retention_s)
            except Exception:
                log.exception("layer collection failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), every)

    def _heartbeat_thread(self) -> None:
        """Lease renewal on its own thread and event loop (see the module docstring)."""
        try:
            asyncio.run(self._heartbeat_loop())
        finally:
            if not self._beat_stop.is_set():
                # Nothing renews or fences any more: fail safe, as if every lease were lost.
                log.critical("lease renewal ended unexpectedly: killing every run (self-fencing)")
                for r in list(self.runs.values()):
                    r.stale = True
                    if r.handle is not None:
                        with contextlib.suppress(Exception):
                            r.handle.kill()

    async def _heartbeat_loop(self) -> None:
        client = self.client.clone()
        # Fencing does not wait for a heartbeat to fail: a renewal can hang for a third of
        # the lease, so the deadline is checked on its own, four times a second.
        fencer = asyncio.create_task(self._fence_ticker())
        watcher = asyncio.create_task(self._watch_loop(client))
        try:
            next_at = time.monotonic() + self.heartbeat_s
            while not self._beat_stop.is_set():
                now = time.monotonic()
                if now < next_at:
                    await asyncio.sleep(min(0.25, next_at - now))
                    continue
                next_at = now + self.heartbeat_s
                try:
                    await self._beat(client)
                except Exception:  # a bug must not end lease renewal (every run would be lost)
                    log.exception("heartbeat failed")
        finally:
            for task in (watcher, fencer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await client.aclose()

    async def _watch_loop(self, client: CoordinatorClient) -> None:
        """Hold the watch connection (on the heartbeat thread), and open a new one at once when
        it ends. Its close is the coordinator's fast failover signal: it ends this runner's
        leases WATCH_GRACE_S after; so a watch down for WATCH_FENCE_S without a new one open
        kills this runner's runs first (:meth:`_fence`). "Connection refused" is not counted:
        nothing is serving, so nothing can shorten a lease (as for heartbeats)."""
        delay = 0.05

        def opened(_epoch: int) -> None:
            nonlocal delay
            self._watch_down_since = None
            delay = 0.05

        def down() -> None:
            self._watch_down_since = time.monotonic()

        while not self._beat_stop.is_set():
            try:
                await client.watch(opened, down)
            except CoordinatorDown:
                self._watch_down_since = None
            except CoordinatorError as exc:
                log.warning("watch connection: %s", exc)
            except Exception:  # keep watching (and fencing) whatever went wrong
                log.exception("watch connection failed")
            with contextlib.suppress(Exception):  # the ticker logs it
                self._fence(time.monotonic())
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _fence_ticker(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            try:
                self._fence(time.monotonic())
            except Exception:  # fencing must go on
                log.exception("fencing check failed")

    async def _beat(self, client: CoordinatorClient) -> None:
        """One renewal (on the heartbeat thread): only thread-safe moves here — attribute
        writes, signals to kill, and the main loop called for anything else."""
        runs = list(self.runs.values())
        # An idle runner beats too: the coordinator gives runs only to runners whose
        # heartbeats arrive (a poll left open by a frozen runner must not take one).
        sent_at = time.monotonic()
        try:
            # A busy coordinator that answers late still renews (from sent_at); only what
            # cannot be answered within a third of the lease counts as a failure.
            actions = await client.heartbeat([(r.run_id, r.epoch) for r in runs],
                                             timeout=max(1.0, self.lease_s / 3), usage=_usage(self._usage_turn(runs)))
        except CoordinatorDown as exc:
            # Nothing serves the coordinator: nobody can expire these leases, and
            # when it is back it grants them one more lease period. Not charged.
            log.warning("heartbeat: the coordinator is down (%s); runs keep going", exc)
            for r in runs:
                r.renewed_at = max(r.renewed_at, sent_at)
                self._tell_supervisor(r)
            self._fence(time.monotonic())
            return
        except CoordinatorError as exc:
            log.warning("heartbeat failed: %s", exc)
            self._fence(time.monotonic())
            return
        for r in runs:
            act = actions.get(r.run_id)
            if act in ("continue", "stop"):
                r.renewed_at = max(r.renewed_at, sent_at)
                self._tell_supervisor(r)
            if act == "stop":
                self._on_main(self._request_stop, r)
            elif act == "kill":
                log.warning("run %s is no longer ours (stale); killing it", r.run_id)
                r.stale = True
                if r.handle is not None:
                    r.handle.kill()
        self._fence(time.monotonic())

    def _supervisor_deadline(self, r: ActiveRun) -> float:
        return r.renewed_at + self.lease_s * SUPERVISOR_FENCE_FRACTION

    def _tell_supervisor(self, r: ActiveRun) -> None:
        """The run's supervisor kills the strategy at this deadline unless told a later one."""
        handle = r.handle
        if handle is not None and not r.stale:
            handle.renew(self._supervisor_deadline(r))

    def _usage_turn(self, runs: list[ActiveRun]) -> list[ActiveRun]:
        """The runs whose usage this beat reports: all of them up to USAGE_PER_BEAT, else the next slice."""
        if len(runs) <= USAGE_PER_BEAT:
            return runs
        start = self._usage_cursor % len(runs)
        self._usage_cursor = start + USAGE_PER_BEAT
        return (runs[start:] + runs[:start])[:USAGE_PER_BEAT]

    def _on_main(self, fn: Any, *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(fn, *args)

    def _fence(self, now: float) -> None:
        """Self-fencing: kill runs whose lease may lapse before we can renew it — the lease
        itself, or the one a closed watch connection shortened (see :meth:`_watch_loop`)."""
        down = self._watch_down_since
        watch_lost = down is not None and now - down > WATCH_FENCE_S
        # A snapshot: this runs on the heartbeat thread while the main loop adds and drops runs
        # (iterating the dict itself raised "changed size during iteration" with 1,000 runs).
        for r in list(self.runs.values()):
            if r.stale:
                continue
            if now - r.renewed_at > self.lease_s * FENCE_FRACTION:
                log.error("cannot renew the lease of run %s for %.1fs: killing it (self-fencing)",
                          r.run_id, now - r.renewed_at)
            elif watch_lost:
                log.error("the watch connection is down for %.1fs: killing run %s (self-fencing; the "
                          "coordinator ends its lease soon)", now - down, r.run_id)  # type: ignore[operator]
            else:
                continue
            r.stale = True
            if r.handle is not None:
                r.handle.kill()

    # ------------------------------------------------------------------ runs
    def _start(self, spec: ClaimSpec, granted_at: float) -> None:
        late = time.monotonic() - granted_at
        if late > self.lease_s * FENCE_FRACTION:
            # Its lease may have lapsed and the strategy run elsewhere already: starting it
            # would be a second copy until our next heartbeat said "kill". Its lease lapses.
            log.warning("the claim of run %s (%s) arrived %.1fs after it was made: not starting it (its lease "
                        "may have moved on)", spec.get("run_id"), spec.get("name"), late)
            return
        report = self.sandbox.report
        if report is not None and report.level != "full":
            log.warning("claimed run %s (%s) with %s isolation; missing: %s", spec.get("run_id"), spec.get("name"),
                        report.level.upper(), ", ".join(p.name for p in report.missing) or "-")
        r = ActiveRun(run_id=spec["run_id"], epoch=int(spec["epoch"]), strategy_id=spec["strategy_id"],
                      name=spec.get("name", ""), stop_timeout_s=float(spec.get("stop_timeout_s", 10.0)),
                      renewed_at=granted_at)
        self.runs[r.run_id] = r
        self.starting += 1
        r.task = asyncio.create_task(self._drive(r, spec), name=f"run-{r.run_id}")

    def _started(self, r: ActiveRun) -> None:
        """The run's start ended (started or not): a start slot is free again. Once per run."""
        if not r.start_done:
            r.start_done = True
            self.starting -= 1
            self._start_slot.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)  # keep a reference until it is done
        task.add_done_callback(self._bg.discard)

    def _request_stop(self, r: ActiveRun) -> None:
        if r.stopping:
            return
        r.stopping = True
        log.info("stopping run %s (%s): SIGTERM, then SIGKILL after %.0fs", r.run_id, r.name, r.stop_timeout_s)
        if r.handle is not None:
            self._spawn(r.handle.stop(r.stop_timeout_s))

    async def _drive(self, r: ActiveRun, spec: ClaimSpec) -> None:
        handle: RunHandle | None = None
        layer_id: str | None = None
        try:
            artifact = _inline_artifact(spec)
            if artifact is None:
                artifact, _sha = await self._retry(lambda: self.client.artifact(r.run_id, r.epoch), r)
            layer_path = None
            if spec.get("layer"):
                layer = spec["layer"]
                assert layer is not None

                async def fetch(sha: str) -> bytes:
                    data: bytes = await self._retry(lambda: self.client.wheel(r.run_id, r.epoch, sha), r)
                    return data

                layer_path = await self.sandbox.layers.ensure(layer, fetch)
                layer_id = str(layer["layer_id"])
                self.sandbox.layers.acquire(layer_id)
            rs = RunSpec(run_id=r.run_id, strategy_id=r.strategy_id, client_id=spec["client_id"],
                         api_key=spec["api_key"], api_url=spec["api_url"], is_sandbox=bool(spec["is_sandbox"]),
                         artifact=artifact, artifact_sha256=spec["artifact_sha256"], layer_path=layer_path,
                         entrypoint=spec["entrypoint"], manifest=spec.get("manifest") or {},
                         env=spec.get("env") or {}, secrets=spec.get("secrets") or {},
                         memory_mb=int(spec.get("memory_mb", 512)),
                         disk_mb=int(spec.get("disk_mb") or 1024),
                         egress=str(spec.get("egress") or "public"),
                         log_rate_lines=int(spec.get("log_rate_lines") or 0),
                         log_burst_lines=int(spec.get("log_burst_lines") or 0),
                         record={"epoch": r.epoch, "runner_id": self.client.runner_id},
                         lease_deadline=self._supervisor_deadline(r))
            handle = await self.sandbox.start(rs, self._sink(r))
            r.handle = handle
            self._tell_supervisor(r)  # renewals made while it started
            self._started(r)
            if r.stopping:
                self._spawn(handle.stop(r.stop_timeout_s))
            elif r.stale:
                handle.kill()
            with contextlib.suppress(CoordinatorError):
                await self.client.started(r.run_id, r.epoch)
            info = await handle.wait()
            report = _exit_report(info, shutdown=r.shutdown)
            # The last line of the run's log says why it ended (logs --follow shows it).
            handle.pump.system(f"run ended: {report['reason']}")
            # Logs are history: delivered even for a run that is no longer ours.
            # When the runner shuts down, the coordinator may be down too: the
            # spool keeps what cannot go now, and the next runner delivers it.
            flush_s = 5.0 if (r.stale or self._closing.is_set()) else LOG_FLUSH_TIMEOUT_S
            if await handle.flush_logs(flush_s) and r.uploader is not None:
                await r.uploader.drain(flush_s)
            if not r.stale:
                await self._report(r, report, quick=self._closing.is_set())
        except StaleRun:
            r.stale = True
            log.warning("run %s became stale; dropping it", r.run_id)
        except RunnerError as exc:
            log.error("run %s could not start: %s", r.run_id, exc)
            await self._report(r, {"code": None, "signal": None, "oom": False, "reason": str(exc)[:1900]})
        except Exception as exc:  # a bug here must not take the daemon down
            log.exception("run %s failed in the runner", r.run_id)
            await self._report(r, {"code": None, "signal": None, "oom": False,
                                   "reason": f"runner error: {type(exc).__name__}"})
        finally:
            self._started(r)
            if layer_id is not None:
                self.sandbox.layers.release(layer_id)
            if r.uploader is not None:
                # Batches the uploader holds go back to the spool, ahead of the pump's.
                await r.uploader.aclose(self.sandbox.config.runs_dir / r.run_id / "logs")
            if handle is not None:
                with contextlib.suppress(Exception):
                    await handle.close(log_timeout=0.0)
            self.runs.pop(r.run_id, None)

    async def _retry(self, call: Any, r: ActiveRun) -> Any:
        delay = 0.1
        while True:
            try:
                return await call()
            except CoordinatorUnavailable:
                if r.stale or time.monotonic() - r.renewed_at > self.lease_s * FENCE_FRACTION:
                    raise StaleRun("coordinator unreachable for too long") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _report(self, r: ActiveRun, report: ExitReport, *, quick: bool = False) -> None:
        if r.stale:
            return
        delay = 0.1
        deadline = time.monotonic() + (5.0 if quick else self.lease_s * 4)
        said = False
        while not r.stale:
            try:
                await self.client.exit(r.run_id, r.epoch, report)
                log.info("run %s (%s) ended: %s", r.run_id, r.name, report.get("reason"))
                return
            except (StaleRun, Rejected) as exc:
                log.warning("exit report for run %s refused: %s", r.run_id, exc)
                return
            except CoordinatorDown:
                # Nothing serves the coordinator, so nothing can expire the lease: keep the run
                # (its heartbeats renew it when the coordinator is back) and say how it ended
                # then. Giving up let the lease lapse after a long outage, and a strategy that
                # had exited 0 ran again from the start.
                if quick and time.monotonic() >= deadline:
                    break
                if not said and time.monotonic() >= deadline:
                    log.warning("run %s ended; the coordinator is down: its exit is reported when it is back",
                                r.run_id)
                    said = True
            except CoordinatorUnavailable:
                if time.monotonic() >= deadline:  # no answer (a partition?): fencing decides
                    break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        log.error("could not report the exit of run %s; its lease will expire", r.run_id)

    def _sink(self, r: ActiveRun) -> LogUploader:
        r.uploader = LogUploader(self.client, r.run_id, r.epoch)
        return r.uploader


def _inline_artifact(spec: ClaimSpec) -> bytes | None:
    """The artifact the claim carried (small ones do), or None: fetch it. Its hash is checked
    by the sandbox like a fetched one's; text that is not base64 is fetched instead."""
    text = spec.get("artifact_base64")
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        log.warning("run %s: the claim's artifact is not valid base64; fetching it", spec.get("run_id"))
        return None


def _exit_report(info: ExitInfo, *, shutdown: bool) -> ExitReport:
    out: ExitReport = {"code": info.code, "signal": info.signal, "oom": info.oom, "reason": info.reason[:1900],
           "peak_rss_bytes": info.peak_rss_bytes, "cpu_seconds": info.cpu_seconds}
    if shutdown:
        # Not the user's stop: report a failure so the strategy is re-queued on
        # another runner (a user stop that raced this still ends `stopped`).
        out["code"] = None
        out["signal"] = info.signal or signal.SIGTERM
        out["reason"] = "runner shut down: the run was stopped, and restarts on another runner"
        out["runner_shutdown"] = True
    return out


async def _sleep_or(ev: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ev.wait(), timeout=seconds)


@contextlib.contextmanager
def stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set *stop* for the duration of the block."""
    sigs = (signal.SIGTERM, signal.SIGINT)
    for s in sigs:
        loop.add_signal_handler(s, stop.set)
    try:
        yield
    finally:
        for s in sigs:
            loop.remove_signal_handler(s)


def default_name() -> str:
    return f"{socket.gethostname()}-{random.randrange(16**4):04x}"
