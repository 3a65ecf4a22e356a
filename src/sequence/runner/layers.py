"""The runner's cache of dependency layers: wheels fetched once, unpacked once, checked by hash.

A claimed run may name a layer (``ClaimSpec["layer"]``: its id, the target it
was locked for and its wheels' SHA-256).  :meth:`LayerCache.ensure` returns the
layer's unpacked, read-only directory, building it when missing::

    <root>/<layer_id>/            the wheels unpacked (what goes on sys.path), read-only
    <root>/<layer_id>.json        the manifest: every file's SHA-256, and a stat fingerprint
    <root>/<layer_id>.used        touched at every run start (garbage collection)

Integrity: the wheels are checked against the lock's hashes when fetched, and the
unpacked tree against the manifest — fully (every byte hashed) the first time a
runner process uses a layer, and afterwards whenever the stat fingerprint (inode,
size, mtime, ctime of every file and folder) changed.  ctime cannot be set back
from user space, so an edit, a new file or a removed one is noticed; the layer is
then hashed, and rebuilt from freshly fetched wheels if it does not match.

The sandbox binds the directory read-only at :data:`LAYER_MOUNT` and puts it on
``PYTHONPATH`` (runner/sandbox.py); the runtime's own site-packages stay masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sequence import deps
from sequence.runner.errors import RunnerError

__all__ = ["LAYER_MOUNT", "LayerCache", "LayerError"]

log = logging.getLogger("sequence.runner")

#: Where a run sees its layer (read-only); it is on the strategy's PYTHONPATH.
LAYER_MOUNT = "/opt/sequence/deps"
# Bounds on what one layer may unpack to: a hostile wheel is a zip bomb like any other.
MAX_UNPACKED_BYTES = 8 * 1024**3
MAX_FILES = 200_000
COMPILE_TIMEOUT_S = 600.0
_CHUNK = 1 << 20


class LayerError(RunnerError):
    """The run's layer cannot be used here; the text is the run's exit reason."""


@dataclass(frozen=True)
class Layer:
    layer_id: str
    wheels: tuple[deps.LockedWheel, ...]


def _parse(spec: Mapping[str, Any], target: deps.WheelTarget | None) -> Layer:
    """The claim's layer, checked: its id is its lock's hash, and this runner's interpreter takes every wheel."""
    try:
        locked_for = deps.WheelTarget.from_dict(spec.get("target"))
        wheels = deps.parse_lock(spec.get("wheels"), locked_for, max_wheel_bytes=MAX_UNPACKED_BYTES,
                                 max_layer_bytes=MAX_UNPACKED_BYTES)
    except deps.LockError as exc:
        raise LayerError(f"the run's dependency layer is malformed: {exc}") from None
    lid = str(spec.get("layer_id") or "")
    if deps.layer_id(wheels, locked_for) != lid:
        raise LayerError("the run's dependency layer does not match its id")
    if target is not None:
        bad = [w.filename for w in wheels if not target.accepts(w.filename)]
        if bad:
            raise LayerError(
                f"the strategy's dependencies were locked for {locked_for.describe()}, but this runner runs "
                f"{target.describe()}: {bad[0]} cannot load here; redeploy the strategy to lock them again")
    return Layer(lid, tuple(wheels))


def _safe_member(name: str) -> PurePosixPath | None:
    """The member's path inside the layer, or None for what must not be unpacked."""
    if "\0" in name or "\\" in name or name.startswith("/"):
        return None
    p = PurePosixPath(name)
    if any(part in ("..", "") for part in p.parts) or not p.parts:
        return None
    first = p.parts[0]
    if first.endswith(".data"):
        # <name>.data/purelib and /platlib are installed at the root; scripts, headers
        # and data files are not importable code and stay out.
        if len(p.parts) > 2 and p.parts[1] in ("purelib", "platlib"):
            return PurePosixPath(*p.parts[2:])
        return None
    return p


def _unpack(wheels: list[tuple[deps.LockedWheel, bytes]], dest: Path) -> dict[str, list[Any]]:
    """Unpack *wheels* into *dest*; the manifest ``{relpath: [sha256, size]}``."""
    files: dict[str, list[Any]] = {}
    total = 0
    for w, data in wheels:
        try:
            z = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            raise LayerError(f"{w.filename} is not a wheel (not a zip archive)") from None
        with z:
            for info in z.infolist():
                if info.is_dir():
                    continue
                rel = _safe_member(info.filename)
                if rel is None:
                    continue
                total += info.file_size
                if total > MAX_UNPACKED_BYTES or len(files) >= MAX_FILES:
                    raise LayerError(f"the dependency layer unpacks to more than {MAX_UNPACKED_BYTES >> 30} GiB "
                                     f"or {MAX_FILES} files")
                target = dest.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                size = 0
                with z.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                executable = (info.external_attr >> 16) & 0o111
                os.chmod(target, 0o555 if executable else 0o444)
                files[rel.as_posix()] = [h.hexdigest(), size]
    for dirpath, _dirnames, _ in os.walk(dest):
        os.chmod(dirpath, 0o555)
    return files


