"""What isolation this host can give a strategy, and the bubblewrap command line.

The sandbox (bubblewrap, run by the runner as an unprivileged uid)::

    user         its own user namespace: uid/gid 1000 ("strategy") inside,
                 an unprivileged host uid outside (the runner, when root,
                 drops to a per-slot uid before starting bubblewrap); no
                 capabilities, no_new_privs, no further user namespaces
    namespaces   pid (the supervisor is pid 1), ipc, uts, mount, cgroup and
                 NETWORK: only loopback.  The Sequence API is reached at
                 SEQUENCE_API_URL = http://127.0.0.1:<port>, a listening socket
                 the runner serves and forwards (runner/network.py); public
                 egress, when the strategy allows it, goes through the runner's
                 HTTP(S) proxy at 127.0.0.1:<port>; nothing else is routable
    seccomp      an allowlist at least as strict as Docker's default profile
                 (runner/seccomp.py)
    root fs      a fresh tmpfs with read-only binds of /usr (and the /bin,
                 /lib* symlinks or dirs), the runtime interpreter's prefix (or
                 its world-readable mirror, bound at the original path), a few
                 /etc files (TLS certificates, ld.so cache …); /etc/passwd,
                 /etc/group and /etc/hosts are synthesised per run
    /workspace   a tmpfs of the strategy's disk quota, filled by the
                 supervisor from the artifact (no host directory is mounted,
                 so no host path of the runner appears in mountinfo)
    /tmp         private tmpfs (size-capped), /dev/shm too; /proc new and
                 read-only, /dev minimal
    interpreter  the runtime's site-packages masked (empty); ``-s``
    lifetime     --die-with-parent; its own session

:func:`probe_bwrap` runs a real sandboxed interpreter with exactly this
configuration and checks the protections hold; :class:`IsolationReport`
says what is active and what is missing, and why (``sequence doctor`` /
``sequence runner --check``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
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
    "SANDBOX_GID",
    "SANDBOX_UID",
    "BwrapFeatures",
    "DataFds",
    "IsolationReport",
    "Protection",
    "bwrap_argv",
    "bwrap_features",
    "data_fd",
    "identity_files",
    "probe_bwrap",
    "probe_cgroups",
]

# Read-only from the host's /etc, when present.  Deliberately not: shadow,
# hosts (synthesised: the host's names are none of the strategy's business),
# ssl/private, the runner's or coordinator's config, machine-id, hostname.
ETC_FILES = (
    "/etc/resolv.conf",
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
SANDBOX_UID = 1000
SANDBOX_GID = 1000


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
    # The wheels the runtime imports (sequence.deps.WheelTarget.to_dict()): what the
    # coordinator tells a deploy to lock a strategy's requirements for.
    wheel_target: dict[str, Any] | None = None

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


@dataclass(frozen=True)
class BwrapFeatures:
    """Options of the installed bubblewrap that the sandbox relies on or uses."""

    path: str
    as_pid_1: bool
    ro_bind_data: bool
    disable_userns: bool

    @property
    def missing(self) -> list[str]:
        return [o for o, ok in (("--as-pid-1", self.as_pid_1), ("--ro-bind-data", self.ro_bind_data)) if not ok]


def bwrap_features(bwrap: str) -> BwrapFeatures | None:
    path = shutil.which(bwrap)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--help"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
    return BwrapFeatures(
        path=path,
        as_pid_1="--as-pid-1" in text,
        ro_bind_data="--ro-bind-data" in text,
        disable_userns="--disable-userns" in text,
    )


def identity_files(hostname: str = "sequence") -> dict[str, bytes]:
    """/etc/passwd, /etc/group and /etc/hosts as the strategy sees them."""
    return {
        "/etc/passwd": (
            f"strategy:x:{SANDBOX_UID}:{SANDBOX_GID}:strategy:{WORKSPACE}:/usr/sbin/nologin\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ).encode(),
        "/etc/group": f"strategy:x:{SANDBOX_GID}:\nnogroup:x:65534:\n".encode(),
        "/etc/hosts": f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost\n".encode(),
    }


def data_fd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding *data*, positioned at 0 (not inheritable)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True)
class DataFds:
    """Descriptors bubblewrap reads at start (they must be passed to it)."""

    files: Mapping[str, int]  # in-sandbox path -> fd (passwd, group, hosts)
    seccomp: int | None

    @property
    def all(self) -> list[int]:
        return [*self.files.values(), *([self.seccomp] if self.seccomp is not None else [])]


def bwrap_argv(
    *,
    features: BwrapFeatures,
    runtime: Runtime,
    mirrors: Mapping[Path, Path],
    fds: DataFds,
    workspace_bytes: int,
    tmp_bytes: int,
    hostname: str = "sequence",
    extra_ro: Sequence[Path] = (),
    binds: Sequence[tuple[Path, str]] = (),
) -> list[str]:
    """The bubblewrap options (up to, not including, ``--``) for one run.

    *binds*: (host path, path inside) pairs bound read-only, e.g. the run's dependency layer."""
    a = [
        features.path,
        "--unshare-user",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_GID),
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        hostname,
        "--as-pid-1",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]
    if features.disable_userns:
        a += ["--disable-userns", "--assert-userns-disabled"]
    a += ["--ro-bind", "/usr", "/usr"]
    for name in _TOP_DIRS:
        p = Path("/") / name
        if p.is_symlink():
            a += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            a += ["--ro-bind", str(p), str(p)]
    usr = Path("/usr")
    for root in (*runtime.roots, *extra_ro):
        if root != usr and not root.is_relative_to(usr):
            a += ["--ro-bind", str(mirrors.get(root, root)), str(root)]
    for site in runtime.site_packages:
        if any(site.is_relative_to(m) for m in mirrors):
            continue  # the mirror has it empty
        if site.is_dir():
            a += ["--tmpfs", str(site), "--remount-ro", str(site)]
    for f in ETC_FILES:
        a += ["--ro-bind-try", f, f]
    for src, dest in binds:
        a += ["--ro-bind", str(src), dest]
    for dest, fd in fds.files.items():
        a += ["--ro-bind-data", str(fd), dest]
    a += [
        "--proc",
        "/proc",
        "--remount-ro",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(tmp_bytes),
        "--tmpfs",
        "/dev/shm",
        "--size",
        str(tmp_bytes),
        "--tmpfs",
        "/tmp",
        "--size",
        str(workspace_bytes),
        "--tmpfs",
        WORKSPACE,
        "--chdir",
        WORKSPACE,
    ]
    if fds.seccomp is not None:
        a += ["--seccomp", str(fds.seccomp)]
    return a


