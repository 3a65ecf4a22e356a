"""Hostile WASM algos against a real coordinator (simulated market, engine, algo manager).

Each attack is deployed through the API beside a well-behaved "canary" algo on the same
book. Whatever the hostile module does, the coordinator must stay up: the deployment ends
``failed`` with a clear ``last_reason`` (or keeps running with its excess refused), the
market keeps answering ``/v1/quotes`` and its book keeps moving, and the canary keeps
receiving quotes.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import wasmtime

from sequence.algos import manager
from tests.helpers import LiveServer, start_server

T = TypeVar("T")
Q = "(param $sym i32) (param $bp i64) (param $bq i64) (param $ap i64) (param $aq i64)"
SYMBOL = "BTC-USD"


def wat_module(body: str, imports: str = "", extra: str = "") -> bytes:
    return bytes(wasmtime.wat2wasm(f"""(module
      (import "seq" "log" (func $log (param i32 i32)))
      (import "seq" "submit" (func $submit (param i32 i32 i64 i64 i32) (result i64)))
      (import "seq" "submit_graph" (func $graph (param i32 i32) (result i64)))
      {imports}
      (memory (export "memory") 1)
      (data (i32.const 0) "spam")
      (global $calls (mut i32) (i32.const 0))
      {extra}
      (func (export "on_quote") {Q}
        (local $i i32)
        (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
        {body}))"""))


def repeat(n: int, stmt: str) -> str:
    return f"""(block $done (local.set $i (i32.const {n}))
      (loop $again (br_if $done (i32.eqz (local.get $i)))
        {stmt}
        (local.set $i (i32.sub (local.get $i) (i32.const 1)))
        (br $again)))"""


CANARY = wat_module("")

SPIN = wat_module("(loop $spin (br $spin))")
TRAP = wat_module("unreachable")
HOG = wat_module("""(block $full (loop $grow
      (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
      (br $grow)))
    unreachable""")
# The same, a megabyte (16 pages) at a time, as allocators do: it stops 15 pages short of the cap.
HOG_CHUNKS = wat_module("""(block $full (loop $grow
      (br_if $full (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
      (br $grow)))
    unreachable""")
# Floods within a call's fuel (each import call costs fuel: 1,000 for log and submit, 5,000 for
# submit_graph — a bigger flood runs out of fuel and fails, tests/algos/test_host.py).
LOG_FLOOD = wat_module(repeat(1_500, "(call $log (i32.const 0) (i32.const 4))"))
SUBMIT_FLOOD = wat_module(repeat(
    1_500, "(drop (call $submit (i32.const 0) (i32.const 0) (i64.const 100000000) (i64.const 10000) (i32.const 0)))"))
# submit_graph with a length of 2 GiB: once a call, and 10,000 times in its first call.
GRAPH_HUGE = wat_module("""
    (drop (call $graph (i32.const 0) (i32.const 0x7fffffff)))
    (if (i32.eq (global.get $calls) (i32.const 1)) (then """
                        + repeat(300, "(drop (call $graph (i32.const 0) (i32.const 0x7fffffff)))") + "))")
# Passes the ABI check; its data segment does not fit its memory, so it cannot even be instantiated.
BAD_SEGMENT = bytes(wasmtime.wat2wasm(f"""(module
  (memory (export "memory") 1)
  (data (i32.const 65530) "0123456789")
  (func (export "on_quote") {Q}))"""))
# A start function runs at instantiation, before any call's fuel is set.
START_SPIN = bytes(wasmtime.wat2wasm(f"""(module
  (memory (export "memory") 1)
  (func $forever (loop $spin (br $spin)))
  (start $forever)
  (func (export "on_quote") {Q}))"""))


def wait_for(fn: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Poll *fn* until it answers something truthy (a deadline for an eventual state, not a duration check)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Scene:
    server: LiveServer
    http: httpx.Client
    canary: str

    def deploy(self, name: str, wasm: bytes, symbols: tuple[str, ...] = (SYMBOL, "ETH-USD")) -> str:
        r = self.http.post("/v1/deployments", json={"name": name, "wasm_base64": base64.b64encode(wasm).decode(),
                                                    "symbols": list(symbols), "start": True})
        assert r.status_code == 201, r.text
        return str(r.json()["deployment_id"])

    def get(self, dep: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/deployments/{dep}")
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def lines(self, dep: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            r = self.http.get(f"/v1/deployments/{dep}/logs", params={"after_seq": after, "limit": 10000})
            assert r.status_code == 200, r.text
            page = r.json()["lines"]
            out.extend(page)
            if len(page) < 10000:
                return out
            after = page[-1]["seq"]

    def book_seq(self) -> int:
        market = self.server.core.market
        assert market is not None
        return int(market.book(SYMBOL).seq)

    def quote_ts(self) -> float:
        r = self.http.get("/v1/quotes", params={"symbol": SYMBOL})
        assert r.status_code == 200, r.text
        q = r.json()
        assert q["symbol"] == SYMBOL and q["nbbo"]["bid"] and q["nbbo"]["ask"]
        return float(q["ts"])

    def canary_quotes(self) -> int:
        live = self.get(self.canary)["live"]
        return int(live["quotes"]) if live else -1

    def assert_market_and_canary_unharmed(self) -> None:
        """The book moves, /v1/quotes answers with newer books, the canary hears new quotes."""
        seq0, ts0, quotes0 = self.book_seq(), self.quote_ts(), self.canary_quotes()
        assert quotes0 > 0
        wait_for(lambda: self.book_seq() > seq0, "the book to move")
        wait_for(lambda: self.quote_ts() > ts0, "a newer quote over HTTP")
        wait_for(lambda: self.canary_quotes() > quotes0, "the canary to receive more quotes")
        c = self.get(self.canary)
        assert c["status"] == "running" and c["last_reason"] is None and c["epoch"] == 1
        assert self.server._thread.is_alive()


@contextmanager
def make_scene(data_dir: Path, **settings: Any) -> Iterator[Scene]:
    srv = start_server(data_dir, environ={}, **settings)
    try:
        with srv.client(srv.test_key) as http:  # paper: a seq_test_ key
            r = http.post("/v1/deployments", json={"name": "canary", "wasm_base64": base64.b64encode(CANARY).decode(),
                                                   "symbols": [SYMBOL, "ETH-USD"], "start": True})
            assert r.status_code == 201, r.text
            s = Scene(srv, http, r.json()["deployment_id"])
            wait_for(lambda: s.canary_quotes() > 0, "the canary to run")
            yield s
    finally:
        srv.stop()


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    with make_scene(tmp_path / "data") as s:
        yield s


def failed_with(scene: Scene, dep: str) -> dict[str, Any]:
    return wait_for(lambda: (lambda d: d if d["last_reason"] else None)(scene.get(dep)), "the deployment to fail")


@pytest.mark.parametrize(("wasm", "reason_words"), [
    pytest.param(SPIN, ["fuel"], id="loops-forever"),
    pytest.param(TRAP, ["unreachable"], id="traps"),
    pytest.param(HOG, ["memory limit", "16 MiB"], id="grows-memory"),
    pytest.param(BAD_SEGMENT, ["out of bounds"], id="cannot-instantiate"),
    pytest.param(HOG_CHUNKS, ["memory limit", "16 MiB"], id="grows-memory-by-the-megabyte"),
])
def test_a_failing_algo_is_stopped_with_its_reason_and_harms_no_one(scene: Scene, wasm: bytes,
                                                                    reason_words: list[str]) -> None:
    dep = scene.deploy("hostile", wasm)
    d = failed_with(scene, dep)
    for w in reason_words:
        assert w in d["last_reason"], d["last_reason"]
    assert d["consecutive_failures"] >= 1 and d["desired_state"] == "running"
    assert d["status"] in ("failed", "queued", "running")  # it is retried with backoff, like a failed run
    wait_for(lambda: [x for x in scene.lines(dep) if x["stream"] == "system"
                      and x["line"] == "failed: " + d["last_reason"]], "the failed line in the log")
    scene.assert_market_and_canary_unharmed()
    # It fails again after its backoff: the series grows, the coordinator is still fine.
    wait_for(lambda: scene.get(dep)["consecutive_failures"] >= 2, "the second failure after the backoff")
    scene.assert_market_and_canary_unharmed()


def test_a_log_flood_is_dropped_and_counted(scene: Scene) -> None:
    dep = scene.deploy("flood", LOG_FLOOD, (SYMBOL,))  # one book: each call holds the loop for a while
    wait_for(lambda: (scene.get(dep)["live"] or {}).get("calls", 0) >= 2, "two calls of the flooder")
    wait_for(lambda: any("line(s) dropped" in x["line"] for x in scene.lines(dep) if x["stream"] == "system"),
             "the dropped-lines count")
    d = scene.get(dep)
    assert d["status"] == "running" and d["last_reason"] is None
    spam = [x for x in scene.lines(dep) if x["stream"] == "algo"]
    calls = scene.get(dep)["live"]["calls"]
    assert 0 < len(spam) < 1_500 * calls  # far less than the 1,500 lines each call wrote
    scene.assert_market_and_canary_unharmed()


def test_a_submit_flood_is_refused_past_the_order_rate(scene: Scene) -> None:
    dep = scene.deploy("orders", SUBMIT_FLOOD)
    live = wait_for(lambda: (lambda lv: lv if lv and lv["calls"] >= 2 else None)(scene.get(dep)["live"]),
                    "two calls of the order flooder")
    assert live["orders_refused"] >= 2_500  # 3,000 submits, at most a burst and a trickle placed
    assert live["orders"] < live["orders_refused"]
    d = scene.get(dep)
    assert d["status"] == "running" and d["sandbox"] is True
    assert all(g["sandbox"] for g in d["recent_graphs"])
    scene.assert_market_and_canary_unharmed()


# 1,500 resting paper buys (at $1, far below the market) in each of its first two calls.
OPEN_FLOOD = wat_module("(if (i32.le_u (global.get $calls) (i32.const 2)) (then " + repeat(
    1500, "(drop (call $submit (i32.const 0) (i32.const 0) (i64.const 100000000) (i64.const 100000000) (i32.const 0)))")
                        + "))")
OPEN_LIMIT = 50


def test_an_algo_at_its_open_order_limit_cannot_flood_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the open-order limit each submit is refused (E_OPEN). The module reaches the limit in
    its first call; its ~2,950 refused submits must not become as many stored log lines. (The limit
    is lowered from 1,000 to keep the test short: cancelling 1,000 paper orders at shutdown takes
    longer than the server's stop allows; the rate is raised so E_RATE does not answer first.)"""
    monkeypatch.setattr(manager, "MAX_OPEN_ORDERS", OPEN_LIMIT)
    with make_scene(tmp_path / "data", algo_order_rate=100_000) as scene:
        dep = scene.deploy("opener", OPEN_FLOOD, (SYMBOL,))
        live = wait_for(lambda: (lambda lv: lv if lv and lv["calls"] >= 3 else None)(scene.get(dep)["live"]),
                        "three calls")
        assert live["orders"] == live["open_orders"] == OPEN_LIMIT
        scene.assert_market_and_canary_unharmed()
        said = wait_for(lambda: [x for x in scene.lines(dep) if "orders are open" in x["line"]],
                        "the open-order refusals in the log")
        assert len(said) <= 1_000, f"{len(said)} log lines for {3000 - OPEN_LIMIT} refused submits"
        # The refusals show like the rate's: as refused orders.
        assert scene.get(dep)["live"]["orders_refused"] >= 3000 - OPEN_LIMIT


def test_submit_graph_with_a_huge_length_is_refused_not_read(scene: Scene) -> None:
    dep = scene.deploy("graphs", GRAPH_HUGE)
    wait_for(lambda: (scene.get(dep)["live"] or {}).get("calls", 0) >= 2, "two calls of the module")
    d = scene.get(dep)
    assert d["status"] == "running" and d["last_reason"] is None and d["live"]["orders"] == 0
    scene.assert_market_and_canary_unharmed()
    refusals = wait_for(lambda: [x for x in scene.lines(dep) if x["stream"] == "system"
                                 and "submit_graph" in x["line"]], "the refusals in the log")
    assert refusals and "65536" in refusals[0]["line"]
    # 301 refusals in the first call: the lines about them are rate-limited like the module's own
    # (a burst of 200, then 100 a second).
    assert len(refusals) <= 250, f"{len(refusals)} system lines stored for one call's refusals"


NUL_LOGGER = wat_module("(call $log (i32.const 100) (i32.const 3))", extra='(data (i32.const 100) "a\\00b")')
TALKER = wat_module("(call $log (i32.const 0) (i32.const 4))")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_nul_byte_in_a_log_line_loses_no_ones_logs(db_url: str, tmp_path: Path) -> None:
    """PostgreSQL's text refuses NUL: a module logging one must not make the log batches it
    shares with every other deployment fail (their lines, and its own system lines, lost)."""
    with make_scene(tmp_path / "data", database_url=db_url) as scene:
        talker = scene.deploy("talker", TALKER, (SYMBOL,))
        wait_for(lambda: len(scene.lines(talker)) > 3, "the talker's lines")
        hostile = scene.deploy("nul", NUL_LOGGER, (SYMBOL,))
        wait_for(lambda: (scene.get(hostile)["live"] or {}).get("calls", 0) >= 3, "the NUL logger's calls")
        before = len(scene.lines(talker))
        wait_for(lambda: len(scene.lines(talker)) > before + 3, "the talker's lines to keep being stored",
                 timeout=10)
        own = scene.lines(hostile)
        assert any(x["stream"] == "system" and x["line"].startswith("started") for x in own), own[:3]
        scene.assert_market_and_canary_unharmed()


# env.abort with an AssemblyScript message "a\0b" (UTF-16, its byte length before it).
NUL_ABORT = bytes(wasmtime.wat2wasm(f"""(module
  (import "env" "abort" (func $abort (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 12) "\\06\\00\\00\\00a\\00\\00\\00b\\00")
  (func (export "on_quote") {Q} (call $abort (i32.const 16) (i32.const 0) (i32.const 1) (i32.const 2))))"""))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_trap_reason_with_a_nul_byte_is_recorded_and_backed_off(db_url: str, tmp_path: Path) -> None:
    """The abort message is the module's text: on PostgreSQL a NUL in it must not make the release
    fail (no reason stored, the deployment reclaimed at once, again and again, with no backoff)."""
    with make_scene(tmp_path / "data", database_url=db_url) as scene:
        dep = scene.deploy("aborter", NUL_ABORT, (SYMBOL,))
        d = wait_for(lambda: (lambda d: d if d["last_reason"] else None)(scene.get(dep)),
                     "the abort to be recorded", timeout=15)
        assert "abort" in d["last_reason"] and d["consecutive_failures"] >= 1
        wait_for(lambda: any(x["line"].startswith("failed: trap: abort") for x in scene.lines(dep)),
                 "the failed line", timeout=15)
        d = scene.get(dep)
        # Every start but the current one ended in a recorded failure: no restarts without backoff.
        assert d["epoch"] <= d["consecutive_failures"] + 1, d
        scene.assert_market_and_canary_unharmed()


def test_a_start_function_that_never_returns_fails_the_deployment(scene: Scene) -> None:
    """Refused at deploy (400, details.item) or failed at start with a reason; never stuck 'running'
    with no instance."""
    r = scene.http.post("/v1/deployments", json={"name": "starter", "symbols": [SYMBOL], "start": True,
                                                 "wasm_base64": base64.b64encode(START_SPIN).decode()})
    if r.status_code == 400:
        assert r.json()["error"]["details"]["field"] == "wasm_base64" and "start" in r.json()["error"]["message"]
    else:
        assert r.status_code == 201, r.text
        dep = r.json()["deployment_id"]
        d = wait_for(lambda: (lambda d: d if d["last_reason"] else None)(scene.get(dep)),
                     "the deployment to fail with a reason", timeout=15)
        assert d["consecutive_failures"] >= 1
    scene.assert_market_and_canary_unharmed()
    # The next deployment starts as usual.
    ok = scene.deploy("after", CANARY)
    wait_for(lambda: (scene.get(ok)["live"] or {}).get("quotes", 0) > 0, "the next deployment to run")


# On each quote: one resting paper buy at $1, then cancel on its handle 2,000 times.
CANCEL_FLOOD = wat_module(
    "(global.set $h (call $submit (i32.const 0) (i32.const 0) (i64.const 100000000) (i64.const 100000000) (i32.const 0)))"
    + repeat(2_000, "(drop (call $cancel (global.get $h)))"),
    imports='(import "seq" "cancel" (func $cancel (param i64) (result i32)))',
    extra="(global $h (mut i64) (i64.const 0))")


def test_cancelling_one_order_in_a_loop_starts_one_cancel(scene: Scene) -> None:
    """Each cancel call started an engine task: 2,000 a call held the event loop for minutes."""
    mgr = scene.server.core.algos
    assert mgr is not None
    dep = scene.deploy("canceller", CANCEL_FLOOD, (SYMBOL,))
    wait_for(lambda: (scene.get(dep)["live"] or {}).get("calls", 0) >= 5, "five calls of the canceller")
    assert len(mgr._spawned) <= 10, len(mgr._spawned)  # at most one per order, not one per call to cancel
    graphs = wait_for(lambda: (lambda gs: gs if len(gs) >= 3 and all(g["status"] == "cancelled" for g in gs[1:])
                               else None)(scene.get(dep)["recent_graphs"]), "its orders cancelled")
    assert graphs
    d = scene.get(dep)
    assert d["status"] == "running" and d["last_reason"] is None
    scene.assert_market_and_canary_unharmed()


# On a 10 ms timer, each tick burns nearly a whole call's fuel (2,000,000) in seq.log calls
# (1,000 fuel each, most dropped by the log rate): 100 calls a second would hold the loop.
BURNER = wat_module("", imports='(import "seq" "set_timer" (func $set_timer (param i64)))',
                    extra='(func (export "init") (call $set_timer (i64.const 10)))'
                          '(func (export "on_timer") (param i64) (local $i i32) '
                          + repeat(1_900, "(call $log (i32.const 0) (i32.const 4))") + ")")


def test_an_algo_over_its_fuel_budget_has_its_ticks_skipped(scene: Scene) -> None:
    dep = scene.deploy("burner", BURNER, (SYMBOL,))
    said = wait_for(lambda: [x["line"] for x in scene.lines(dep) if x["stream"] == "system"
                             and "over its fuel budget" in x["line"]], "the budget line")
    assert "10,000,000 a second" in said[0], said
    live = wait_for(lambda: (lambda lv: lv if lv and lv["skipped"] >= 50 else None)(scene.get(dep)["live"]),
                    "skipped ticks")
    # Under budget it gets about 5 full calls a second, not 100: far more ticks are skipped than run.
    assert live["skipped"] > live["timers"], live
    d = scene.get(dep)
    assert d["status"] == "running" and d["last_reason"] is None
    scene.assert_market_and_canary_unharmed()
