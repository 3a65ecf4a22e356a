"""Issue 10, item 11: what a strategy prints must not control the operator's terminal.

A hostile strategy's log lines (title change, clear screen, cursor moves,
carriage returns and backspaces that overwrite what was printed, C1 controls,
bidi overrides), its env values and its exit reason are read with the real
``sequence`` binary whose stdout is a real pseudo-terminal: no ESC byte (nor
any other control) of the strategy's reaches the terminal, Rich markup in
values is shown as it is. Piped, and with ``--raw``, the lines stay byte-exact.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sequence.store.store import LogColumns
from tests.cli.test_cli import SEQ, run
from tests.helpers import LiveServer, create_body

#: (stream, the line as the strategy printed it, the line as a terminal must show it)
LINES = [
    ("stdout", "plain line", "plain line"),
    ("stdout", "title \x1b]0;pwned\x07 end", "title \\x1b]0;pwned\\x07 end"),
    ("stdout", "\x1b[2J\x1b[Hcleared the screen", "\\x1b[2J\\x1b[Hcleared the screen"),
    ("stderr", "\x1b[31mred\x1b[0m \x1b[10A up", "\\x1b[31mred\\x1b[0m \\x1b[10A up"),
    ("stdout", "shown 10%\rhidden 99%", "shown 10%\\rhidden 99%"),
    ("stdout", "password\x08\x08\x08\x08\x08\x08\x08\x08public!!", "password" + "\\x08" * 8 + "public!!"),
    ("stdout", "c1 csi \x9b2J nel \x85 del \x7f", "c1 csi \\x9b2J nel \\x85 del \\x7f"),
    ("stdout", "bidi \u202eevil\u202c", "bidi \\u202eevil\\u202c"),
    ("stdout", "tab\tkept", "tab\tkept"),
    ("stdout", '{"json": "\\u001b stays as text"}', '{"json": "\\u001b stays as text"}'),
    ("stdout", "[red]markup[/red] [/bold] :smile:", "[red]markup[/red] [/bold] :smile:"),
    ("stdout", "unicode ✓ é 日本", "unicode ✓ é 日本"),
    ("system", "stopped: \x1b[2J[/bold]", "[sequence] stopped: \\x1b[2J[/bold]"),
]
#: What a pipe gets on stdout: the strategy's lines, exactly; the platform's go to stderr.
RAW = b"".join(line.encode() + b"\n" for stream, line, _t in LINES if stream != "system")
RAW_NOTES = "".join(f"[sequence] {line}\n" for stream, line, _t in LINES if stream == "system")
SHOWN = b"".join(shown.encode() + b"\n" for _s, _l, shown in LINES)
HOSTILE_REASON = "crashed \x1b]0;pwned\x07 [red]x[/red] [/bold]"


def _cli_env(server: LiveServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCE_") and k not in ("NO_COLOR", "TERM")}
    e.update(XDG_CONFIG_HOME=str(tmp_path / "cfg"), HOME=str(tmp_path), SEQUENCE_API_URL=server.url,
             SEQUENCE_API_KEY=server.live_key, COLUMNS="200", **extra)
    return e


def on_pty(args: list[str], env: dict[str, str], timeout: float = 60.0) -> tuple[bytes, str, int]:
    """Run the binary with a pseudo-terminal as stdout; returns (what reached the terminal, stderr, exit code).

    The terminal is in raw mode, so the bytes read are exactly the bytes written (no \\n → \\r\\n)."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    try:
        proc = subprocess.Popen([SEQ, *args], env=env, stdin=subprocess.DEVNULL, stdout=slave,
                                stderr=subprocess.PIPE)
    finally:
        os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _w, _x = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                proc.kill()
                raise AssertionError(f"sequence {' '.join(args)} did not finish in {timeout:.0f} s: {bytes(out)!r}")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    rc = proc.wait(timeout=30)
    assert "Traceback" not in err, err
    return bytes(out), err, rc