# Runs inside the probe sandbox: every protection the report claims, checked.
_PROBE_CODE = r"""
import os, socket, sys
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
problems = []
if os.getuid() != %(uid)d:
    problems.append("uid is %%d, not %(uid)d" %% os.getuid())
if status("NoNewPrivs") != "1":
    problems.append("no_new_privs is not set")
if %(seccomp)r and status("Seccomp") != "2":
    problems.append("the seccomp filter is not active")
if %(seccomp)r:
    try:
        os.unshare(os.CLONE_NEWUSER)
        problems.append("unshare(CLONE_NEWUSER) succeeded")
    except OSError:
        pass
devs = [l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]]
if devs != ["lo"]:
    problems.append("network interfaces besides loopback: %%s" %% devs)
try:
    open("/proc/sys/kernel/core_pattern", "w").write("|/bin/false")
    problems.append("/proc/sys is writable")
except OSError:
    pass
open("/workspace/ok", "w").write("ok")
print("PROBLEMS:" + "; ".join(problems) if problems else "ok")
"""


def probe_bwrap(
    features: BwrapFeatures,
    runtime: Runtime,
    mirrors: Mapping[Path, Path],
    *,
    uid: int | None,
    seccomp: bytes | None,
    timeout: float = 20.0,
) -> str | None:
    """Run the runtime inside a real sandbox; None when it works as claimed, else why not."""
    missing = features.missing
    if missing:
        return f"bubblewrap at {features.path} is too old (no {', '.join(missing)}); install 0.8 or newer"
    fds = DataFds(
        files={k: data_fd("probe", v) for k, v in identity_files().items()},
        seccomp=data_fd("seccomp", seccomp) if seccomp is not None else None,
    )
    try:
        argv = bwrap_argv(
            features=features,
            runtime=runtime,
            mirrors=mirrors,
            fds=fds,
            workspace_bytes=16 << 20,
            tmp_bytes=16 << 20,
        )
        code = _PROBE_CODE % {"uid": SANDBOX_UID, "seccomp": seccomp is not None}
        try:
            out = subprocess.run(
                [*argv, "--", str(runtime.executable), "-I", "-S", "-c", code],
                capture_output=True,
                timeout=timeout,
                check=False,
                env={"PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL,
                pass_fds=tuple(fds.all),
                cwd="/",
                user=uid,
                group=uid,
                extra_groups=[] if uid is not None else None,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"bubblewrap could not run: {exc}"
    finally:
        for fd in fds.all:
            os.close(fd)
    text = out.stdout.decode(errors="replace").strip()
    if out.returncode != 0 or not text.endswith("ok") or "PROBLEMS:" in text:
        err = out.stderr.decode(errors="replace").strip().splitlines()
        detail = text.split("PROBLEMS:", 1)[1] if "PROBLEMS:" in text else (err[-1] if err else "no output")
        if "setting up uid map" in detail or "No permissions to create new namespace" in detail or (
            "user namespace" in detail.lower()
        ):
            detail += " (unprivileged user namespaces must be enabled: sysctl user.max_user_namespaces)"
        return f"bubblewrap failed (code {out.returncode}): {detail}"
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
