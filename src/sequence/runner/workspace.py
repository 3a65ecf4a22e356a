"""Artifact → per-run workspace: verify, unpack safely, write the manifest.

The artifact is hostile input.  Every archive member is checked *before*
anything is written, with explicit rules rather than trusting a library
filter (the member rules are :mod:`sequence.archive`'s, which the coordinator
also applies at deploy):

- the SHA-256 of the bytes must equal the expected hex digest;
- gzip-compressed tar only; at most ``max_members`` members and
  ``max_bytes`` of decompressed stream (counted while streaming, so a
  decompression bomb stops at the limit, not after it);
- names must be relative, without ``..`` components, NUL or empty parts;
- regular files, directories and symlinks only — hard links, devices,
  FIFOs and anything else are refused;
- a symlink's target must stay inside the workspace, and nothing may be
  written *through* a symlink (``link -> sub`` then ``link/x`` is refused,
  as is a later member replacing the symlink);
- files are created ``O_EXCL | O_NOFOLLOW`` with safe modes (``0644`` or
  ``0755``; no set-id, sticky or group/other write bits).

Entries under ``.sequence/`` are reserved for the runner and skipped.

Layout of a run directory (``<data_dir>/runs/<run_id>/``, mode 0700)::

    workspace/                 the artifact; /workspace inside the sandbox
    workspace/.sequence/manifest.json
    sandbox/                   files the runner bind-mounts (passwd, group)
    logs/                      log spool while the sink is slow (see runner/logs)
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sequence.archive import MemberError, Members, member_path
from sequence.runner.errors import WorkspaceError

__all__ = [
    "ArchiveLimits",
    "RunDir",
    "Workspace",
    "check_run_id",
    "prepare_workspace",
    "remove_tree",
    "unpack_archive",
    "verify_sha256",
]

MiB = 1024 * 1024
RESERVED_DIR = ".sequence"
MANIFEST_RELPATH = ".sequence/manifest.json"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")  # \Z: "$" also matches before a final newline
_COPY_CHUNK = 1 * MiB


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 10_000
    max_bytes: int = 512 * MiB  # decompressed tar stream (headers + contents)

    def __post_init__(self) -> None:
        if self.max_members < 1 or self.max_bytes < 1:
            raise ValueError("archive limits must be positive")


@dataclass(frozen=True)
class RunDir:
    """The per-run directory and its fixed subdirectories."""

    root: Path

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def sandbox(self) -> Path:
        return self.root / "sandbox"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"


@dataclass(frozen=True)
class Workspace:
    run_dir: RunDir
    entrypoint: str  # relative, normalised
    members: int
    unpacked_bytes: int

    @property
    def path(self) -> Path:
        return self.run_dir.workspace

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_RELPATH

    def remove(self) -> None:
        remove_tree(self.path)


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id) or ".." in run_id:
        raise WorkspaceError(f"run id {run_id!r} is not a safe directory name")
    return run_id


def verify_sha256(artifact: bytes, expected: str) -> str:
    got = hashlib.sha256(artifact).hexdigest()
    want = (expected or "").strip().lower()
    if got != want:
        raise WorkspaceError(f"artifact SHA-256 mismatch: expected {want or '(none)'}, got {got}")
    return got


class _CountingReader(io.RawIOBase):
    """Decompressed-stream reader that stops at a byte budget (bomb guard)."""

    def __init__(self, src: gzip.GzipFile, limit: int) -> None:
        self._src = src
        self._limit = limit
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b)
        data = self._src.read(len(view))
        n = len(data)
        self.count += n
        if self.count > self._limit:
            raise WorkspaceError(
                f"archive expands to more than {self._limit} bytes (limit); refusing to unpack"
            )
        view[:n] = data
        return n


def unpack_archive(
    artifact: bytes, dest: Path, limits: ArchiveLimits | None = None
) -> tuple[int, int]:
    """Unpack a tar.gz into the empty directory *dest*. Returns (members, content bytes)."""
    limits = limits or ArchiveLimits()
    if artifact[:2] != b"\x1f\x8b":
        raise WorkspaceError("artifact is not a gzip-compressed tar archive")
    gz = gzip.GzipFile(fileobj=io.BytesIO(artifact), mode="rb")
    counted = _CountingReader(gz, limits.max_bytes)
    stream = io.BufferedReader(counted, buffer_size=_COPY_CHUNK)
    members = 0
    content = 0
    seen = Members()
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                members += 1
                if members > limits.max_members:
                    raise WorkspaceError(
                        f"archive has more than {limits.max_members} members (limit); refusing to unpack"
                    )
                try:
                    rel = member_path(member.name)
                    if rel is None:
                        if member.isdir():
                            continue
                        raise MemberError(f"archive member {member.name!r}: not a valid path")
                    if rel.parts[0] == RESERVED_DIR:
                        continue  # reserved for the runner; the CLI never ships it
                    prior = seen.admit(rel, member)
                except MemberError as exc:
                    raise WorkspaceError(str(exc)) from None
                if member.isdir():
                    _mkdirs(dest, rel)
                elif member.issym():
                    _mkdirs(dest, rel.parent)
                    os.symlink(member.linkname, dest / rel)
                else:  # a regular file: admit() let nothing else through
                    if member.size > limits.max_bytes - content:
                        raise WorkspaceError(
                            f"archive member {member.name!r}: contents exceed {limits.max_bytes} bytes (limit)"
                        )
                    src = tar.extractfile(member)
                    if src is None:  # pragma: no cover - isreg() guarantees a file object
                        raise WorkspaceError(f"archive member {member.name!r}: unreadable")
                    _mkdirs(dest, rel.parent)
                    content += _write_file(dest / rel, src, member.mode, replace=prior == "f")
    except WorkspaceError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise WorkspaceError(f"artifact is not a valid tar.gz archive: {exc}") from exc
    except OSError as exc:
        raise WorkspaceError(f"could not unpack the artifact: {exc}") from exc
    return members, content


def _mkdirs(root: Path, rel: PurePosixPath) -> None:
    cur = root
    for part in rel.parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            os.mkdir(cur, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):  # a symlink or file in the way: never follow it
            raise WorkspaceError(f"archive path {str(rel)!r}: {part!r} is not a directory")


def _write_file(path: Path, src: IO[bytes], mode: int, *, replace: bool) -> int:
    if replace:  # duplicate member: the later one wins, as tar does
        os.unlink(path)
    perm = 0o755 if mode & 0o100 else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, perm)
    written = 0
    with os.fdopen(fd, "wb") as out:
        os.fchmod(fd, perm)  # exact mode, whatever the runner's umask
        while chunk := src.read(_COPY_CHUNK):
            out.write(chunk)
            written += len(chunk)
    return written


def _check_entrypoint(root: Path, entrypoint: str) -> str:
    try:
        rel = member_path(entrypoint or "")
    except MemberError as exc:  # the same words as for a member with that name
        raise WorkspaceError(str(exc)) from None
    if rel is None or rel.parts[0] == RESERVED_DIR:
        raise WorkspaceError(f"entrypoint {entrypoint!r} is not a valid path inside the artifact")
    path = root / rel
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(Path(os.path.realpath(root))):
        raise WorkspaceError(f"entrypoint {entrypoint!r} points outside the workspace")
    if not real.is_file():
        raise WorkspaceError(f"entrypoint {entrypoint!r} not found in the artifact")
    return str(rel)


def remove_tree(path: Path) -> None:
    """Remove *path* completely, even if the strategy made parts of it read-only."""

    def onerror(func: Any, p: str, exc_info: Any) -> None:
        parent = os.path.dirname(p)
        with contextlib.suppress(OSError):
            os.chmod(parent, 0o700)
            if not os.path.islink(p) and os.path.isdir(p):
                os.chmod(p, 0o700)
        with contextlib.suppress(FileNotFoundError):
            func(p)

    if os.path.islink(path) or os.path.isfile(path):
        path.unlink(missing_ok=True)
        return
    if path.exists():
        shutil.rmtree(path, onerror=onerror)


def prepare_workspace(
    runs_dir: Path,
    run_id: str,
    artifact: bytes,
    artifact_sha256: str,
    *,
    entrypoint: str,
    manifest: Mapping[str, Any] | None,
    limits: ArchiveLimits | None = None,
) -> Workspace:
    """Verify, unpack and stage one run's workspace under ``runs_dir/<run_id>``.

    The run directory is made fresh (a stale one with the same id is
    removed).  On any error the run directory is removed again and a
    :class:`WorkspaceError` says why.
    """
    limits = limits or ArchiveLimits()
    check_run_id(run_id)
    verify_sha256(artifact, artifact_sha256)
    try:
        manifest_bytes = json.dumps(dict(manifest or {}), ensure_ascii=False, indent=2).encode()
    except (TypeError, ValueError) as exc:
        raise WorkspaceError(f"manifest is not a JSON object: {exc}") from exc
    run_dir = RunDir(runs_dir / run_id)
    runs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    remove_tree(run_dir.root)
    try:
        run_dir.root.mkdir(mode=0o700)
        for sub in (run_dir.workspace, run_dir.sandbox, run_dir.logs, run_dir.tmp):
            sub.mkdir(mode=0o700)
        os.chmod(run_dir.workspace, 0o755)
        members, content = unpack_archive(artifact, run_dir.workspace, limits)
        entry = _check_entrypoint(run_dir.workspace, entrypoint)
        seq_dir = run_dir.workspace / RESERVED_DIR
        seq_dir.mkdir(mode=0o755)
        (seq_dir / "manifest.json").write_bytes(manifest_bytes)
    except WorkspaceError:
        remove_tree(run_dir.root)
        raise
    except OSError as exc:
        remove_tree(run_dir.root)
        raise WorkspaceError(f"could not prepare the workspace: {exc}") from exc
    return Workspace(run_dir=run_dir, entrypoint=entry, members=members, unpacked_bytes=content)