def _compile(python: Path, root: Path, timeout: float = COMPILE_TIMEOUT_S) -> dict[str, list[Any]]:
    """Byte-compile the layer with the runtime interpreter (``unchecked-hash`` .pyc: the tree
    never changes, and the manifest covers the .pyc too); the manifest of what it wrote.

    Compiling parses the wheels' sources, it never runs them. A module that does not
    compile is left to fail at import, where the strategy sees why."""
    before = {p for p in root.rglob("*") if p.is_file()}
    for dirpath, _d, _f in os.walk(root):
        os.chmod(dirpath, 0o755)
    try:
        subprocess.run([str(python), "-I", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
                        "unchecked-hash", str(root)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=timeout, check=False, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("layer %s: byte-compiling failed (%s); imports compile at run time", root.name, exc)
    out: dict[str, list[Any]] = {}
    for p in root.rglob("*"):
        if p in before or p.is_symlink() or not p.is_file():
            continue
        data = p.read_bytes()
        os.chmod(p, 0o444)
        out[p.relative_to(root).as_posix()] = [hashlib.sha256(data).hexdigest(), len(data)]
    for dirpath, _d, _f in os.walk(root):
        os.chmod(dirpath, 0o555)
    return out


def _fingerprint(root: Path) -> dict[str, list[int]]:
    """(inode, size, mtime, ctime) of every file and folder under *root*, by relative path."""
    out: dict[str, list[int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (".", *dirnames, *filenames):
            p = os.path.join(dirpath, name) if name != "." else dirpath
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            out[rel] = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    return out


def _hash_matches(root: Path, files: Mapping[str, list[Any]]) -> bool:
    """Whether the tree under *root* is exactly *files* (the same paths, the same bytes)."""
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        # Unpacking makes only folders and regular files: a symlink (to a folder: os.walk
        # lists it here and does not follow it) was planted.
        if any(os.path.islink(os.path.join(dirpath, d)) for d in dirnames):
            return False
        for name in filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            want = files.get(rel)
            st = os.lstat(p)
            if want is None or not stat.S_ISREG(st.st_mode) or st.st_size != want[1]:
                return False
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
            if h.hexdigest() != want[0]:
                return False
            seen += 1
    return seen == len(files)


class LayerCache:
    """Layers on this runner's disk, shared by every run (and runner) that uses the same root."""

    def __init__(self, root: Path, target: deps.WheelTarget | None, python: Path | None = None) -> None:
        self.root = Path(root)
        self.target = target
        # The runtime interpreter: byte-compiles a new layer (the layer is read-only inside the
        # sandbox, so without this every run would compile every module it imports again).
        self.python = python
        self._locks: dict[str, asyncio.Lock] = {}
        self._verified: set[str] = set()  # hashed in full by this process
        self.in_use: dict[str, int] = {}  # layer_id -> runs of this process using it
        self._tasks: set[asyncio.Task[None]] = set()
        #: What happened, for tests and logs: "hit", "built", "rebuilt (…)".
        self.events: list[tuple[str, str]] = []

    def path(self, layer_id: str) -> Path:
        return self.root / layer_id

    async def ensure(self, spec: Mapping[str, Any], fetch: Callable[[str], Awaitable[bytes]]) -> Path:
        """The layer's directory, ready to bind; fetched and unpacked first if needed."""
        layer = _parse(spec, self.target)
        lock = self._locks.setdefault(layer.layer_id, asyncio.Lock())
        async with lock:
            state = await asyncio.to_thread(self._check, layer.layer_id)
            if state != "ok":
                await self._build(layer, fetch)
                self.events.append((layer.layer_id, "built" if state == "missing" else f"rebuilt ({state})"))
                if self.python is not None:
                    # The first run starts now; the next ones wait for the .pyc (the lock).
                    task = asyncio.create_task(self._compile_later(layer.layer_id, lock))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            else:
                self.events.append((layer.layer_id, "hit"))
            with contextlib.suppress(OSError):
                (self.root / f"{layer.layer_id}.used").touch()
        return self.path(layer.layer_id)

    def _check(self, layer_id: str) -> str:
        """"ok", "missing", or why the cached copy is not to be trusted."""
        path, manifest = self.path(layer_id), self.root / f"{layer_id}.json"
        try:
            meta = json.loads(manifest.read_text())
            fp_now = _fingerprint(path)
        except (OSError, ValueError):
            return "missing"
        if layer_id in self._verified and fp_now == meta.get("fingerprint"):
            return "ok"
        if not _hash_matches(path, meta.get("files") or {}):
            log.warning("layer %s on disk does not match its hashes: fetching it again", layer_id[:12])
            return "tampered: its files do not match their hashes"
        if fp_now != meta.get("fingerprint"):
            meta["fingerprint"] = fp_now
            _write_json(manifest, meta)
        self._verified.add(layer_id)
        return "ok"

    async def _build(self, layer: Layer, fetch: Callable[[str], Awaitable[bytes]]) -> None:
        got: list[tuple[deps.LockedWheel, bytes]] = []
        for w in layer.wheels:
            data = await fetch(w.sha256)
            if len(data) != w.size or hashlib.sha256(data).hexdigest() != w.sha256:
                raise LayerError(f"{w.filename} as fetched does not match the lock's SHA-256")
            got.append((w, data))
        await asyncio.to_thread(self._install, layer.layer_id, got)

    def _install(self, layer_id: str, wheels: list[tuple[deps.LockedWheel, bytes]]) -> None:
        _make_dirs(self.root)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{layer_id[:12]}-", dir=self.root))
        try:
            files = _unpack(wheels, tmp)
            os.chmod(tmp, 0o555)
            final = self.path(layer_id)
            if final.exists():
                _remove(final)
            os.rename(tmp, final)
            _write_json(self.root / f"{layer_id}.json", {"files": files, "fingerprint": _fingerprint(final)})
            self._verified.add(layer_id)
        finally:
            if tmp.exists():
                _remove(tmp)
        log.info("layer %s built: %d wheel(s), %d files", layer_id[:12], len(wheels), len(files))

    async def _compile_later(self, layer_id: str, lock: asyncio.Lock) -> None:
        """Byte-compile a just-built layer while its first run goes on, then record the .pyc
        in its manifest. A run started meanwhile compiles what it imports in memory (the
        tree is read-only to it); .pyc files appear atomically (py_compile renames them)."""
        assert self.python is not None
        async with lock:
            try:
                await asyncio.to_thread(self._record_compiled, layer_id, self.python)
            except Exception:
                log.exception("layer %s: byte-compiling failed; imports compile at run time", layer_id[:12])

    def _record_compiled(self, layer_id: str, python: Path) -> None:
        path, manifest = self.path(layer_id), self.root / f"{layer_id}.json"
        meta = json.loads(manifest.read_text())
        t0 = time.monotonic()
        meta["files"].update(_compile(python, path))
        meta["fingerprint"] = _fingerprint(path)
        _write_json(manifest, meta)
        log.info("layer %s byte-compiled in %.1f s", layer_id[:12], time.monotonic() - t0)

    async def wait_compiled(self) -> None:
        """Until every background compilation of this cache is done (for tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def acquire(self, layer_id: str) -> None:
        self.in_use[layer_id] = self.in_use.get(layer_id, 0) + 1

    def release(self, layer_id: str) -> None:
        n = self.in_use.get(layer_id, 0) - 1
        if n > 0:
            self.in_use[layer_id] = n
        else:
            self.in_use.pop(layer_id, None)

    def collect(self, unused_for: float) -> list[str]:
        """Remove layers no run of this process uses and none touched for *unused_for* seconds."""
        removed: list[str] = []
        for lid in list(self.in_use):
            # A run may outlive the retention: its layer stays "used" for runners sharing this root.
            with contextlib.suppress(OSError):
                (self.root / f"{lid}.used").touch()
        try:
            names = os.listdir(self.root)
        except OSError:
            return removed
        cutoff = time.time() - unused_for
        for name in names:
            if not deps.SHA256_RE.match(name) or name in self.in_use:
                continue
            try:
                used = os.stat(self.root / f"{name}.used").st_mtime
            except OSError:
                used = 0.0
            if used >= cutoff:
                continue
            _remove(self.root / name)
            for suffix in (".json", ".used"):
                with contextlib.suppress(OSError):
                    os.unlink(self.root / f"{name}{suffix}")
            self._verified.discard(name)
            removed.append(name)
        if removed:
            log.info("layers: removed %d unused layer(s) from %s", len(removed), self.root)
        return removed


def _make_dirs(root: Path) -> None:
    # World-traversable: the sandbox's unprivileged uid binds the layer from here.
    missing = [p for p in (root, *root.parents) if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    for folder in missing:
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o755)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    """Remove a read-only tree (its folders are 0555)."""
    def onerror(func: Any, p: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, 0o755)
            func(p)

    with contextlib.suppress(OSError):
        os.chmod(path, 0o755)
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(dirpath, d), 0o755)
    shutil.rmtree(path, onerror=onerror)
