"""Degraded hosts: no bubblewrap and/or no cgroups.  Runs still work; the report says what is missing."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from sequence.runner import ExitKind, RunHandle, Sandbox, SandboxConfig, SandboxError
from tests.runner.helpers import Collector, run_code, spec_for, wait_for_line

pytestmark = pytest.mark.anyio


def _names(protections: tuple) -> set[str]:  # type: ignore[type-arg]
    return {p.name for p in protections}


async def test_report_without_bubblewrap_is_loud_about_what_is_missing(
    no_bwrap_sandbox: Sandbox,
) -> None:
    report = no_bwrap_sandbox.check()
    assert not report.bubblewrap and report.can_run and report.exit_code() == 0
    assert report.level in ("partial", "none")
    assert {"filesystem", "pid-namespace", "user-namespace", "network-namespace", "seccomp"} <= _names(
        report.missing
    )
    assert all(
        "disabled by configuration" in p.detail for p in report.missing if p.name == "filesystem"
    )
    assert "MISSING  filesystem" in report.render()
    assert report.exit_code(require_full=True) == 1


async def test_report_with_nothing_is_level_none(bare_sandbox: Sandbox) -> None:
    report = bare_sandbox.check()
    assert report.level == "none" and report.can_run
    assert {"memory-limit", "pids-limit", "filesystem"} <= _names(report.missing)
    assert {"environment", "session", "rlimits", "bare-interpreter"} <= _names(report.active)
    assert report.to_dict()["level"] == "none"


async def test_full_report_lists_every_protection(sandbox: Sandbox) -> None:
    report = sandbox.check()
    assert (
        report.level == "full" and report.missing == () and report.exit_code(require_full=True) == 0
    )
    assert {
        "filesystem",
        "pid-namespace",
        "user-namespace",
        "network-namespace",
        "seccomp",
        "proc",
        "bare-interpreter",
        "memory-limit",
        "pids-limit",
    } <= _names(report.active)


async def test_strategies_cannot_run_without_an_interpreter(tmp_path: Path) -> None:
    sb = Sandbox(SandboxConfig(data_dir=tmp_path, runtime="/nonexistent/python3.12", cgroups=False))
    report = sb.check()
    assert not report.can_run and report.exit_code() == 2
    assert "cannot run it" in report.errors[0]
    with pytest.raises(SandboxError, match="cannot run on this host"):
        await sb.start(spec_for("print(1)"), Collector())


async def test_required_bubblewrap_that_is_missing_blocks_runs(tmp_path: Path) -> None:
    sb = Sandbox(
        SandboxConfig(
            data_dir=tmp_path, bubblewrap=True, bwrap_path="/nonexistent/bwrap", cgroups=False
        )
    )
    report = sb.check()
    assert not report.can_run and report.exit_code() == 2
    assert any("bubblewrap is required" in e for e in report.errors)


@pytest.fixture(params=["no_bwrap", "bare"])
def degraded(request: pytest.FixtureRequest) -> Sandbox:
    return request.getfixturevalue(f"{request.param}_sandbox")  # type: ignore[no-any-return]


async def test_degraded_exit_codes_and_signals_are_exact(degraded: Sandbox) -> None:
    ok = await run_code(degraded, "print('hi')")
    assert (ok.info.code, ok.info.kind, ok.stdout) == (0, ExitKind.EXITED, ["hi"])
    three = await run_code(degraded, "import sys; sys.exit(3)")
    assert (three.info.code, three.info.kind) == (3, ExitKind.FAILED)
    killed = await run_code(degraded, "import os; os.kill(os.getpid(), 9)")
    assert (killed.info.code, killed.info.signal, killed.info.kind) == (None, 9, ExitKind.SIGNALED)


async def test_degraded_stop_runs_the_sigterm_handler_and_kills_after_grace(
    degraded: Sandbox,
) -> None:
    handler = """