def _controls_of_the_strategy(out: bytes) -> list[str]:
    text = out.decode()
    return [f"U+{ord(c):04X}" for c in text
            if (ord(c) < 0x20 and c not in "\t\n") or 0x7f <= ord(c) <= 0x9f or c in "\u202e\u202c"]


@pytest.fixture
def hostile(server: LiveServer) -> Iterator[dict[str, Any]]:
    """A strategy whose (ended) run logged LINES and exited with HOSTILE_REASON."""
    _tid, token = server.core.store.create_runner_token("t")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as h:
        rid = h.post("/v1/runners/register", json={"name": "t", "region": "us-east-1", "capacity": 1}).json()["runner_id"]
        with server.client() as c:
            env = {"MARKUP_CLOSE": "[/bold]", "MARKUP": "[red]x[/red]", "TITLE": "\x1b]0;pwned\x07"}
            r = c.post("/v1/strategies", json=create_body(name="hostile", start=True, env=env,
                                                          manifest={"note": "[/red] \x1b[2J"}))
            assert r.status_code == 201, r.text
        spec = h.post(f"/v1/runners/{rid}/poll", json={"free_slots": 1, "wait_s": 5}).json()["claims"][0]
        cols = LogColumns(1, [1.0 + i for i in range(len(LINES))], [stream for stream, _l, _s in LINES],
                          [line for _st, line, _s in LINES], [])
        server.core.store.append_log_columns(spec["run_id"], spec["epoch"], rid, cols)
        ended = h.post(f"/v1/runners/{rid}/runs/{spec['run_id']}/exit",
                       json={"epoch": spec["epoch"], "code": 0, "reason": HOSTILE_REASON})
        assert ended.status_code == 200, ended.text
    yield {"run_id": spec["run_id"]}


@pytest.mark.parametrize("follow", [False, True], ids=["logs", "logs-follow"])
def test_logs_on_a_terminal_show_control_characters_escaped(server: LiveServer, tmp_path: Path,
                                                            hostile: dict[str, Any], follow: bool) -> None:
    args = ["strategy", "logs", "hostile", *(["--follow"] if follow else [])]
    out, err, rc = on_pty(args, _cli_env(server, tmp_path, NO_COLOR="1"))
    assert rc == 0, err
    assert b"\x1b" not in out and _controls_of_the_strategy(out) == []
    assert out == SHOWN


def test_logs_json_on_a_terminal_escapes_too(server: LiveServer, tmp_path: Path, hostile: dict[str, Any]) -> None:
    for follow in ([], ["--follow"]):
        out, err, rc = on_pty(["strategy", "logs", "hostile", "--json", *follow], _cli_env(server, tmp_path))
        assert rc == 0, err
        assert b"\x1b" not in out and _controls_of_the_strategy(out) == []
        assert [json.loads(x)["line"] for x in out.splitlines()] == [line for _s, line, _t in LINES]


def test_platform_lines_are_dimmed_on_a_colour_terminal(server: LiveServer, tmp_path: Path,
                                                        hostile: dict[str, Any]) -> None:
    out, err, rc = on_pty(["strategy", "logs", "hostile"], _cli_env(server, tmp_path, TERM="xterm-256color"))
    assert rc == 0, err
    dim, undim = b"\x1b[2m", b"\x1b[22m"
    assert out.splitlines()[-1] == dim + LINES[-1][2].encode() + undim
    assert out.replace(dim, b"").replace(undim, b"") == SHOWN  # the CLI's own faint style, and nothing else


def test_raw_on_a_terminal_and_any_pipe_are_byte_exact(server: LiveServer, tmp_path: Path,
                                                       hostile: dict[str, Any]) -> None:
    env = _cli_env(server, tmp_path, TERM="xterm-256color")
    for follow in ([], ["--follow"]):
        out, err, rc = on_pty(["strategy", "logs", "hostile", "--raw", *follow], env)
        assert rc == 0, err
        assert out == RAW and err == RAW_NOTES
        piped = subprocess.run([SEQ, "strategy", "logs", "hostile", *follow], env=env, capture_output=True,
                               timeout=60)
        assert piped.returncode == 0, piped.stderr
        assert piped.stdout == RAW and piped.stderr.decode() == RAW_NOTES
        as_json = subprocess.run([SEQ, "strategy", "logs", "hostile", "--json", *follow], env=env,
                                 capture_output=True, timeout=60)
        assert [json.loads(x)["line"] for x in as_json.stdout.splitlines()] == [line for _s, line, _t in LINES]


