"""Exit paths of a sandboxed strategy, as real processes: codes, signals, stop, OOM, pids."""

from __future__ import annotations

import asyncio
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from sequence.runner import ExitKind, RunHandle, Sandbox, SandboxConfig
from sequence.runner.cgroups import RunCgroup
from tests.runner.helpers import Collector, run_code, spec_for, wait_for_line

pytestmark = pytest.mark.anyio

SIGTERM_HANDLER = """
    import signal, sys, time
    def on_term(signum, frame):
        print("SIGTERM received, flushing state", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
"""


def _stop_when_ready(grace: float) -> Callable[[RunHandle, Collector], Awaitable[None]]:
    async def act(handle: RunHandle, logs: Collector) -> None:
        await wait_for_line(logs, "ready")
        await handle.stop(grace)

    return act


async def test_exit_zero_is_exited_and_ends_stopped(sandbox: Sandbox) -> None:
    r = await run_code(sandbox, "print('done')")
    assert r.info.code == 0 and r.info.signal is None and not r.info.oom
    assert r.info.kind == ExitKind.EXITED and r.info.run_status == "stopped"
    assert r.info.reason == "exited with code 0"
    assert r.stdout == ["done"]
    assert r.info.duration_s > 0 and r.info.cpu_seconds > 0
    assert r.info.peak_rss_bytes and r.info.peak_rss_bytes > 1 << 20


async def test_exit_three_is_failed(sandbox: Sandbox) -> None:
    r = await run_code(sandbox, "import sys; print('bye', file=sys.stderr); sys.exit(3)")
    assert (r.info.code, r.info.signal, r.info.kind) == (3, None, ExitKind.FAILED)
    assert r.info.run_status == "failed"
    assert r.stderr == ["bye"]


async def test_uncaught_exception_is_exit_one_with_traceback_logged(sandbox: Sandbox) -> None:
    r = await run_code(sandbox, "raise RuntimeError('boom')")
    assert r.info.code == 1 and r.info.kind == ExitKind.FAILED
    assert "RuntimeError: boom" in r.stderr[-1]


