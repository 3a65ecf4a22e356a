"""Item 1: host root from inside the sandbox (/proc/sys, uid 0, host paths).

The chain that worked before: the strategy ran as host uid 0 without
capabilities, /proc/sys accepted its writes (a pipe ``core_pattern`` runs a
program as host root on the next crash), and the host path of its workspace
was visible in /proc/1/cmdline and mountinfo.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import psutil
import pytest

from sequence.runner import RunHandle, Sandbox
from tests.runner.helpers import Collector, run_code, wait_for_line

pytestmark = pytest.mark.anyio

SYSCTLS = (
    "kernel/core_pattern",
    "kernel/panic",
    "kernel/pid_max",
    "vm/swappiness",
    "fs/protected_symlinks",
)


def _host_values() -> dict[str, str]:
    return {k: Path("/proc/sys", k).read_text() for k in SYSCTLS}


async def test_proc_sys_writes_are_refused_and_nothing_changes(sandbox: Sandbox) -> None:
    before = _host_values()
    code = """
import json, os
out = {}
for key, value in [("kernel/core_pattern", "|/workspace/evil %p"), ("kernel/panic", "1"),
                   ("kernel/pid_max", "4242"), ("vm/swappiness", "1"), ("fs/protected_symlinks", "0")]:
    try:
        with open("/proc/sys/" + key, "w") as f:
            f.write(value)
        out[key] = "WRITTEN"
    except OSError as exc:
        out[key] = type(exc).__name__
# every other sysctl, and every other /proc file that is not per-process
writable = []
for root in ("/proc/sys",):
    for d, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            try:
                os.close(os.open(p, os.O_WRONLY))
                writable.append(p)
            except OSError:
                pass
for p in ("/proc/sysrq-trigger", "/proc/kmsg", "/proc/kcore"):
    try:
        os.close(os.open(p, os.O_WRONLY))
        writable.append(p)
    except OSError:
        pass
print(json.dumps({"out": out, "writable": writable}))
"""
    r = await run_code(sandbox, code)
    result = json.loads(r.stdout[0])
    assert set(result["out"].values()) <= {"PermissionError", "OSError"}, result["out"]
    assert result["writable"] == []
    assert _host_values() == before, "a host sysctl changed"


async def test_the_strategy_is_not_root_on_the_host(sandbox: Sandbox) -> None:
    code = """
import json, os, time
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(),
                  "caps": status["CapEff"].strip(), "nnp": status["NoNewPrivs"].strip()}), flush=True)
time.sleep(30)
"""
    host_uids: dict[int, tuple[int, int, int]] = {}

    async def look(handle: RunHandle, logs: Collector) -> None:
        await wait_for_line(logs, "uid")
        for pid in handle._run_pids():
            with contextlib.suppress(psutil.Error):
                host_uids[pid] = tuple(psutil.Process(pid).uids())  # type: ignore[assignment]
        await handle.stop(0)

    r = await run_code(sandbox, code, during=look)
    out = json.loads(r.stdout[0])
    assert out["uid"] == 1000 and out["gid"] == 1000
    assert out["caps"] == "0000000000000000"
    assert out["nnp"] == "1"
    assert len(host_uids) >= 3, host_uids  # bwrap, the supervisor, the strategy
    assert all(0 not in uids for uids in host_uids.values()), host_uids
    if os.geteuid() == 0:  # a root runner drops every run to a uid of its own range
        assert all(uids[0] >= sandbox.config.uid_base for uids in host_uids.values()), host_uids


async def test_no_host_path_of_the_runner_is_visible(sandbox: Sandbox) -> None:
    data_dir = str(sandbox.config.data_dir.resolve())
    code = """
import json, os
texts = {}
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for name in ("cmdline", "environ", "mountinfo"):
        try:
            texts[pid + "/" + name] = open(f"/proc/{pid}/{name}", "rb").read().decode(errors="replace")
        except OSError as exc:
            texts[pid + "/" + name] = type(exc).__name__
texts["self/mountinfo"] = open("/proc/self/mountinfo").read()
texts["cwd"] = os.getcwd()
texts["listing"] = repr(sorted(os.listdir("/")))
print(json.dumps(texts))
"""
    r = await run_code(sandbox, code)
    texts = json.loads(r.stdout[0])
    leaks = {k: v for k, v in texts.items() if data_dir in v or "/runs/" in v}
    assert leaks == {}
    # pid 1 is the supervisor, not bubblewrap: no bwrap argv with host paths
    assert "bwrap" not in texts["1/cmdline"]
    assert texts["1/environ"] == "PermissionError"
    # the workspace is not a bind of a host directory
    ws_line = next(line for line in texts["self/mountinfo"].splitlines() if " /workspace " in line)
    assert " - tmpfs " in ws_line


async def test_the_workspace_never_touches_the_runners_disk(sandbox: Sandbox) -> None:
    code = "open('big.bin', 'wb').write(b'x' * 1024)\nprint('ok')"
    r = await run_code(sandbox, code)
    assert r.stdout == ["ok"]
    run_dir = sandbox.config.runs_dir / r.handle.run_id
    assert not (run_dir / "workspace").exists()
