"""Per-run cgroups: memory and process-count limits, OOM and peak accounting.

Both hierarchies are supported and chosen at runtime from
``/proc/self/mountinfo`` and ``/proc/self/cgroup``:

- **v2** (unified) when the cgroup2 mount offers ``memory`` and ``pids`` at
  the runner's own cgroup.  Runs live in ``<own>/<group>/run-<id>``; the
  runner enables ``+memory +pids`` in ``<own>/cgroup.subtree_control``.  If
  its own cgroup still holds processes ("no internal processes" rule) the
  runner moves itself into ``<own>/<group>-runner`` first (give it a
  delegated cgroup, e.g. systemd ``Delegate=yes``).  Limits: ``memory.max``,
  ``memory.swap.max = 0``, ``memory.oom.group = 1``, ``pids.max``.  OOM:
  ``memory.events`` ``oom_kill``; peak: ``memory.peak``; kill: ``cgroup.kill``.
- **v1** otherwise, per controller: ``<mount>/<own>/<group>/run-<id>`` in the
  ``memory`` and ``pids`` hierarchies.  Limits: ``memory.limit_in_bytes``
  and ``memory.memsw.limit_in_bytes`` (so swap cannot evade the limit),
  ``pids.max``.  OOM: ``memory.oom_control`` ``oom_kill`` (``memory.failcnt``
  on kernels without it); peak: ``memory.max_usage_in_bytes``; kill: SIGKILL
  every member until the group is empty.

The parsing functions are pure so both layouts are unit-tested on any host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sequence.runner.errors import CgroupError

__all__ = [
    "CgroupLayout",
    "Mount",
    "RunCgroup",
    "cleanup_stale",
    "detect_layout",
    "parse_mountinfo",
    "parse_proc_cgroup",
    "swap_enabled",
]

RUN_PREFIX = "run-"


@dataclass(frozen=True)
class Mount:
    mount_point: Path
    root: str  # the cgroup path mounted there (usually "/")
    fstype: str  # "cgroup" | "cgroup2"
    options: frozenset[str]  # super options: controllers for v1


def _unescape(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1 : i + 4].isdigit():
            out.append(chr(int(s[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf = left.split()
        rf = right.split()
        if len(lf) < 5 or len(rf) < 3:
            continue
        fstype = rf[0]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            Mount(
                mount_point=Path(_unescape(lf[4])),
                root=_unescape(lf[3]),
                fstype=fstype,
                options=frozenset(rf[2].split(",")),
            )
        )
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` → {controller: path}; the v2 entry is under ``""``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            out[""] = path
            continue
        for c in controllers.split(","):
            out[c.removeprefix("name=")] = path
    return out


def _join(mount: Mount, path: str) -> Path:
    rel = path
    if mount.root != "/" and (path == mount.root or path.startswith(mount.root.rstrip("/") + "/")):
        rel = path[len(mount.root) :]
    return mount.mount_point / rel.lstrip("/")


@dataclass(frozen=True)
class CgroupLayout:
    """Where this runner's run cgroups go, and what the kernel offers there."""

    version: int  # 1 or 2
    memory_parent: Path | None  # v2: the one parent; v1: memory hierarchy parent
    pids_parent: Path | None  # v2: same as memory_parent
    cpu_parent: Path | None = None  # v1 cpuacct (optional); v2: same as memory_parent
    own: Mapping[str, Path] = field(
        default_factory=dict
    )  # controller ("" on v2) -> runner's own cgroup dir
    notes: tuple[str, ...] = ()

    @property
    def has_memory(self) -> bool:
        return self.memory_parent is not None

    @property
    def has_pids(self) -> bool:
        return self.pids_parent is not None


def detect_layout(
    proc_cgroup: str,
    mountinfo: str,
    *,
    group: str = "sequence",
    read_text: Callable[[Path], str] | None = None,
) -> CgroupLayout | None:
    """Pick v2 or v1 and compute the parent directories (nothing is created).

    Returns None when neither a memory nor a pids controller is mounted.
    *read_text* (a ``Path -> str`` callable) is injectable for tests.
    """
    reader: Callable[[Path], str] = read_text or (lambda p: p.read_text())
    mounts = parse_mountinfo(mountinfo)
    own = parse_proc_cgroup(proc_cgroup)
    notes: list[str] = []

    v2 = next((m for m in mounts if m.fstype == "cgroup2"), None)
    if v2 is not None and "" in own:
        base = _join(v2, own[""])
        try:
            controllers = set(reader(base / "cgroup.controllers").split())
        except OSError:
            controllers = set()
        if {"memory", "pids"} <= controllers:
            parent = base / group
            return CgroupLayout(2, parent, parent, parent, {"": base}, tuple(notes))
        if controllers:
            notes.append(
                f"cgroup v2 at {v2.mount_point} offers only: {' '.join(sorted(controllers))}"
            )

    parents: dict[str, Path] = {}
    owns: dict[str, Path] = {}
    for ctrl in ("memory", "pids", "cpuacct"):
        m = next((m for m in mounts if m.fstype == "cgroup" and ctrl in m.options), None)
        if m is None:
            if ctrl != "cpuacct":
                notes.append(f"no cgroup v1 '{ctrl}' controller mounted")
            continue
        base = _join(m, own.get(ctrl, "/"))
        owns[ctrl] = base
        parents[ctrl] = base / group
    if "memory" not in parents and "pids" not in parents:
        return None
    return CgroupLayout(
        1, parents.get("memory"), parents.get("pids"), parents.get("cpuacct"), owns, tuple(notes)
    )


