"""WASM algos through the real ``sequence`` binary against one ``sequence up``:
deploy a committed example and see its paper fill; hostile modules (a trap, an
endless loop, a memory hog) are stopped with their reasons and restarted with
backoff while the market goes on; modules outside the ABI are refused at
deploy; a replay gives the same orders twice."""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import ROOT, Platform

pytestmark = pytest.mark.slow

WAT = Path(__file__).resolve().parents[1] / "algos" / "wat"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform(tmp_path_factory.mktemp("algos-platform")).start()
    try:
        yield p
    finally:
        p.close()


def inspect(platform: Platform, name: str) -> dict[str, Any]:
    return dict(platform.cli_json("algo", "inspect", name))


def wait_algo(platform: Platform, name: str, ok: Callable[[dict[str, Any]], bool], what: str,
              timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        d = inspect(platform, name)
        if ok(d):
            return d
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: {what} not reached in {timeout:.0f} s: {json.dumps(d, indent=1)}\n"
                                 f"--- sequence up ---\n{platform.up_log()}")
        time.sleep(0.25)


def quote_seq(platform: Platform, symbol: str = "BTC-USD") -> int:
    with platform.http() as c:
        r = c.get("/v1/quotes", params={"symbol": symbol})
    assert r.status_code == 200, r.text
    return int(r.json()["sequence"])


def test_the_example_taker_paper_trades_from_a_relative_path(platform: Platform) -> None:
    # As a user types it from the repository: a relative path to the committed .wasm.
    out = platform.cli("algo", "deploy", "examples/algos/threshold_taker.wasm", "--symbol", "BTC-USD",
                       "--param", "buy_below=10000000", "--param", "qty=0.01", "--sandbox", "--start", cwd=ROOT)
    assert "deployed threshold-taker" in out.stdout, out.stdout
    d = wait_algo(platform, "threshold-taker", lambda d: (d.get("live") or {}).get("fills", 0) >= 1,
                  "a paper fill")
    assert d["status"] == "running" and d["sandbox"] is True, d
    assert d["recent_graphs"] and d["recent_graphs"][0]["sandbox"] is True, d
    with platform.http() as c:
        fills = c.get("/v1/fills", params={"symbol": "BTC-USD"}).json()["fills"]
    mine = {g["graph_id"] for g in d["recent_graphs"]}
    ours = [f for f in fills if f["graph_id"] in mine]
    assert ours and all(f["sandbox"] is True and f["side"] == "buy" and f["qty_1e8"] == 1_000_000 for f in ours), fills
    logs = platform.cli("algo", "logs", "threshold-taker")
    assert "buy" in logs.stdout, logs.stdout  # the module's own line
    assert "started (epoch 1)" in logs.stderr, logs.stderr  # the platform's, on stderr

    out = platform.cli("algo", "stop", "threshold-taker")
    assert out.stdout.startswith("threshold-taker: stopping") or out.stdout.startswith("threshold-taker: stopped"), \
        out.stdout
    d = wait_algo(platform, "threshold-taker", lambda d: d["status"] == "stopped", "stopped")
    assert d["last_reason"] == "stopped by request", d
    assert "stopped: stopped by request" in platform.cli("algo", "logs", "threshold-taker").stderr


def test_a_seq_test_key_deploys_paper_only(platform: Platform) -> None:
    cfg = tomllib.loads((platform.home / ".config" / "sequence" / "config.toml").read_text())
    test_key = next(v for v in _strings(cfg) if v.startswith("seq_test_"))
    res = platform.cli_json("algo", "deploy", str(WAT / "paper_buyer.wat"), "--name", "test-key-buyer",
                            "--symbol", "BTC-USD", "--param", "buy_below=0.01", env={"SEQUENCE_API_KEY": test_key})
    assert res["sandbox"] is True, res  # asked for live, forced paper by the key


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


@pytest.mark.parametrize(("name", "reason"), [
    ("trap", "unreachable"),
    ("spin", "fuel exhausted"),
    ("hog", "memory limit"),
])
def test_hostile_algos_are_stopped_with_their_reason_and_restarted_with_backoff(
        platform: Platform, name: str, reason: str) -> None:
    before = quote_seq(platform)
    platform.cli("algo", "deploy", str(WAT / f"{name}.wat"), "--symbol", "BTC-USD", "--start")
    d = wait_algo(platform, name, lambda d: d["restarts"] >= 2, "two restarts")
    assert reason in (d["last_reason"] or ""), d
    assert d["consecutive_failures"] >= 2, d
    logs = platform.cli("algo", "logs", name).stderr
    assert logs.count("failed: trap") >= 2 or logs.count(f"failed: {d['last_reason']}") >= 2, logs
    # The market process is undisturbed: the book keeps moving, quotes answer.
    deadline = time.monotonic() + 30
    while quote_seq(platform) <= before:
        assert time.monotonic() < deadline, "the book stopped moving"
        time.sleep(0.2)
    platform.cli("algo", "stop", name)
    wait_algo(platform, name, lambda d: d["status"] == "stopped", "stopped")


