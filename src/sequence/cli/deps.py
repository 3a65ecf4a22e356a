"""A strategy's ``requirements.txt`` at deploy: resolved by pip for the runners, uploaded as a layer.

Resolution happens here, on the deploying machine, with pip's own resolver
(``pip download --only-binary=:all: --platform … --python-version …`` for the
target the coordinator names: the runners' interpreter). The user's pip
configuration (indexes, credentials, proxies, cache) applies as it does to any
``pip install`` they run; the coordinator and the runners never reach an index,
and the sandbox has no network to reach one. Why here: docs/design.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TransferSpeedColumn,
)

from sequence import deps
from sequence.cli.errors import CliError
from sequence.cli.http import Api
from sequence.cli.output import err_console

# What pip says when no distribution fits the options (here: no wheel for the target).
_NO_MATCH = re.compile(r"(?:satisfies the requirement|No matching distribution found for) ([^\s(]+)")
PIP_TIMEOUT_S = 900.0
RUNNER_WAIT_S = 30.0


@dataclass
class LayerUpload:
    """What a deploy did about its dependencies."""

    layer_id: str
    packages: list[tuple[str, str]]  # (name, version)
    size_bytes: int
    uploaded_bytes: int
    uploaded_wheels: int
    from_cache: bool = False  # the lock of an earlier deploy (requirements unchanged): pip did not run


def requirements_path(root: Path, entrypoint: str, configured: str | None) -> Path | None:
    """The strategy's requirements file: ``[hosted] requirements``, else ``requirements.txt``
    beside the entrypoint; None when there is none."""
    if configured:
        p = root / configured
        if not p.is_file():
            raise CliError(f"[hosted] requirements names {configured}, which is not a file in {root}")
        return p
    p = (root / entrypoint).parent / "requirements.txt"
    return p if p.is_file() else None


def _has_requirements(path: Path) -> bool:
    """Whether the file asks for anything (not only comments and blank lines)."""
    return bool(requirement_lines(path))


def requirement_lines(path: Path) -> list[tuple[int, str]]:
    """The file's requirements and options as pip reads them: ``(line number, text)``, comments
    and blank lines gone, lines ending in a backslash joined to the next."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", raw)
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line, pending = (pending + line).strip(), ""
        if line:
            out.append((start, line))
    if pending.strip():
        out.append((start, pending.strip()))
    return out


# pip: "#" at the start of a line or after whitespace begins a comment.
_COMMENT = re.compile(r"(^|\s+)#.*$")
_NAME_AT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*@\s*(\S+)")


def check_requirements(path: Path, _seen: frozenset[Path] = frozenset()) -> None:
    """Refuse what pip would build on this machine, or what would ship a secret, before pip runs.

    pip prepares a local folder, an editable (``-e``) or a source archive by running its
    ``setup.py`` here, whatever ``--only-binary`` says, and a folder then resolved to nothing
    (the deploy succeeded without the package). A URL with a password in it would be
    bundled with the strategy, which can read its own files."""
    hint_build = ("strategies get wheels only: build one (`pip wheel PATH -w wheels/`) and add "
                  "`--find-links wheels/` and the package's name instead")
    for number, line in requirement_lines(path):
        where = f"{path.name} line {number}"
        if re.search(r"://[^/\s@]*:[^/\s@]*@", line):
            raise CliError(f"{where}: a URL with a password in it; {path.name} is deployed with the strategy, "
                           "which can read it",
                           "give pip the index and its credentials another way: PIP_INDEX_URL / "
                           "PIP_EXTRA_INDEX_URL, pip.conf or ~/.netrc (pip reads them when it resolves here)")
        word, _, rest = line.partition(" ")
        if word in ("-e", "--editable") or word.startswith("--editable="):
            raise CliError(f"{where}: an editable requirement ({line})", hint_build)
        if word in ("-r", "--requirement", "-c", "--constraint") or word.startswith(("--requirement=", "-r", "-c")):
            name = (rest if word in ("-r", "--requirement", "-c", "--constraint")
                    else word.split("=", 1)[1] if "=" in word else word[2:]).strip()
            nested = (path.parent / name).resolve()
            if name and "://" not in name and nested.is_file() and nested not in _seen:
                check_requirements(nested, _seen | {path.resolve()})  # pip reads these too
            continue
        if word.startswith("-"):
            continue  # an option: --index-url, --find-links …
        m = _NAME_AT.match(line)
        target = m.group(2) if m else word
        if "://" in target:
            if target.split("#", 1)[0].split("?", 1)[0].endswith(".whl"):
                continue  # a direct link to a wheel: downloaded, not built
            raise CliError(f"{where}: {target} is not a wheel", hint_build)
        if not m and not word.endswith(".whl") and (word.startswith((".", "/", "~")) or os.sep in word
                                                    or word.endswith((".zip", ".tar.gz"))):
            raise CliError(f"{where}: {word} is a local path", hint_build)