def swap_enabled(proc_swaps: str | None = None) -> bool:
    text = proc_swaps
    if text is None:
        try:
            text = Path("/proc/swaps").read_text()
        except OSError:
            return False
    return len([ln for ln in text.splitlines() if ln.strip()]) > 1


def _write(path: Path, value: str) -> None:
    # O_CREAT|O_TRUNC as `echo v > file` does: harmless on cgroupfs (the files
    # exist), and lets the tests drive a fake hierarchy made of plain files.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: Path) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _kv(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


def prepare_parents(layout: CgroupLayout, *, move_self: bool = True) -> None:
    """Create the parent group(s) and, on v2, delegate memory+pids into them."""
    try:
        if layout.version == 2:
            assert layout.memory_parent is not None
            own = layout.own[""]
            _enable_v2(own, layout.memory_parent.name, move_self=move_self)
            layout.memory_parent.mkdir(exist_ok=True)
            _ensure_controllers(layout.memory_parent)
        else:
            for p in (layout.memory_parent, layout.pids_parent):
                if p is not None:
                    p.mkdir(exist_ok=True)
            if layout.cpu_parent is not None:
                with contextlib.suppress(OSError):  # optional: CPU time falls back to rusage
                    layout.cpu_parent.mkdir(exist_ok=True)
    except OSError as exc:
        raise CgroupError(f"cannot prepare cgroups: {exc}") from exc


def _ensure_controllers(group: Path) -> None:
    have = set((_read(group / "cgroup.subtree_control") or "").split())
    if {"memory", "pids"} <= have:
        return
    _write(group / "cgroup.subtree_control", "+memory +pids")


def _enable_v2(own: Path, group_name: str, *, move_self: bool) -> None:
    try:
        _ensure_controllers(own)
        return
    except OSError as exc:
        if exc.errno != errno.EBUSY or not move_self:
            raise
    # "No internal processes": move the runner into a leaf of its own cgroup.
    leaf = own / f"{group_name}-runner"
    leaf.mkdir(exist_ok=True)
    _write(leaf / "cgroup.procs", str(os.getpid()))
    _ensure_controllers(own)


