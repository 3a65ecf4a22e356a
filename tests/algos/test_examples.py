"""The example algos in examples/algos/: every committed .wasm passes the ABI check, runs in
the real host (``AlgoInstance``) against fake actions and does what its README says; the WAT
ones are byte for byte what their source assembles to, so source and binary cannot drift."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
import wasmtime

from sequence.algos import abi
from sequence.algos.host import AlgoInstance, compile_module

ALGOS = Path(__file__).resolve().parents[2] / "examples" / "algos"
AS_DIR = ALGOS / "assemblyscript"
E8 = 100_000_000
CENT = E8 // 100
BUY, SELL = 0, 1

TAKERS = ["threshold_taker.wasm", "threshold_taker_as.wasm"]
TWO_LEG_AS_PARAMS = {"symbol_a": "KXFED-26DEC-T3.50-YES", "symbol_b": "KXFED-26DEC-T3.75-YES"}


@dataclass
class FakeActions:
    """Records what the algo asks for; answers handles 1, 2, 3…, or the next of ``answers``."""

    params: dict[str, str]
    now: int = 1_000_000
    answers: list[int] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    system: list[str] = field(default_factory=list)
    submits: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    graphs: list[dict] = field(default_factory=list)
    cancels: list[int] = field(default_factory=list)
    next_handle: int = 1

    def _handle(self) -> int:
        if self.answers:
            return self.answers.pop(0)
        self.next_handle += 1
        return self.next_handle - 1

    def submit(self, sym: int, side: int, px_1e8: int, qty_1e8: int, flags: int) -> int:
        self.submits.append((sym, side, px_1e8, qty_1e8, flags))
        return self._handle()

    def submit_graph(self, body: bytes) -> int:
        self.graphs.append(json.loads(body, parse_float=Decimal))
        return self._handle()

    def cancel(self, handle: int) -> int:
        self.cancels.append(handle)
        return 0

    def log(self, line: str, stream: str = "algo") -> None:
        if stream == "system":  # the host's own note (a malformed param, dropped lines)
            self.system.append(line)
            return
        self.logs.append(line)

    def now_ms(self) -> int:
        return self.now

    def set_timer(self, interval_ms: int) -> None:
        raise AssertionError("the examples set no timer")

    def book(self, sym: int, side: int, max_levels: int) -> list[tuple[int, int]]:
        raise AssertionError("the examples read no book")


def start(wasm_name: str, **params: str) -> tuple[AlgoInstance, FakeActions]:
    module, _info = compile_module((ALGOS / wasm_name).read_bytes())
    actions = FakeActions(params=dict(params))
    algo = AlgoInstance(module, actions)
    algo.init()
    return algo, actions


def quote(algo: AlgoInstance, sym: int, bid: int = 0, ask: int = 0) -> None:
    """A top of book in cents (0 = that side is empty)."""
    algo.on_quote(sym, bid * CENT, E8 if bid else 0, ask * CENT, E8 if ask else 0)


# -- the files ------------------------------------------------------------------------------


def test_every_source_has_its_committed_wasm() -> None:
    wasm = {p.name for p in ALGOS.glob("*.wasm")}
    from_wat = {p.stem + ".wasm" for p in ALGOS.glob("*.wat")}
    from_as = {p.stem + "_as.wasm" for p in (AS_DIR / "src").glob("*.ts") if p.stem != "seq"}
    assert from_wat == {"threshold_taker.wasm", "two_leg.wasm"}
    assert from_as == {"threshold_taker_as.wasm", "two_leg_as.wasm"}
    assert wasm == from_wat | from_as


@pytest.mark.parametrize("wat", sorted(p.name for p in ALGOS.glob("*.wat")))
def test_wat_source_assembles_to_the_committed_wasm(wat: str) -> None:
    built = bytes(wasmtime.wat2wasm((ALGOS / wat).read_text(encoding="utf-8")))
    committed = (ALGOS / wat).with_suffix(".wasm").read_bytes()
    assert built == committed, f"{wat} changed: run examples/algos/build.sh wat and commit the .wasm"


def test_assemblyscript_toolchain_is_pinned() -> None:
    package = json.loads((AS_DIR / "package.json").read_text())
    version = package["devDependencies"]["assemblyscript"]
    assert version[0].isdigit(), f"pin an exact version, not {version!r}"
    lock = json.loads((AS_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/assemblyscript"]["version"] == version
    options = json.loads((AS_DIR / "asconfig.json").read_text())["options"]
    assert options["runtime"] == "stub"
    assert "node_modules" in (AS_DIR / ".gitignore").read_text()


@pytest.mark.parametrize("wasm", sorted(p.name for p in ALGOS.glob("*.wasm")))
def test_committed_wasm_passes_the_abi_check(wasm: str) -> None:
    _module, info = compile_module((ALGOS / wasm).read_bytes())
    assert {"memory", "init", "on_quote", "on_fill", "on_order"} <= set(info.exports)
    assert all(i.startswith("seq.") or i == "env.abort" for i in info.imports), info.imports
    assert info.memory_pages == 1


# -- threshold_taker ------------------------------------------------------------------------


@pytest.mark.parametrize("wasm", TAKERS)
def test_taker_logs_its_params_at_start(wasm: str) -> None:
    _algo, actions = start(wasm, buy_below="0.5", qty="2.5", max_position="12345.6789")
    assert actions.logs == ["start: buy_below=0.50 qty=2.50 max_position=12345.6789; "
                            "buys symbol 0 at its ask when ask <= buy_below"]


@pytest.mark.parametrize("wasm", TAKERS)
def test_taker_buys_once_when_the_ask_crosses_below_buy_below(wasm: str) -> None:
    algo, actions = start(wasm, buy_below="0.50")
    quote(algo, 0, bid=50, ask=55)
    quote(algo, 0, bid=49, ask=51)
    assert actions.submits == []
    quote(algo, 0, bid=40, ask=45)
    assert actions.submits == [(0, BUY, 45 * CENT, E8, 0)]  # at the ask, qty 1, no flags
    assert actions.logs[-1] == "buy 1.00 @ 0.45 (ask 0.45 <= buy_below 0.50), order 1"
    quote(algo, 0, bid=40, ask=44)  # the order is still open
    quote(algo, 0, bid=40, ask=50)
    assert len(actions.submits) == 1


@pytest.mark.parametrize("wasm", TAKERS)
def test_taker_ignores_other_symbols_and_an_empty_ask(wasm: str) -> None:
    algo, actions = start(wasm, buy_below="0.50")
    quote(algo, 1, bid=30, ask=31)
    quote(algo, 0, bid=30, ask=0)
    assert actions.submits == []


@pytest.mark.parametrize("wasm", TAKERS)
def test_taker_respects_max_position_after_fills(wasm: str) -> None:
    algo, actions = start(wasm, buy_below="0.50", qty="1", max_position="2")
    for handle in (1, 2):
        quote(algo, 0, bid=40, ask=45)
        assert len(actions.submits) == handle
        algo.on_fill(handle, 0, BUY, 45 * CENT, E8)
        algo.on_order(handle, abi.ORDER_FILLED)
    assert actions.logs[-2:] == ["fill: buy 1.00 @ 0.45, position 2.00", "order 2 filled; position 2.00"]
    quote(algo, 0, bid=40, ask=45)
    quote(algo, 0, bid=40, ask=44)
    assert len(actions.submits) == 2
    assert actions.logs[-1] == "not buying: position 2.00 + qty 1.00 > max_position 2.00"
    assert actions.logs.count(actions.logs[-1]) == 1  # said once, not once a quote
    # Selling one frees room for one more.
    algo.on_fill(9, 0, SELL, 50 * CENT, E8)
    quote(algo, 0, bid=40, ask=45)
    assert len(actions.submits) == 3


@pytest.mark.parametrize("wasm", TAKERS)
def test_taker_counts_a_partial_fill_and_buys_again_after_a_cancel(wasm: str) -> None:
    algo, actions = start(wasm, buy_below="0.50", qty="1", max_position="1.5")
    quote(algo, 0, bid=40, ask=45)
    algo.on_fill(1, 0, BUY, 45 * CENT, E8 // 2)
    algo.on_order(1, abi.ORDER_CANCELLED)
    assert actions.logs[-1] == "order 1 cancelled; position 0.50"
    quote(algo, 0, bid=40, ask=45)
    assert len(actions.submits) == 2  # 0.5 + 1 <= 1.5


@pytest.mark.parametrize("wasm", TAKERS)
def test_taker_waits_five_seconds_after_a_refused_submit(wasm: str) -> None:
    algo, actions = start(wasm, buy_below="0.50")
    actions.answers = [abi.E_REFUSED]
    quote(algo, 0, bid=40, ask=45)
    assert actions.logs[-1] == "submit failed: error -2 (refused by the engine); trying again in 5 s"
    actions.now += 4_999
    quote(algo, 0, bid=40, ask=45)
    assert len(actions.submits) == 1
    actions.now += 1
    quote(algo, 0, bid=40, ask=45)
    assert len(actions.submits) == 2


@pytest.mark.parametrize("wasm", TAKERS)
@pytest.mark.parametrize(("params", "line"), [
    ({}, "the param buy_below is required (e.g. --param buy_below=0.60); not trading"),
    ({"buy_below": "cheap"}, "the param buy_below is not a decimal: cheap; not trading"),
    ({"buy_below": "0.5", "qty": "0"}, "the param qty must be above 0; not trading"),
    ({"buy_below": "0.5", "max_position": "lots"}, "the param max_position is not a decimal: lots; not trading"),
])
def test_taker_with_a_bad_param_logs_it_and_never_submits(wasm: str, params: dict[str, str], line: str) -> None:
    algo, actions = start(wasm, **params)
    quote(algo, 0, bid=1, ask=2)
    assert actions.logs == [line]
    assert actions.submits == []


# -- two_leg (WAT: two submits) -------------------------------------------------------------


def test_two_leg_logs_its_params_at_start() -> None:
    _algo, actions = start("two_leg.wasm", edge="-0.1", qty="2.5", max_pairs="3")
    assert actions.logs == ["start: edge=-0.10 qty=2.50 max_pairs=3; buys symbol 0 (A) at its ask "
                            "and sells symbol 1 (B) at its bid when B.bid - A.ask >= edge"]


def test_two_leg_submits_both_legs_only_when_the_spread_reaches_edge() -> None:
    algo, actions = start("two_leg.wasm", edge="0.02")
    quote(algo, 0, bid=44, ask=45)
    quote(algo, 1, bid=46, ask=48)  # 0.46 - 0.45 < 0.02
    assert actions.submits == []
    quote(algo, 1, bid=47, ask=48)
    assert actions.submits == [(0, BUY, 45 * CENT, E8, 0), (1, SELL, 47 * CENT, E8, 0)]
    assert actions.logs[-1] == ("pair 1: buy A 1.00 @ 0.45, sell B 1.00 @ 0.47 "
                                "(B.bid - A.ask = 0.02 >= edge 0.02), orders 1 and 2")
    quote(algo, 1, bid=49, ask=50)  # the pair is open
    assert len(actions.submits) == 2


def test_two_leg_needs_both_books() -> None:
    algo, actions = start("two_leg.wasm", edge="-1")
    quote(algo, 1, bid=47, ask=48)
    quote(algo, 0, bid=44, ask=0)  # A has no ask
    quote(algo, 1, bid=0, ask=48)
    quote(algo, 0, bid=44, ask=45)  # B has no bid now
    assert actions.submits == []


def test_two_leg_tracks_fills_and_ends_per_handle_up_to_max_pairs() -> None:
    algo, actions = start("two_leg.wasm", edge="0.01", max_pairs="2")
    quote(algo, 0, bid=44, ask=45)
    quote(algo, 1, bid=47, ask=48)
    algo.on_fill(1, 0, BUY, 45 * CENT, E8)
    algo.on_order(1, abi.ORDER_FILLED)
    quote(algo, 1, bid=47, ask=48)  # leg B still works
    assert len(actions.submits) == 2
    algo.on_fill(2, 1, SELL, 47 * CENT, E8 // 2)
    algo.on_order(2, abi.ORDER_CANCELLED)
    assert actions.logs[-5:] == [
        "fill: leg A buy 1.00 @ 0.45 (leg filled 1.00)",
        "leg A order 1 filled",
        "fill: leg B sell 0.50 @ 0.47 (leg filled 0.50)",
        "leg B order 2 cancelled",
        "pair 1 done: A filled 1.00, B filled 0.50",
    ]
    quote(algo, 1, bid=47, ask=48)
    assert actions.submits[2:] == [(0, BUY, 45 * CENT, E8, 0), (1, SELL, 47 * CENT, E8, 0)]
    algo.on_order(3, abi.ORDER_FILLED)
    algo.on_order(4, abi.ORDER_FILLED)
    assert actions.logs[-1] == "pair 2 done: A filled 0.00, B filled 0.00; max_pairs reached, no more pairs"
    quote(algo, 1, bid=60, ask=61)
    assert len(actions.submits) == 4


def test_two_leg_cancels_leg_a_when_leg_b_is_refused() -> None:
    algo, actions = start("two_leg.wasm", edge="0.01")
    quote(algo, 0, bid=44, ask=45)
    actions.answers = [7, abi.E_RATE]
    quote(algo, 1, bid=47, ask=48)
    assert len(actions.submits) == 2
    assert actions.cancels == [7]
    assert actions.logs[-1] == ("pair 1: leg B submit failed: error -4 (rate limit); "
                                "cancelling leg A, order 7; trying again in 5 s")


# -- two_leg_as (AssemblyScript: one graph, leg B triggered by leg A's fill) -----------------


def test_two_leg_as_submits_one_graph_with_b_triggered_by_a() -> None:
    algo, actions = start("two_leg_as.wasm", edge="0.02", qty="2", **TWO_LEG_AS_PARAMS)
    quote(algo, 0, bid=44, ask=45)
    quote(algo, 1, bid=46, ask=48)
    assert actions.graphs == [] and actions.submits == []
    quote(algo, 1, bid=47, ask=48)
    assert actions.submits == []
    (graph,) = actions.graphs
    a, b = graph["nodes"]
    assert a == {"node_id": "a", "symbol": "KXFED-26DEC-T3.50-YES", "side": "buy", "qty": Decimal("2.00"),
                 "instrument_type": "prediction", "limit_price": Decimal("0.45")}
    assert b == {"node_id": "b", "symbol": "KXFED-26DEC-T3.75-YES", "side": "sell", "qty": Decimal("2.00"),
                 "instrument_type": "prediction", "limit_price": Decimal("0.47")}
    assert graph["edges"] == [{"from": "a", "to": "b", "trigger": "filled"}]
    assert actions.logs[-1] == ("pair 1: buy A 2.00 @ 0.45, then sell B 2.00 @ 0.47 "
                                "(B.bid - A.ask = 0.02 >= edge 0.02), graph 1")
    quote(algo, 1, bid=49, ask=50)  # the graph is open
    assert len(actions.graphs) == 1


def test_two_leg_as_tracks_the_graph_up_to_max_pairs() -> None:
    algo, actions = start("two_leg_as.wasm", edge="0.01", max_pairs="1", **TWO_LEG_AS_PARAMS)
    quote(algo, 0, bid=44, ask=45)
    quote(algo, 1, bid=47, ask=48)
    algo.on_fill(1, 0, BUY, 45 * CENT, E8)
    algo.on_fill(1, 1, SELL, 47 * CENT, E8)
    algo.on_order(1, abi.ORDER_FILLED)
    assert actions.logs[-3:] == [
        "fill: leg A buy 1.00 @ 0.45 (leg filled 1.00)",
        "fill: leg B sell 1.00 @ 0.47 (leg filled 1.00)",
        "pair 1 done: graph 1 completed, A filled 1.00, B filled 1.00; max_pairs reached, no more pairs",
    ]
    quote(algo, 1, bid=60, ask=61)
    assert len(actions.graphs) == 1


def test_two_leg_as_escapes_params_in_the_json() -> None:
    algo, actions = start("two_leg_as.wasm", edge="-1", symbol_a='odd"sym\\', symbol_b="B",
                          instrument_type="spot")
    quote(algo, 0, bid=1, ask=2)
    quote(algo, 1, bid=1, ask=2)
    (graph,) = actions.graphs
    assert graph["nodes"][0]["symbol"] == 'odd"sym\\'
    assert {n["instrument_type"] for n in graph["nodes"]} == {"spot"}


@pytest.mark.parametrize(("params", "line"), [
    ({}, "the param edge is required (e.g. --param edge=0.02 to act when B.bid - A.ask >= 0.02); not trading"),
    ({"edge": "wide"}, "the param edge is not a decimal: wide; not trading"),
    ({"edge": "0.1", "max_pairs": "1.5"}, "the param max_pairs is not an integer: 1.5; not trading"),
    ({"edge": "0.1", "max_pairs": "0"}, "the param max_pairs must be above 0; not trading"),
])
@pytest.mark.parametrize("wasm", ["two_leg.wasm", "two_leg_as.wasm"])
def test_two_leg_with_a_bad_param_logs_it_and_never_submits(wasm: str, params: dict[str, str], line: str) -> None:
    if wasm == "two_leg_as.wasm":
        params = {**TWO_LEG_AS_PARAMS, **params}
    algo, actions = start(wasm, **params)
    quote(algo, 0, bid=1, ask=2)
    quote(algo, 1, bid=50, ask=51)
    assert actions.logs == [line]
    assert actions.submits == [] and actions.graphs == []


@pytest.mark.parametrize(("missing", "line"), [
    ("symbol_a", "the param symbol_a is required (A's symbol, the first --symbol); not trading"),
    ("symbol_b", "the param symbol_b is required (B's symbol, the second --symbol); not trading"),
])
def test_two_leg_as_needs_both_symbol_names(missing: str, line: str) -> None:
    params = {k: v for k, v in TWO_LEG_AS_PARAMS.items() if k != missing}
    algo, actions = start("two_leg_as.wasm", edge="0.01", **params)
    quote(algo, 0, bid=1, ask=2)
    quote(algo, 1, bid=50, ask=51)
    assert actions.logs == [line]
    assert actions.graphs == []
