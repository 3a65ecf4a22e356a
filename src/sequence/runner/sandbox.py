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

With bubblewrap, a run is: an unprivileged uid (a per-slot host uid when the
runner is root) in its own user, PID, network, IPC, UTS, mount and cgroup
namespaces, under a seccomp allowlist, with a tmpfs ``/workspace`` the
supervisor fills from the artifact, and a network namespace whose only ways
out are the runner's API forwarder and (if the strategy allows it) its
egress proxy — see isolation.py, network.py and supervisor.py.

Without bubblewrap (or with ``bubblewrap=False``) runs still work — plain
process in its own session, bare interpreter through a venv skeleton, rlimits —
and without cgroups there is no memory / pids enforcement; the report says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from sequence.runner.cgroups import CgroupLayout, RunCgroup, cleanup_stale
from sequence.runner.environment import RunIdentity, build_environment
from sequence.runner.errors import InterpreterNotFound, SandboxError
from sequence.runner.isolation import (
    WORKSPACE,
    BwrapFeatures,
    DataFds,
    IsolationReport,
    Protection,
    bwrap_argv,
    bwrap_features,
    cgroup_protections,
    data_fd,
    identity_files,
    probe_bwrap,
    probe_cgroups,
)
from sequence.runner.layers import LAYER_MOUNT, LayerCache
from sequence.runner.logs import LogPump, LogPumpConfig, LogSink, spool_files
from sequence.runner.network import EgressPolicy, RunNetwork, sandbox_ports
from sequence.runner.process import RunHandle, launch
from sequence.runner.runtime import Runtime, bare_venv, discover_runtime, mirror_runtime
from sequence.runner.seccomp import SeccompUnavailable, filter_bytes
from sequence.runner.workspace import (
    MANIFEST_RELPATH,
    ArchiveLimits,
    RunDir,
    Workspace,
    check_run_id,
    prepare_workspace,
    remove_tree,
    verify_sha256,
)

__all__ = ["RunSpec", "Sandbox", "SandboxConfig"]

log = logging.getLogger("sequence.runner")

SUPERVISOR_SOURCE = Path(__file__).with_name("supervisor.py").read_text()
MIN_MEMORY_MB = 32
MIN_DISK_MB = 16
# The workspace tmpfs is a little larger than the quota: the supervisor stops
# the run once usage passes the quota; the slack bounds what can be written
# between two checks.
_DISK_SLACK = 1.0625
_HASH_INLINE_BYTES = 256 << 10  # hashed on the loop below this (a thread hop costs more)
DEFAULT_RUNTIME_CACHE = Path("/var/lib/sequence/runtimes")
#: Root runners' sandbox uids come in blocks of UID_BLOCK, one block a runner, UID_BLOCKS in all.
UID_BLOCK = 4096
UID_BLOCKS = 4096
#: Where root runners on one host claim their uid blocks (an flock each; tmpfs, gone at boot).
UID_LOCK_DIR = Path("/run/sequence/uid-blocks")


