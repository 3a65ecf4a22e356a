"""What isolation this host can give a strategy, and the bubblewrap command line.

The sandbox (bubblewrap, no user namespace, run by the runner)::

    namespaces   pid, ipc, uts, mount, cgroup (if possible); NOT network —
                 strategies must reach the coordinator on loopback and venues
    root fs      a fresh tmpfs with read-only binds of /usr (and the /bin,
                 /lib* symlinks or dirs), the runtime interpreter's prefix,
                 and a few /etc files (DNS, TLS certificates, ld.so cache …);
                 /etc/passwd and /etc/group are synthesised per run
    /workspace   the run's workspace, read-write, the working directory
    /tmp         private tmpfs (size-capped); /proc new, /dev minimal
    interpreter  the runtime's site-packages / dist-packages covered with
                 empty read-only tmpfs; the strategy runs with ``-s``
    privileges   all capabilities dropped, no_new_privs (bwrap sets it)
    lifetime     --die-with-parent; own session (the runner's setsid)

Everything else on the host — the coordinator's data dir, ``~/.config``,
other runs' workspaces, the runner's ``/proc/<pid>/environ`` — is simply not
there.  :func:`probe_bwrap` runs a real sandboxed interpreter to check all of
that works here; :class:`IsolationReport` says what is active and what is
missing, and why (``sequence doctor`` / ``sequence runner --check``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from sequence.runner.cgroups import (
    CgroupLayout,
    RunCgroup,
    detect_layout,
    prepare_parents,
    swap_enabled,
)
from sequence.runner.errors import CgroupError
from sequence.runner.runtime import Runtime

__all__ = [
    "ETC_FILES",
    "IsolationReport",
    "Protection",
    "bwrap_argv",
    "probe_bwrap",
    "probe_cgroups",
    "write_identity_files",
]

# Read-only from the host's /etc, when present.  Deliberately not: shadow,
# ssl/private, the runner's or coordinator's config, machine-id, hostname.
ETC_FILES = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/protocols",
    "/etc/services",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust",
)
_TOP_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
WORKSPACE = "/workspace"


@dataclass(frozen=True)
class Protection:
    name: str
    detail: str


@dataclass(frozen=True)
class IsolationReport:
    """The isolation a strategy gets on this host (computed by ``Sandbox.check``)."""

    level: Literal["full", "partial", "none"]
    can_run: bool  # False: strategies cannot run here at all
    runtime: str | None  # the interpreter, described
    active: tuple[Protection, ...]
    missing: tuple[Protection, ...]  # detail = why it is missing
    notes: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()  # why can_run is False
    bubblewrap: bool = False
    cgroup_version: int | None = None

    def exit_code(self, *, require_full: bool = False) -> int:
        """0 when strategies can run (1 if *require_full* and it is not full), 2 when not."""
        if not self.can_run:
            return 2
        if require_full and self.level != "full":
            return 1
        return 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        lines = [
            f"isolation: {self.level.upper()}"
            + ("" if self.can_run else " — strategies CANNOT run here")
        ]
        lines.append(f"runtime:   {self.runtime or 'none found'}")
        for e in self.errors:
            lines.append(f"  ERROR    {e}")
        for p in self.active:
            lines.append(f"  ok       {p.name}: {p.detail}")
        for p in self.missing:
            lines.append(f"  MISSING  {p.name}: {p.detail}")
        for n in self.notes:
            lines.append(f"  note     {n}")
        return "\n".join(lines)


def write_identity_files(dest: Path) -> tuple[Path, Path]:
    """Minimal passwd/group for the sandbox (the host's are not exposed)."""
    uid, gid = os.getuid(), os.getgid()
    user = "root" if uid == 0 else "strategy"
    grp = "root" if gid == 0 else "strategy"
    passwd = dest / "passwd"
    group = dest / "group"
    passwd.write_text(
        f"{user}:x:{uid}:{gid}:{user}:{WORKSPACE}:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    group.write_text(f"{grp}:x:{gid}:\nnogroup:x:65534:\n")
    return passwd, group


def bwrap_argv(
    *,
    bwrap: str,
    runtime: Runtime,
    workspace: Path,
    passwd: Path,
    group: Path,
    tmp_bytes: int,
    hostname: str = "sequence",
    extra_ro: Sequence[Path] = (),
) -> list[str]:
    """The bubblewrap options (up to, not including, ``--``) for one run."""
    a = [
        bwrap,
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        hostname,
        "--die-with-parent",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for name in _TOP_DIRS:
        p = Path("/") / name
        if p.is_symlink():
            a += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            a += ["--ro-bind", str(p), str(p)]
    usr = Path("/usr")
    for root in (*runtime.roots, *extra_ro):
        if root != usr and not root.is_relative_to(usr):
            a += ["--ro-bind", str(root), str(root)]
    for site in runtime.site_packages:
        if site.is_dir():
            a += ["--tmpfs", str(site), "--remount-ro", str(site)]
    for f in ETC_FILES:
        a += ["--ro-bind-try", f, f]
    a += ["--ro-bind", str(passwd), "/etc/passwd", "--ro-bind", str(group), "/etc/group"]
    a += [
        "--bind",
        str(workspace),
        WORKSPACE,
        "--chdir",
        WORKSPACE,
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(tmp_bytes),
        "--tmpfs",
        "/tmp",
    ]
    return a


def probe_bwrap(
    bwrap: str, runtime: Runtime, scratch: Path, *, timeout: float = 20.0
) -> str | None:
    """Run the runtime inside a real sandbox; None when it works, else why not."""
    path = shutil.which(bwrap)
    if path is None:
        return f"bubblewrap ({bwrap}) is not installed"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="bwrap-probe-") as tmp:
        ws = Path(tmp) / "workspace"
        ws.mkdir()
        passwd, group = write_identity_files(Path(tmp))
        argv = bwrap_argv(
            bwrap=path,
            runtime=runtime,
            workspace=ws,
            passwd=passwd,
            group=group,
            tmp_bytes=16 << 20,
        )
        code = (
            "import os, sys\n"
            "assert os.getpid() <= 3, os.getpid()\n"
            "assert os.getcwd() == '/workspace'\n"
            "open('/workspace/ok', 'w').write('ok')\n"
            "print('ok')\n"
        )
        try:
            out = subprocess.run(
                [*argv, "--", str(runtime.executable), "-I", "-S", "-c", code],
                capture_output=True,
                timeout=timeout,
                check=False,
                env={"PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"bubblewrap could not run: {exc}"
        if out.returncode != 0 or b"ok" not in out.stdout or not (ws / "ok").exists():
            err = out.stderr.decode(errors="replace").strip().splitlines()
            return f"bubblewrap failed (code {out.returncode}): {err[-1] if err else 'no output'}"
    return None


def probe_cgroups(group: str, owner: str = "") -> tuple[CgroupLayout | None, list[str]]:
    """Detect the hierarchy, prepare the parents and round-trip a probe group.

    Returns the usable layout (or None) and problems found along the way.
    """
    try:
        layout = detect_layout(
            Path("/proc/self/cgroup").read_text(),
            Path("/proc/self/mountinfo").read_text(),
            group=group,
        )
    except OSError as exc:
        return None, [f"cannot read /proc cgroup information: {exc}"]
    if layout is None:
        return None, ["no memory or pids cgroup controller is mounted"]
    problems = list(layout.notes)
    try:
        prepare_parents(layout)
        cg = RunCgroup(layout, f"probe-{os.getpid()}", owner=owner)
        cg.create(memory_bytes=64 << 20, pids_max=16)
        cg.remove()
    except CgroupError as exc:
        return None, [*problems, str(exc)]
    return layout, problems


def cgroup_protections(
    layout: CgroupLayout | None, why: str
) -> tuple[list[Protection], list[Protection]]:
    active: list[Protection] = []
    missing: list[Protection] = []
    if layout is None:
        missing.append(
            Protection("memory-limit", f"{why}; memory_mb is not enforced, OOM is not detected")
        )
        missing.append(Protection("pids-limit", f"{why}; a fork bomb is not contained"))
        return active, missing
    v = f"cgroup v{layout.version}"
    if layout.has_memory:
        probe_dir = layout.memory_parent
        swap_ok = layout.version == 2 or (
            probe_dir is not None and (probe_dir.parent / "memory.memsw.limit_in_bytes").exists()
        )
        active.append(
            Protection("memory-limit", f"{v} memory controller (memory_mb, OOM kill detected)")
        )
        if swap_ok or not swap_enabled():
            active.append(Protection("swap-limit", "swap cannot be used to exceed memory_mb"))
        else:
            missing.append(
                Protection(
                    "swap-limit",
                    "swap is on and memory.memsw is unavailable (boot with swapaccount=1)",
                )
            )
    else:
        missing.append(Protection("memory-limit", f"{v} has no memory controller here"))
    if layout.has_pids:
        active.append(Protection("pids-limit", f"{v} pids controller"))
    else:
        missing.append(Protection("pids-limit", f"{v} has no pids controller here"))
    return active, missing
