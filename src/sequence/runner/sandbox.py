"""Start one run: workspace → environment → cgroup → sandboxed process → log pump.

:class:`Sandbox` is what the runner daemon holds (one per runner).  It probes
the host once (:meth:`Sandbox.check`) and then starts runs::

    sandbox = Sandbox(SandboxConfig(data_dir=Path("/var/lib/sequence-runner")))
    report = sandbox.check()          # IsolationReport; log report.render() loudly
    handle = await sandbox.start(spec, sink)
    ...                               # heartbeats: handle.running, handle.usage()
    info = await handle.stop(grace_s=10)    # or: info = await handle.wait()
    await handle.flush_logs(timeout=30)
    await handle.close()              # removes the run dir (keeps undelivered spool)

Without bubblewrap (or with ``bubblewrap=False``) runs still work — plain
process in its own session, bare interpreter through a venv skeleton, rlimits —
and without cgroups there is no memory / pids enforcement; the report says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import resource
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sequence.runner.cgroups import CgroupLayout, RunCgroup, cleanup_stale
from sequence.runner.environment import RunIdentity, build_environment
from sequence.runner.errors import InterpreterNotFound, SandboxError
from sequence.runner.isolation import (
    WORKSPACE,
    IsolationReport,
    Protection,
    bwrap_argv,
    cgroup_protections,
    probe_bwrap,
    probe_cgroups,
    write_identity_files,
)
from sequence.runner.logpump import LogPump, LogPumpConfig, LogSink, spool_files
from sequence.runner.process import RunHandle, launch
from sequence.runner.runtime import Runtime, bare_venv, discover_runtime
from sequence.runner.workspace import (
    MANIFEST_RELPATH,
    ArchiveLimits,
    RunDir,
    Workspace,
    prepare_workspace,
    remove_tree,
)

__all__ = ["RunSpec", "Sandbox", "SandboxConfig"]

log = logging.getLogger("sequence.runner")

SUPERVISOR_SOURCE = Path(__file__).with_name("supervisor.py").read_text()
MIN_MEMORY_MB = 32


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs, as claimed from the coordinator."""

    run_id: str
    strategy_id: str
    client_id: str
    api_key: str = field(repr=False)
    api_url: str
    is_sandbox: bool
    artifact: bytes = field(repr=False)
    artifact_sha256: str
    entrypoint: str = "main.py"
    manifest: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)  # [hosted.env] with --env merged
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    memory_mb: int = 512


@dataclass(frozen=True)
class SandboxConfig:
    data_dir: Path  # runner-private; runs live in data_dir/runs/<run_id>
    runtime: str | None = None  # interpreter path; None = discover (CPython 3.12 preferred)
    bubblewrap: bool | None = None  # None: use if it works; True: required; False: never
    cgroups: bool | None = None  # same tri-state for memory/pids cgroups
    bwrap_path: str = "bwrap"
    cgroup_group: str = "sequence"  # subgroup of the runner's own cgroup
    pids_max: int = 256
    nofile: int = 1024
    tmp_mb: int | None = None  # sandbox /tmp size; default memory_mb
    hostname: str = "sequence"
    extra_ro_binds: tuple[Path, ...] = ()  # e.g. libraries of a custom runtime
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)
    logs: LogPumpConfig = field(default_factory=LogPumpConfig)
    environ: Mapping[str, str] | None = None  # for runtime discovery (PATH, HOME, PYENV_ROOT)

    def __post_init__(self) -> None:
        if self.pids_max < 8:
            raise ValueError("pids_max must be at least 8")
        if self.nofile < 64:
            raise ValueError("nofile must be at least 64")

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"


