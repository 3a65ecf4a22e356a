"""Items 3 and 4: no syscall filter, and the sandbox's own plumbing was reachable.

Before: ``unshare(CLONE_NEWUSER)`` succeeded, ``add_key`` put a key into the
host root's user keyring, and the strategy could ``ptrace`` pid 1 (bwrap)
and pid 2 (the supervisor) and write to the supervisor's status pipe through
``/proc/2/fd`` — forging its own exit status and reason.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from sequence.runner import Sandbox
from sequence.runner.seccomp import ALLOWED
from tests.runner.helpers import run_code

pytestmark = pytest.mark.anyio

# x86_64 numbers, via libc's syscall(2): what a hostile strategy would call.
ATTACKS = """
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *args):
    r = libc.syscall(nr, *args)
    return "OK" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
out = {}
try:
    os.unshare(os.CLONE_NEWUSER); out["unshare-user"] = "OK"
except OSError as exc:
    out["unshare-user"] = errno.errorcode[exc.errno]
try:
    os.unshare(os.CLONE_NEWNET); out["unshare-net"] = "OK"
except OSError as exc:
    out["unshare-net"] = errno.errorcode[exc.errno]
CLONE_NEWUSER, SIGCHLD = 0x10000000, 17
out["clone-newuser"] = sc(56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
out["setns"] = sc(308, 0, 0)
out["add_key"] = sc(248, b"user", DESC.encode(), b"payload", 7, -4)   # KEY_SPEC_USER_KEYRING
out["keyctl"] = sc(250, 0, -4, 0)                                      # KEYCTL_GET_KEYRING_ID
out["request_key"] = sc(249, b"user", DESC.encode(), 0, 0)
out["ptrace-1"] = sc(101, 16, 1, 0, 0)                                 # PTRACE_ATTACH pid 1
out["ptrace-me"] = sc(101, 0, 0, 0, 0)                                 # PTRACE_TRACEME
out["process_vm_readv"] = sc(310, 1, 0, 0, 0, 0, 0)
out["perf_event_open"] = sc(298, 0, 0, -1, -1, 0)
out["bpf"] = sc(321, 0, 0, 0)
out["mount"] = sc(165, b"none", b"/tmp", b"tmpfs", 0, 0)
out["init_module"] = sc(175, 0, 0, b"")
out["kexec_load"] = sc(246, 0, 0, 0, 0)
out["settimeofday"] = sc(164, 0, 0)
out["clock_settime"] = sc(227, 0, 0)
out["adjtimex"] = sc(159, 0)
out["io_uring_setup"] = sc(425, 1, 0)
out["userfaultfd"] = sc(323, 0)
out["chroot"] = sc(161, b"/tmp")
out["socket-vsock"] = sc(41, 40, 1, 0)
out["personality"] = sc(135, 0x0040000)                                # READ_IMPLIES_EXEC
print(json.dumps(out))
"""


async def test_dangerous_system_calls_are_refused(sandbox: Sandbox) -> None:
    desc = f"sequence-attack-{uuid.uuid4().hex[:8]}"
    r = await run_code(sandbox, f"DESC = {desc!r}\n" + ATTACKS)
    out = json.loads(r.stdout[0])
    assert {k: v for k, v in out.items() if v == "OK"} == {}, out
    keys = Path("/proc/keys").read_text() if Path("/proc/keys").exists() else ""
    assert desc not in keys, "the strategy's key reached a host keyring"


async def test_ordinary_python_still_works_under_the_filter(sandbox: Sandbox) -> None:
    code = """
import json, multiprocessing, os, socket, subprocess, sys, threading, time
out = {}
t = threading.Thread(target=lambda: out.setdefault("thread", "ok")); t.start(); t.join()
out["subprocess"] = subprocess.run([sys.executable, "-c", "print(6*7)"], capture_output=True, text=True).stdout.strip()
with multiprocessing.Pool(2) as pool:
    out["pool"] = sum(pool.map(abs, [-1, -2, -3]))
a, b = socket.socketpair(); a.sendall(b"x"); out["socketpair"] = b.recv(1).decode()
out["time"] = time.time() > 0
print(json.dumps(out))
"""
    r = await run_code(sandbox, code)
    assert r.info.code == 0, r.stderr
    assert json.loads(r.stdout[0]) == {
        "thread": "ok", "subprocess": "42", "pool": 6, "socketpair": "x", "time": True
    }


def test_the_allowlist_is_no_looser_than_dockers() -> None:
    """Docker allows these without capabilities; we refuse them on purpose."""
    for name in ("ptrace", "process_vm_readv", "process_vm_writev", "io_uring_setup",
                 "io_uring_enter", "adjtimex", "clock_adjtime"):
        assert name not in ALLOWED
    # and never the calls Docker reserves for CAP_SYS_ADMIN & co.
    for name in ("unshare", "setns", "mount", "bpf", "perf_event_open", "keyctl", "add_key",
                 "init_module", "kexec_load", "reboot", "swapon", "settimeofday", "chroot",
                 "pivot_root", "userfaultfd", "clone3", "clone", "socket", "personality"):
        assert name not in ALLOWED  # clone/socket/personality: only with argument checks


PLUMBING = """
import ctypes, errno, json, os, signal, time
out = {}
out["pid"] = os.getpid()
out["pid1"] = open("/proc/1/cmdline", "rb").read().split(b"\\0")[0].decode()
for what in ("fd", "mem", "environ", "root"):
    try:
        p = "/proc/1/" + what
        if what in ("fd", "root"):
            os.listdir(p)
        else:
            open(p, "rb").read(1)
        out["pid1-" + what] = "OK"
    except OSError as exc:
        out["pid1-" + what] = type(exc).__name__
forged = []
for fd in range(0, 64):
    try:
        with open(f"/proc/1/fd/{fd}", "w") as f:
            f.write("exit 0\\n")
        forged.append(fd)
    except OSError:
        pass
out["forged"] = forged
# pid 1 ignores signals sent from inside its namespace
for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGSTOP):
    try:
        os.kill(1, sig)
    except OSError:
        pass
time.sleep(0.2)
out["alive"] = True
print(json.dumps(out), flush=True)
os._exit(3)
"""


async def test_the_supervisor_cannot_be_traced_opened_or_forged(sandbox: Sandbox) -> None:
    r = await run_code(sandbox, PLUMBING)
    out = json.loads(r.stdout[0])
    assert out["pid"] == 2 and "python" in out["pid1"]
    assert {k: v for k, v in out.items() if k.startswith("pid1-") and v == "OK"} == {}, out
    assert out["forged"] == []
    assert out["alive"] is True
    # the exit status is the strategy's own, not a forged one
    assert r.info.code == 3 and r.info.reason == "exited with code 3"
