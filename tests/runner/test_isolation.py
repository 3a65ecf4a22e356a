"""What a sandboxed strategy can and cannot see or do (real bubblewrap)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sequence.runner import RunHandle, Sandbox
from tests.runner.helpers import Collector, run_code, spec_for, wait_for_line

pytestmark = pytest.mark.anyio


def _probe(paths: dict[str, str]) -> str:
    """Strategy code printing, per label, 'readable' or the error reading the path."""
    return f"""
import json, os
result = {{}}
for label, path in {paths!r}.items():
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, 'rb').read(1)
        result[label] = 'readable'
    except OSError as exc:
        result[label] = type(exc).__name__
print(json.dumps(result))
"""


@pytest.fixture
def cli_config_canary() -> Iterator[Path]:
    """A real file where the CLI keeps the user's API key (removed afterwards)."""
    cfg_dir = Path.home() / ".config" / "sequence"
    created = [p for p in (cfg_dir.parent, cfg_dir) if not p.exists()]
    cfg_dir.mkdir(parents=True, exist_ok=True)
    path = cfg_dir / f"canary-{uuid.uuid4().hex}.toml"
    path.write_text('api_key = "seq_live_SECRET"\n')
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        for p in reversed(created):
            with contextlib.suppress(OSError):
                p.rmdir()


async def test_host_secrets_are_not_visible(
    sandbox: Sandbox, tmp_path: Path, cli_config_canary: Path
) -> None:
    coordinator_data = tmp_path / "coordinator-data"
    coordinator_data.mkdir()
    (coordinator_data / "sequence.db").write_text("keys and sealed secrets")
    paths = {
        "coordinator_data": str(coordinator_data / "sequence.db"),
        "coordinator_dir": str(coordinator_data),
        "cli_config": str(cli_config_canary),
        "cli_config_dir": str(cli_config_canary.parent),
        "home": str(Path.home()),
        "runner_data": str(sandbox.config.data_dir),
        "shadow": "/etc/shadow",
        "ssl_private": "/etc/ssl/private",
        "sys": "/sys/fs/cgroup",
    }
    r = await run_code(sandbox, _probe(paths))
    result = json.loads(r.stdout[0])
    assert result.pop("home") in ("FileNotFoundError", "readable")  # the runtime may live under it
    assert result == {k: "FileNotFoundError" for k in result}, result
    assert os.path.exists(cli_config_canary) and os.path.exists(coordinator_data / "sequence.db")


async def test_another_runs_workspace_is_not_visible(sandbox: Sandbox) -> None:
    other = spec_for(
        "import time\nopen('secret.txt', 'w').write('mine')\nprint('ready', flush=True)\ntime.sleep(600)"
    )
    logs = Collector()
    first = await sandbox.start(other, logs)
    try:
        await wait_for_line(logs, "ready")
        # each workspace is a tmpfs in its run's own mount namespace: not on the
        # host's disk, and not in any other run's view
        assert not (sandbox.config.runs_dir / other.run_id / "workspace").exists()
        r = await run_code(
            sandbox,
            _probe({"file": "/workspace/secret.txt", "runs": str(sandbox.config.runs_dir)}),
        )
        assert json.loads(r.stdout[0]) == {"file": "FileNotFoundError", "runs": "FileNotFoundError"}
    finally:
        await first.stop(5.0)
        await first.close()


