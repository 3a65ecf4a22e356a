"""The SDK is vendored alone into artifacts and run on bare interpreters."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sequence_markets

PACKAGE = Path(sequence_markets.__file__).parent
SRC = PACKAGE.parent
PY39 = Path("/root/.pyenv/versions/3.9.18/bin/python3.9")

# Imports the package and lists every non-stdlib module it pulled in.
PROBE = """
import json, sys
import sequence_markets
names = getattr(sys, "stdlib_module_names", None)
foreign = sorted(
    m for m in sys.modules
    if names is not None and m.split(".")[0] not in names
    and m.split(".")[0] not in ("sequence_markets", "__main__")
)
print(json.dumps({"foreign": foreign, "version": sequence_markets.__version__}))
"""

# Exercises the pure core and a mock round trip: catches 3.10+ syntax or APIs
# that only fail when the code runs.
SMOKE = """
import sequence_markets as sm
from sequence_markets import _frames, _handshake, _stream
assert sm.cross_price("buy", 0.29, 0.01) == 0.3
seen = []
def handler(request):
    seen.append(request)
    return sm.Response.from_json(200, {"graph_id": "g", "fills": []})
seq = sm.Sequence("k", "http://x.test", transport=sm.MockTransport(handler))
seq.graph([seq.node("a", "X", "buy", 1)], edges=[{"from": "a", "to": "b"}])
assert seq.wait_for_fills("g", timeout=0) == []
assert seen[0].json()["nodes"][0]["activation"] == "root"
frame = _frames.encode_frame(1, b"hi", mask_key=None)
parser = _frames.FrameParser(max_frame_size=10)
parser.feed(frame)
assert parser.next_frame().payload == b"hi"
assert _stream.decode_message('{"channel": "c", "data": {"a": 1}}', raw=False)
try:
    sm.Sequence("k", "http://x.test", transport=sm.MockTransport(
        lambda r: sm.Response.from_json(404, {"error": {"code": "not_found", "message": "m"}})
    )).quote("X")
except sm.NotFoundError as exc:
    assert exc.code == "not_found"
print("ok")
"""


def _run(argv: list[str], code: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [*argv, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_import_loads_only_the_standard_library() -> None:
    result = _run([sys.executable, "-S"], PROBE)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["foreign"] == []
    assert report["version"] == sequence_markets.__version__


def test_imports_with_python_dash_s_and_no_site_packages() -> None:
    result = _run(
        [sys.executable, "-S"], "import sequence_markets, sys; assert 'site' not in sys.modules"
    )
    assert result.returncode == 0, result.stderr


def test_source_imports_nothing_outside_the_standard_library() -> None:
    allowed = set(sys.stdlib_module_names) | {"__future__"}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in allowed, f"{path.name} imports {root}"


@pytest.mark.skipif(not PY39.exists(), reason="no Python 3.9 interpreter here")
def test_imports_and_runs_on_python_3_9() -> None:
    result = _run([str(PY39), "-S"], PROBE)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == sequence_markets.__version__
    result = _run([str(PY39), "-S", "-W", "error"], SMOKE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_smoke_runs_on_this_interpreter_too() -> None:
    result = _run([sys.executable, "-S", "-W", "error"], SMOKE)
    assert result.returncode == 0, result.stderr


def test_ruff_config_targets_python_3_9() -> None:
    config = (PACKAGE / "ruff.toml").read_text()
    assert 'target-version = "py39"' in config
    assert 'extend = "../../pyproject.toml"' in config
