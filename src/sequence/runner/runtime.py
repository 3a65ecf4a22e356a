"""The runtime interpreter strategies run on.

The product runs strategies on ``python:3.12-slim``: a bare CPython with the
standard library and nothing installed.  Here we look for a real CPython 3.12
on the host (``PATH``, then pyenv, then the usual prefixes), resolve shims and
virtualenvs down to the *base* installation (``sys.base_prefix``), and fall
back to the base interpreter of the runner's own Python.

What the sandbox needs to know about the interpreter is probed by running it
once (``-I -c``) — never guessed from paths — and kept in :class:`Runtime`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sequence.deps import WheelTarget, target_for
from sequence.runner.errors import InterpreterNotFound

__all__ = [
    "Runtime",
    "bare_venv",
    "discover_runtime",
    "mirror_runtime",
    "probe_interpreter",
    "world_readable",
]

PREFERRED_VERSION = (3, 12)

_PROBE = r"""
import json, os, site, sys, sysconfig
paths = set(site.getsitepackages())
for key in ("purelib", "platlib"):
    try:
        paths.add(sysconfig.get_path(key))
    except Exception:
        pass
try:  # what platform.libc_ver() answers first, without importing platform (20 ms)
    libc = (os.confstr("CS_GNU_LIBC_VERSION") or "").split(" ", 1)
except (ValueError, OSError, AttributeError):
    libc = []