class Sandbox:
    """Starts runs on this host with the best isolation it offers."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._report: IsolationReport | None = None
        self._runtime: Runtime | None = None
        self._bwrap: str | None = None
        self._layout: CgroupLayout | None = None
        self._venv_python: Path | None = None
        # Tags this runner's cgroups (one runner per data dir), see cleanup_stale.
        self.cgroup_owner = hashlib.sha256(str(config.data_dir.resolve()).encode()).hexdigest()[:12]
        self._lock = threading.Lock()

    # -- host probe ------------------------------------------------------------

    @property
    def report(self) -> IsolationReport | None:
        return self._report

    def check(self, *, refresh: bool = False) -> IsolationReport:
        """Probe interpreter, bubblewrap and cgroups (once; *refresh* to redo)."""
        with self._lock:
            if self._report is not None and not refresh:
                return self._report
            return self._check()

    def _check(self) -> IsolationReport:
        cfg = self.config
        active: list[Protection] = []
        missing: list[Protection] = []
        notes: list[str] = []
        errors: list[str] = []
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

        runtime: Runtime | None = None
        try:
            runtime = discover_runtime(cfg.runtime, environ=cfg.environ)
        except InterpreterNotFound as exc:
            errors.append(str(exc))
        if runtime is not None and runtime.version[:2] != (3, 12):
            notes.append(
                f"runtime is Python {runtime.version_str}; the product runs 3.12 (python:3.12-slim)"
            )

        bwrap_ok = False
        if cfg.bubblewrap is False:
            why = "disabled by configuration"
        elif runtime is None:
            why = "no runtime interpreter to probe with"
        else:
            problem = probe_bwrap(cfg.bwrap_path, runtime, cfg.data_dir / "probe")
            bwrap_ok = problem is None
            why = problem or ""
        if bwrap_ok:
            self._bwrap = shutil.which(cfg.bwrap_path)
            active += [
                Protection(
                    "filesystem",
                    "private mount namespace: /usr, the runtime, minimal /etc, /workspace",
                ),
                Protection(
                    "pid-namespace",
                    "own PID namespace; host processes (and the runner) are invisible",
                ),
                Protection("ipc-uts-namespaces", "own IPC and UTS namespaces"),
                Protection("capabilities", "all capabilities dropped, no_new_privs"),
                Protection(
                    "bare-interpreter", "runtime site-packages masked by empty read-only tmpfs; -s"
                ),
                Protection("die-with-parent", "the sandbox is SIGKILLed if the runner dies"),
            ]
        else:
            self._bwrap = None
            what = f"bubblewrap: {why}"
            missing += [
                Protection("filesystem", f"{what}; the strategy can read any file the runner can"),
                Protection(
                    "pid-namespace",
                    f"{what}; the strategy sees host processes (and /proc/<pid>/environ)",
                ),
                Protection("ipc-uts-namespaces", what),
                Protection(
                    "capabilities", f"{what}; the strategy runs with the runner's privileges"
                ),
            ]
            active.append(
                Protection(
                    "bare-interpreter",
                    "launched through an empty venv (site-packages not on sys.path)",
                )
            )
            active.append(
                Protection("die-with-parent", "PR_SET_PDEATHSIG on the supervisor (best effort)")
            )
            if cfg.bubblewrap is True:
                errors.append(f"bubblewrap is required but unusable: {why}")

        layout: CgroupLayout | None = None
        if cfg.cgroups is False:
            cg_why = "cgroups disabled by configuration"
        else:
            layout, problems = probe_cgroups(cfg.cgroup_group, self.cgroup_owner)
            notes += [p for p in problems if layout is not None]
            cg_why = "; ".join(problems) if layout is None else ""
            if layout is None and cfg.cgroups is True:
                errors.append(f"cgroups are required but unusable: {cg_why}")
        self._layout = layout
        cg_active, cg_missing = cgroup_protections(layout, cg_why)
        active += cg_active
        missing += cg_missing
        active += [
            Protection("environment", "built from nothing; the runner's environment never leaks"),
            Protection("session", "own session and process group; stop signals the whole run"),
            Protection("rlimits", f"core dumps off, {cfg.nofile} open files"),
        ]
        notes.append(
            "network: host network by design (strategies reach the coordinator on loopback)"
        )

        self._runtime = runtime
        if runtime is not None and not bwrap_ok:
            try:
                self._venv_python = bare_venv(runtime, cfg.data_dir / "runtime")
            except OSError as exc:
                errors.append(f"cannot create the bare interpreter environment: {exc}")
        has_cg = layout is not None and layout.has_memory and layout.has_pids
        level: Literal["full", "partial", "none"] = "partial"
        if bwrap_ok and has_cg:
            level = "full"
        elif not bwrap_ok and layout is None:
            level = "none"
        self._report = IsolationReport(
            level=level,
            can_run=runtime is not None and not errors,
            runtime=runtime.describe() if runtime is not None else None,
            active=tuple(active),
            missing=tuple(missing),
            notes=tuple(notes),
            errors=tuple(errors),
            bubblewrap=bwrap_ok,
            cgroup_version=layout.version if layout is not None else None,
        )
        if level != "full":
            log.warning("strategy isolation is %s:\n%s", level.upper(), self._report.render())
        return self._report

    # -- runs ----------------------------------------------------------------

    async def start(self, spec: RunSpec, sink: LogSink) -> RunHandle:
        """Prepare and start one run; raises a ``RunnerError`` (its text is the exit reason)."""
        report = self._report
        if report is None:
            report = await asyncio.to_thread(self.check)
        if not report.can_run or self._runtime is None:
            raise SandboxError(
                "strategies cannot run on this host: " + "; ".join(report.errors or ("no runtime",))
            )
        if not isinstance(spec.memory_mb, int) or spec.memory_mb < MIN_MEMORY_MB:
            raise SandboxError(
                f"memory_mb must be an integer >= {MIN_MEMORY_MB}, got {spec.memory_mb!r}"
            )
        cfg = self.config
        ws = await asyncio.to_thread(
            prepare_workspace,
            cfg.runs_dir,
            spec.run_id,
            spec.artifact,
            spec.artifact_sha256,
            entrypoint=spec.entrypoint,
            manifest=spec.manifest,
            limits=cfg.archive,
        )
        cgroup: RunCgroup | None = None
        try:
            if self._layout is not None:
                cgroup = RunCgroup(self._layout, spec.run_id, owner=self.cgroup_owner)
                cgroup.create(memory_bytes=spec.memory_mb << 20, pids_max=cfg.pids_max)
            handle = await self._launch(spec, ws, cgroup, sink)
        except BaseException:
            if cgroup is not None:
                cgroup.kill()
                cgroup.remove()
            remove_tree(ws.run_dir.root)
            raise
        return handle

    def _rlimits(self, memory_mb: int) -> list[tuple[int, tuple[int, int]]]:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        nofile = (
            self.config.nofile
            if hard == resource.RLIM_INFINITY or os.getuid() == 0
            else min(self.config.nofile, hard)
        )
        out = [(resource.RLIMIT_CORE, (0, 0)), (resource.RLIMIT_NOFILE, (nofile, nofile))]
        if self._layout is None or not self._layout.has_memory:
            # No memory cgroup: a per-process data-segment cap is the only floor
            # left (MemoryError instead of an OOM kill; not reported as oom).
            data = memory_mb << 20
            out.append((resource.RLIMIT_DATA, (data, data)))
        return out

    async def _launch(
        self, spec: RunSpec, ws: Workspace, cgroup: RunCgroup | None, sink: LogSink
    ) -> RunHandle:
        cfg = self.config
        rt = self._runtime
        assert rt is not None
        identity = RunIdentity(
            api_key=spec.api_key,
            api_url=spec.api_url,
            strategy_id=spec.strategy_id,
            run_id=spec.run_id,
            client_id=spec.client_id,
            is_sandbox=spec.is_sandbox,
        )
        run_dir = ws.run_dir
        if self._bwrap is not None:
            env = build_environment(
                identity,
                manifest_path=f"{WORKSPACE}/{MANIFEST_RELPATH}",
                home=WORKSPACE,
                env=spec.env,
                secrets=spec.secrets,
                path_prefix=str(rt.executable.parent),
            )
            passwd, group = write_identity_files(run_dir.sandbox)
            opts = bwrap_argv(
                bwrap=self._bwrap,
                runtime=rt,
                workspace=ws.path,
                passwd=passwd,
                group=group,
                tmp_bytes=(cfg.tmp_mb or spec.memory_mb) << 20,
                hostname=cfg.hostname,
                extra_ro=cfg.extra_ro_binds,
            )
            exe = str(rt.executable)

            def argv(status_fd: int) -> list[str]:
                return [
                    *opts,
                    "--",
                    exe,
                    "-I",
                    "-S",
                    "-c",
                    SUPERVISOR_SOURCE,
                    str(status_fd),
                    "-",
                    "--",
                    exe,
                    "-u",
                    "-s",
                    ws.entrypoint,
                ]

            cwd = run_dir.root
        else:
            venv = self._venv_python
            assert venv is not None
            env = build_environment(
                identity,
                manifest_path=str(ws.manifest_path),
                home=str(ws.path),
                env=spec.env,
                secrets=spec.secrets,
                path_prefix=str(venv.parent),
                tmpdir=str(run_dir.tmp),
            )
            runner_pid = os.getpid()

            def argv(status_fd: int) -> list[str]:
                return [
                    str(rt.executable),
                    "-I",
                    "-S",
                    "-c",
                    SUPERVISOR_SOURCE,
                    str(status_fd),
                    str(runner_pid),
                    "--",
                    str(venv),
                    "-u",
                    "-s",
                    ws.entrypoint,
                ]

            cwd = ws.path

        def after_exit() -> None:
            for p in (run_dir.workspace, run_dir.sandbox, run_dir.tmp):
                remove_tree(p)

        def cleanup(keep_logs: bool) -> None:
            if keep_logs:
                after_exit()
            else:
                remove_tree(run_dir.root)

        pump = LogPump(sink, spool_dir=run_dir.logs, config=cfg.logs)
        try:
            return await launch(
                run_id=spec.run_id,
                build_argv=argv,
                env=env,
                cwd=cwd,
                pump=pump,
                cgroup=cgroup,
                rlimits=self._rlimits(spec.memory_mb),
                sandboxed=self._bwrap is not None,
                memory_mb=spec.memory_mb,
                on_exit=[after_exit],
                cleanup=cleanup,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await pump.aclose()
            raise

    # -- housekeeping --------------------------------------------------------

    def pending_spools(self) -> dict[str, Path]:
        """Runs whose undelivered logs were left on disk: run_id -> logs dir."""
        out: dict[str, Path] = {}
        try:
            entries = list(self.config.runs_dir.iterdir())
        except OSError:
            return out
        for d in entries:
            logs = RunDir(d).logs
            if spool_files(logs):
                out[d.name] = logs
        return out

    def cleanup_stale(self, active_run_ids: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """After a runner restart: kill this runner's leftover run cgroups and
        remove run directories not in *active_run_ids* (undelivered spools are
        kept).  Other runners on the host (other data dirs) are never touched."""
        cleaned: list[str] = []
        if self._layout is not None:
            cleaned += cleanup_stale(self._layout, self.cgroup_owner, active_run_ids)
        try:
            entries = list(self.config.runs_dir.iterdir())
        except OSError:
            entries = []
        for d in entries:
            if d.name in active_run_ids:
                continue
            rd = RunDir(d)
            if spool_files(rd.logs):
                for p in (rd.workspace, rd.sandbox, rd.tmp):
                    remove_tree(p)
            else:
                remove_tree(d)
            if d.name not in cleaned:
                cleaned.append(d.name)
        return cleaned
