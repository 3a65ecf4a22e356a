"""Process control for one run: spawn behind a gate, stop, wait, account.

Process tree of a sandboxed run (host view)::

    runner ── sh gate ⇒ exec bwrap (outer, unprivileged uid) ── supervisor (pid 1 of the run's pid ns)
                                                                    └── strategy: python -u -s main.py

The gate runs as the run's sandbox uid when the runner is root (``user=``).
Unsandboxed, the gate execs the supervisor directly.  The gate (``/bin/sh``)
is started in a new session and blocks on a pipe until the runner has moved
it into the run's cgroup; only then does anything of the sandbox run, so no
allocation escapes the limits.  (rlimits are set by the supervisor on itself
— lowering needs no privilege, and a root runner may lack CAP_SYS_RESOURCE
to prlimit a process of another uid.)  No ``preexec_fn`` is used
(unsafe with threads); the child is spawned from the event-loop thread,
which matters because bubblewrap's ``--die-with-parent`` (and the
supervisor's PR_SET_PDEATHSIG) fire when the *spawning thread* exits.

Exit status: the supervisor writes the strategy's exact wait status to a
pipe (``exit N`` / ``signal N``), because bubblewrap folds "killed by
signal N" into exit code 128+N.  Without that line (the supervisor itself was
killed) the bwrap convention 128+N is read as signal N.

Asyncio only: :func:`launch` and every :class:`RunHandle` method run on the
loop thread.  Waiting uses a pidfd (``loop.add_reader``), with a
``waitid(WNOWAIT)`` thread as the fallback on kernels without pidfds.  Do not
combine with an asyncio child watcher that reaps *all* children.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from sequence.runner.cgroups import RunCgroup
from sequence.runner.errors import SandboxError
from sequence.runner.logs import LogPump
from sequence.runner.network import RunNetwork

__all__ = ["ExitInfo", "ExitKind", "RunHandle", "launch"]

log = logging.getLogger("sequence.runner")

# The gate reads "go" from stdin (a pipe), then execs the command with stdin
# on /dev/null.  (stdin, because dash cannot redirect fds above 9; PWD is
# unset because sh would export the host path of the run directory.)
GATE_SCRIPT = (
    'IFS= read -r go || exit 125; [ "$go" = go ] || exit 125; '
    'unset PWD OLDPWD; exec "$@" </dev/null'
)
GATE_FAILED = 125
_INFO_TIMEOUT_S = 30.0  # bubblewrap names the sandbox's process within milliseconds
_LEFTOVER_KILL_S = 5.0
_EOF_TOTAL_S = 60.0  # after exit, an escaped writer cannot hold wait() longer


class ExitKind(enum.StrEnum):
    EXITED = "exited"  # exit code 0
    FAILED = "failed"  # non-zero exit code
    SIGNALED = "signaled"  # killed by a signal the runner did not send
    OOM = "oom"  # killed because the run exceeded memory_mb
    STOPPED = "stopped"  # the runner was asked to stop it (stop() / kill())
    QUOTA = "quota"  # stopped because /workspace grew past the disk quota
    ERROR = "error"  # the strategy could not be started at all


@dataclass(frozen=True)
class ExitInfo:
    """How a run ended.  ``reason`` is a human sentence for ``last_exit.reason``."""

    code: int | None  # exit code, None when killed by a signal
    signal: int | None  # terminating signal number, None when it exited
    oom: bool  # the kernel OOM killer fired inside the run's cgroup
    kind: ExitKind
    reason: str
    peak_rss_bytes: int | None  # cgroup peak (memory.peak / max_usage_in_bytes) or max RSS
    cpu_seconds: float
    duration_s: float
    stop_requested: bool = False
    killed_after_grace: bool = False
    workspace_bytes: int | None = None  # bytes in /workspace at the end (sandboxed runs)

    @property
    def run_status(self) -> Literal["stopped", "failed"]:
        """The seed's restart table: exit 0 or a requested stop → stopped; else failed."""
        if self.stop_requested or self.kind == ExitKind.EXITED:
            return "stopped"
        return "failed"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = str(self.kind)
        d["run_status"] = self.run_status
        return d


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _parse_status(text: str) -> tuple[str, int | str] | None:
    found: tuple[str, int | str] | None = None
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "error":
            return ("error", rest)
        if word in ("exit", "signal") and rest.strip().isdigit():
            found = (word, int(rest))
    return found


