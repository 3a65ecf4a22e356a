"""Dependency layers: a strategy's locked wheels, as the CLI, the coordinator and the runner see them.

A strategy's ``requirements.txt`` is resolved at deploy, on the deploying
machine, by pip (``pip download --only-binary=:all: --platform … --python-version …``)
for the runners' interpreter (:class:`WheelTarget`).  The result is a **lock**:
one :class:`LockedWheel` per package (exact version, file name, SHA-256, size).
The lock's hash is the **layer id**: the same lock is the same layer, stored
once by the coordinator and cached once per runner.

A leaf: it imports nothing from the package's rooms.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "MAX_WHEELS",
    "LockError",
    "LockTooLarge",
    "LockedWheel",
    "WheelTarget",
    "layer_id",
    "parse_lock",
    "parse_wheel_filename",
    "target_for",
]

#: At most this many wheels in one layer.
MAX_WHEELS = 500
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")  # \Z: "$" also matches before a final newline
# PEP 427: {distribution}-{version}(-{build tag})?-{python tag}-{abi tag}-{platform tag}.whl
_WHEEL_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)(-(?P<build>\d[A-Za-z0-9_.]*))?"
    r"-(?P<py>[A-Za-z0-9_.]+)-(?P<abi>[A-Za-z0-9_.]+)-(?P<plat>[A-Za-z0-9_.]+)\.whl\Z"
)
# The oldest manylinux glibc minor (manylinux_2_5 == manylinux1) and the legacy aliases.
_LEGACY_MANYLINUX = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}


class LockError(ValueError):
    """A lock (or a wheel in it) is not usable; ``field`` names the culprit.

    Exceptions::

        LockError
         └── LockTooLarge   a wheel, or the lock's total, over the caps
    """

    def __init__(self, message: str, field: str = "wheels") -> None:
        super().__init__(message)
        self.field = field


class LockTooLarge(LockError):
    pass


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_wheel_filename(filename: str) -> tuple[str, str, frozenset[tuple[str, str, str]]]:
    """``(name, version, tags)`` of a wheel's file name; :class:`LockError` if it is not one."""
    m = _WHEEL_RE.match(filename)
    if m is None or len(filename) > 255:
        raise LockError(f"{filename!r} is not a wheel file name (name-version-python-abi-platform.whl)")
    tags = frozenset(
        (py, abi, plat)
        for py in m["py"].split(".")
        for abi in m["abi"].split(".")
        for plat in m["plat"].split(".")
    )
    return _canonical(m["name"]), m["version"], tags


@dataclass(frozen=True)
class WheelTarget:
    """The interpreter a layer is locked for: what pip's ``--python-version``,
    ``--implementation``, ``--abi`` and ``--platform`` say."""

    python: str  # "3.12"
    implementation: str  # "cp"
    abi: str  # "cp312"
    platforms: tuple[str, ...]  # most specific first; "any" is always accepted too

    @property
    def minor(self) -> int:
        return int(self.python.split(".")[1])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "platforms": list(self.platforms)}

    @classmethod
    def from_dict(cls, data: Any) -> WheelTarget:
        """From the wire; :class:`LockError` (field ``target``) when it is not one."""
        if not isinstance(data, Mapping):
            raise LockError("target must be an object {python, implementation, abi, platforms}", "target")
        python, impl, abi, plats = (data.get(k) for k in ("python", "implementation", "abi", "platforms"))
        if not isinstance(python, str) or not re.fullmatch(r"3\.\d{1,2}", python):
            raise LockError("target.python must look like '3.12'", "target.python")
        if impl != "cp":
            raise LockError("target.implementation must be 'cp' (CPython)", "target.implementation")
        if not isinstance(abi, str) or not re.fullmatch(r"cp3\d{1,2}t?", abi):
            raise LockError("target.abi must look like 'cp312'", "target.abi")
        if (not isinstance(plats, list) or not 0 < len(plats) <= 64
                or not all(isinstance(p, str) and re.fullmatch(r"[a-z0-9_]{1,64}", p) for p in plats)):
            raise LockError("target.platforms must be a list of platform tags", "target.platforms")
        return cls(python, impl, abi, tuple(plats))

    def pip_args(self) -> list[str]:
        """pip's options that resolve for this interpreter instead of the one running pip."""
        out = ["--only-binary=:all:", "--python-version", self.python, "--implementation", self.implementation,
               "--abi", self.abi]
        for p in self.platforms:
            out += ["--platform", p]
        return out

    def accepts(self, filename: str) -> bool:
        """Whether this interpreter can import the wheel *filename* (its tags, as pip judges them)."""
        try:
            _, _, tags = parse_wheel_filename(filename)
        except LockError:
            return False
        return any(self._tag_ok(*tag) for tag in tags)

    def _tag_ok(self, py: str, abi: str, plat: str) -> bool:
        if plat != "any" and plat not in self.platforms:
            return False
        major_minor = f"3{self.minor}"
        if abi == self.abi:
            return py == f"cp{major_minor}"
        if abi == "abi3" and not self.abi.endswith("t"):
            return _version_at_most(py, "cp", self.minor)
        if abi == "none":
            return py in ("py3", f"cp{major_minor}") or _version_at_most(py, "py", self.minor)
        return False

    def describe(self) -> str:
        return f"CPython {self.python} ({self.abi}, {self.platforms[0] if self.platforms else 'any'})"