async def test_runner_environment_and_processes_are_invisible(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("SEQUENCE_TEST_RUNNER_CANARY", canary)
    code = f"""
import os, json
seen_env = {canary!r} in repr(dict(os.environ))
environs = {{}}
for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
    try:
        environs[pid] = {canary!r}.encode() in open(f'/proc/{{pid}}/environ', 'rb').read()
    except OSError as exc:
        environs[pid] = type(exc).__name__
try:
    open('/proc/{os.getpid()}/environ', 'rb').read()
    runner = 'readable'
except OSError as exc:
    runner = type(exc).__name__
print(json.dumps({{"env": seen_env, "pids": sorted(map(int, environs)), "leaks": [p for p, v in environs.items() if v is True], "runner": runner, "me": os.getpid()}}))
"""
    r = await run_code(sandbox, code)
    result = json.loads(r.stdout[0])
    assert result["env"] is False
    assert result["leaks"] == []
    assert result["runner"] == "FileNotFoundError"
    assert max(result["pids"]) < 10, "own PID namespace: only the sandbox's few processes"
    assert result["me"] <= 3


async def test_installed_packages_cannot_be_imported_but_the_stdlib_can(sandbox: Sandbox) -> None:
    code = """
import importlib, json
out = {}
for name in ["fastapi", "sqlalchemy", "httpx", "pip", "sequence"]:
    try:
        importlib.import_module(name)
        out[name] = "imported"
    except ImportError:
        out[name] = "missing"
for name in ["json", "ssl", "sqlite3", "asyncio", "ctypes", "decimal", "zoneinfo", "urllib.request", "hashlib"]:
    importlib.import_module(name)
    out[name] = "ok"
import site, sys
out["site_packages"] = [sorted(__import__('os').listdir(p)) for p in site.getsitepackages() if __import__('os').path.isdir(p)]
out["user_site"] = site.ENABLE_USER_SITE
print(json.dumps(out))
"""
    r = await run_code(sandbox, code)
    out = json.loads(r.stdout[0])
    for name in ["fastapi", "sqlalchemy", "httpx", "pip", "sequence"]:
        assert out[name] == "missing", name
    assert all(out[n] == "ok" for n in ["json", "ssl", "sqlite3", "asyncio", "ctypes", "zoneinfo"])
    assert out["site_packages"] and all(listing == [] for listing in out["site_packages"])
    assert out["user_site"] is False


async def test_vendored_packages_in_the_artifact_import(sandbox: Sandbox) -> None:
    r = await run_code(
        sandbox,
        "from sequence_markets import hello\nprint(hello())",
        files={"sequence_markets/__init__.py": "def hello():\n    return 'vendored ok'\n"},
    )
    assert r.stdout == ["vendored ok"]


async def test_privileges_are_dropped(sandbox: Sandbox) -> None:
    code = """
import ctypes, json, os
status = dict(line.split(':', 1) for line in open('/proc/self/status') if ':' in line)
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
try:
    open('/usr/bin/sequence-evil', 'w')
    usr = 'writable'
except OSError as exc:
    usr = type(exc).__name__
print(json.dumps({"cap_eff": status['CapEff'].strip(), "nnp": status['NoNewPrivs'].strip(),
                  "mount_rc": rc, "mount_errno": ctypes.get_errno(), "usr": usr}))
"""
    out = json.loads((await run_code(sandbox, code)).stdout[0])
    assert int(out["cap_eff"], 16) == 0
    assert out["nnp"] == "1"
    assert out["mount_rc"] == -1
    assert out["usr"] in ("OSError", "PermissionError")


async def test_workspace_is_cwd_and_writable_tmp_is_private(sandbox: Sandbox) -> None:
    code = """
import json, os, pwd, getpass
open('/tmp/scratch', 'w').write('x')
open('out.txt', 'w').write('y')
print(json.dumps({"cwd": os.getcwd(), "argv0": __import__('sys').argv[0], "tmp": os.listdir('/tmp'),
                  "user": getpass.getuser(), "passwd": open('/etc/passwd').read().count('\\n'),
                  "home": os.environ["HOME"], "hostname": os.uname().nodename}))
"""
    out = json.loads((await run_code(sandbox, code)).stdout[0])
    assert out["cwd"] == "/workspace" and out["argv0"] == "main.py"
    assert out["tmp"] == ["scratch"]
    assert out["home"] == "/workspace"
    assert out["passwd"] == 2, "a synthesised passwd, not the host's"
    assert out["hostname"] == sandbox.config.hostname


async def test_environment_is_exactly_what_api_md_lists(sandbox: Sandbox) -> None:
    code = "import json, os\nprint(json.dumps(dict(os.environ)))"
    r = await run_code(
        sandbox,
        code,
        env={"LOG_LEVEL": "info", "SHARED": "env", "SEQUENCE_API_KEY": "forged"},
        secrets={"SHARED": "secret", "SLACK_WEBHOOK": "https://hooks"},
        is_sandbox=False,
    )
    env = json.loads(r.stdout[0])
    run_id = r.handle.run_id
    proxy = env["HTTPS_PROXY"]
    assert proxy.startswith("http://127.0.0.1:")
    # Secret values (and the run's key) are masked in the log the strategy
    # printed its environment to: "***" stands for each of them.
    assert env == {
        "SEQUENCE_API_KEY": "***",
        "SEQUENCE_API_URL": "http://127.0.0.1:8700",
        "SEQUENCE_STRATEGY_ID": "3f1c6a2e-0000-4000-8000-000000000001",
        "SEQUENCE_RUN_ID": run_id,
        "SEQUENCE_CLIENT_ID": "acme",
        "SEQUENCE_IS_SANDBOX": "false",
        "SEQUENCE_STRATEGY_MANIFEST": "/workspace/.sequence/manifest.json",
        "PYTHONUNBUFFERED": "1",
        "PATH": env["PATH"],
        "HOME": "/workspace",
        "LANG": "C.UTF-8",
        "PWD": "/workspace",  # set by bubblewrap's --chdir
        "LOG_LEVEL": "info",
        "SHARED": "***",
        "SLACK_WEBHOOK": "***",
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "NO_PROXY": "127.0.0.1,localhost,::1",
        "no_proxy": "127.0.0.1,localhost,::1",
    }
    assert env["PATH"].endswith(":/usr/local/bin:/usr/bin:/bin")


async def test_secret_values_reach_the_environment_intact(sandbox: Sandbox) -> None:
    code = "import hashlib, os\nprint(hashlib.sha256(os.environ['SLACK_WEBHOOK'].encode()).hexdigest())"
    r = await run_code(sandbox, code, secrets={"SLACK_WEBHOOK": "https://hooks"})
    assert r.stdout == [hashlib.sha256(b"https://hooks").hexdigest()]


async def test_manifest_is_loaded_the_way_the_seed_shows(sandbox: Sandbox) -> None:
    code = """
import json, os
manifest = json.load(open(os.environ["SEQUENCE_STRATEGY_MANIFEST"]))
print(json.dumps(manifest["PRED_ARB_PAIRS_JSON"]))
"""
    assert (await run_code(sandbox, code)).stdout == ['[["A", "B"]]']


async def test_strategy_cannot_escape_its_cgroup_or_raise_limits(sandbox: Sandbox) -> None:
    code = """
import json, resource
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20))
    raised = True
except (ValueError, OSError):
    raised = False
print(json.dumps({"raised": raised, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
                  "core": resource.getrlimit(resource.RLIMIT_CORE),
                  "cgroupfs": __import__('os').path.exists('/sys/fs/cgroup')}))
"""
    out = json.loads((await run_code(sandbox, code)).stdout[0])
    assert out["raised"] is False
    assert out["nofile"] == [sandbox.config.nofile, sandbox.config.nofile]
    assert out["core"] == [0, 0]
    assert out["cgroupfs"] is False


async def test_concurrent_runs_are_isolated_from_each_other(sandbox: Sandbox) -> None:
    code = "import os, time\nprint(os.environ['SEQUENCE_RUN_ID'], os.listdir('/tmp'), flush=True)\nopen('/tmp/' + os.environ['SEQUENCE_RUN_ID'], 'w')\ntime.sleep(0.2)"
    results = await asyncio.gather(*(run_code(sandbox, code) for _ in range(4)))
    for r in results:
        assert r.info.code == 0
        assert r.stdout == [f"{r.handle.run_id} []"]


async def test_start_rejects_a_bad_artifact_before_spawning(sandbox: Sandbox) -> None:
    from sequence.runner import WorkspaceError

    spec = spec_for("print(1)")
    bad = type(spec)(**{**spec.__dict__, "artifact_sha256": "0" * 64})
    with pytest.raises(WorkspaceError, match="SHA-256 mismatch"):
        await sandbox.start(bad, Collector())
    assert not (sandbox.config.runs_dir / spec.run_id).exists()


async def test_handle_is_an_async_context_manager(sandbox: Sandbox) -> None:
    logs = Collector()
    handle: RunHandle
    async with await sandbox.start(spec_for("print('x')"), logs) as handle:
        info = await handle.wait()
        assert await handle.flush_logs(10)
    assert info.code == 0 and logs.lines() == ["x"]
    assert not (sandbox.config.runs_dir / handle.run_id).exists()
