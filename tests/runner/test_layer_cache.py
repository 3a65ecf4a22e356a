"""The runner's LayerCache against real wheel files: build, hit, tamper detection, hostile wheels, collection."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from sequence import deps
from sequence.runner.layers import LayerCache, LayerError

TARGET = deps.target_for((3, 12, 0), "linux-x86_64", ("glibc", "2.36"))
WHEEL_NAME = "demo_pkg-1.0-py3-none-any.whl"
DEMO_FILES: dict[str, str] = {
    "demo_pkg/__init__.py": "VALUE = 42\n",
    "demo_pkg/util.py": "def f():\n    return 'util'\n",
    "demo_pkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "demo_pkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: demo_pkg\nVersion: 1.0\n",
}


def make_wheel(files: Mapping[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


class Wheels:
    """What the coordinator would serve: wheel bytes by SHA-256, counting fetches."""

    def __init__(self, *wheels: tuple[str, bytes]) -> None:
        self.entries: list[dict[str, Any]] = [{"filename": fn, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                        for fn, data in wheels]
        self.data = {hashlib.sha256(data).hexdigest(): data for _fn, data in wheels}
        self.calls: list[str] = []

    async def fetch(self, sha: str) -> bytes:
        self.calls.append(sha)
        return self.data[sha]

    def spec(self, target: deps.WheelTarget = TARGET) -> dict[str, Any]:
        locked = deps.parse_lock(self.entries, target, max_wheel_bytes=1 << 30, max_layer_bytes=1 << 30)
        return {"layer_id": deps.layer_id(locked, target), "target": target.to_dict(),
                "size_bytes": sum(w.size for w in locked), "wheels": [dict(w) for w in self.entries]}


def _ensure(cache: LayerCache, spec: Mapping[str, Any], fetch: Callable[[str], Awaitable[bytes]]) -> Path:
    return asyncio.run(cache.ensure(spec, fetch))


def _tree(root: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def _writable(p: Path) -> None:
    p.chmod(p.stat().st_mode | stat.S_IWUSR)


@pytest.fixture
def demo() -> Wheels:
    return Wheels((WHEEL_NAME, make_wheel(DEMO_FILES)))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "layer_cache"


def test_ensure_builds_a_read_only_importable_layer(root: Path, demo: Wheels) -> None:
    cache = LayerCache(root, TARGET)
    spec = demo.spec()
    path = _ensure(cache, spec, demo.fetch)
    assert path == root / spec["layer_id"]
    assert cache.events == [(spec["layer_id"], "built")]
    assert demo.calls == [demo.entries[0]["sha256"]]
    assert _tree(path) == {k: v.encode() for k, v in DEMO_FILES.items()}
    assert (root / f"{spec['layer_id']}.json").is_file() and (root / f"{spec['layer_id']}.used").is_file()
    for p in [path, *path.rglob("*")]:
        assert not p.stat().st_mode & 0o222, f"{p} is writable"
    out = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                          "import demo_pkg; print(demo_pkg.VALUE)", str(path)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "42"
    env = {**os.environ, "PYTHONPATH": str(path)}
    out = subprocess.run([sys.executable, "-c", "import demo_pkg, demo_pkg.util; print(demo_pkg.VALUE, demo_pkg.util.f())"],
                         capture_output=True, text=True, check=True, env=env, cwd=str(root.parent))
    assert out.stdout.split() == ["42", "util"]


def test_second_ensure_is_a_hit_without_fetching(root: Path, demo: Wheels) -> None:
    cache = LayerCache(root, TARGET)
    spec = demo.spec()
    _ensure(cache, spec, demo.fetch)
    _ensure(cache, spec, demo.fetch)
    assert len(demo.calls) == 1
    assert [e for _lid, e in cache.events] == ["built", "hit"]
    # A new process (a restarted runner) over the same root hashes the tree in full, and it is a hit.
    again = LayerCache(root, TARGET)
    _ensure(again, spec, demo.fetch)
    assert len(demo.calls) == 1 and again.events == [(spec["layer_id"], "hit")]


def _assert_rebuilt(cache: LayerCache, spec: dict[str, Any], demo: Wheels, path: Path) -> None:
    calls = len(demo.calls)
    assert _ensure(cache, spec, demo.fetch) == path
    assert len(demo.calls) == calls + 1, "the tampered layer was not fetched again"
    lid, event = cache.events[-1]
    assert lid == spec["layer_id"] and event.startswith("rebuilt (") and "tampered" in event, cache.events
    assert _tree(path) == {k: v.encode() for k, v in DEMO_FILES.items()}


def _tamper_edit(path: Path) -> None:
    f = path / "demo_pkg" / "__init__.py"
    _writable(f)
    f.write_text("VALUE = 666\n")


def _tamper_same_size_same_mtime(path: Path) -> None:
    f = path / "demo_pkg" / "__init__.py"
    st = f.stat()
    _writable(f)
    f.write_text("VALUE = 43\n")  # the same length
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back; ctime cannot be


def _tamper_add(path: Path) -> None:
    _writable(path)
    (path / "sitecustomize.py").write_text("import os\nos.environ['PWNED'] = '1'\n")


def _tamper_add_in_subdir(path: Path) -> None:
    _writable(path / "demo_pkg")
    (path / "demo_pkg" / "evil.py").write_text("x = 1\n")


def _tamper_delete(path: Path) -> None:
    _writable(path / "demo_pkg")
    (path / "demo_pkg" / "util.py").unlink()


def _tamper_symlink_file(path: Path) -> None:
    _writable(path)
    outside = path.parent.parent / "outside.py"
    outside.write_text("x = 1\n")
    (path / "sitecustomize.py").symlink_to(outside)


def _tamper_symlink_dir(path: Path) -> None:
    # A package planted as a symlink to a folder outside the layer: `import evilpkg` would run it.
    outside = path.parent.parent / "outside_pkg"
    outside.mkdir(exist_ok=True)
    (outside / "__init__.py").write_text("PWNED = True\n")
    _writable(path)
    (path / "evilpkg").symlink_to(outside, target_is_directory=True)


@pytest.mark.parametrize("tamper", [_tamper_edit, _tamper_same_size_same_mtime, _tamper_add, _tamper_add_in_subdir,
                                    _tamper_delete, _tamper_symlink_file, _tamper_symlink_dir],
                         ids=lambda f: f.__name__.removeprefix("_tamper_"))
def test_tampering_is_detected_and_the_layer_rebuilt(root: Path, demo: Wheels,
                                                     tamper: Callable[[Path], None]) -> None:
    cache = LayerCache(root, TARGET)
    spec = demo.spec()
    path = _ensure(cache, spec, demo.fetch)
    tamper(path)
    _assert_rebuilt(cache, spec, demo, path)
    assert not (path / "sitecustomize.py").exists() and not (path / "evilpkg").exists()
    assert not (path / "sitecustomize.py").is_symlink() and not (path / "evilpkg").is_symlink()


def test_tampering_seen_by_a_new_process_too(root: Path, demo: Wheels) -> None:
    """A restarted runner (nothing verified yet in its memory) hashes the layer before trusting it."""
    spec = demo.spec()
    path = _ensure(LayerCache(root, TARGET), spec, demo.fetch)
    _tamper_same_size_same_mtime(path)
    _assert_rebuilt(LayerCache(root, TARGET), spec, demo, path)


def test_fetched_bytes_that_are_not_the_locked_wheel_are_refused(root: Path, demo: Wheels) -> None:
    spec = demo.spec()
    evil = make_wheel({**DEMO_FILES, "demo_pkg/__init__.py": "VALUE = 666\n"})

    async def lying_fetch(_sha: str) -> bytes:
        return evil

    cache = LayerCache(root, TARGET)
    with pytest.raises(LayerError, match="does not match the lock's SHA-256"):
        _ensure(cache, spec, lying_fetch)
    assert not (root / spec["layer_id"]).exists()

    same_size = bytearray(demo.data[demo.entries[0]["sha256"]])
    same_size[-1] ^= 1

    async def flipped(_sha: str) -> bytes:
        return bytes(same_size)

    with pytest.raises(LayerError):
        _ensure(cache, spec, flipped)
    assert not (root / spec["layer_id"]).exists()


def test_a_layer_id_that_is_not_its_locks_hash_is_refused(root: Path, demo: Wheels) -> None:
    spec = {**demo.spec(), "layer_id": "f" * 64}
    with pytest.raises(LayerError, match="does not match its id"):
        _ensure(LayerCache(root, TARGET), spec, demo.fetch)
    other = Wheels(("other-1.0-py3-none-any.whl", make_wheel({"other/__init__.py": ""})))
    spec = {**demo.spec(), "wheels": other.entries}  # the id of one lock, the wheels of another
    with pytest.raises(LayerError, match="does not match its id"):
        _ensure(LayerCache(root, TARGET), spec, demo.fetch)
    assert demo.calls == []
    assert not root.exists() or not any(root.glob("*.json"))


@pytest.mark.parametrize("spec", [
    {"layer_id": "f" * 64, "target": {"python": "3.12"}, "wheels": []},
    {"layer_id": "f" * 64, "target": TARGET.to_dict(), "wheels": [{"filename": "../../x.whl", "sha256": "a" * 64,
                                                                    "size": 1}]},
    {},
])
def test_a_malformed_layer_spec_is_a_layer_error(root: Path, spec: dict[str, Any]) -> None:
    async def fetch(_sha: str) -> bytes:
        raise AssertionError("nothing is fetched for a malformed layer")

    with pytest.raises(LayerError, match="malformed"):
        _ensure(LayerCache(root, TARGET), spec, fetch)


def test_a_layer_locked_for_another_python_says_to_redeploy(root: Path) -> None:
    t311 = deps.target_for((3, 11, 0), "linux-x86_64", ("glibc", "2.36"))
    w = Wheels(("numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl", make_wheel({"numpy/__init__.py": ""})))
    spec = w.spec(t311)
    with pytest.raises(LayerError, match="redeploy") as info:
        _ensure(LayerCache(root, TARGET), spec, w.fetch)
    assert "CPython 3.11" in str(info.value) and "CPython 3.12" in str(info.value)
    assert w.calls == []


def test_hostile_members_are_not_written_outside_the_layer(tmp_path: Path, root: Path) -> None:
    files = {**DEMO_FILES, "../evil.py": "EVIL = 1\n", "../../evil2.py": "EVIL = 2\n", "/abs.py": "ABS = 1\n",
             "demo_pkg/../../evil3.py": "EVIL = 3\n", "demo_pkg\\..\\..\\evil4.py": "x\n",
             "demo_pkg-1.0.data/purelib/../../../evil5.py": "x\n"}
    w = Wheels((WHEEL_NAME, make_wheel(files)))
    before = {p for p in tmp_path.rglob("*")}
    path = _ensure(LayerCache(root, TARGET), w.spec(), w.fetch)
    assert _tree(path) == {k: v.encode() for k, v in DEMO_FILES.items()}
    new = {p for p in tmp_path.rglob("*")} - before
    assert all(p == root or root in p.parents for p in new), sorted(map(str, new))
    assert not Path("/abs.py").exists()
    assert not any((d / "evil.py").exists() for d in (tmp_path, root.parent, root.parent.parent))


def test_data_purelib_lands_at_the_root_and_scripts_are_skipped(root: Path) -> None:
    files = {**DEMO_FILES,
             "demo_pkg-1.0.data/purelib/extra_mod.py": "X = 'purelib'\n",
             "demo_pkg-1.0.data/platlib/plat_mod.py": "X = 'platlib'\n",
             "demo_pkg-1.0.data/scripts/demo-cli": "#!/bin/sh\necho hi\n",
             "demo_pkg-1.0.data/headers/demo.h": "int x;\n",
             "demo_pkg-1.0.data/data/share/x.txt": "data\n"}
    w = Wheels((WHEEL_NAME, make_wheel(files)))
    path = _ensure(LayerCache(root, TARGET), w.spec(), w.fetch)
    tree = _tree(path)
    assert tree["extra_mod.py"] == b"X = 'purelib'\n" and tree["plat_mod.py"] == b"X = 'platlib'\n"
    assert not any(k.startswith("demo_pkg-1.0.data") for k in tree)
    assert "demo-cli" not in {Path(k).name for k in tree} and "demo.h" not in {Path(k).name for k in tree}
    assert set(tree) == set(DEMO_FILES) | {"extra_mod.py", "plat_mod.py"}


def test_collect_removes_old_unused_layers_and_keeps_used_or_recent_ones(root: Path) -> None:
    cache = LayerCache(root, TARGET)
    ws = [Wheels((f"pkg{i}-1.0-py3-none-any.whl", make_wheel({f"pkg{i}/__init__.py": f"I = {i}\n"})))
          for i in range(3)]
    old, in_use, recent = (w.spec()["layer_id"] for w in ws)
    for w in ws:
        _ensure(cache, w.spec(), w.fetch)
    week_ago = time.time() - 8 * 86400
    for lid in (old, in_use):
        os.utime(root / f"{lid}.used", (week_ago, week_ago))
    cache.acquire(in_use)
    assert cache.collect(7 * 86400) == [old]
    assert not (root / old).exists() and not (root / f"{old}.json").exists() and not (root / f"{old}.used").exists()
    assert (root / in_use).is_dir() and (root / recent).is_dir()
    # In use, it was marked used again (runners sharing this root must not collect it) ...
    assert (root / f"{in_use}.used").stat().st_mtime > week_ago + 86400
    cache.release(in_use)
    assert cache.collect(7 * 86400) == []
    # ... so once released, it goes only after a retention period without use.
    os.utime(root / f"{in_use}.used", (week_ago, week_ago))
    assert cache.collect(7 * 86400) == [in_use]
    assert (root / recent).is_dir() and cache.collect(7 * 86400) == []
    # A collected layer is built again on demand.
    _ensure(cache, ws[0].spec(), ws[0].fetch)
    assert cache.events[-1] == (old, "built") and len(ws[0].calls) == 2


def test_acquire_counts_runs(root: Path) -> None:
    cache = LayerCache(root, TARGET)
    cache.acquire("x")
    cache.acquire("x")
    cache.release("x")
    assert cache.in_use == {"x": 1}
    cache.release("x")
    assert cache.in_use == {}


def test_a_new_layer_is_byte_compiled_after_its_first_run_starts_and_the_pyc_are_hash_checked(
        root: Path, demo: Wheels) -> None:
    python = Path(sys.executable)
    spec = demo.spec()
    lid = spec["layer_id"]

    async def scenario() -> tuple[Path, dict[str, bytes]]:
        cache = LayerCache(root, TARGET, python)
        path = await cache.ensure(spec, demo.fetch)
        # The run may start before any .pyc exists: compiling happens in the background.
        await cache.wait_compiled()
        compiled = _tree(path)
        # A second ensure (the next run) is a hit: the manifest now covers the .pyc.
        await cache.ensure(spec, demo.fetch)
        assert [e for _l, e in cache.events] == ["built", "hit"]
        return path, compiled

    path, compiled = asyncio.run(scenario())
    pycs = [k for k in compiled if k.endswith(".pyc")]
    assert any(k.startswith("demo_pkg/__pycache__/__init__.") for k in pycs), sorted(compiled)
    assert all(not (path / k).stat().st_mode & 0o222 for k in pycs)
    manifest = json.loads((root / f"{lid}.json").read_text())
    assert set(pycs) <= set(manifest["files"])
    # The interpreter uses them as they are (unchecked-hash .pyc, a read-only tree).
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import demo_pkg; print(demo_pkg.VALUE)"],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(path),
                                                                           "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.stdout.strip() == "42"
    # A tampered .pyc (it would run instead of the source) is caught like any file.
    victim = path / pycs[0]
    victim.parent.chmod(0o755)
    _writable(victim)
    victim.write_bytes(victim.read_bytes()[:16] + b"\x00" * 8)
    fresh = LayerCache(root, TARGET, python)
    asyncio.run(fresh.ensure(spec, demo.fetch))
    assert fresh.events[0][1].startswith("rebuilt"), fresh.events