@pytest.mark.parametrize("term", ["dumb", "xterm-256color"])
def test_inspect_and_runs_show_hostile_values_as_they_are(server: LiveServer, tmp_path: Path,
                                                          hostile: dict[str, Any], term: str) -> None:
    env = _cli_env(server, tmp_path, TERM=term)
    out, err, rc = on_pty(["strategy", "inspect", "hostile"], env)
    assert rc == 0, err  # "[/bold]" in an env value crashed Rich's markup parser
    text = out.decode()
    assert '"MARKUP_CLOSE": "[/bold]"' in text and '"MARKUP": "[red]x[/red]"' in text
    assert '"note": "[/red] \\u001b[2J"' in text
    assert b"\x1b]" not in out and b"\x07" not in out and b"\x1b[2J" not in out

    out, err, rc = on_pty(["strategy", "runs", "hostile"], env)
    assert rc == 0, err
    assert b"\x1b]" not in out and b"\x07" not in out
    if term == "dumb":  # Rich styles nothing on a dumb terminal (80 columns): any ESC would be the strategy's
        assert b"\x1b" not in out
    else:
        assert "crashed \\x1b]0;pwned\\x07 [red]x[/red] [/bold]" in out.decode()


def test_json_output_is_unchanged(server: LiveServer, tmp_path: Path, hostile: dict[str, Any]) -> None:
    env = _cli_env(server, tmp_path)
    s = json.loads(run(["strategy", "inspect", "hostile", "--json"], env).stdout)
    assert s["env"]["TITLE"] == "\x1b]0;pwned\x07" and s["last_exit"]["reason"] == HOSTILE_REASON


#: A WASM algo's init logs one line with controls, a bidi override and a newline (seq.log takes any
#: bytes): `sequence algo logs` wrote it to the terminal as it was.
ALGO_LINE = b"\x1b[2J\xe2\x80\xaeevil\x07\n[sequence] forged"
_ALGO_DATA = "".join(f"\\{b:02x}" for b in ALGO_LINE)  # WAT's string escapes
ALGO_WAT = f"""(module
  (import "seq" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{_ALGO_DATA}")
  (func (export "init") (call $log (i32.const 0) (i32.const {len(ALGO_LINE)})))
  (func (export "on_quote") (param i32 i64 i64 i64 i64)))"""


def test_algo_logs_on_a_terminal_show_the_modules_controls_escaped(server: LiveServer, tmp_path: Path) -> None:
    import base64

    import wasmtime

    wasm = base64.b64encode(wasmtime.wat2wasm(ALGO_WAT)).decode()
    with server.client() as c:
        r = c.post("/v1/deployments", json={"name": "loud", "wasm_base64": wasm, "symbols": ["BTC-USD"],
                                            "sandbox": True, "start": True})
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 30
        while not any(x["stream"] == "algo" for x in c.get("/v1/deployments/loud/logs").json()["lines"]):
            assert time.monotonic() < deadline, "the algo's init line"
            time.sleep(0.1)
    env = _cli_env(server, tmp_path, NO_COLOR="1")
    out, err, rc = on_pty(["algo", "logs", "loud"], env)
    assert rc == 0, err
    assert _controls_of_the_strategy(out) == [], out
    assert b"\\x1b[2J\\u202eevil\\x07\\n[sequence] forged\n" in out, out
    raw, _err, rc = on_pty(["algo", "logs", "loud", "--raw"], env)  # as stored, when asked
    assert rc == 0 and ALGO_LINE + b"\n" in raw, raw
    piped = run(["algo", "logs", "loud"], env)  # a pipe: exactly what the module wrote
    assert ALGO_LINE.decode() + "\n" in piped.stdout