async def test_killed_by_sigkill_is_reported_as_signal_nine(sandbox: Sandbox) -> None:
    r = await run_code(sandbox, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert r.info.code is None and r.info.signal == signal.SIGKILL
    assert r.info.kind == ExitKind.SIGNALED and r.info.reason == "killed by SIGKILL"
    assert r.info.run_status == "failed" and not r.info.oom


async def test_exit_code_137_is_a_code_not_a_signal(sandbox: Sandbox) -> None:
    r = await run_code(sandbox, "import sys; sys.exit(137)")
    assert (r.info.code, r.info.signal, r.info.kind) == (137, None, ExitKind.FAILED)


async def test_stop_sends_sigterm_and_the_strategys_handler_runs(sandbox: Sandbox) -> None:
    r = await run_code(sandbox, SIGTERM_HANDLER, during=_stop_when_ready(30.0))
    assert "SIGTERM received, flushing state" in r.stdout
    assert r.info.kind == ExitKind.STOPPED and r.info.run_status == "stopped"
    assert r.info.code == 0 and not r.info.killed_after_grace
    assert r.info.stop_requested


async def test_stop_without_handler_terminates_by_sigterm(sandbox: Sandbox) -> None:
    code = "import time\nprint('ready', flush=True)\ntime.sleep(600)"
    r = await run_code(sandbox, code, during=_stop_when_ready(30.0))
    assert r.info.signal == signal.SIGTERM and r.info.kind == ExitKind.STOPPED
    assert r.info.reason == "stopped: terminated by SIGTERM"


async def test_stop_kills_after_grace_when_sigterm_is_ignored(sandbox: Sandbox) -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
    """
    r = await run_code(sandbox, code, during=_stop_when_ready(0.5))
    assert r.info.signal == signal.SIGKILL and r.info.killed_after_grace
    assert r.info.kind == ExitKind.STOPPED and r.info.run_status == "stopped"
    assert "SIGKILL after 0.5s grace" in r.info.reason


async def test_sigterm_reaches_every_process_of_the_strategy(sandbox: Sandbox) -> None:
    code = """
        import os, signal, sys, time
        def on_term(signum, frame):
            os.write(1, f"{role} got SIGTERM\\n".encode())  # one write: no interleaving
            sys.exit(0)
        role = "parent"
        if os.fork() == 0:
            role = "child"
        signal.signal(signal.SIGTERM, on_term)
        os.write(1, f"{role} ready\\n".encode())
        while True:
            time.sleep(0.05)
    """

    async def act(handle: RunHandle, logs: Collector) -> None:
        await wait_for_line(logs, "parent ready")
        await wait_for_line(logs, "child ready")
        await handle.stop(30.0)

    r = await run_code(sandbox, code, during=act)
    assert {"parent got SIGTERM", "child got SIGTERM"} <= set(r.stdout)


async def test_stop_is_idempotent_and_returns_the_same_exit(sandbox: Sandbox) -> None:
    async def act(handle: RunHandle, logs: Collector) -> None:
        await wait_for_line(logs, "ready")
        a, b = await asyncio.gather(handle.stop(30.0), handle.stop(1.0))
        assert a == b
        assert await handle.stop(5.0) == a

    await run_code(sandbox, SIGTERM_HANDLER, during=act)


async def test_kill_is_immediate_for_self_fencing(sandbox: Sandbox) -> None:
    async def act(handle: RunHandle, logs: Collector) -> None:
        await wait_for_line(logs, "ready")
        handle.kill()

    r = await run_code(sandbox, SIGTERM_HANDLER, during=act)
    assert r.info.signal == signal.SIGKILL and r.info.kind == ExitKind.STOPPED
    assert "SIGTERM received" not in r.logs.text()


async def test_background_processes_die_when_the_entrypoint_exits(sandbox: Sandbox) -> None:
    # A daemonised child keeps stdout open; the run still ends with the entrypoint.
    code = """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(600)
            os._exit(0)
        print("main exits", flush=True)
    """
    r = await run_code(sandbox, code)
    assert r.info.code == 0 and "main exits" in r.stdout
    assert r.handle.cgroup is not None and not Path(r.handle.cgroup.dirs[0]).exists()


async def test_oom_is_detected_and_reported(sandbox: Sandbox) -> None:
    code = """
        chunks = []
        print("allocating", flush=True)
        while True:
            chunks.append(bytearray(16 * 1024 * 1024))
    """
    r = await run_code(sandbox, code, memory_mb=64)
    assert r.info.oom and r.info.kind == ExitKind.OOM
    assert r.info.signal == signal.SIGKILL and r.info.run_status == "failed"
    assert "memory_mb=64" in r.info.reason
    assert r.info.peak_rss_bytes is not None and r.info.peak_rss_bytes <= 64 << 20


async def test_memory_below_the_limit_is_not_oom(sandbox: Sandbox) -> None:
    r = await run_code(sandbox, "x = bytearray(32 * 1024 * 1024); print(len(x))", memory_mb=128)
    assert r.info.code == 0 and not r.info.oom
    assert r.info.peak_rss_bytes is not None and r.info.peak_rss_bytes >= 32 << 20


async def test_fork_bomb_is_contained_by_the_pids_limit(sandbox: Sandbox) -> None:
    code = """
        import os, time
        made = failed = 0
        deadline = time.time() + 2
        while time.time() < deadline:
            try:
                if os.fork() == 0:
                    while True:
                        try:
                            os.fork()
                        except OSError:
                            time.sleep(0.01)
                made += 1
            except OSError:
                failed += 1
        print(f"made {made} failed {failed}", flush=True)
        time.sleep(600)
    """
    limit = sandbox.config.pids_max

    async def act(handle: RunHandle, logs: Collector) -> None:
        await wait_for_line(logs, "made ")
        assert handle.cgroup is not None
        current = handle.cgroup.pids_current()
        assert current is not None and current <= limit
        # The runner (this process) can still start processes.
        out = subprocess.run(
            [sys.executable, "-c", "print('alive')"], capture_output=True, text=True
        )
        assert out.stdout.strip() == "alive"
        await handle.stop(1.0)

    r = await run_code(sandbox, code, during=act)
    made, failed = (int(w) for w in r.stdout[0].split()[1::2])
    assert failed > 0 and made < limit
    assert r.info.kind == ExitKind.STOPPED
    assert r.handle.cgroup is not None and r.handle.cgroup.pids() == set()


async def test_every_process_of_the_run_is_in_its_cgroup_from_bwrap_down(sandbox: Sandbox) -> None:
    """bubblewrap starts before its processes are moved into the run's cgroup (the move
    overlaps the sandbox's start-up); the supervisor waits for it, so bwrap, the supervisor,
    the strategy and what it forks are all members, and the unpacked workspace is charged there."""
    import psutil

    code = """
        import os, time
        if os.fork() == 0:
            time.sleep(600)
        print("forked", flush=True)
        time.sleep(600)
    """

    async def act(handle: RunHandle, logs: Collector) -> None:
        await wait_for_line(logs, "forked")
        assert handle.cgroup is not None
        members = handle.cgroup.pids()
        tree = psutil.Process(handle.pid).children(recursive=True)
        names = {p.pid: " ".join(p.cmdline()[:3]) for p in tree}
        # gate → bwrap (the gate's pid), the sandbox's pid 1 (the supervisor), the strategy, its child
        assert len(tree) >= 3, names
        assert {handle.pid, *names} <= members, (names, members)
        await handle.stop(1.0)

    r = await run_code(sandbox, code, during=act)
    assert r.info.kind == ExitKind.STOPPED


@pytest.mark.parametrize("extra", [0, 300 << 10])  # hashed on the loop / in a thread
async def test_an_artifact_that_does_not_match_its_hash_never_starts(sandbox: Sandbox, extra: int) -> None:
    """The claim now carries small artifacts itself: whatever bytes arrive, the sandbox checks
    them against artifact_sha256 before anything exists on disk or in a sandbox."""
    import os

    from sequence.runner import RunnerError

    spec = spec_for("print('must not run')", files={"pad": os.urandom(extra)} if extra else None)
    assert (len(spec.artifact) > 256 << 10) == bool(extra)
    tampered = replace(spec, artifact_sha256="0" * 64)
    with pytest.raises(RunnerError, match="SHA-256 mismatch"):
        await sandbox.start(tampered, Collector())
    assert not (sandbox.config.runs_dir / spec.run_id).exists()


async def test_run_cgroup_and_workspace_are_removed_after_exit(sandbox: Sandbox) -> None:
    r = await run_code(sandbox, "open('scratch.txt', 'w').write('x')")
    assert r.info.code == 0
    cg = r.handle.cgroup
    assert isinstance(cg, RunCgroup)
    assert all(not d.exists() for d in cg.dirs)
    assert not (sandbox.config.runs_dir / r.handle.run_id).exists()


async def test_sandbox_dies_with_the_runner(sandbox: Sandbox, tmp_path: Path) -> None:
    """SIGKILL the runner process: bubblewrap --die-with-parent takes the run down."""
    spec = spec_for("import time\nprint('ready', flush=True)\ntime.sleep(600)")
    script = textwrap.dedent(
        f"""
        import asyncio, pickle, sys
        from pathlib import Path
        from sequence.runner import Sandbox, SandboxConfig
        async def main():
            sb = Sandbox(SandboxConfig(data_dir=Path({str(tmp_path / "data")!r})))
            spec = pickle.loads(sys.stdin.buffer.read())
            async def sink(batch):
                for r in batch:
                    print(r["line"], flush=True)
            h = await sb.start(spec, sink)
            await asyncio.sleep(600)
        asyncio.run(main())
        """
    )
    layout = sandbox._layout  # same host, same hierarchy
    assert layout is not None
    owner = Sandbox(SandboxConfig(data_dir=tmp_path / "data")).cgroup_owner
    cg = RunCgroup(layout, spec.run_id, owner=owner)
    runner = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert runner.stdin is not None and runner.stdout is not None
    runner.stdin.write(pickle.dumps(spec))
    runner.stdin.close()
    try:
        assert runner.stdout.readline().strip() == b"ready"
        assert cg.pids(), "the run is alive in its cgroup"
        runner.kill()
        deadline = time.monotonic() + 30
        while cg.pids() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert cg.pids() == set(), "the sandbox outlived its runner"
    finally:
        runner.kill()
        runner.wait()
        runner.stdout.close()
        cg.kill()
        cg.remove()


async def test_usage_reports_live_memory_and_pids(sandbox: Sandbox) -> None:
    async def act(handle: RunHandle, logs: Collector) -> None:
        await wait_for_line(logs, "ready")
        usage = handle.usage()
        assert usage["memory_bytes"] and usage["memory_bytes"] > 0
        assert usage["pids"] and usage["pids"] >= 1
        assert handle.running
        await handle.stop(5.0)
        assert not handle.running

    await run_code(sandbox, SIGTERM_HANDLER, during=act)


async def test_another_runners_stale_cleanup_never_touches_our_runs(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Runners sharing a host and the parent cgroup only clean up their own runs."""
    logs = Collector()
    handle = await sandbox.start(spec_for(SIGTERM_HANDLER), logs)
    try:
        await wait_for_line(logs, "ready")
        other = Sandbox(SandboxConfig(data_dir=tmp_path / "other-runner"))
        assert other.check().level == "full"
        assert other.cgroup_owner != sandbox.cgroup_owner
        assert other.cleanup_stale(set()) == []
        await asyncio.sleep(0.1)
        assert handle.running and handle.cgroup is not None and handle.cgroup.pids()
    finally:
        info = await handle.stop(10.0)
        await handle.close()
    assert info.kind == ExitKind.STOPPED and info.code == 0


LOOPER = """
    import time
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
"""


@pytest.mark.parametrize("kind", ["sandboxed", "unsandboxed"])
async def test_the_supervisor_kills_the_strategy_when_its_lease_is_not_renewed(
        kind: str, request: pytest.FixtureRequest) -> None:
    """A frozen runner (SIGSTOP, a debugger, a stalled machine) cannot fence its runs: the
    strategy kept running past its lease while another runner started it again. Its
    supervisor now holds the deadline too and kills it there unless told a later one."""
    sandbox: Sandbox = request.getfixturevalue("sandbox" if kind == "sandboxed" else "no_bwrap_sandbox")
    started = time.monotonic()
    r = await run_code(sandbox, LOOPER, lease_deadline=started + 1.5, timeout=30)
    took = time.monotonic() - started
    assert r.info.kind == ExitKind.SIGNALED and r.info.signal == signal.SIGKILL
    assert "the run's lease was not renewed in time" in r.info.reason
    assert 1.4 < took < 10, took


async def test_a_renewed_lease_keeps_the_strategy_running(sandbox: Sandbox) -> None:
    async def renew_then_stop(handle: RunHandle, logs: Collector) -> None:
        await wait_for_line(logs, "ready")
        until = time.monotonic() + 3.0  # twice the deadline's distance
        while time.monotonic() < until:
            handle.renew(time.monotonic() + 1.0)
            await asyncio.sleep(0.2)
        assert handle.running
        await handle.stop(1.0)

    r = await run_code(sandbox, LOOPER, lease_deadline=time.monotonic() + 1.0, during=renew_then_stop, timeout=30)
    assert r.info.kind == ExitKind.STOPPED, r.info.reason


async def test_a_stop_while_the_run_starts_is_not_lost(sandbox: Sandbox) -> None:
    """A stop that came while the supervisor still prepared the workspace hit no strategy
    (the supervisor ignored SIGTERM) and waited out the whole stop timeout; the strategy then
    ran until SIGKILL. Now the supervisor remembers it and does not start the strategy."""
    async def stop_at_once(handle: RunHandle, logs: Collector) -> None:
        await handle.stop(10.0)

    started = time.monotonic()
    r = await run_code(sandbox, SIGTERM_HANDLER, during=stop_at_once, timeout=30)
    assert time.monotonic() - started < 5.0, r.info.reason
    assert r.info.kind == ExitKind.STOPPED and not r.info.killed_after_grace, r.info.reason