def test_modules_outside_the_abi_are_refused_at_deploy(platform: Platform, tmp_path: Path) -> None:
    res = platform.cli("algo", "deploy", str(WAT / "wasi.wat"), "--symbol", "BTC-USD", check=False)
    assert res.returncode == 1, res
    assert "wasi_snapshot_preview1.fd_write is not part of the algo ABI" in res.stderr, res.stderr
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\0asm\x01\0\0\0\xff\xff")
    res = platform.cli("algo", "deploy", str(junk), "--symbol", "BTC-USD", check=False)
    assert res.returncode == 1 and "does not compile" in res.stderr, res.stderr
    res = platform.cli("algo", "deploy", str(WAT / "trap.wat"), "--name", "nosuch", "--symbol", "NOPE-USD",
                       check=False)
    assert res.returncode == 1 and "symbols[0]" in res.stderr, res.stderr
    names = {d["name"] for d in platform.cli_json("algo", "list")["deployments"]}
    assert not names & {"wasi", "junk", "nosuch"}, names


def test_a_replay_gives_the_same_orders_every_time(platform: Platform, tmp_path: Path) -> None:
    rec = tmp_path / "day.jsonl"
    platform.cli("market", "record", "--out", str(rec), "--duration", "3", "--symbol", "BTC-USD", cwd=tmp_path)
    args = ("algo", "replay", "examples/algos/threshold_taker.wasm", "--recording", str(rec), "--symbol", "BTC-USD",
            "--param", "buy_below=10000000", "--param", "qty=0.01", "--param", "max_position=0.03")
    first = platform.cli_json(*args, cwd=ROOT)
    second = platform.cli_json(*args, cwd=ROOT)
    assert first["orders"] and first["fills"], first
    assert first == second
    assert first["failed"] is False and first["steps"] > 10, first


TIMED_REFUSER = """(module
  (import "seq" "set_timer" (func $timer (param i64)))
  (import "seq" "submit" (func $submit (param i32 i32 i64 i64 i32) (result i64)))
  (import "seq" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "tick")
  (func (export "init") (call $timer (i64.const 250)))
  (func (export "on_timer") (param i64)
    (call $log (i32.const 0) (i32.const 4))
    ;; a buy of 1 BTC at $90,000,000,000: over the notional cap, refused (and said) every time
    (drop (call $submit (i32.const 0) (i32.const 0) (i64.const 9000000000000000000) (i64.const 100000000) (i32.const 0))))
  (func (export "on_quote") (param i32 i64 i64 i64 i64)
    (drop (call $submit (i32.const 0) (i32.const 0) (i64.const 9000000000000000000) (i64.const 100000000) (i32.const 0)))))
"""


def test_a_replay_with_a_timer_ends_with_the_recording_and_says_the_same_every_time(
        platform: Platform, tmp_path: Path) -> None:
    """A module that left a timer on never let `algo replay` end (100 % CPU, no output); the
    lines saying refused orders were limited by the wall clock, so replays differed."""
    rec = tmp_path / "day.jsonl"
    platform.cli("market", "record", "--out", str(rec), "--duration", "2", "--symbol", "BTC-USD", cwd=tmp_path)
    (tmp_path / "timed.wat").write_text(TIMED_REFUSER)
    args = ("algo", "replay", "timed.wat", "--recording", "day.jsonl", "--symbol", "BTC-USD")
    runs = [platform.cli_json(*args, cwd=tmp_path, timeout=120) for _ in range(2)]
    assert runs[0] == runs[1]
    lines = [x["line"] for x in runs[0]["log"]]
    assert "tick" in lines and any(x.startswith("order refused") for x in lines), lines[:20]
    assert runs[0]["failed"] is False


def test_the_api_serves_what_the_cli_shows(platform: Platform) -> None:
    with httpx.Client(base_url=platform.url, headers={"Authorization": f"Bearer {platform.api_key}"}) as c:
        listed = c.get("/v1/deployments").json()["deployments"]
        assert listed and all("wasm_base64" not in d and "wasm" not in d for d in listed), listed
        one = c.get(f"/v1/deployments/{listed[0]['deployment_id']}").json()
        assert one["name"] == listed[0]["name"]
        assert c.get("/v1/deployments/no-such-algo").status_code == 404
