"""``Sequence.toml`` parsing and artifact building, shared by the CLI and tests.

Also the server-side archive inspection the coordinator runs on upload.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import tomllib
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sequence import archive
from sequence.venues import VENUES

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # \Z, not $: "$" also matches before a final newline
ID_SHAPED_RE = re.compile(r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                          r"|dep_[a-z0-9]{20})\Z")  # a strategy's id; an algo deployment's id
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
RESERVED_PREFIX = "SEQUENCE_"
SKIP_DIRS = frozenset({".git", "__pycache__", ".venv", "venv", ".sequence", ".mypy_cache", ".ruff_cache",
                       ".pytest_cache", "node_modules"})
SKIP_SUFFIXES = (".pyc", ".pyo")
LATENCY_TARGETS = VENUES  # a placement hint names the venue to be near
# Workspace disk quota per strategy (MiB): the default and the range a deploy may ask for.
DISK_MB_DEFAULT, DISK_MB_MIN, DISK_MB_MAX = 1024, 16, 65536
# Whether a run may reach public internet addresses through the runner's egress proxy.
EGRESS_CHOICES = ("public", "none")
EGRESS_DEFAULT = "public"
# What execve() can take, with room to spare under Linux's limits (one string ≤ 128 KiB,
# argv + envp ≤ about a quarter of the stack rlimit): checked at deploy, not at run time.
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_ENV_TOTAL_BYTES = 128 * 1024


class BundleError(ValueError):
    """A strategy folder, its Sequence.toml or its archive is not usable.

    Exceptions::

        BundleError
         └── ArchiveTooLarge   the artifact inflates past the cap (stopped at it)
    """


class ArchiveTooLarge(BundleError):
    def __init__(self, limit: int, inflated: int) -> None:
        super().__init__(f"artifact inflates to more than {limit // (1024 * 1024)} MiB "
                         f"(the limit on unpacked size); inflating stopped there")
        self.limit, self.inflated = limit, inflated


@dataclass
class StrategyConfig:
    name: str | None = None
    runtime: str = "python"
    entrypoint: str = "main.py"
    memory_mb: int | None = None
    stop_timeout_s: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    latency_target: list[str] = field(default_factory=list)
    disk_mb: int | None = None
    egress: str | None = None
    requirements: str | None = None  # path of the requirements file, relative to the folder


_ALLOWED = {
    "strategy": {"name", "runtime", "description"},
    "hosted": {"entrypoint", "memory_mb", "stop_timeout_s", "env", "secrets", "manifest", "placement", "disk_mb",
               "egress", "requirements"},
    "hosted.placement": {"latency_target"},
}


def _line_of(text: str, key: str) -> int | None:
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith(f"[{key}]") or re.match(rf"^{re.escape(key.split('.')[-1])}\s*=", s):
            return i
    return None


def _err(path: Path, text: str, key: str, message: str) -> BundleError:
    line = _line_of(text, key)
    where = f"{path}:{line}" if line else str(path)
    return BundleError(f"{where}: {message}")


def _env_value(v: Any) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, int, float)):
        return str(v)
    return None


def parse_config(path: Path) -> StrategyConfig:
    """Read a ``Sequence.toml``; errors name the file and line."""
    text = path.read_text(encoding="utf-8")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"{path}: invalid TOML: {exc}") from exc
    cfg = StrategyConfig()
    unknown = set(doc) - {"strategy", "hosted"}
    if unknown:
        k = sorted(unknown)[0]
        raise _err(path, text, k, f"unknown section [{k}] (expected [strategy] and [hosted])")
    strat = doc.get("strategy", {})
    hosted = doc.get("hosted", {})
    for sect, table in (("strategy", strat), ("hosted", hosted)):
        if not isinstance(table, dict):
            raise _err(path, text, sect, f"[{sect}] must be a table")
        bad = set(table) - _ALLOWED[sect]
        if bad:
            k = sorted(bad)[0]
            raise _err(path, text, k, f"unknown key '{k}' in [{sect}] (allowed: {', '.join(sorted(_ALLOWED[sect]))})")
    if "name" in strat:
        if not isinstance(strat["name"], str):
            raise _err(path, text, "name", "[strategy] name must be a string")
        cfg.name = strat["name"]
    if "runtime" in strat:
        cfg.runtime = str(strat["runtime"])
    if "entrypoint" in hosted:
        if not isinstance(hosted["entrypoint"], str):
            raise _err(path, text, "entrypoint", "[hosted] entrypoint must be a string")
        cfg.entrypoint = hosted["entrypoint"]
    for key, typ in (("memory_mb", int), ("stop_timeout_s", (int, float))):
        if key in hosted:
            v = hosted[key]
            if isinstance(v, bool) or not isinstance(v, typ):
                raise _err(path, text, key, f"[hosted] {key} must be a number")
            setattr(cfg, key, v)
    if "disk_mb" in hosted:
        v = hosted["disk_mb"]
        if isinstance(v, bool) or not isinstance(v, int) or not DISK_MB_MIN <= v <= DISK_MB_MAX:
            raise _err(path, text, "disk_mb", f"[hosted] disk_mb must be a whole number of MiB from {DISK_MB_MIN} "
                                              f"to {DISK_MB_MAX}")
        cfg.disk_mb = v
    if "egress" in hosted:
        v = hosted["egress"]
        if v not in EGRESS_CHOICES:
            raise _err(path, text, "egress", f"[hosted] egress must be one of: {', '.join(map(repr, EGRESS_CHOICES))}")
        cfg.egress = v
    if "requirements" in hosted:
        v = hosted["requirements"]
        if not isinstance(v, str) or not v or PurePosixPath(v).is_absolute() or ".." in PurePosixPath(v).parts:
            raise _err(path, text, "requirements", "[hosted] requirements must be a relative path inside the folder, "
                                                   "e.g. \"requirements.txt\"")
        cfg.requirements = v
    for slot in ("env", "secrets"):
        table = hosted.get(slot, {})
        if not isinstance(table, dict):
            raise _err(path, text, f"hosted.{slot}", f"[hosted.{slot}] must be a table")
        for k, v in table.items():
            sv = _env_value(v)
            if sv is None:
                if slot == "env" and isinstance(v, (list, dict)):
                    # Structured values can't be env vars: they go to the manifest.
                    cfg.manifest[k] = v
                    continue
                raise _err(path, text, k, f"[hosted.{slot}] {k} must be a string")
            getattr(cfg, slot)[k] = sv
    man = hosted.get("manifest", {})
    if not isinstance(man, dict):
        raise _err(path, text, "hosted.manifest", "[hosted.manifest] must be a table")
    cfg.manifest.update(man)
    placement = hosted.get("placement", {})
    if not isinstance(placement, dict):
        raise _err(path, text, "hosted.placement", "[hosted.placement] must be a table")
    bad = set(placement) - _ALLOWED["hosted.placement"]
    if bad:
        k = sorted(bad)[0]
        raise _err(path, text, k, f"unknown key '{k}' in [hosted.placement] (allowed: latency_target)")
    lt = placement.get("latency_target", [])
    if isinstance(lt, str):
        lt = [lt]
    if not isinstance(lt, list) or not all(isinstance(x, str) for x in lt):
        raise _err(path, text, "latency_target", "latency_target must be a list of strings")
    cfg.latency_target = list(lt)
    return cfg


# ---------------------------------------------------------------------- validation shared with the API

def validate_name(name: str) -> str | None:
    if not name:
        return "name must not be empty"
    if not NAME_RE.match(name):
        return ("name must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or "
                "digit")
    if ID_SHAPED_RE.match(name):
        # Names and ids address the same routes: a strategy named as another's id was
        # unreachable by its name, and deleting "it" deleted the other one.
        return "name must not look like an id (a UUID, or dep_ and 20 letters or digits): it would be taken for one"
    return None


def validate_entrypoint(ep: str) -> str | None:
    p = PurePosixPath(ep)
    if not ep or p.is_absolute() or ".." in p.parts or "\\" in ep:
        return "entrypoint must be a relative path inside the artifact"
    if not ep.endswith(".py"):
        return "entrypoint must be a .py file"
    return None


def syntax_error(source: bytes, name: str) -> str | None:
    """``name:line: message`` if *source* is not valid Python for this interpreter (the
    runners'), else None: an entrypoint that cannot compile would only exit 1 and restart."""
    try:
        compile(source, name, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"{name}:{exc.lineno or 0}: SyntaxError: {exc.msg}"
    except ValueError as exc:  # NUL bytes in the source
        return f"{name}: {exc}"
    return None


def reserved_names(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if n.upper().startswith(RESERVED_PREFIX))


def invalid_env_names(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if not ENV_NAME_RE.match(n))


def env_value_problem(slots: Mapping[str, Mapping[str, str]]) -> tuple[str, str, str] | None:
    """The first value that cannot be passed to execve(): ``(slot, name, problem)``, or None.

    A NUL byte ends a C string (the value would be cut or refused); a value over
    MAX_ENV_VALUE_BYTES, or all of them together over MAX_ENV_TOTAL_BYTES, risks E2BIG.
    """
    total = 0
    for slot, values in slots.items():
        for name, value in values.items():
            if "\0" in value or "\0" in name:
                return slot, name, f"{slot} variable {name} contains a NUL byte, which an environment cannot hold"
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > MAX_ENV_VALUE_BYTES:
                return slot, name, (f"{slot} variable {name} is {size} bytes; a value may be at most "
                                    f"{MAX_ENV_VALUE_BYTES // 1024} KiB (put large data in the manifest)")
            total += size + len(name) + 2
    if total > MAX_ENV_TOTAL_BYTES:
        return "env", "", (f"env and secrets together are {total} bytes; at most {MAX_ENV_TOTAL_BYTES // 1024} KiB "
                           "fit in a process environment (put large data in the manifest)")
    return None


# ---------------------------------------------------------------------- building

def _sdk_dir() -> Path:
    import sequence_markets

    return Path(sequence_markets.__file__).parent


# Left out of every artifact without being asked: names that usually hold secrets.
SECRET_LOOKING = ("secrets*.json", "*.pem", ".env", ".env.*", "*.key")
IGNORE_FILES = (".sequenceignore", ".gitignore")
# A folder whose files add up to more than this is refused before it is bundled
# (the coordinator's default cap on an artifact's unpacked size).
MAX_FOLDER_BYTES = 512 * 1024 * 1024


@dataclass
class Collected:
    """What goes into an artifact, and what was left out and why."""

    files: list[tuple[str, Path]] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    total_bytes: int = 0


def _ignore_spec(root: Path) -> list[tuple[str, Any]]:
    import pathspec  # only the CLI needs it

    out = []
    for name in IGNORE_FILES:
        f = root / name
        if f.is_file():
            lines = f.read_text(encoding="utf-8", errors="replace").splitlines()
            out.append((name, pathspec.PathSpec.from_lines("gitwildmatch", lines)))
    return out


def collect_files(root: Path, exclude: Mapping[Path, str] | None = None, *,
                  max_bytes: int = MAX_FOLDER_BYTES) -> Collected:
    """Walk a strategy folder: the files to bundle, and what is left out.

    Left out (and reported): the files in *exclude* (path → reason, e.g. the
    ``--secrets-file``), whatever ``.sequenceignore`` or ``.gitignore`` at the
    root match, and secret-looking names (:data:`SECRET_LOOKING`). Skipped
    silently: VCS and cache folders (:data:`SKIP_DIRS`), ``*.pyc``.  Refused at
    once: FIFOs, sockets and devices, symlinks leaving the folder, and a folder
    over *max_bytes* (before reading all of it).
    """
    import fnmatch

    root = root.resolve()
    skip = {p.resolve(): why for p, why in (exclude or {}).items()}
    specs = _ignore_spec(root)
    out = Collected()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        kept_dirs = []
        for d in sorted(dirnames):
            if d in SKIP_DIRS:
                continue
            rel = (here / d).relative_to(root).as_posix() + "/"
            why = next((n for n, spec in specs if spec.match_file(rel)), None)
            if why is not None:
                out.left_out.append((rel, why))
                continue
            kept_dirs.append(d)
        dirnames[:] = kept_dirs
        for fn in sorted(filenames):
            p = here / fn
            rel = p.relative_to(root).as_posix()
            if fn.endswith(SKIP_SUFFIXES):
                continue
            why = skip.get(p.resolve()) or skip.get(p)
            if why is None:
                why = next((n for n, spec in specs if spec.match_file(rel)), None)
            if why is None and any(fnmatch.fnmatch(fn, pat) for pat in SECRET_LOOKING):
                why = "looks like a secret"
            if why is not None:
                out.left_out.append((rel, why))
                continue
            st = p.lstat()
            if p.is_symlink():
                target = p.resolve()
                if root not in target.parents:
                    raise BundleError(f"{rel} is a symlink pointing outside the strategy folder")
            elif not stat.S_ISREG(st.st_mode):
                kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                        else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a file")
                raise BundleError(f"{rel} is {kind}: only files, folders and symlinks can be deployed "
                                  "(remove it, or list it in .sequenceignore)")
            else:
                out.total_bytes += st.st_size
                if out.total_bytes > max_bytes:
                    raise BundleError(f"the folder holds more than {max_bytes >> 20} MiB of files (at {rel}); "
                                      "leave data out with .sequenceignore, or deploy a smaller folder")
            out.files.append((rel, p))
    return out


def iter_files(root: Path, exclude: Iterable[Path] = ()) -> list[tuple[str, Path]]:
    """The files :func:`build_artifact` would bundle (see :func:`collect_files`)."""
    return collect_files(root, {p: "excluded" for p in exclude}).files


def build_artifact(root: Path, *, vendor_sdk: bool = True, exclude: Iterable[Path] = (),
                   collected: Collected | None = None) -> bytes:
    """A reproducible tar.gz of the folder (sorted, zeroed mtimes and owners)."""
    files = list((collected or collect_files(root, {p: "excluded" for p in exclude})).files)
    names = {rel for rel, _ in files}
    has_sdk = any(n.startswith("sequence_markets/") or n == "sequence_markets.py" for n in names)
    if vendor_sdk and not has_sdk:
        sdk = _sdk_dir()
        for rel, p in collect_files(sdk).files:
            files.append((f"sequence_markets/{rel}", p))
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, p in sorted(files):
            info = tarfile.TarInfo(rel)
            st = p.lstat()
            info.mode = 0o755 if st.st_mode & 0o111 else 0o644
            info.mtime = 0
            if p.is_symlink():
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(p)
                tar.addfile(info)
                continue
            data = p.read_bytes()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------- server-side inspection

class _CappedGunzip(io.RawIOBase):
    """A gzip stream inflated on demand, refusing to produce more than ``limit`` bytes.

    Reads the compressed input in small pieces, so a bomb costs at most ``limit``
    bytes of inflation (and CPU), never its full size.
    """

    CHUNK = 64 * 1024

    def __init__(self, data: bytes, limit: int) -> None:
        self._src = memoryview(data)
        self._pos = 0
        self._limit = limit
        self.inflated = 0
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def _more(self, want: int) -> bytes:
        while True:
            if self._d.eof:
                rest = self._d.unused_data
                if not rest and self._pos >= len(self._src):
                    return b""
                # A concatenated gzip member: go on with a fresh decompressor.
                self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._buf = rest
            if not self._buf and not self._d.unconsumed_tail:
                if self._pos >= len(self._src):
                    raise EOFError("compressed data ended early")
                self._buf = bytes(self._src[self._pos:self._pos + self.CHUNK])
                self._pos += len(self._buf)
            src = self._d.unconsumed_tail or self._buf
            self._buf = b""
            out = self._d.decompress(src, max(1, min(want, self._limit + 1 - self.inflated)))
            if out:
                self.inflated += len(out)
                if self.inflated > self._limit:
                    raise ArchiveTooLarge(self._limit, self.inflated)
                return out

    def readinto(self, b: Any) -> int:
        out = self._more(len(b))
        n = len(out)
        b[:n] = out
        return n


def inspect_archive(data: bytes, entrypoint: str, *, max_members: int = 100_000,
                    max_unpacked: int = 512 * 1024 * 1024) -> list[str]:
    """Check an uploaded artifact is a gzip tarball holding the entrypoint, whose members keep
    the runner's rules (:mod:`sequence.archive`: relative paths, no links out, no devices …).

    Streams through it once, never inflating more than ``max_unpacked`` bytes
    (ArchiveTooLarge past that); the runner checks again while it unpacks.
    """
    if data[:2] != b"\x1f\x8b":
        raise BundleError("artifact is not a gzip-compressed tarball")
    want = PurePosixPath(entrypoint).as_posix()
    names: list[str] = []
    found = False
    seen = archive.Members()
    stream = io.BufferedReader(_CappedGunzip(data, max_unpacked), buffer_size=_CappedGunzip.CHUNK)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for i, m in enumerate(tar):
                if i >= max_members:
                    raise BundleError(f"artifact has more than {max_members} files")
                try:
                    rel = archive.member_path(m.name)
                    if rel is None:
                        if m.isdir():
                            continue
                        raise archive.MemberError(f"archive member {m.name!r}: not a valid path")
                    seen.admit(rel, m)
                except archive.MemberError as exc:
                    raise BundleError(str(exc)) from None
                name = rel.as_posix()
                names.append(name)
                if name == want and m.isfile():
                    found = True
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise BundleError(f"artifact is not a valid tar.gz: {exc.__class__.__name__}") from exc
    if not found:
        raise BundleError(f"entrypoint '{entrypoint}' not found in the artifact")
    return names


def load_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"{what} {path} does not exist") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{what} {path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BundleError(f"{what} {path} must contain a JSON object, not {type(value).__name__}")
    return value