import signal, sys, time
def on_term(*_):
    print("cleanup", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True: time.sleep(0.05)
"""

    def stop_after(grace: float) -> Callable[[RunHandle, Collector], Awaitable[None]]:
        async def stop(handle: RunHandle, logs: Collector) -> None:
            await wait_for_line(logs, "ready")
            await handle.stop(grace)

        return stop

    r = await run_code(degraded, handler, during=stop_after(30.0))
    assert "cleanup" in r.stdout and r.info.code == 0 and r.info.kind == ExitKind.STOPPED
    ignore = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(600)"
    r = await run_code(degraded, ignore, during=stop_after(0.5))
    assert r.info.signal == signal.SIGKILL and r.info.killed_after_grace


async def test_degraded_environment_is_still_built_from_nothing(
    degraded: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = uuid.uuid4().hex
    monkeypatch.setenv("SEQUENCE_TEST_RUNNER_CANARY", canary)
    r = await run_code(degraded, "import json, os\nprint(json.dumps(dict(os.environ)))")
    env = json.loads(r.stdout[0])
    assert canary not in json.dumps(env)
    assert set(env) == {
        "SEQUENCE_API_KEY",
        "SEQUENCE_API_URL",
        "SEQUENCE_STRATEGY_ID",
        "SEQUENCE_RUN_ID",
        "SEQUENCE_CLIENT_ID",
        "SEQUENCE_IS_SANDBOX",
        "SEQUENCE_STRATEGY_MANIFEST",
        "PYTHONUNBUFFERED",
        "PATH",
        "HOME",
        "LANG",
        "TMPDIR",
    }
    assert Path(env["SEQUENCE_STRATEGY_MANIFEST"]).name == "manifest.json"


async def test_degraded_interpreter_is_still_bare(degraded: Sandbox) -> None:
    code = """
import importlib, json
out = {}
for name in ["fastapi", "sqlalchemy", "pip", "sequence", "json", "ssl"]:
    try:
        importlib.import_module(name)
        out[name] = True
    except ImportError:
        out[name] = False
print(json.dumps(out))
"""
    out = json.loads((await run_code(degraded, code)).stdout[0])
    assert out == {
        "fastapi": False,
        "sqlalchemy": False,
        "pip": False,
        "sequence": False,
        "json": True,
        "ssl": True,
    }


async def test_without_bubblewrap_the_host_is_visible_as_reported(degraded: Sandbox) -> None:
    # What "filesystem / pid-namespace MISSING" means in practice.
    code = f"import json, os\nprint(json.dumps([os.path.exists({str(degraded.config.data_dir)!r}), os.getpid() > 3, os.path.exists('/proc/{os.getpid()}/environ')]))"
    assert json.loads((await run_code(degraded, code)).stdout[0]) == [True, True, True]


async def test_degraded_background_processes_die_with_the_entrypoint(degraded: Sandbox) -> None:
    code = """
import os, time
if os.fork() == 0:
    time.sleep(600)
    os._exit(0)
print(os.getpid(), flush=True)
"""
    r = await run_code(degraded, code)
    assert r.info.code == 0
    assert r.handle.pump.stats.forced_eof is False, "the child holding stdout was killed"


async def test_without_a_memory_cgroup_rlimit_data_is_the_floor(bare_sandbox: Sandbox) -> None:
    code = """
try:
    x = bytearray(200 * 1024 * 1024)
    print("allocated")
except MemoryError:
    print("MemoryError")
"""
    r = await run_code(bare_sandbox, code, memory_mb=64)
    assert r.stdout == ["MemoryError"]
    assert not r.info.oom, "no cgroup: an OOM cannot be detected, only prevented per process"


async def test_no_bwrap_but_cgroups_still_detects_oom(no_bwrap_sandbox: Sandbox) -> None:
    if not no_bwrap_sandbox.check().cgroup_version:
        pytest.skip("no cgroups on this host")
    r = await run_code(
        no_bwrap_sandbox, "x = []\nwhile True: x.append(bytearray(16 << 20))", memory_mb=64
    )
    assert r.info.oom and r.info.kind == ExitKind.OOM


async def test_start_rejects_a_tiny_memory_limit(bare_sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError, match="memory_mb"):
        await bare_sandbox.start(spec_for("print(1)", memory_mb=4), Collector())


async def test_pending_spools_and_stale_cleanup(tmp_path: Path) -> None:
    sb = Sandbox(SandboxConfig(data_dir=tmp_path, bubblewrap=False, cgroups=False))
    logs = sb.config.runs_dir / "old-run" / "logs"
    logs.mkdir(parents=True)
    (logs / "spool-00000001.jsonl").write_text('[{"seq":1,"ts":0,"stream":"stdout","line":"x"}]\n')
    (sb.config.runs_dir / "old-run" / "workspace").mkdir()
    (sb.config.runs_dir / "gone-run" / "workspace").mkdir(parents=True)
    (sb.config.runs_dir / "old-run" / "run.json").write_text('{"run_id": "old-run", "epoch": 2}')
    assert sb.pending_spools() == {"old-run": (logs, {"run_id": "old-run", "epoch": 2})}
    assert sorted(sb.cleanup_stale()) == ["gone-run", "old-run"]
    assert os.listdir(sb.config.runs_dir) == ["old-run"]
    assert sorted(os.listdir(sb.config.runs_dir / "old-run")) == ["logs", "run.json"], (
        "undelivered logs (and the record to deliver them) are kept"
    )


async def test_a_relative_data_dir_is_made_absolute_and_runs_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sequence up`'s default data dir is the relative `.sequence`: the first wave's runner
    reached its run folders through that relative path after changing directory (exit 127)."""
    monkeypatch.chdir(tmp_path)
    sb = Sandbox(SandboxConfig(data_dir=Path(".sequence/runner"), bubblewrap=False, cgroups=False))
    assert sb.config.data_dir == tmp_path / ".sequence" / "runner"
    r = await run_code(sb, "import os\nprint('ran in', os.getcwd())")
    assert r.info.code == 0, (r.info, r.stderr)
    assert r.stdout == [f"ran in {tmp_path}/.sequence/runner/runs/{r.handle.run_id}/workspace"]


def test_settings_paths_are_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sequence.settings import Settings

    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({}, data_dir=Path(".sequence"), market_replay=Path("day.jsonl"))
    assert s.data_dir == tmp_path / ".sequence" and s.market_replay == tmp_path / "day.jsonl"
    assert s.effective_database_url == f"sqlite:///{tmp_path}/.sequence/sequence.db"