@contextmanager
def _spinner(show: bool, text: str) -> Iterator[None]:
    if not show:
        yield
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err_console, transient=True) as prog:
        prog.add_task(text, total=None)
        yield


def resolve(path: Path, target: deps.WheelTarget, into: Path, *,
            show_progress: bool) -> list[tuple[deps.LockedWheel, Path]]:
    """Resolve *path* with pip for *target*, downloading the wheels into the empty folder *into*:
    the lock, with each wheel's file. Raises :class:`CliError` naming a requirement that has no wheel."""
    tmp = into
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
           "--progress-bar", "off", "-d", str(tmp), *target.pip_args(), "-r", str(path.resolve())]
    with _spinner(show_progress, f"resolving {path.name} with pip for {target.describe()}"):
        try:
            out = subprocess.run(cmd, cwd=path.parent, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                                 stdin=subprocess.DEVNULL, check=False)
        except FileNotFoundError:
            raise CliError(f"cannot run {sys.executable} -m pip", "install pip to deploy a strategy with "
                           "requirements") from None
        except subprocess.TimeoutExpired:
            raise CliError(f"pip did not resolve {path.name} within {PIP_TIMEOUT_S:.0f} s") from None
    if out.returncode != 0:
        raise _pip_error(path, target, out.stdout + out.stderr)
    locked: list[tuple[deps.LockedWheel, Path]] = []
    for f in sorted(tmp.iterdir()):
        if not f.name.endswith(".whl") or not target.accepts(f.name):
            raise CliError(f"pip chose {f.name}, which is not a wheel for {target.describe()}",
                           "pin a version of that package that ships such a wheel")
        name, version, _ = deps.parse_wheel_filename(f.name)
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        locked.append((deps.LockedWheel(name, version, f.name, h.hexdigest(), f.stat().st_size), f))
    return locked


def _pip_error(path: Path, target: deps.WheelTarget, output: str) -> CliError:
    m = _NO_MATCH.search(output)
    if m:
        req = m.group(1)
        return CliError(
            f"{path.name}: pip found no wheel of {req} for the runners' interpreter, {target.describe()} "
            "(it may be needed by another requirement); strategies get binary wheels only (nothing is built "
            "at deploy or run time) — that package or version may not exist on your index, or it may publish "
            "only a source distribution (sdist)",
            f"check the name and version of {req} on your index; pin one that ships a wheel for CPython "
            f"{target.python} on Linux, or build a wheel and serve it from your own index (pip's --find-links / "
            "--extra-index-url work in requirements.txt)")
    lines = [ln for ln in output.splitlines() if ln.startswith("ERROR")] or output.strip().splitlines()[-3:]
    return CliError(f"pip could not resolve {path.name}: " + " ".join(lines)[:1500],
                    "run `pip download -r requirements.txt` yourself to see pip's whole answer")


def upload(api: Api, target: deps.WheelTarget, locked: list[tuple[deps.LockedWheel, Path]], *,
           show_progress: bool) -> LayerUpload:
    """Post the lock; upload only the wheels the coordinator says it lacks (for this client)."""
    answer = api.request("POST", "/v1/layers", json={
        "target": target.to_dict(), "wheels": [{"filename": w.filename, "sha256": w.sha256, "size": w.size}
                                                for w, _ in locked]})
    files = {w.sha256: f for w, f in locked}
    missing = [m for m in answer["missing"] if m["sha256"] in files]
    total = sum(m["size"] for m in missing)
    lid = answer["layer_id"]
    sent = 0
    prog = (Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                     TransferSpeedColumn(), console=err_console, transient=True) if show_progress and missing
            else None)
    task = prog.add_task(f"uploading {len(missing)} wheel(s)", total=total) if prog else None
    try:
        if prog:
            prog.start()
        for m in missing:
            data = files[m["sha256"]].read_bytes()
            api.request("PUT", f"/v1/layers/{lid}/wheels/{quote(m['sha256'], safe='')}", content=data,
                        headers={"Content-Type": "application/octet-stream"}, timeout=600.0)
            sent += len(data)
            if prog and task is not None:
                prog.update(task, advance=len(data))
    finally:
        if prog:
            prog.stop()
    return LayerUpload(lid, [(w.name, w.version) for w, _ in locked], int(answer["size_bytes"]), sent, len(missing))