def claim_uid_block(preferred: int, lock_dir: Path = UID_LOCK_DIR) -> tuple[int, int | None]:
    """The first uid block from *preferred* on that no other live runner on this host holds,
    and the descriptor whose lock holds it (closed, or its process gone, it is free again).

    Two runners whose data dirs hash to one block gave their strategies the same host uids
    (1 pair in 4,096), so the kernel's per-user counts (inotify instances and watches, key
    quotas, message-queue bytes, user namespaces) were shared between them. Where the lock
    dir cannot be used, the preferred block and ``None``, as before."""
    try:
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for i in range(UID_BLOCKS):
            block = (preferred + i) % UID_BLOCKS
            fd = os.open(lock_dir / f"{block}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held by another runner (or this process's other sandbox)
                os.close(fd)
                continue
            return block, fd
    except OSError as exc:
        log.warning("sandbox: cannot claim a uid block in %s (%s): using block %d unclaimed", lock_dir, exc, preferred)
        return preferred, None
    raise SandboxError(f"no free sandbox uid block: {UID_BLOCKS} root runners hold one each on this host")


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
    disk_mb: int = 1024  # /workspace quota (sandboxed runs)
    egress: str = "public"  # "public": the egress proxy; "none": only the Sequence API
    # The run's dependency layer, unpacked (runner/layers.py): bound read-only at
    # LAYER_MOUNT and put on PYTHONPATH. None: the standard library and the SDK only.
    layer_path: Path | None = None
    log_rate_lines: int = 0  # per-run log rate limit (0 = none), lines/s
    log_burst_lines: int = 0
    # Written beside the log spool (run.json): what a later runner process needs
    # to deliver spooled logs (the daemon puts run_id, epoch, runner_id there).
    record: Mapping[str, Any] = field(default_factory=dict)
    # The run's first fencing deadline (CLOCK_MONOTONIC): the supervisor kills the strategy
    # past it unless told a later one (RunHandle.renew). None: no such watchdog.
    lease_deadline: float | None = None


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
    # Root runners: where the world-readable runtime mirror lives (a neutral
    # system path; it is visible inside the sandbox in mountinfo).
    runtime_cache: Path | None = None
    # Where dependency layers are unpacked; default: beside the runtime mirror for root
    # runners (a neutral, world-readable path), <data_dir>/layers otherwise.
    layer_cache: Path | None = None
    # Root runners drop each run to its own host uid: uid_base + a per-runner
    # block of 4096 (from the data dir; the next free one if another runner on this host
    # holds it, see claim_uid_block) + the slot.
    uid_base: int = 1_200_000_000
    seccomp: bool | None = None  # None: use if libseccomp works; True: required; False: never
    egress: bool = True  # False: no strategy gets egress, whatever it asks for
    egress_allow: str | None = None  # extra networks the egress proxy may reach (CIDRs)

    def __post_init__(self) -> None:
        # Every path the runner keeps is absolute: runs, spools, the bare venv and
        # the runtime are reached from other working directories.
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().absolute())
        for name in ("runtime_cache", "layer_cache"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)).expanduser().absolute())
        if self.runtime is not None and os.sep in self.runtime:
            object.__setattr__(self, "runtime", os.path.abspath(os.path.expanduser(self.runtime)))
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
        self._features: BwrapFeatures | None = None
        self._mirrors: dict[Path, Path] = {}
        self._seccomp: bytes | None = None
        # Tags this runner's cgroups (one runner per data dir), see cleanup_stale.
        self.cgroup_owner = hashlib.sha256(str(config.data_dir.resolve()).encode()).hexdigest()[:12]
        self._lock = threading.Lock()
        self._root = os.geteuid() == 0
        block = int(self.cgroup_owner, 16) % UID_BLOCKS
        if self._root:  # a block of its own among the runners of this host
            block, fd = claim_uid_block(block, UID_LOCK_DIR)
            if fd is not None:
                weakref.finalize(self, os.close, fd)
        self.uid_block = block
        self._uid_first = config.uid_base + block * UID_BLOCK
        self._uids: set[int] = set()
        self._egress_policy = EgressPolicy.parse(config.egress_allow)
        #: Dependency layers (runner/layers.py); built by check() once the runtime is known.
        self.layers = LayerCache(self.layer_root, None)

    @property
    def layer_root(self) -> Path:
        cfg = self.config
        if cfg.layer_cache is not None:
            return cfg.layer_cache
        if self._root:
            return (cfg.runtime_cache or DEFAULT_RUNTIME_CACHE).parent / "layers"
        return cfg.data_dir / "layers"

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
        seccomp: bytes | None = None
        seccomp_why = ""
        if cfg.seccomp is not False:
            try:
                seccomp = filter_bytes()
            except SeccompUnavailable as exc:
                seccomp_why = str(exc)
                if cfg.seccomp is True:
                    errors.append(f"seccomp is required but unusable: {exc}")
        else:
            seccomp_why = "disabled by configuration"
        features = bwrap_features(cfg.bwrap_path) if cfg.bubblewrap is not False else None
        mirrors: dict[Path, Path] = {}
        if cfg.bubblewrap is False:
            why = "disabled by configuration"
        elif runtime is None:
            why = "no runtime interpreter to probe with"
        elif features is None:
            why = f"bubblewrap ({cfg.bwrap_path}) is not installed"
        else:
            problem = None
            if self._root:
                try:
                    mirrors = mirror_runtime(runtime, cfg.runtime_cache or DEFAULT_RUNTIME_CACHE)
                except OSError as exc:
                    problem = f"cannot build the runtime mirror: {exc}"
            problem = problem or probe_bwrap(
                features, runtime, mirrors, uid=self._uid_first if self._root else None,
                seccomp=seccomp,
            )
            bwrap_ok = problem is None
            why = problem or ""
        if bwrap_ok:
            assert features is not None
            self._bwrap = features.path
            host_uid = (
                f"per-run host uids from {self._uid_first}" if self._root else f"host uid {os.getuid()}"
            )
            active += [
                Protection(
                    "user-namespace",
                    f"uid 1000 in its own user namespace, mapped to an unprivileged {host_uid}; "
                    "no capabilities, no_new_privs"
                    + (", no nested user namespaces" if features.disable_userns else ""),
                ),
                Protection(
                    "filesystem",
                    "private mount namespace: /usr, the runtime, minimal /etc, a tmpfs /workspace "
                    "(disk_mb quota); no host path of the runner is mounted",
                ),
                Protection(
                    "pid-namespace",
                    "own PID namespace with a non-dumpable supervisor as pid 1; host processes "
                    "(and the runner) are invisible",
                ),
                Protection(
                    "network-namespace",
                    "own network namespace with only loopback: the Sequence API through the "
                    "runner's forwarder, public egress only through its filtering proxy",
                ),
                Protection("ipc-uts-namespaces", "own IPC and UTS namespaces"),
                Protection("proc", "/proc is a new, read-only proc mount; /proc/sys cannot be written"),
                Protection(
                    "bare-interpreter", "runtime site-packages masked (empty, read-only); -s"
                ),
                Protection("die-with-parent", "the sandbox is SIGKILLed if the runner dies"),
            ]
            if seccomp is not None:
                active.append(
                    Protection(
                        "seccomp",
                        "system-call allowlist at least as strict as Docker's default "
                        "(no ptrace, keyrings, unshare/setns, bpf, perf, mount, modules, clock changes)",
                    )
                )
            else:
                missing.append(Protection("seccomp", seccomp_why or "libseccomp is unavailable"))
        else:
            self._bwrap = None
            what = f"bubblewrap: {why}"
            missing += [
                Protection("filesystem", f"{what}; the strategy can read any file the runner can"),
                Protection(
                    "pid-namespace",
                    f"{what}; the strategy sees host processes (and /proc/<pid>/environ)",
                ),
                Protection(
                    "network-namespace",
                    f"{what}; the strategy shares the host network (loopback services included)",
                ),
                Protection("ipc-uts-namespaces", what),
                Protection(
                    "user-namespace", f"{what}; the strategy runs with the runner's privileges"
                ),
                Protection("seccomp", f"{what}; no system-call filter"),
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
        self._features = features if bwrap_ok else None
        self._mirrors = mirrors
        self._seccomp = seccomp if bwrap_ok else None

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
        if not cfg.egress:
            notes.append("egress: disabled on this runner for every strategy")
        elif cfg.egress_allow:
            notes.append(f"egress: besides public addresses, the proxy also reaches {cfg.egress_allow}")

        self._runtime = runtime
        self.layers.target = runtime.wheel_target if runtime is not None else None
        self.layers.python = runtime.executable if runtime is not None else None
        if runtime is not None and not bwrap_ok:
            try:
                self._venv_python = bare_venv(runtime, cfg.data_dir / "runtime")
            except OSError as exc:
                errors.append(f"cannot create the bare interpreter environment: {exc}")
        has_cg = layout is not None and layout.has_memory and layout.has_pids
        level: Literal["full", "partial", "none"] = "partial"
        if bwrap_ok and has_cg and self._seccomp is not None:
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
            wheel_target=runtime.wheel_target.to_dict() if runtime is not None else None,
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
        if not isinstance(spec.disk_mb, int) or spec.disk_mb < MIN_DISK_MB:
            raise SandboxError(f"disk_mb must be an integer >= {MIN_DISK_MB}, got {spec.disk_mb!r}")
        cfg = self.config
        if self._bwrap is not None:
            # The supervisor unpacks the artifact inside the sandbox, into the
            # workspace tmpfs; here only what the host needs: the hash, and a
            # run dir for the log spool.
            if len(spec.artifact) <= _HASH_INLINE_BYTES:
                verify_sha256(spec.artifact, spec.artifact_sha256)  # well under a millisecond
            else:
                await asyncio.to_thread(verify_sha256, spec.artifact, spec.artifact_sha256)
            run_dir = RunDir(cfg.runs_dir / check_run_id(spec.run_id))
            cfg.runs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            remove_tree(run_dir.root)
            run_dir.root.mkdir(mode=0o700)
            run_dir.logs.mkdir(mode=0o700)
            ws = Workspace(run_dir=run_dir, entrypoint=_entrypoint(spec.entrypoint), members=0,
                           unpacked_bytes=0)
        else:
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
        _write_run_record(ws.run_dir, spec)
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

    def _rlimits(self, memory_mb: int) -> list[str]:
        """Supervisor options: the limits it sets on itself before starting the strategy."""
        out = ["--rlimit", "core=0", "--rlimit", f"nofile={self.config.nofile}"]
        if self._layout is None or not self._layout.has_memory:
            # No memory cgroup: a per-process data-segment cap is the only floor
            # left (MemoryError instead of an OOM kill; not reported as oom).
            out += ["--rlimit", f"data={memory_mb << 20}"]
        return out

    def _alloc_uid(self) -> int | None:
        """A host uid no other live run of this runner uses (root runners only)."""
        if not self._root:
            return None
        with self._lock:
            for uid in range(self._uid_first, self._uid_first + UID_BLOCK):
                if uid not in self._uids:
                    self._uids.add(uid)
                    return uid
        raise SandboxError("no free sandbox uid: more than 4096 runs on one runner")

    def _release_uid(self, uid: int | None) -> None:
        if uid is not None:
            with self._lock:
                self._uids.discard(uid)

    async def _launch(
        self, spec: RunSpec, ws: Workspace, cgroup: RunCgroup | None, sink: LogSink
    ) -> RunHandle:
        cfg = self.config
        rt = self._runtime
        assert rt is not None
        run_dir = ws.run_dir
        pump = LogPump(
            sink,
            spool_dir=run_dir.logs,
            config=replace(cfg.logs, rate_lines=spec.log_rate_lines, burst_lines=spec.log_burst_lines),
            mask=[*spec.secrets.values(), spec.api_key],
        )
        if self._bwrap is None:
            # The first line of every unsandboxed run says so (the operator chose it).
            pump.system(
                "this run is NOT isolated: the runner has no bubblewrap (started with --unsandboxed), so the "
                "strategy runs with the runner's privileges, can read its files and reach its network"
            )
        child_fds: list[int] = []
        confine: tuple[int, int] | None = None  # our ends: bwrap's info, the supervisor's go
        lease_w: int | None = None  # our end of the supervisor's --lease
        lease_opts: list[str] = []
        if spec.lease_deadline is not None:
            lease_r, lease_w = os.pipe()
            os.set_blocking(lease_w, False)
            os.write(lease_w, f"{spec.lease_deadline:.3f}\n".encode())  # there before it starts
            child_fds.append(lease_r)
            lease_opts = ["--lease", str(lease_r)]
        limits = self._rlimits(spec.memory_mb)
        uid: int | None = None
        network: tuple[RunNetwork, socket.socket] | None = None
        try:
            if self._bwrap is not None and self._features is not None:
                api_port, egress_port = sandbox_ports(spec.api_url)
                egress = cfg.egress and spec.egress == "public"
                identity = _identity(spec, f"http://127.0.0.1:{api_port}")
                env = build_environment(
                    identity,
                    manifest_path=f"{WORKSPACE}/{MANIFEST_RELPATH}",
                    home=WORKSPACE,
                    env=spec.env,
                    secrets=spec.secrets,
                    path_prefix=str(rt.executable.parent),
                    proxy=f"http://127.0.0.1:{egress_port}" if egress else None,
                    pythonpath=LAYER_MOUNT if spec.layer_path is not None else None,
                )
                fds = DataFds(
                    files={k: data_fd(k, v) for k, v in identity_files(cfg.hostname).items()},
                    seccomp=data_fd("seccomp", self._seccomp) if self._seccomp is not None else None,
                )
                child_fds += fds.all
                artifact_fd = data_fd("artifact", spec.artifact)
                manifest_fd = data_fd("manifest", _manifest_bytes(spec.manifest))
                child_fds += [artifact_fd, manifest_fd]
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                ctrl_fd = theirs.detach()
                child_fds.append(ctrl_fd)
                net = RunNetwork(
                    run_id=spec.run_id,
                    api_url=spec.api_url,
                    egress=self._egress_policy if egress else None,
                    on_notice=pump.system,
                )
                network = (net, ours)
                disk = spec.disk_mb << 20
                opts = bwrap_argv(
                    features=self._features,
                    runtime=rt,
                    mirrors=self._mirrors,
                    fds=fds,
                    workspace_bytes=int(disk * _DISK_SLACK),
                    tmp_bytes=(cfg.tmp_mb or spec.memory_mb) << 20,
                    hostname=cfg.hostname,
                    extra_ro=cfg.extra_ro_binds,
                    binds=[(spec.layer_path, LAYER_MOUNT)] if spec.layer_path is not None else [],
                )
                if cgroup is not None:
                    # Confined while it starts: bwrap names the sandbox's first process on
                    # --info-fd, the runner moves it (and bwrap) into the cgroup, then the
                    # supervisor, which waits on --go, goes on (see process.launch).
                    info_r, info_w = os.pipe()
                    go_r, go_w = os.pipe()
                    confine = (info_r, go_w)
                    child_fds += [info_w, go_r]
                    opts += ["--info-fd", str(info_w)]
                exe = str(rt.executable)
                sup_opts = [
                    *(["--go", str(go_r)] if confine is not None else []), *lease_opts,
                    "--artifact", str(artifact_fd), "--manifest", str(manifest_fd),
                    "--workspace", WORKSPACE, "--entrypoint", ws.entrypoint,
                    "--max-members", str(cfg.archive.max_members),
                    "--max-bytes", str(cfg.archive.max_bytes),
                    "--ctrl", str(ctrl_fd), "--listen", f"api:{api_port}",
                    *(["--listen", f"egress:{egress_port}"] if egress else []),
                    "--quota", str(disk),
                ]  # fmt: skip

                def argv(status_fd: int) -> list[str]:
                    return [
                        *opts, "--", exe, "-I", "-S", "-c", SUPERVISOR_SOURCE,
                        "--status", str(status_fd), *sup_opts, *limits,
                        "--", exe, "-u", "-s", ws.entrypoint,
                    ]  # fmt: skip

                cwd = Path("/")
                uid = self._alloc_uid()
            else:
                venv = self._venv_python
                assert venv is not None
                env = build_environment(
                    _identity(spec, spec.api_url),
                    manifest_path=str(ws.manifest_path),
                    home=str(ws.path),
                    env=spec.env,
                    secrets=spec.secrets,
                    path_prefix=str(venv.parent),
                    tmpdir=str(run_dir.tmp),
                    pythonpath=str(spec.layer_path) if spec.layer_path is not None else None,
                )
                runner_pid = os.getpid()

                def argv(status_fd: int) -> list[str]:
                    return [
                        str(rt.executable), "-I", "-S", "-c", SUPERVISOR_SOURCE,
                        "--status", str(status_fd), "--parent", str(runner_pid), *lease_opts, *limits,
                        "--", str(venv), "-u", "-s", ws.entrypoint,
                    ]  # fmt: skip

                cwd = ws.path
        except BaseException:
            for fd in [*child_fds, *(confine or ()), *([lease_w] if lease_w is not None else [])]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if network is not None:
                network[1].close()
            with contextlib.suppress(Exception):
                await pump.aclose()
            raise

        def after_exit() -> None:
            self._release_uid(uid)
            for p in (run_dir.workspace, run_dir.sandbox, run_dir.tmp):
                remove_tree(p)

        def cleanup(keep_logs: bool) -> None:
            # Keep the run dir while any spool is left (the pump's, or batches the
            # daemon's uploader gave back): a later runner process delivers them.
            if keep_logs or spool_files(run_dir.logs):
                after_exit()
            else:
                remove_tree(run_dir.root)

        try:
            return await launch(
                run_id=spec.run_id,
                build_argv=argv,
                env=env,
                cwd=cwd,
                pump=pump,
                cgroup=cgroup,
                sandboxed=self._bwrap is not None,
                memory_mb=spec.memory_mb,
                on_exit=[after_exit],
                cleanup=cleanup,
                child_fds=child_fds,
                user=uid,
                network=network,
                confine=confine,
                lease_fd=lease_w,
            )
        except BaseException:
            if lease_w is not None:
                with contextlib.suppress(OSError):
                    os.close(lease_w)
            self._release_uid(uid)
            with contextlib.suppress(Exception):
                await pump.aclose()
            raise

    # -- housekeeping --------------------------------------------------------

    def pending_spools(self) -> dict[str, tuple[Path, dict[str, Any]]]:
        """Runs whose undelivered logs were left on disk: run_id -> (logs dir, run record)."""
        out: dict[str, tuple[Path, dict[str, Any]]] = {}
        try:
            entries = list(self.config.runs_dir.iterdir())
        except OSError:
            return out
        for d in entries:
            logs = RunDir(d).logs
            if spool_files(logs):
                try:
                    record = json.loads((d / RUN_RECORD).read_text())
                except (OSError, ValueError):
                    record = {}
                out[d.name] = (logs, record if isinstance(record, dict) else {})
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


def _identity(spec: RunSpec, api_url: str) -> RunIdentity:
    return RunIdentity(
        api_key=spec.api_key,
        api_url=api_url,
        strategy_id=spec.strategy_id,
        run_id=spec.run_id,
        client_id=spec.client_id,
        is_sandbox=spec.is_sandbox,
    )


def _entrypoint(entrypoint: str) -> str:
    parts = [p for p in (entrypoint or "").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or entrypoint.startswith("/") or parts[0] == ".sequence":
        raise SandboxError(f"entrypoint {entrypoint!r} is not a valid path inside the artifact")
    return "/".join(parts)


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(dict(manifest or {}), ensure_ascii=False, indent=2).encode()
    except (TypeError, ValueError) as exc:
        raise SandboxError(f"manifest is not a JSON object: {exc}") from exc


RUN_RECORD = "run.json"


def _write_run_record(run_dir: RunDir, spec: RunSpec) -> None:
    """What a later runner process needs to deliver this run's spooled logs."""
    data = {"run_id": spec.run_id, "strategy_id": spec.strategy_id, **dict(spec.record)}
    (run_dir.root / RUN_RECORD).write_text(json.dumps(data))