def _version_at_most(tag: str, prefix: str, minor: int) -> bool:
    m = re.fullmatch(rf"{prefix}3(\d+)", tag)
    return m is not None and int(m.group(1)) <= minor


def target_for(version: Sequence[int], platform: str, libc: tuple[str, str] | None,
               abiflags: str = "") -> WheelTarget:
    """The wheel target of a CPython *version* on *platform* (``sysconfig.get_platform()``)
    with the C library *libc* (``platform.libc_ver()``): every manylinux tag its glibc
    runs (newest first), with the legacy aliases, or musllinux for musl."""
    major, minor = int(version[0]), int(version[1])
    arch = platform.split("-", 1)[1].replace("-", "_").replace(".", "_") if "-" in platform else platform
    plats: list[str] = []
    lib, libver = libc or ("", "")
    nums = [int(x) for x in re.findall(r"\d+", libver)[:2]] if libver else []
    if platform.startswith("linux") and len(nums) == 2:
        if lib == "glibc":
            for m in range(nums[1], 4, -1):
                plats.append(f"manylinux_{nums[0]}_{m}_{arch}")
                alias = _LEGACY_MANYLINUX.get((nums[0], m))
                # manylinux2010 and manylinux1 were only ever x86 tags.
                if alias and (alias == "manylinux2014" or arch in ("x86_64", "i686")):
                    plats.append(f"{alias}_{arch}")
        elif lib == "musl":
            plats += [f"musllinux_{nums[0]}_{m}_{arch}" for m in range(nums[1], -1, -1)]
    if not plats:
        plats.append(platform.replace("-", "_").replace(".", "_"))
    return WheelTarget(f"{major}.{minor}", "cp", f"cp{major}{minor}{abiflags}", tuple(plats))


@dataclass(frozen=True)
class LockedWheel:
    """One locked package: what the layer holds of it, down to the byte."""

    name: str
    version: str
    filename: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_lock(wheels: Any, target: WheelTarget, *, max_wheel_bytes: int, max_layer_bytes: int) -> list[LockedWheel]:
    """Check a lock from the wire against *target*; the wheels sorted by name.

    Every wheel must be a wheel file name *target* accepts, with a SHA-256 and a
    size within the caps, one version per package."""
    if not isinstance(wheels, list) or not 0 < len(wheels) <= MAX_WHEELS:
        raise LockError(f"wheels must be a list of 1 to {MAX_WHEELS} wheels")
    out: dict[str, LockedWheel] = {}
    total = 0
    for i, w in enumerate(wheels):
        where = f"wheels[{i}]"
        if not isinstance(w, Mapping):
            raise LockError("each wheel must be an object {filename, sha256, size}", where)
        filename, sha, size = w.get("filename"), w.get("sha256"), w.get("size")
        if not isinstance(filename, str) or len(filename) > 255 or not _WHEEL_RE.match(filename):
            shown = repr(filename[:80]) + ("…" if len(filename) > 80 else "") if isinstance(filename, str) else "it"
            raise LockError(f"{shown} is not a wheel file name (name-version-python-abi-platform.whl, "
                            "at most 255 characters)", f"{where}.filename")
        name, version, _ = parse_wheel_filename(filename)
        if not target.accepts(filename):
            raise LockError(f"{filename} does not run on the runners' interpreter ({target.describe()})",
                            f"{where}.filename")
        if not isinstance(sha, str) or not SHA256_RE.match(sha):
            raise LockError("sha256 must be 64 lowercase hex digits", f"{where}.sha256")
        if type(size) is not int or size <= 0:
            raise LockError("size must be a whole number of bytes, at least 1", f"{where}.size")
        if size > max_wheel_bytes:
            raise LockTooLarge(f"{filename} is {size} bytes; a wheel may be at most {max_wheel_bytes}",
                               f"{where}.size")
        if name in out:
            raise LockError(f"{name} appears twice in the lock", f"{where}.filename")
        total += size
        out[name] = LockedWheel(name, version, filename, sha, size)
    if total > max_layer_bytes:
        raise LockTooLarge(f"the wheels add up to {total} bytes; a layer may hold {max_layer_bytes}")
    return [out[k] for k in sorted(out)]


def layer_id(wheels: Iterable[LockedWheel], target: WheelTarget) -> str:
    """The layer's identity: the SHA-256 of its lock — the target it was resolved for and the
    wheels' file names and hashes, sorted. Whoever posts a lock first cannot make it say
    another interpreter for everyone else: another target is another layer."""
    body = json.dumps({"target": target.to_dict(), "wheels": sorted([w.filename, w.sha256] for w in wheels)},
                      separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()