def _target(api: Api, show_progress: bool, wait_s: float = RUNNER_WAIT_S) -> deps.WheelTarget:
    """The runners' wheel target; waits a little for a runner that is still registering
    (``sequence up`` then an immediate deploy: the local runner is probing its sandbox)."""
    deadline = time.monotonic() + wait_s

    def ask() -> httpx.Response | None:
        try:
            r = api.client.get("/v1/layers/target")
        except httpx.HTTPError:  # unreachable: the client's own message says what to do
            api.request("GET", "/v1/layers/target")
            raise
        return None if r.status_code == 503 and time.monotonic() < deadline else r

    r = ask()
    if r is None:
        with _spinner(show_progress, "waiting for a runner to register (its interpreter decides the wheels)"):
            while r is None:
                time.sleep(0.5)
                r = ask()
    return deps.WheelTarget.from_dict(api.check(r)["target"])


def lock_cache_path(path: Path, target: deps.WheelTarget, environ: Mapping[str, str] | None = None) -> Path:
    """Where this machine keeps the lock of *path* for *target*: keyed by the file's bytes,
    the target and the pip index settings, so any change to them resolves again."""
    env = os.environ if environ is None else environ
    key = hashlib.sha256()
    key.update(path.read_bytes())
    key.update(json.dumps(target.to_dict(), sort_keys=True).encode())
    for name in sorted(k for k in env if k.startswith("PIP_")):
        key.update(f"\0{name}={env[name]}".encode())
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".cache")
    return Path(base) / "sequence" / "locks" / f"{key.hexdigest()}.json"


def _cached_lock(cache: Path, target: deps.WheelTarget) -> list[deps.LockedWheel] | None:
    try:
        data = json.loads(cache.read_text())
        return deps.parse_lock(data["wheels"], target, max_wheel_bytes=1 << 40, max_layer_bytes=1 << 40)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save_lock(cache: Path, wheels: list[deps.LockedWheel]) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp")
        tmp.write_text(json.dumps({"wheels": [w.to_dict() for w in wheels]}))
        os.replace(tmp, cache)
    except OSError:
        pass  # only a cache: the next deploy resolves again


def prepare_layer(api: Api, path: Path, *, show_progress: bool, refresh: bool = False) -> LayerUpload | None:
    """Resolve and upload *path*'s requirements; None when it asks for nothing.

    The lock of the last deploy from this machine is reused while the requirements file,
    the target and pip's index settings are unchanged (and the coordinator has every
    wheel of it): a redeploy neither runs pip nor uploads anything. *refresh* resolves anew."""
    if not _has_requirements(path):
        return None
    check_requirements(path)
    target = _target(api, show_progress)
    cache = lock_cache_path(path, target)
    cached = None if refresh else _cached_lock(cache, target)
    if cached:
        answer = api.request("POST", "/v1/layers", json={
            "target": target.to_dict(),
            "wheels": [{"filename": w.filename, "sha256": w.sha256, "size": w.size} for w in cached]})
        if not answer["missing"]:
            return LayerUpload(answer["layer_id"], [(w.name, w.version) for w in cached], int(answer["size_bytes"]),
                               0, 0, from_cache=True)
    with tempfile.TemporaryDirectory(prefix="sequence-wheels-") as tmp:
        locked = resolve(path, target, Path(tmp), show_progress=show_progress)
        if not locked:  # it asks for something: nothing resolved is not "no dependencies"
            raise CliError(f"pip resolved no wheel from {path.name}, which asks for something",
                           "run `pip download -r requirements.txt` yourself to see what pip makes of it")
        up = upload(api, target, locked, show_progress=show_progress)
    _save_lock(cache, [w for w, _ in locked])
    return up


def describe(up: LayerUpload) -> dict[str, Any]:
    """The deploy's dependencies, as ``deploy --json`` prints them."""
    return {"layer_id": up.layer_id, "size_bytes": up.size_bytes, "uploaded_bytes": up.uploaded_bytes,
            "uploaded_wheels": up.uploaded_wheels, "lock_reused": up.from_cache,
            "packages": [{"name": n, "version": v} for n, v in up.packages]}


__all__ = ["LayerUpload", "describe", "prepare_layer", "requirements_path", "resolve", "upload"]