class RunCgroup:
    """One run's cgroup (a group per controller on v1)."""

    def __init__(self, layout: CgroupLayout, run_id: str, *, owner: str = "") -> None:
        """*owner* tags the group with the runner that made it (``run-<owner>-<id>``),
        so :func:`cleanup_stale` of one runner never touches another's runs."""
        self.layout = layout
        self.run_id = run_id
        self.owner = owner
        self.name = _group_name(owner, run_id)
        self.dirs: list[Path] = []
        self.cpu_dir: Path | None = None
        if layout.version == 2:
            assert layout.memory_parent is not None
            self.memory_dir: Path | None = layout.memory_parent / self.name
            self.pids_dir: Path | None = self.memory_dir
            self.cpu_dir = self.memory_dir
            self.dirs = [self.memory_dir]
        else:
            self.memory_dir = layout.memory_parent / self.name if layout.memory_parent else None
            self.pids_dir = layout.pids_parent / self.name if layout.pids_parent else None
            self.dirs = [d for d in (self.memory_dir, self.pids_dir) if d is not None]
            if layout.cpu_parent is not None and layout.cpu_parent.is_dir():
                self.cpu_dir = layout.cpu_parent / self.name
                self.dirs.append(self.cpu_dir)
        self.swap_limited = False

    @property
    def version(self) -> int:
        return self.layout.version

    def create(self, *, memory_bytes: int, pids_max: int) -> None:
        """Make the group(s) and set the limits. Raises CgroupError (and cleans up)."""
        try:
            for d in self.dirs:
                if d.exists():  # a stale group of the same name (runner crash)
                    self.kill()
                    d.rmdir()
                # v1 parents are plain directories: recreate one removed under us.
                d.mkdir(parents=self.version == 1)
            if self.version == 2:
                d = self.dirs[0]
                _write(d / "memory.max", str(memory_bytes))
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", "0")
                    self.swap_limited = True
                if (d / "memory.oom.group").exists():
                    _write(d / "memory.oom.group", "1")
                _write(d / "pids.max", str(pids_max))
            else:
                if self.memory_dir is not None:
                    _write(self.memory_dir / "memory.limit_in_bytes", str(memory_bytes))
                    memsw = self.memory_dir / "memory.memsw.limit_in_bytes"
                    if memsw.exists():
                        _write(memsw, str(memory_bytes))
                        self.swap_limited = True
                if self.pids_dir is not None:
                    _write(self.pids_dir / "pids.max", str(pids_max))
        except OSError as exc:
            self.remove()
            raise CgroupError(f"cannot create cgroup {self.name}: {exc}") from exc

    def attach(self, pid: int) -> None:
        """Move *pid* (before it execs anything) into the group(s)."""
        try:
            for d in self.dirs:
                _write(d / "cgroup.procs", str(pid))
        except OSError as exc:
            raise CgroupError(f"cannot move pid {pid} into cgroup {self.name}: {exc}") from exc

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs:
            for line in (_read(d / "cgroup.procs") or "").split():
                if line.isdigit():
                    out.add(int(line))
        return out

    def kill(self) -> int:
        """SIGKILL every member; returns how many were signalled (0 = empty)."""
        if self.version == 2 and self.dirs and (self.dirs[0] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self.dirs[0] / "cgroup.kill", "1")
        sent = 0
        for _ in range(8):
            members = self.pids()
            if not members:
                break
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    sent += 1
        return sent

    def oom_kills(self) -> int | None:
        """OOM kills inside the group; None when the kernel does not count them."""
        if self.memory_dir is None:
            return None
        if self.version == 2:
            return _kv(_read(self.memory_dir / "memory.events")).get("oom_kill")
        return _kv(_read(self.memory_dir / "memory.oom_control")).get("oom_kill")

    def limit_hits(self) -> int:
        if self.memory_dir is None:
            return 0
        if self.version == 2:
            return _kv(_read(self.memory_dir / "memory.events")).get("max", 0)
        return _int(_read(self.memory_dir / "memory.failcnt")) or 0

    def peak_memory(self) -> int | None:
        if self.memory_dir is None:
            return None
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        return _int(_read(self.memory_dir / name))

    def memory_current(self) -> int | None:
        if self.memory_dir is None:
            return None
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return _int(_read(self.memory_dir / name))

    def pids_current(self) -> int | None:
        return _int(_read(self.pids_dir / "pids.current")) if self.pids_dir is not None else None

    def cpu_seconds(self) -> float | None:
        if self.cpu_dir is None:
            return None
        if self.version == 2:
            usec = _kv(_read(self.cpu_dir / "cpu.stat")).get("usage_usec")
            return usec / 1e6 if usec is not None else None
        ns = _int(_read(self.cpu_dir / "cpuacct.usage"))
        return ns / 1e9 if ns is not None else None

    def remove(self) -> bool:
        """Remove the group(s); False while members remain (call :meth:`kill`)."""
        ok = True
        for d in self.dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
        return ok


def _group_name(owner: str, run_id: str) -> str:
    return f"{RUN_PREFIX}{owner}-{run_id}" if owner else f"{RUN_PREFIX}{run_id}"


def cleanup_stale(layout: CgroupLayout, owner: str, keep: Iterable[str] = ()) -> list[str]:
    """Kill and remove *owner*'s run groups (left by its crash) not in *keep*.

    Only groups named ``run-<owner>-…`` are considered: runners with other
    owners (another data dir) sharing the host and the parent group are safe.
    Returns the run ids cleaned up.
    """
    if not owner:
        raise ValueError("cleanup_stale needs the owner tag of this runner")
    prefix = f"{RUN_PREFIX}{owner}-"
    keep_names = {_group_name(owner, k) for k in keep}
    seen: set[str] = set()
    parents = (layout.memory_parent, layout.pids_parent, layout.cpu_parent)
    for parent in {p for p in parents if p is not None}:
        try:
            names = [n for n in os.listdir(parent) if n.startswith(prefix) and n not in keep_names]
        except OSError:
            continue
        seen.update(names)
    done = []
    for name in sorted(seen):
        run_id = name.removeprefix(prefix)
        cg = RunCgroup(layout, run_id, owner=owner)
        cg.kill()
        if cg.remove():
            done.append(run_id)
    return done