libc = libc if len(libc) == 2 else ["", ""]
print(json.dumps({
    "executable": sys.executable,
    "base_executable": getattr(sys, "_base_executable", sys.executable),
    "prefix": sys.prefix,
    "base_prefix": sys.base_prefix,
    "exec_prefix": sys.exec_prefix,
    "base_exec_prefix": sys.base_exec_prefix,
    "version": list(sys.version_info[:3]),
    "implementation": sys.implementation.name,
    "stdlib": sysconfig.get_path("stdlib"),
    "platstdlib": sysconfig.get_path("platstdlib"),
    "site_packages": sorted(p for p in paths if p),
    "platform": sysconfig.get_platform(),
    "libc": libc,
    "abiflags": getattr(sys, "abiflags", ""),
}))
"""


@dataclass(frozen=True)
class Runtime:
    """A base (non-venv) interpreter installation, as probed."""

    executable: Path  # real path of the interpreter binary
    prefix: Path  # sys.base_prefix
    exec_prefix: Path  # sys.base_exec_prefix
    version: tuple[int, int, int]
    implementation: str
    stdlib: Path
    site_packages: tuple[Path, ...]  # every site/dist-packages dir of the installation
    platform: str = ""  # sysconfig.get_platform(): "linux-x86_64"
    libc: tuple[str, str] = ("", "")  # ("glibc", "2.36"); empty on musl (wheels: the platform tag only)
    abiflags: str = ""

    @property
    def wheel_target(self) -> WheelTarget:
        """The wheels this interpreter imports (what a dependency layer is locked for)."""
        return target_for(self.version, self.platform, self.libc, self.abiflags)

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def roots(self) -> tuple[Path, ...]:
        """Directories the interpreter needs visible (read-only) inside a sandbox."""
        out: list[Path] = []
        for p in (self.prefix, self.exec_prefix, self.executable.parent):
            if not any(p == q or p.is_relative_to(q) for q in out):
                out = [q for q in out if not q.is_relative_to(p)] + [p]
        return tuple(out)

    def describe(self) -> str:
        return f"{self.implementation} {self.version_str} at {self.executable}"


def probe_interpreter(path: str | os.PathLike[str], *, timeout: float = 20.0) -> Runtime:
    """Run *path* once and describe its **base** installation (venvs resolved)."""
    data = _probe_raw(str(path), timeout)
    if data["prefix"] != data["base_prefix"]:
        # A virtualenv: its base interpreter is what we want (the venv's
        # site-packages is exactly what a bare runtime must not see).
        base = os.path.realpath(data["base_executable"])
        data = _probe_raw(base, timeout)
        if data["prefix"] != data["base_prefix"]:
            raise InterpreterNotFound(
                f"{path}: could not resolve the virtualenv to its base interpreter"
            )
    exe = Path(os.path.realpath(data["executable"]))
    return Runtime(
        executable=exe,
        prefix=Path(data["base_prefix"]),
        exec_prefix=Path(data["base_exec_prefix"]),
        version=(int(data["version"][0]), int(data["version"][1]), int(data["version"][2])),
        implementation=str(data["implementation"]),
        stdlib=Path(data["stdlib"]),
        site_packages=tuple(Path(p) for p in data["site_packages"]),
        platform=str(data.get("platform") or ""),
        libc=(str((data.get("libc") or ["", ""])[0]), str((data.get("libc") or ["", ""])[1])),
        abiflags=str(data.get("abiflags") or ""),
    )


def _probe_raw(path: str, timeout: float) -> dict[str, Any]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    if os.environ.get("HOME"):
        env["HOME"] = os.environ["HOME"]  # pyenv shims need it
    try:
        out = subprocess.run(
            [path, "-I", "-c", _PROBE],
            capture_output=True,
            timeout=timeout,
            check=False,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise InterpreterNotFound(f"{path}: cannot run it ({exc})") from exc
    if out.returncode != 0:
        err = out.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise InterpreterNotFound(f"{path}: probe failed with code {out.returncode}: {err[0]}")
    try:
        data = json.loads(out.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise InterpreterNotFound(f"{path}: probe printed something unexpected") from exc
    if not isinstance(data, dict):
        raise InterpreterNotFound(f"{path}: probe printed something unexpected")
    return data


def _pyenv_candidates(environ: Mapping[str, str], want: tuple[int, int]) -> Iterator[str]:
    roots = []
    if environ.get("PYENV_ROOT"):
        roots.append(Path(environ["PYENV_ROOT"]))
    if environ.get("HOME"):
        roots.append(Path(environ["HOME"]) / ".pyenv")
    pattern = re.compile(rf"^{want[0]}\.{want[1]}\.(\d+)$")
    for root in roots:
        versions = root / "versions"
        try:
            names = os.listdir(versions)
        except OSError:
            continue
        found = sorted(
            ((int(m.group(1)), n) for n in names if (m := pattern.match(n))), reverse=True
        )
        for _, name in found:
            yield str(versions / name / "bin" / f"python{want[0]}.{want[1]}")


def _candidates(environ: Mapping[str, str], want: tuple[int, int]) -> Iterator[str]:
    name = f"python{want[0]}.{want[1]}"
    hit = shutil.which(name, path=environ.get("PATH", os.defpath))
    if hit:
        yield hit
    yield from _pyenv_candidates(environ, want)
    for prefix in ("/usr/local/bin", "/usr/bin"):
        yield f"{prefix}/{name}"


def discover_runtime(
    configured: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    prefer: tuple[int, int] = PREFERRED_VERSION,
    fallback: str | None = None,
) -> Runtime:
    """Find the interpreter strategies run on.

    *configured* wins and must work.  Otherwise: a CPython ``prefer`` on
    ``PATH``, in pyenv, or in ``/usr/local/bin`` / ``/usr/bin``; then the base
    interpreter of *fallback* (default: the runner's ``sys.executable``).
    """
    env = os.environ if environ is None else environ
    if configured is not None:
        return probe_interpreter(configured)
    errors: list[str] = []
    seen: set[str] = set()
    for cand in _candidates(env, prefer):
        if cand in seen or not os.path.exists(cand):
            continue
        seen.add(cand)
        try:
            rt = probe_interpreter(cand)
        except InterpreterNotFound as exc:
            errors.append(str(exc))
            continue
        if rt.implementation == "cpython" and rt.version[:2] == prefer:
            return rt
    try:
        return probe_interpreter(fallback or sys.executable)
    except InterpreterNotFound as exc:
        errors.append(str(exc))
    raise InterpreterNotFound("no usable Python interpreter: " + "; ".join(errors))


def bare_venv(runtime: Runtime, root: Path) -> Path:
    """A virtualenv skeleton over *runtime* with an empty site-packages.

    Used when there is no bubblewrap to mask the installation's
    site-packages: launching the interpreter through this directory's
    ``bin/python`` makes ``site`` use the (empty) venv site-packages instead
    (``include-system-site-packages = false``).  Returns the interpreter path.
    Idempotent; safe to call for every run.
    """
    digest = hashlib.sha256(str(runtime.executable).encode()).hexdigest()[:12]
    tag = f"py{runtime.version_str}-{digest}"
    base = root / tag
    exe = base / "bin" / "python3"
    if exe.is_symlink() and (base / "pyvenv.cfg").exists():
        return exe
    (base / "bin").mkdir(parents=True, exist_ok=True)
    major, minor = runtime.version[:2]
    (base / "lib" / f"python{major}.{minor}" / "site-packages").mkdir(parents=True, exist_ok=True)
    cfg = (
        f"home = {runtime.executable.parent}\n"
        "include-system-site-packages = false\n"
        f"version = {runtime.version_str}\n"
        f"executable = {runtime.executable}\n"
    )
    tmp = base / "pyvenv.cfg.tmp"
    tmp.write_text(cfg)
    os.replace(tmp, base / "pyvenv.cfg")
    for name in ("python3", "python", f"python{major}.{minor}"):
        link = base / "bin" / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(runtime.executable)
    return exe


# Parts of a CPython installation a strategy never needs; left out of the
# mirror (python:3.12-slim leaves out the test suite too).
_MIRROR_SKIP = frozenset({"test", "idlelib", "tkinter", "turtledemo", "ensurepip"})


def world_readable(path: Path) -> bool:
    """True when any user can reach and read *path* (every ancestor o+x, it o+rx)."""
    p = Path(os.path.abspath(path))
    try:
        st = p.stat()
        if st.st_mode & 5 != 5:
            return False
        for parent in p.parents:
            if not parent.stat().st_mode & 0o001:
                return False
    except OSError:
        return False
    return True


def mirror_runtime(runtime: Runtime, cache_dir: Path) -> dict[Path, Path]:
    """A world-readable copy of the runtime's roots that are not, for the sandbox.

    The sandbox runs as an unprivileged uid, and bubblewrap resolves bind
    sources with that uid's permissions: an interpreter under ``/root`` (pyenv)
    is out of its reach.  The mirror is built once, with hard links where the
    file system allows (instant, no space) and copies otherwise, without
    site-packages and the test suite, under *cache_dir* (a neutral system path,
    not the runner's data dir: its path is visible inside, in mountinfo).
    Returns {original root: mirror root} for the roots that needed one; the
    sandbox binds each mirror at its original path, so ``sys.prefix`` and the
    interpreter's RUNPATH stay valid.
    """
    out: dict[Path, Path] = {}
    for root in runtime.roots:
        if world_readable(root):
            continue
        st = runtime.executable.stat()
        key = hashlib.sha256(
            f"{root}\0{runtime.version_str}\0{st.st_mtime_ns}\0{st.st_size}".encode()
        ).hexdigest()[:12]
        dest = cache_dir / f"{runtime.implementation}{runtime.version_str}-{key}"
        if not (dest / ".complete").exists():
            _build_mirror(root, dest, set(runtime.site_packages), cache_dir)
        out[root] = dest
    return out


def _build_mirror(src: Path, dest: Path, site_packages: set[Path], cache_dir: Path) -> None:
    # Every folder created on the way is world-traversable: `sequence up` runs under a
    # private umask (077), and a 0700 parent (/var/lib/sequence) would hide the mirror
    # from the sandbox's unprivileged user.
    missing = [p for p in (cache_dir, *cache_dir.parents) if not p.exists()]
    cache_dir.mkdir(parents=True, exist_ok=True)
    for folder in missing:
        os.chmod(folder, 0o755)
    os.chmod(cache_dir, 0o755)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    os.chmod(tmp, 0o755)
    try:
        for dirpath, dirnames, filenames in os.walk(src):
            here = Path(dirpath)
            rel = here.relative_to(src)
            target = tmp / rel
            if here != src:
                target.mkdir(mode=0o755)
                os.chmod(target, 0o755)
            if here in site_packages:
                dirnames[:] = []
                continue
            if here.name.startswith("python3") and (here / "os.py").exists():
                dirnames[:] = [d for d in dirnames if d not in _MIRROR_SKIP]
            for name in dirnames[:]:
                if (here / name).is_symlink():
                    dirnames.remove(name)
                    os.symlink(os.readlink(here / name), target / name)
            for name in filenames:
                s, t = here / name, target / name
                if s.is_symlink():
                    os.symlink(os.readlink(s), t)
                    continue
                if os.stat(s).st_mode & 0o004:
                    try:
                        os.link(s, t)  # same inode: never chmod it (it is the original)
                        continue
                    except OSError:
                        pass
                shutil.copy2(s, t)
                os.chmod(t, os.stat(t).st_mode | 0o444)
        (tmp / ".complete").touch()
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / ".complete").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
