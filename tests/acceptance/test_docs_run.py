"""The tutorials run as written: docs/api.md and docs/quickstart.md, block by block.

Each document's ```bash blocks are extracted in order and run as ONE script
(``bash -euo pipefail``), in an empty temporary folder, against a platform
started the way a user starts it (``sequence up`` on a fresh data dir, private
HOME). The script gets what the docs assume: ``SEQUENCE_API_URL`` and
``SEQUENCE_API_KEY`` exported from the CLI config ``sequence up`` wrote, and
the project's virtualenv first on ``PATH`` (so ``sequence`` and ``python`` are
the project's). Blocks marked ``console`` or ``text`` (steps that need the
checkout, such as ``make run``, and sample output) are not run.

The tests read the docs, so docs and reality cannot drift apart: a command
that stops working, a variable a later block needs but no earlier block sets,
a ``<placeholder>``, a file the doc expects in the repository — each fails
here, naming the document line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.acceptance.harness import ROOT, Platform

pytestmark = pytest.mark.slow

DOCS = ROOT / "docs"
VENV_BIN = Path(sys.executable).parent
#: Each document must finish well within this (it takes 10-40 s).
TIMEOUT_S = 150.0
#: The quickstart stages the product document's example in this fixed folder, verbatim.
SEED_FOLDER = Path("/tmp/my-strategy")

_BLOCK = re.compile(r"^```bash[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_PLACEHOLDER = re.compile(r"<[A-Za-z_][\w-]*>")


@dataclass
class Block:
    line: int  # 1-based line of the block's first command in the document
    code: str


@dataclass
class DocRun:
    doc: Path
    script: str
    starts: list[tuple[int, int]]  # (script line, document line) where each block starts
    out: subprocess.CompletedProcess[str]
    seconds: float
    up_log: str

    def doc_line(self, script_line: int) -> int | None:
        found = None
        for s, d in self.starts:
            if s <= script_line:
                found = d + (script_line - s)
        return found

    def explain(self) -> str:
        where = ""
        m = re.search(r"^docs-run: failed at script line (\d+)", self.out.stderr, re.M)
        if m:
            line = self.doc_line(int(m.group(1)))
            where = f"failed at {self.doc.relative_to(ROOT)}:{line}\n"
        return (f"{where}exit {self.out.returncode} after {self.seconds:.1f} s\n"
                f"--- stdout ---\n{self.out.stdout[-6000:]}\n"
                f"--- stderr ---\n{self.out.stderr[-4000:]}\n"
                f"--- sequence up ---\n{self.up_log}")


def bash_blocks(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    return [Block(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


def as_script(blocks: list[Block]) -> tuple[str, list[tuple[int, int]]]:
    """The blocks, verbatim and in order, after one line that reports where a command failed."""
    lines = ["trap 'echo \"docs-run: failed at script line $LINENO\" >&2' ERR"]
    starts = []
    for block in blocks:
        starts.append((len(lines) + 1, block.line))
        lines.extend(block.code.rstrip("\n").split("\n"))
    return "\n".join(lines) + "\n", starts


def run_doc(doc: Path, root: Path) -> DocRun:
    assert shutil.which("jq"), "the docs use jq: install it (apt-get install jq)"
    blocks = bash_blocks(doc)
    assert blocks, f"{doc.name} has no bash blocks"
    for block in blocks:
        code = "\n".join(line for line in block.code.splitlines() if not line.lstrip().startswith("#"))
        assert not _PLACEHOLDER.search(code), \
            f"{doc.name}:{block.line}: a <placeholder> in a block meant to run verbatim: {_PLACEHOLDER.search(code)}"
    script, starts = as_script(blocks)
    platform = Platform(root).start()
    try:
        cfg = tomllib.loads((platform.home / ".config" / "sequence" / "config.toml").read_text())
        work, tmp = root / "work", root / "tmp"
        work.mkdir()
        tmp.mkdir()
        path = f"{VENV_BIN}{os.pathsep}{platform.env.get('PATH', os.defpath)}"
        env = {**platform.env, "PATH": path, "TMPDIR": str(tmp),
               "SEQUENCE_API_URL": str(cfg["api_url"]), "SEQUENCE_API_KEY": str(cfg["api_key"])}
        env.pop("VIRTUAL_ENV", None)
        t0 = time.monotonic()
        try:
            out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env,
                                 capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            partial = subprocess.CompletedProcess(exc.cmd, -1, _text(exc.stdout), _text(exc.stderr))
            run = DocRun(doc, script, starts, partial, TIMEOUT_S, platform.up_log())
            raise AssertionError(f"{doc.name} did not finish in {TIMEOUT_S:.0f} s\n{run.explain()}") from None
        return DocRun(doc, script, starts, out, time.monotonic() - t0, platform.up_log())
    finally:
        platform.close()


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


@contextlib.contextmanager
def seed_folder_lock() -> Iterator[None]:
    """The quickstart writes the fixed folder /tmp/my-strategy (the product document's
    command, verbatim): one run at a time on this machine, and it is removed afterwards
    unless it was there before."""
    lock_path = Path(tempfile.gettempdir()) / ".sequence-docs-my-strategy.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        existed = SEED_FOLDER.exists()
        try:
            yield
        finally:
            if not existed:
                shutil.rmtree(SEED_FOLDER, ignore_errors=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


def _tree(path: Path) -> set[str]:
    """The files under ``path`` (names only: others may edit the tree while this runs)."""
    return {str(p.relative_to(path)) for p in path.rglob("*") if "__pycache__" not in p.parts}


# -- docs/api.md ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api_run(tmp_path_factory: pytest.TempPathFactory) -> DocRun:
    return run_doc(DOCS / "api.md", tmp_path_factory.mktemp("api-doc"))


def test_every_api_md_block_runs_verbatim(api_run: DocRun) -> None:
    out = api_run.out.stdout
    assert api_run.out.returncode == 0, api_run.explain()
    for expected in (
        "HTTP 201",                                   # POST /v1/strategies (JSON): created
        '"secret_names":["SLACK_WEBHOOK"]',           # the multipart redeploy kept the sealed secret
        '{"event": "hello", "healthy": true}',        # logs?follow=true
        '"deleted":true',                             # DELETE /v1/strategies/{id}
        '"mode":"test","is_sandbox":true',            # /v1/me as the new test key
        "invalid or revoked API key",                 # ... and after revoking it
        '"code":"bad_cursor"',                        # a made-up cursor is a 400
        "prices:BTC-USD {",                           # the SDK stream
        '"status":"completed","nodes":[{"node_id":"take","status":"filled"',
        '"side":"buy"',                               # its fill
        '{"symbol":"BTC-USD","sandbox":true,"net_qty":0.001',
    ):
        assert expected in out, f"{expected!r} not in the output\n{api_run.explain()}"
    for status in ("HTTP 400", "HTTP 401", "HTTP 404"):
        assert status in out, f"the error examples: {status} missing\n{api_run.explain()}"
    assert re.search(r'^\d+ \{"event": "(hello|btc)"', out, re.M), \
        f"the logs:<strategy_id> stream printed no line\n{api_run.explain()}"
    assert "Traceback" not in api_run.up_log, api_run.up_log


# -- docs/quickstart.md -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> DocRun:
    examples_before = _tree(ROOT / "examples")
    with seed_folder_lock():
        run = run_doc(DOCS / "quickstart.md", tmp_path_factory.mktemp("quickstart-doc"))
    added = _tree(ROOT / "examples") - examples_before
    assert not added, f"the quickstart wrote into the checkout's examples/: {sorted(added)}"
    return run


def test_every_quickstart_block_runs_in_order(quickstart_run: DocRun) -> None:
    out = quickstart_run.out.stdout
    assert quickstart_run.out.returncode == 0, quickstart_run.explain()
    assert re.search(r"^sequence \d+\.\d+\.\d+", out, re.M), quickstart_run.explain()
    for expected in (
        '"event": "boot", "healthy": true',           # btc-dip-buyer
        '"event": "done"}',
        '"event":"done","markets":2',                 # config-slots
        '"event":"done","graphs_submitted":2',        # the end-to-end example
        '"event":"done","filled":true',               # taker
        '"event":"done","legs_filled":2',             # two-leg
        '"event":"boot","sandbox":"true"',            # taker redeployed with a test key
        "deleted ",                                   # cleaning up
    ):
        assert expected in out, f"{expected!r} not in the output\n{quickstart_run.explain()}"
    assert out.rstrip().splitlines()[-1] == "[]", f"strategies left after cleaning up\n{quickstart_run.explain()}"
    assert "Traceback" not in quickstart_run.up_log, quickstart_run.up_log


def test_quickstart_strategies_stream_prices(quickstart_run: DocRun) -> None:
    out = quickstart_run.out.stdout
    assert quickstart_run.out.returncode == 0, quickstart_run.explain()
    # `logs --follow` prints the strategies' own lines (json.dumps: ", " and ": " separators).
    assert out.count('"event": "price"') >= 3, quickstart_run.explain()
    assert out.count('"event": "ws_msg"') >= 3, quickstart_run.explain()