def _status_numbers(text: str, word: str) -> tuple[int, int] | None:
    """The two integers of the last ``<word> A B`` status line (quota, workspace)."""
    found = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == word and parts[1].isdigit() and parts[2].isdigit():
            found = (int(parts[1]), int(parts[2]))
    return found


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def _session_members(sid: int) -> set[int]:
    out: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        with contextlib.suppress(OSError):
            if os.getsid(pid) == sid:
                out.add(pid)
    return out


def _descendants(pid: int) -> set[int]:
    try:
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


class RunHandle:
    """A started run.  Create with :func:`launch` (or ``Sandbox.start``)."""

    def __init__(
        self,
        *,
        run_id: str,
        popen: subprocess.Popen[bytes],
        status_fd: int,
        pump: LogPump,
        cgroup: RunCgroup | None,
        sandboxed: bool,
        memory_mb: int,
        on_exit: Sequence[Callable[[], None]] = (),
        cleanup: Callable[[bool], None] | None = None,
        network: tuple[RunNetwork, socket.socket] | None = None,
        lease_fd: int | None = None,
    ) -> None:
        self.run_id = run_id
        self._lease_fd = lease_fd  # the supervisor's --lease: see renew()
        # renew() runs on the heartbeat thread: closing the fd under it would let its number be
        # reused (a socket) and the deadline written into that.
        self._lease_lock = threading.Lock()
        self.pid = popen.pid
        self.sandboxed = sandboxed
        self.memory_mb = memory_mb
        self.cgroup = cgroup
        self.pump = pump
        self._popen = popen
        self._status_fd = status_fd
        self._on_exit = list(on_exit)
        self._cleanup = cleanup
        self._loop = asyncio.get_running_loop()
        self._started = time.monotonic()
        self._zombie: asyncio.Future[None] = self._loop.create_future()
        self._info: asyncio.Future[ExitInfo] = self._loop.create_future()
        self._reaped = False
        self._stop_requested = False
        self._grace: float | None = None
        self._killed_after_grace = False
        self._stopping: asyncio.Task[ExitInfo] | None = None
        self._closed = False
        self.network: RunNetwork | None = None
        self._net_task: asyncio.Task[None] | None = None
        if network is not None:
            self.network, ctrl = network
            self._net_task = self._loop.create_task(self._serve(ctrl), name=f"sequence-net-{run_id}")
        self._watch()
        self._task = self._loop.create_task(self._supervise(), name=f"sequence-run-{run_id}")

    async def _serve(self, ctrl: socket.socket) -> None:
        assert self.network is not None
        try:
            await self.network.serve(ctrl)
        except (OSError, TimeoutError, ConnectionError) as exc:
            if self.running:
                log.warning("run %s: no network listeners from the sandbox: %s", self.run_id, exc)

    # -- waiting for the process ---------------------------------------------

    def _watch(self) -> None:
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            threading.Thread(
                target=self._waitid_thread, daemon=True, name=f"wait-{self.pid}"
            ).start()
            return

        def ready() -> None:
            self._loop.remove_reader(pidfd)
            os.close(pidfd)
            if not self._zombie.done():
                self._zombie.set_result(None)

        self._loop.add_reader(pidfd, ready)

    def _waitid_thread(self) -> None:
        while True:
            try:
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break

        def mark() -> None:
            if not self._zombie.done():
                self._zombie.set_result(None)

        with contextlib.suppress(RuntimeError):  # loop already closed
            self._loop.call_soon_threadsafe(mark)

    @property
    def running(self) -> bool:
        return not self._zombie.done()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def _run_pids(self) -> set[int]:
        """Every live process of the run, as the host sees it."""
        pids: set[int] = set()
        if self.cgroup is not None:
            # Everything the run started is in its cgroup (the gate joined it before anything
            # ran, and nothing in the sandbox can move a process out), so no /proc scan: that
            # costs O(processes on the host) per exit — minutes on the runner's loop when
            # 1,000 runs stop at once (bench/runner_density.py).
            return pids | self.cgroup.pids()
        if not self._reaped:
            pids |= _session_members(self.pid)
            pids |= _descendants(self.pid)
        return pids

    def _signal_strategy(self, sig: int, skip: set[int] | frozenset[int] = frozenset()) -> set[int]:
        """Send *sig* to every process of the run except the outer bwrap / gate (and *skip*);
        the pids it was sent to."""
        sent: set[int] = set()
        for pid in self._run_pids() - {self.pid} - skip:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                sent.add(pid)
        return sent

    def _kill_all(self) -> None:
        if self.cgroup is not None:
            self.cgroup.kill()
        for pid in self._run_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if not self._reaped:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)

    # -- public control ------------------------------------------------------

    async def stop(self, grace_s: float) -> ExitInfo:
        """SIGTERM the strategy's processes, SIGKILL everything after *grace_s*.

        Idempotent: later calls wait for the first stop.  Returns the ExitInfo.
        """
        if self._stopping is None:
            self._stopping = self._loop.create_task(self._stop(max(0.0, grace_s)))
        return await asyncio.shield(self._stopping)

    async def _stop(self, grace_s: float) -> ExitInfo:
        if self.running:
            self._stop_requested = True
            self._grace = grace_s
            if grace_s > 0:
                # A stop while the run starts: the strategy may not exist yet (its supervisor,
                # pid 1 of the sandbox, drops a SIGTERM that comes before its handler). Each
                # process that appears during the grace gets the SIGTERM once, too.
                signalled = self._signal_strategy(signal.SIGTERM)
                deadline = self._loop.time() + grace_s
                done: set[Any] = set()
                while not done and self._loop.time() < deadline:
                    done, _ = await asyncio.wait({self._zombie}, timeout=min(0.2, deadline - self._loop.time()))
                    if not done:
                        signalled |= self._signal_strategy(signal.SIGTERM, signalled)
                if not done:
                    self._killed_after_grace = True
                    self._kill_all()
            else:
                self._killed_after_grace = True
                self._kill_all()
        return await self.wait()

    def kill(self) -> None:
        """SIGKILL the whole run now (self-fencing, shutdown).  Use :meth:`wait` after."""
        if self.running:
            self._stop_requested = True
            self._killed_after_grace = True
            self._grace = 0.0
            self._kill_all()

    async def wait(self) -> ExitInfo:
        """The ExitInfo, once the process tree is gone and its output fully read."""
        return await asyncio.shield(self._info)

    async def flush_logs(self, timeout: float | None = None) -> bool:
        """Wait until the sink has accepted every record (False on timeout)."""
        await self.wait()
        return await self.pump.drain(timeout)

    def usage(self) -> dict[str, Any]:
        """Live resource usage for heartbeats: the cgroup's figures when there is one, else
        the process tree's (RSS summed, CPU of the live processes)."""
        if self.cgroup is not None:
            mem = self.cgroup.memory_current()
            if mem is not None:
                return {"memory_bytes": mem, "pids": self.cgroup.pids_current(),
                        "cpu_seconds": self.cgroup.cpu_seconds()}
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return {"memory_bytes": None, "pids": None, "cpu_seconds": None}
        rss, cpu = 0, 0.0
        for p in procs:
            try:
                rss += p.memory_info().rss
                t = p.cpu_times()
                cpu += t.user + t.system
            except psutil.Error:
                continue
        return {"memory_bytes": rss, "pids": len(procs), "cpu_seconds": round(cpu, 3)}

    async def close(self, log_timeout: float | None = 0.0) -> list[Path]:
        """Release everything: kill if still running, give the sink *log_timeout*
        more seconds (None: unbounded), stop the pump and remove the run
        directory.  Undelivered records stay as spool files in ``logs/``
        (returned; deliver them with :func:`replay_spool`).  Idempotent."""
        if self._closed:
            return []
        self._closed = True
        if self.running:
            self.kill()
        with contextlib.suppress(Exception):
            await self.wait()
        self._close_lease()
        if log_timeout is None or log_timeout > 0:
            with contextlib.suppress(Exception):
                await self.pump.drain(log_timeout)
        left = await self.pump.aclose()
        if self._cleanup is not None:
            try:
                self._cleanup(bool(left))
            except Exception:
                log.exception("run %s: removing the run directory failed", self.run_id)
        if left:
            log.warning("run %s: %d log spool file(s) kept for replay", self.run_id, len(left))
        return left

    async def __aenter__(self) -> RunHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- after exit ----------------------------------------------------------

    async def _supervise(self) -> None:
        try:
            info = await self._after_exit()
        except BaseException as exc:  # never leave wait() hanging
            if not self._info.done():
                self._info.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.exception("run %s: supervising the exit failed", self.run_id)
            return
        if not self._info.done():
            self._info.set_result(info)

    async def _after_exit(self) -> ExitInfo:
        await self._zombie
        # The leader is a zombie: its pid (and session id) cannot be reused yet,
        # so it is safe to kill what is left of the run before reaping it.
        self._kill_leftovers_once()
        _, status, rusage = os.wait4(self.pid, 0)
        self._reaped = True
        self._popen.returncode = os.waitstatus_to_exitcode(status)
        ended = time.monotonic()
        await self._kill_cgroup_members()
        # Nothing of the run writes any more: drain the pipes even if the sink
        # is down (bounded by the pipe buffers), so wait() does not hang on it.
        self.pump.release_backpressure()
        await self.pump.wait_eof(total_timeout=_EOF_TOTAL_S)
        status_text = self._read_status()
        if self.network is not None:
            self.network.close()
        if self._net_task is not None:
            self._net_task.cancel()
        oom_kills = self.cgroup.oom_kills() if self.cgroup is not None else None
        limit_hits = self.cgroup.limit_hits() if self.cgroup is not None else 0
        peak = self.cgroup.peak_memory() if self.cgroup is not None else None
        cg_cpu = self.cgroup.cpu_seconds() if self.cgroup is not None else None
        if self.cgroup is not None:
            for _ in range(100):
                if self.cgroup.remove():
                    break
                self.cgroup.kill()
                await asyncio.sleep(0.02)
            else:
                log.warning("run %s: cgroup %s could not be removed", self.run_id, self.cgroup.name)
        for fn in self._on_exit:
            try:
                fn()
            except Exception:
                log.exception("run %s: cleanup after exit failed", self.run_id)
        cpu = rusage.ru_utime + rusage.ru_stime
        if cg_cpu is not None:
            cpu = max(cpu, cg_cpu)
        if peak is None and rusage.ru_maxrss:
            peak = rusage.ru_maxrss * 1024
        return self._compose(
            status, status_text, oom_kills, limit_hits, peak, cpu, ended - self._started
        )

    def _kill_leftovers_once(self) -> None:
        for pid in self._run_pids() - {self.pid}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    async def _kill_cgroup_members(self) -> None:
        if self.cgroup is None:
            return
        deadline = time.monotonic() + _LEFTOVER_KILL_S
        while self.cgroup.kill() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def _read_status(self) -> str:
        chunks = []
        try:
            os.set_blocking(self._status_fd, False)
            while True:
                try:
                    data = os.read(self._status_fd, 4096)
                except BlockingIOError:
                    break
                if not data:
                    break
                chunks.append(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.close(self._status_fd)
            self._close_lease()
        return b"".join(chunks).decode(errors="replace")

    def renew(self, deadline: float) -> None:
        """Tell the supervisor the run's new fencing deadline (CLOCK_MONOTONIC seconds): it
        kills the strategy past the last one it was told, should this runner stop telling it
        (frozen, stalled). Thread-safe; never blocks (a full pipe drops the line)."""
        with self._lease_lock:
            fd = self._lease_fd
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.write(fd, f"{deadline:.3f}\n".encode())

    def _close_lease(self) -> None:
        with self._lease_lock:
            fd, self._lease_fd = self._lease_fd, None
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _compose(
        self,
        status: int,
        status_text: str,
        oom_kills: int | None,
        limit_hits: int,
        peak: int | None,
        cpu: float,
        duration: float,
    ) -> ExitInfo:
        code: int | None = None
        sig: int | None = None
        error: str | None = None
        parsed = _parse_status(status_text)
        if parsed is not None and parsed[0] == "error":
            error = str(parsed[1])
            code = 127
        elif parsed is not None and parsed[0] == "exit":
            code = int(parsed[1])
        elif parsed is not None:
            sig = int(parsed[1])
        elif os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
        else:
            c = os.WEXITSTATUS(status)
            if self.sandboxed and c > 128 and (c - 128) in {s.value for s in signal.Signals}:
                sig = c - 128  # bwrap's 128+N, the supervisor could not tell us
            else:
                code = c
        oom = bool(oom_kills) or (oom_kills is None and limit_hits > 0 and sig == signal.SIGKILL)
        quota = _status_numbers(status_text, "quota")
        ws = _status_numbers(status_text, "workspace")
        fenced = any(line.startswith("fenced ") for line in status_text.splitlines())
        ws_note = ""
        if ws is not None and ws[0] >= 1 << 20:
            ws_note = f" (/workspace held {_mib(ws[0])}; files there count toward memory_mb)"

        if error is not None:
            kind, reason = ExitKind.ERROR, f"could not start the strategy: {error}"
        elif self._stop_requested:
            kind = ExitKind.STOPPED
            if self._killed_after_grace:
                reason = "stopped: killed with SIGKILL" + (
                    f" after {self._grace:g}s grace (SIGTERM not honoured)" if self._grace else ""
                )
            elif sig is not None:
                reason = f"stopped: terminated by {_signame(sig)}"
            else:
                reason = f"stopped: exited with code {code} after SIGTERM"
        elif fenced:
            kind = ExitKind.SIGNALED
            reason = ("killed by its supervisor: the run's lease was not renewed in time (the runner was frozen "
                      "or cut off), so it may be running elsewhere")
        elif quota is not None:
            kind = ExitKind.QUOTA
            reason = (
                f"workspace disk quota exceeded: /workspace held {_mib(quota[0])}, "
                f"over disk_mb={quota[1] >> 20}; the run was stopped"
            )
        elif oom and (sig is not None or code != 0):
            kind = ExitKind.OOM
            reason = (
                f"out of memory: the run exceeded memory_mb={self.memory_mb} and was OOM-killed"
                + ws_note
            )
        elif sig is not None:
            kind, reason = ExitKind.SIGNALED, f"killed by {_signame(sig)}"
        elif code == 0:
            kind, reason = ExitKind.EXITED, "exited with code 0"
        else:
            kind, reason = ExitKind.FAILED, f"exited with code {code}"
        return ExitInfo(
            code=code,
            signal=sig,
            oom=oom,
            kind=kind,
            reason=reason,
            peak_rss_bytes=peak,
            cpu_seconds=round(cpu, 6),
            duration_s=round(duration, 6),
            stop_requested=self._stop_requested,
            killed_after_grace=self._killed_after_grace,
            workspace_bytes=ws[0] if ws is not None else None,
        )


def _confine(cgroup: RunCgroup, bwrap_pid: int, info_fd: int, out: list[int]) -> None:
    """Move bubblewrap and the sandbox's first process (named on bwrap's ``--info-fd``) into
    *cgroup*; appends that process's pid to *out* (to kill it on failure). No pid (bwrap
    failed before making the sandbox): nothing to move; the exit is reported as usual."""
    cgroup.attach(bwrap_pid)  # the slow one (the grace period): later moves are quick
    data = b""
    info: Any = None
    deadline = time.monotonic() + _INFO_TIMEOUT_S
    # poll, not select: a runner with a few hundred runs holds fds past select's 1,024
    # ("filedescriptor out of range" failed every start past ~170 runs).
    poller = select.poll()
    poller.register(info_fd, select.POLLIN)
    while info is None:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise SandboxError("bubblewrap did not name the sandbox's process in time")
        chunk = os.read(info_fd, 4096)
        if not chunk:
            if not data:
                return
            raise SandboxError("bubblewrap's --info-fd ended mid-way")
        data += chunk
        if len(data) > 65536:
            raise SandboxError("bubblewrap's --info-fd sent too much")
        with contextlib.suppress(ValueError):  # not all of it yet
            info = json.loads(data)
    try:
        pid = int(info["child-pid"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SandboxError(f"bubblewrap's --info-fd is not understood: {exc!r}") from None
    if pid <= 1:
        raise SandboxError(f"bubblewrap named pid {pid}")
    out.append(pid)
    cgroup.attach(pid)


async def launch(
    *,
    run_id: str,
    build_argv: Callable[[int], list[str]],
    env: dict[str, str],
    cwd: Path,
    pump: LogPump,
    cgroup: RunCgroup | None,
    sandboxed: bool,
    memory_mb: int,
    on_exit: Sequence[Callable[[], None]] = (),
    cleanup: Callable[[bool], None] | None = None,
    shell: str = "/bin/sh",
    child_fds: Sequence[int] = (),
    user: int | None = None,
    network: tuple[RunNetwork, socket.socket] | None = None,
    confine: tuple[int, int] | None = None,
    lease_fd: int | None = None,
) -> RunHandle:
    """Spawn ``build_argv(status_fd)`` behind the gate and return its handle.

    *child_fds* are passed to the child and closed here afterwards (whatever
    happens); *user* is the uid (and gid) the gate runs as — the runner must
    be root to set it.  *network*: the run's :class:`RunNetwork` and the
    runner's end of the control socket the supervisor sends listeners on.
    *confine*: our ends of bubblewrap's ``--info-fd`` and the supervisor's
    ``--go`` (closed here): the gate opens at once and the sandbox starts while
    its two processes are moved into *cgroup*; the supervisor goes on only then.
    Without it the gate opens once the child is in *cgroup*.
    Must be called on the event loop thread (see module docstring).
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    gate_r, gate_w = os.pipe()
    st_r, st_w = os.pipe()
    parent_side = [out_r, err_r, gate_w, st_r]
    child_side = [out_w, err_w, gate_r, st_w, *child_fds]
    if confine is not None and cgroup is None:  # nothing to move the sandbox into: let it go at once
        with contextlib.suppress(OSError):
            os.write(confine[1], b"g")
    try:
        argv = build_argv(st_w)
        popen = subprocess.Popen(
            [shell, "-c", GATE_SCRIPT, "sequence-gate", *argv],
            stdin=gate_r,
            stdout=out_w,
            stderr=err_w,
            pass_fds=(st_w, *child_fds),
            close_fds=True,
            start_new_session=True,
            env=env,
            cwd=cwd,
            user=user,
            group=user,
            extra_groups=[] if user is not None else None,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        for fd in parent_side + child_side + list(confine or ()):
            with contextlib.suppress(OSError):
                os.close(fd)
        if network is not None:
            network[1].close()
        raise SandboxError(f"could not spawn the strategy: {exc}") from exc
    for fd in child_side:
        os.close(fd)
    sandbox_pid: list[int] = []
    try:
        if cgroup is not None and confine is not None:
            # Moving a process into a new cgroup waits for an RCU grace period (~10 ms on
            # cgroup v1 after a quiet spell): bubblewrap builds the sandbox and the supervisor's
            # interpreter starts meanwhile; the supervisor waits for "g" before anything else.
            os.write(gate_w, b"go\n")
            await asyncio.to_thread(_confine, cgroup, popen.pid, confine[0], sandbox_pid)
            os.write(confine[1], b"g")
        else:
            if cgroup is not None:
                # The RCU wait off the loop (heartbeats, other runs' logs go on); the gate
                # holds the child until "go".
                await asyncio.to_thread(cgroup.attach, popen.pid)
            os.write(gate_w, b"go\n")
    except BaseException as exc:  # cancelled too: the child must not outlive its start
        for pid in (popen.pid, *sandbox_pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for fd in parent_side:
            with contextlib.suppress(OSError):
                os.close(fd)
        for fd in confine or ():
            with contextlib.suppress(OSError):
                os.close(fd)
        popen.wait()
        if network is not None:
            network[1].close()
        if isinstance(exc, SandboxError) or not isinstance(exc, OSError):
            raise
        raise SandboxError(f"could not confine the strategy before start: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            os.close(gate_w)
    for fd in confine or ():  # the supervisor read "g" or gets EOF: it never starts unconfined
        with contextlib.suppress(OSError):
            os.close(fd)
    pump.attach("stdout", out_r)
    pump.attach("stderr", err_r)
    return RunHandle(
        run_id=run_id,
        popen=popen,
        status_fd=st_r,
        pump=pump,
        cgroup=cgroup,
        sandboxed=sandboxed,
        memory_mb=memory_mb,
        on_exit=on_exit,
        cleanup=cleanup,
        network=network,
        lease_fd=lease_fd,
    )
