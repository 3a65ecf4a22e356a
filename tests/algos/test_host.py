"""The WASM algo host: the ABI check at deploy, and one instance's imports, exports and limits.

Modules are written inline in WebAssembly text and compiled with ``wasmtime.wat2wasm``;
the algo manager is replaced by :class:`FakeActions`, which records what the module did.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import wasmtime

from sequence.algos import abi
from sequence.algos.host import (
    MAX_GRAPH_JSON,
    MAX_LOG_LINE,
    AlgoInstance,
    AlgoTrap,
    Limits,
    compile_module,
    engine,
)

Q = "(param i32 i64 i64 i64 i64)"  # on_quote's type
ON_QUOTE_NOP = f'(func (export "on_quote") {Q})'
MIB = 1024 * 1024


def wasm(wat: str) -> bytes:
    return bytes(wasmtime.wat2wasm(wat))


def module(wat: str) -> wasmtime.Module:
    return compile_module(wasm(wat))[0]


@dataclass
class FakeActions:
    """host.Actions that records every call; ``fail`` makes one method raise."""

    params: dict[str, str] = field(default_factory=dict)
    levels: list[tuple[int, int]] = field(default_factory=list)
    submit_result: int = 1
    graph_result: int = 7
    now: int = 1_700_000_000_000
    fail: str | None = None
    submits: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    graphs: list[bytes] = field(default_factory=list)
    cancels: list[int] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)
    timers: list[int] = field(default_factory=list)
    book_calls: list[tuple[int, int, int]] = field(default_factory=list)

    def _maybe_fail(self, name: str) -> None:
        if self.fail == name:
            raise RuntimeError(f"{name} exploded")

    def submit(self, sym: int, side: int, px_1e8: int, qty_1e8: int, flags: int) -> int:
        self._maybe_fail("submit")
        self.submits.append((sym, side, px_1e8, qty_1e8, flags))
        return self.submit_result

    def submit_graph(self, body: bytes) -> int:
        self._maybe_fail("submit_graph")
        self.graphs.append(body)
        return self.graph_result

    def cancel(self, handle: int) -> int:
        self._maybe_fail("cancel")
        self.cancels.append(handle)
        return 0 if handle == 5 else -1

    def log(self, line: str, stream: str = "algo") -> None:
        self._maybe_fail("log")
        self.lines.append((stream, line))

    def now_ms(self) -> int:
        self._maybe_fail("now_ms")
        return self.now

    def set_timer(self, interval_ms: int) -> None:
        self._maybe_fail("set_timer")
        self.timers.append(interval_ms)

    def book(self, sym: int, side: int, max_levels: int) -> list[tuple[int, int]]:
        self._maybe_fail("book")
        self.book_calls.append((sym, side, max_levels))
        return self.levels[:max_levels]

    def symbol_name(self, sym: int) -> str | None:
        self._maybe_fail("symbol_name")
        return ["BTC-USD", "ETH-USD"][sym] if sym in (0, 1) else None

    def algo_lines(self) -> list[str]:
        return [line for stream, line in self.lines if stream == "algo"]

    def system_lines(self) -> list[str]:
        return [line for stream, line in self.lines if stream == "system"]


def instance(wat: str, actions: FakeActions | None = None, limits: Limits | None = None,
             clock: Callable[[], float] | None = None) -> tuple[AlgoInstance, FakeActions]:
    acts = actions or FakeActions()
    return AlgoInstance(module(wat), acts, limits, clock=clock), acts


def memory(inst: AlgoInstance) -> wasmtime.Memory:
    mem = inst.instance.exports(inst.store)["memory"]
    assert isinstance(mem, wasmtime.Memory)
    return mem


def poke(inst: AlgoInstance, at: int, data: bytes) -> None:
    memory(inst).write(inst.store, data, at)


def peek(inst: AlgoInstance, at: int, n: int) -> bytes:
    return bytes(memory(inst).read(inst.store, at, at + n))


# -- the ABI check at deploy ---------------------------------------------------------------


def refused(data: bytes) -> abi.AbiError:
    with pytest.raises(abi.AbiError) as info:
        abi.check_module(engine(), data)
    err = info.value
    assert err.message and str(err) == err.message
    return err


def test_a_valid_module_passes_and_is_described() -> None:
    wat = f"""(module
      (import "seq" "log" (func (param i32 i32)))
      (import "seq" "submit" (func (param i32 i32 i64 i64 i32) (result i64)))
      (import "env" "abort" (func (param i32 i32 i32 i32)))
      (memory (export "memory") 3)
      (func (export "helper") (result i32) (i32.const 1))
      (func (export "init"))
      {ON_QUOTE_NOP}
      (func (export "on_timer") (param i64)))"""
    _mod, info = abi.check_module(engine(), wasm(wat))
    assert info.imports == ("seq.log", "seq.submit", "env.abort")
    assert info.exports == ("memory", "init", "on_quote", "on_timer")  # "helper" is not the ABI's
    assert info.memory_pages == 3


def test_a_timer_only_module_passes() -> None:
    _mod, info = abi.check_module(engine(), wasm('(module (memory (export "memory") 1) '
                                                 '(func (export "on_timer") (param i64)))'))
    assert info.exports == ("memory", "on_timer")


def test_not_a_webassembly_binary_is_refused() -> None:
    err = refused(b"(module)")  # text, not a binary
    assert err.item == "wasm" and "\\0asm" in err.message and "wat2wasm" in err.message


def test_garbage_after_the_magic_is_refused() -> None:
    err = refused(b"\0asm\x01\0\0\0" + bytes(range(256)) * 4)
    assert err.item == "wasm" and err.message.startswith("the module does not compile:")
    assert "\n" not in err.message  # one line, not Wasmtime's whole backtrace


def test_an_empty_file_is_refused() -> None:
    err = refused(b"")
    assert err.item == "wasm" and "\\0asm" in err.message


def test_a_module_over_4_mib_is_refused_before_compiling() -> None:
    data = b"\0asm\x01\0\0\0" + b"\0" * (abi.MAX_MODULE_BYTES - 7)
    assert len(data) == abi.MAX_MODULE_BYTES + 1
    err = refused(data)
    assert err.item == "wasm"
    assert str(abi.MAX_MODULE_BYTES) in err.message and str(len(data)) in err.message


MEM = '(memory (export "memory") 1)'


@pytest.mark.parametrize(("body", "item", "words"), [
    pytest.param("(func)" * (abi.MAX_FUNCTIONS + 1), "functions", ["20,002 functions", "at most 20,000"],
                 id="too-many-functions"),
    # 17,000 four-byte instructions: 68,000 bytes in one body (compiling one large body costs more
    # than linearly: 150,000 nested ifs in one function took 33 s and 1.2 GB)
    pytest.param("(func (local i32) " + "(local.set 0 (i32.const 1))" * 17_000 + ")", "functions",
                 ["function 0", "68,00", "at most 65,536", "split it"], id="one-function-too-big"),
    pytest.param('(memory (export "memory") 257)', "memory", ["257 pages", "16 MiB"], id="memory-over-the-cap"),
    pytest.param('(memory (export "memory") 1 1 shared)', "memory", ["shared memory"], id="shared-memory"),
    pytest.param("(table 1 funcref)" * 5, "tables", ["5 tables", "at most 4"], id="too-many-tables"),
    pytest.param("(table 100001 funcref)", "tables", ["100,001 elements"], id="a-table-too-big"),
])
def test_what_could_never_run_is_refused_at_deploy_before_compiling(body: str, item: str, words: list[str]) -> None:
    """These compiled, were stored, and then failed at every start (restarting with backoff for
    ever); 195,000 functions took 1.3 GB and 18 s to compile."""
    mem = "" if "memory" in body else '(memory (export "memory") 1)'
    err = refused(wasm(f"(module {body} {mem} {ON_QUOTE_NOP})"))
    assert err.item == item, err.message
    for w in words:
        assert w in err.message, (w, err.message)


def test_a_deploys_compile_is_kept_for_its_start_and_compiles_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from sequence.algos import host

    data = wasm(f'(module (memory (export "memory") 1) {ON_QUOTE_NOP} (func (export "x") (result i32) (i32.const 7)))')
    first = host.compile_module(data)
    assert host.compile_module(data)[0] is first[0]  # the same Module: not compiled again
    monkeypatch.setattr(host, "_compiles", threading.BoundedSemaphore(1))
    assert host._compiles.acquire(blocking=False)  # every slot taken
    other = wasm(f'(module (memory (export "memory") 1) {ON_QUOTE_NOP} (func (export "y") (result i32) (i32.const 8)))')
    with pytest.raises(host.CompilerBusy):
        host.compile_module(other)
    assert host.compile_module(data)[0] is first[0]  # a kept module needs no slot
    host._compiles.release()
    assert host.compile_module(other)[1].exports == ("memory", "on_quote")


@pytest.mark.parametrize(("imp", "item", "words"), [
    ('(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))',
     "import wasi_snapshot_preview1.fd_write", ["not part of the algo ABI", "no WASI", "seq.log"]),
    ('(import "wasi_snapshot_preview1" "clock_time_get" (func (param i32 i64 i32) (result i32)))',
     "import wasi_snapshot_preview1.clock_time_get", ["no WASI"]),
    ('(import "seq" "unknown" (func))', "import seq.unknown", ["not part of the algo ABI", "seq.submit"]),
    ('(import "env" "now" (func (result i64)))', "import env.now", ["not part of the algo ABI"]),
    ('(import "seq" "submit" (func (param i32 i32 i64 i64) (result i64)))', "import seq.submit",
     ["has type (i32, i32, i64, i64) -> (i64)", "the ABI's is (i32, i32, i64, i64, i32) -> (i64)"]),
    ('(import "seq" "submit" (func (param i32 i32 i64 i64 i32) (result i32)))', "import seq.submit",
     ["has type", "-> (i32)"]),
    ('(import "seq" "log" (func (param i32 i32) (result i32)))', "import seq.log", ["has type"]),
    ('(import "env" "abort" (func (param i32 i32)))', "import env.abort", ["has type"]),
    ('(import "seq" "memory" (memory 1))', "import seq.memory", ["not part of the algo ABI"]),
    ('(import "env" "memory" (memory 1))', "import env.memory", ["not part of the algo ABI"]),
    ('(import "seq" "log" (memory 1))', "import seq.log", ["must be a function"]),
    ('(import "seq" "table" (table 1 funcref))', "import seq.table", ["not part of the algo ABI"]),
    ('(import "seq" "book" (table 1 funcref))', "import seq.book", ["must be a function"]),
    ('(import "seq" "g" (global i32))', "import seq.g", ["not part of the algo ABI"]),
    ('(import "seq" "now_ms" (global i64))', "import seq.now_ms", ["must be a function"]),
])
def test_imports_outside_the_abi_are_refused_with_their_name(imp: str, item: str, words: list[str]) -> None:
    # One memory per module: an imported one is the one exported.
    mem = '(export "memory" (memory 0))' if "(memory 1)" in imp else MEM
    err = refused(wasm(f"(module {imp} {mem} {ON_QUOTE_NOP})"))
    assert err.item == item
    assert item in err.message
    for w in words:
        assert w in err.message, (w, err.message)


def test_no_memory_export_is_refused() -> None:
    err = refused(wasm(f"(module (memory 1) {ON_QUOTE_NOP})"))
    assert err.item == "export memory" and '"memory"' in err.message


def test_memory_exported_under_another_name_is_refused() -> None:
    err = refused(wasm(f'(module (memory (export "mem") 1) {ON_QUOTE_NOP})'))
    assert err.item == "export memory"


def test_a_function_exported_as_memory_is_refused() -> None:
    err = refused(wasm(f'(module (memory 1) (func (export "memory")) {ON_QUOTE_NOP})'))
    assert err.item == "export memory" and "must be a memory" in err.message


def test_a_module_with_no_handler_is_refused() -> None:
    err = refused(wasm('(module (memory (export "memory") 1) (func (export "init")) '
                       '(func (export "on_fill") (param i64 i32 i32 i64 i64)))'))
    assert err.item == "exports" and "on_quote" in err.message and "on_timer" in err.message


@pytest.mark.parametrize(("export", "item"), [
    ('(func (export "on_quote") (param i32 i64 i64 i64))', "export on_quote"),
    ('(func (export "on_quote") (param i32 i64 i64 i64 i64) (result i32) (i32.const 0))', "export on_quote"),
    (f'{ON_QUOTE_NOP} (func (export "on_timer") (param i32))', "export on_timer"),
    (f'{ON_QUOTE_NOP} (func (export "init") (param i32))', "export init"),
    (f'{ON_QUOTE_NOP} (func (export "on_fill") (param i64 i32 i32 i64))', "export on_fill"),
    (f'{ON_QUOTE_NOP} (func (export "on_order") (param i32 i32))', "export on_order"),
    (f'{ON_QUOTE_NOP} (global (export "on_timer") i64 (i64.const 0))', "export on_timer"),
])
def test_an_abi_export_of_the_wrong_type_is_refused(export: str, item: str) -> None:
    err = refused(wasm(f"(module {MEM} {export})"))
    assert err.item == item and item in err.message
    assert "has type" in err.message or "must be a function" in err.message


def test_abi_error_is_a_value_error() -> None:
    err = refused(b"nope")
    assert isinstance(err, ValueError)


# -- limits: fuel ------------------------------------------------------------------------------

LOOP_FOREVER = f"""(module
  (import "seq" "log" (func $log (param i32 i32)))
  {MEM}
  (data (i32.const 0) "before")
  (func (export "on_quote") {Q}
    (call $log (i32.const 0) (i32.const 6))
    (loop $spin (br $spin)))
  (func (export "on_timer") (param i64) (call $log (i32.const 0) (i32.const 6))))"""


def test_an_endless_loop_runs_out_of_fuel_and_the_instance_stays_dead() -> None:
    inst, acts = instance(LOOP_FOREVER, limits=Limits(fuel=50_000))
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, 1, 1, 2, 1)
    reason = info.value.reason
    assert "fuel" in reason and "50,000" in reason
    assert inst.dead == reason
    assert acts.algo_lines() == ["before"]
    # No later call runs the module again: each answers the same reason.
    for call in (lambda: inst.on_quote(0, 1, 1, 2, 1), lambda: inst.on_timer(5)):
        with pytest.raises(AlgoTrap) as again:
            call()
        assert again.value.reason == reason
    assert acts.algo_lines() == ["before"]


COUNT_LOOP = f"""(module
  {MEM}
  (func $spin (param $n i64)
    (block $done (loop $l
      (br_if $done (i64.eqz (local.get $n)))
      (local.set $n (i64.sub (local.get $n) (i64.const 1)))
      (br $l))))
  (func (export "init") (call $spin (i64.const 40000)))
  (func (export "on_quote") {Q} (call $spin (local.get 1))))"""


def test_fuel_is_per_call_and_init_gets_its_own_allowance() -> None:
    inst, _ = instance(COUNT_LOOP, limits=Limits(fuel=100_000, init_fuel=10_000_000))
    inst.init()  # 40k iterations: more than a call's fuel, within init's
    used_by_init = inst.fuel_used
    assert used_by_init > 100_000
    inst.on_quote(0, 1000, 0, 0, 0)
    per_1000 = inst.fuel_used - used_by_init
    assert 0 < per_1000 < 100_000
    n = 60_000 * 1000 // per_1000  # about 60% of a call's fuel
    for _ in range(5):  # together far more than one call's fuel: each call is refuelled
        inst.on_quote(0, n, 0, 0, 0)
    assert inst.fuel_used - used_by_init > 5 * 50_000
    assert inst.dead is None
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, 2 * n, 0, 0, 0)  # ~120% of a call's fuel
    assert "fuel" in info.value.reason


def test_an_endless_init_is_interrupted_too() -> None:
    wat = f'(module {MEM} (func (export "init") (loop $l (br $l))) {ON_QUOTE_NOP})'
    inst, _ = instance(wat, limits=Limits(fuel=10_000, init_fuel=100_000))
    with pytest.raises(AlgoTrap) as info:
        inst.init()
    assert "fuel" in info.value.reason and inst.dead == info.value.reason
    # The figure init had (it said a call's 10,000 before).
    assert "init ran more than 100,000 instructions" in info.value.reason, info.value.reason


# -- limits: memory --------------------------------------------------------------------------------

GROW_FOREVER = f"""(module
  {MEM}
  (func (export "on_quote") {Q}
    (block $full (loop $grow
      (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
      (br $grow)))
    unreachable))"""


def test_growing_memory_stops_at_the_cap_and_the_trap_names_the_memory_limit() -> None:
    inst, _ = instance(GROW_FOREVER, limits=Limits(memory_bytes=2 * MIB))
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, 0, 0, 0, 0)
    assert "memory limit" in info.value.reason and "2 MiB" in info.value.reason
    assert "unreachable" in info.value.reason
    assert inst.memory_bytes == 2 * MIB  # grown to the cap, never past it


def test_memory_grow_answers_minus_one_past_the_cap() -> None:
    wat = f"""(module
      (import "seq" "submit" (func $s (param i32 i32 i64 i64 i32) (result i64)))
      {MEM}
      (func (export "on_quote") {Q}
        (drop (call $s (i32.const 0) (i32.const 0)
                    (i64.extend_i32_s (memory.grow (i32.wrap_i64 (local.get 1))))
                    (i64.extend_i32_s (memory.size)) (i32.const 0)))))"""
    inst, acts = instance(wat, limits=Limits(memory_bytes=MIB))
    inst.on_quote(0, 15, 0, 0, 0)  # 1 + 15 pages = 1 MiB: allowed
    inst.on_quote(0, 1, 0, 0, 0)   # one more page: refused
    assert [(px, qty) for _s, _d, px, qty, _f in acts.submits] == [(1, 16), (-1, 16)]
    assert inst.dead is None


def test_a_module_needing_more_than_the_cap_at_start_is_refused_at_instantiation() -> None:
    wat = f'(module (memory (export "memory") 33) {ON_QUOTE_NOP})'  # 33 pages > 2 MiB
    with pytest.raises(AlgoTrap) as info:
        instance(wat, limits=Limits(memory_bytes=2 * MIB))
    assert info.value.reason.startswith("memory limit") and "2 MiB" in info.value.reason


def test_a_module_at_exactly_the_cap_starts() -> None:
    inst, _ = instance(f'(module (memory (export "memory") 32) {ON_QUOTE_NOP})', limits=Limits(memory_bytes=2 * MIB))
    inst.on_quote(0, 0, 0, 0, 0)
    assert inst.memory_bytes == 2 * MIB


def test_memories_beyond_the_exported_one_count_against_the_cap() -> None:
    """The cap is on the algo's linear memory, not on each memory: a module declaring three
    memories of the cap's size each must not get three times the cap."""
    wat = f"""(module
      (memory (export "memory") 16) (memory $b 16) (memory $c 16)
      (func (export "on_quote") {Q}
        (i32.store8 $b (i32.const 1000) (i32.const 1)) (i32.store8 $c (i32.const 1000) (i32.const 1))))"""
    try:
        mod, _info = abi.check_module(engine(), wasm(wat))
    except abi.AbiError as err:  # refusing extra memories at deploy is a fix too
        assert "memor" in err.message
        return
    with pytest.raises(AlgoTrap) as info:
        AlgoInstance(mod, FakeActions(), Limits(memory_bytes=MIB))
    assert "memory limit" in info.value.reason


def test_tables_cannot_grow_without_bound() -> None:
    """A table is host memory too (8 bytes an element here): with a 1 MiB cap, growing a table by
    a million elements a call must be refused (-1) or trap well before 16 calls (128 MB)."""
    wat = f"""(module
      (import "seq" "submit" (func $s (param i32 i32 i64 i64 i32) (result i64)))
      {MEM}
      (table $t 0 funcref)
      (func (export "on_quote") {Q}
        (drop (call $s (i32.const 0) (i32.const 0)
                    (i64.extend_i32_s (table.grow $t (ref.null func) (i32.const 1000000)))
                    (i64.extend_i32_u (table.size $t)) (i32.const 0)))))"""
    inst, acts = instance(wat, limits=Limits(memory_bytes=MIB))
    refused_at = None
    for k in range(16):
        try:
            inst.on_quote(0, 0, 0, 0, 0)
        except AlgoTrap:
            refused_at = k
            break
        if acts.submits[-1][2] == -1:
            refused_at = k
            break
    grown = acts.submits[-1][3] if acts.submits else 0
    assert refused_at is not None, f"the table grew to {grown:,} elements under a 1 MiB memory cap"


@pytest.mark.parametrize("body", ["(loop $l (br $l))", "(global.set $g (i32.const 1))",
                                  "(call $log (i32.const 0) (i32.const 1))"])
def test_a_start_function_is_refused_or_trapped_never_a_foreign_exception(body: str) -> None:
    """A module's ``start`` function runs at instantiation, outside the per-call fuel: it must end as an
    :class:`AbiError` at deploy or an :class:`AlgoTrap` (or run), never as a raw Wasmtime exception
    that the manager does not handle."""
    wat = f"""(module
      (import "seq" "log" (func $log (param i32 i32)))
      {MEM}
      (global $g (mut i32) (i32.const 0))
      (func $start {body})
      (start $start)
      {ON_QUOTE_NOP})"""
    try:
        mod, _info = abi.check_module(engine(), wasm(wat))
    except abi.AbiError as err:
        assert "start" in err.message
        return
    try:
        AlgoInstance(mod, FakeActions(), Limits(fuel=100_000, init_fuel=1_000_000))
    except AlgoTrap as trap:
        assert trap.reason
    except Exception as exc:
        pytest.fail(f"instantiation raised {type(exc).__module__}.{type(exc).__name__}: {exc}")


@pytest.mark.parametrize(("wat", "words"), [
    (f'(module {MEM} (data (i32.const 65530) "0123456789") {ON_QUOTE_NOP})', "out of bounds memory"),
    (f'(module {MEM} (table 1 funcref) (elem (i32.const 5) func $f) (func $f) {ON_QUOTE_NOP})', "table"),
])
def test_a_module_whose_segments_do_not_fit_fails_at_instantiation_with_a_reason(wat: str, words: str) -> None:
    with pytest.raises(AlgoTrap) as info:
        instance(wat)
    assert info.value.reason.startswith("trap: ") and words in info.value.reason


# -- traps ---------------------------------------------------------------------------------------------


def test_unreachable_traps_with_a_reason() -> None:
    inst, _ = instance(f'(module {MEM} (func (export "on_quote") {Q} unreachable))')
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, 0, 0, 0, 0)
    assert info.value.reason.startswith("trap: ") and "unreachable" in info.value.reason
    assert "memory limit" not in info.value.reason  # 64 KiB of 16 MiB
    assert inst.dead == info.value.reason


def test_an_out_of_bounds_load_and_a_division_by_zero_trap_with_reasons() -> None:
    inst, _ = instance(f'(module {MEM} (func (export "on_quote") {Q} (drop (i32.load (i32.const 70000)))))')
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, 0, 0, 0, 0)
    assert "out of bounds" in info.value.reason
    inst, _ = instance(f'(module {MEM} (func (export "on_timer") (param i64) '
                       '(drop (i64.div_s (i64.const 1) (local.get 0)))))')
    inst.on_quote(0, 0, 0, 0, 0)  # no on_quote: nothing happens
    inst.on_timer(1)
    with pytest.raises(AlgoTrap) as info:
        inst.on_timer(0)
    assert "divide by zero" in info.value.reason


ABORT = f"""(module
  (import "env" "abort" (func $abort (param i32 i32 i32 i32)))
  {MEM}
  (data (i32.const 12) "\\08\\00\\00\\00b\\00o\\00o\\00m\\00")
  (data (i32.const 60) "\\0e\\00\\00\\00a\\00l\\00g\\00o\\00.\\00t\\00s\\00")
  (func (export "on_quote") {Q}
    (call $abort (i32.wrap_i64 (local.get 1)) (i32.wrap_i64 (local.get 2)) (i32.const 12) (i32.const 3))))"""


def test_env_abort_traps_with_the_assemblyscript_message() -> None:
    inst, _ = instance(ABORT)
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, 16, 64, 0, 0)
    assert info.value.reason == "trap: abort: boom at algo.ts:12:3"
    assert inst.dead == info.value.reason


def test_env_abort_with_unreadable_strings_still_traps() -> None:
    inst, _ = instance(ABORT)
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, 0xFFFF_FFF0, 0, 0, 0)  # message pointer out of bounds, no file
    assert info.value.reason == "trap: abort: no message"


# -- seq.log ---------------------------------------------------------------------------------------------

LOGGER = f"""(module
  (import "seq" "log" (func $log (param i32 i32)))
  {MEM}
  ;; on_quote(_, ptr, len, times, _): log(ptr, len) `times` times
  (func (export "on_quote") {Q}
    (local $n i64)
    (local.set $n (local.get 3))
    (block $done (loop $l
      (br_if $done (i64.eqz (local.get $n)))
      (call $log (i32.wrap_i64 (local.get 1)) (i32.wrap_i64 (local.get 2)))
      (local.set $n (i64.sub (local.get $n) (i64.const 1)))
      (br $l)))))"""


def test_log_lines_are_utf8_decoded_with_replacement() -> None:
    inst, acts = instance(LOGGER)
    raw = "café ✓".encode() + b" \xff\xfe!"
    poke(inst, 100, raw)
    inst.on_quote(0, 100, len(raw), 1, 0)
    assert acts.lines == [("algo", "café ✓ \ufffd\ufffd!")]


def test_log_lines_are_capped_at_4096_bytes() -> None:
    inst, acts = instance(LOGGER)
    poke(inst, 0, b"x" * 10_000)
    inst.on_quote(0, 0, 10_000, 1, 0)
    inst.on_quote(0, 0, 0xFFFF_FFFF, 1, 0)  # a "negative" length is a huge one: capped too
    assert [len(line) for line in acts.algo_lines()] == [MAX_LOG_LINE, MAX_LOG_LINE] == [4096, 4096]
    assert acts.algo_lines()[0] == "x" * 4096


@pytest.mark.parametrize(("ptr", "length"), [(65_530, 100), (65_536, 1), (0xFFFF_FFF0, 32), (0xFFFF_FFFF, 2)])
def test_a_log_out_of_bounds_traps_instead_of_reading_host_memory(ptr: int, length: int) -> None:
    inst, acts = instance(LOGGER)
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, ptr, length, 1, 0)
    assert "seq.log" in info.value.reason and "out of bounds" in info.value.reason
    assert acts.lines == [] and inst.dead == info.value.reason


def test_the_log_rate_limit_drops_the_excess_and_reports_the_count() -> None:
    now = [1000.0]
    inst, acts = instance(LOGGER, limits=Limits(log_rate=10, log_burst=5), clock=lambda: now[0])
    poke(inst, 0, b"hi")
    inst.on_quote(0, 0, 2, 20, 0)  # 20 lines at once: the burst of 5 passes
    assert acts.lines == [("algo", "hi")] * 5
    now[0] += 1.0  # a second later the bucket is full again
    inst.on_quote(0, 0, 2, 1, 0)
    assert acts.lines[5:] == [("system", "15 line(s) dropped: more than 10 lines a second"), ("algo", "hi")]
    inst.on_quote(0, 0, 2, 7, 0)  # 4 tokens left: 4 pass, 3 are dropped
    assert acts.lines[7:] == [("algo", "hi")] * 4
    now[0] += 0.1  # one token back: the count of the dropped, then one line
    inst.on_quote(0, 0, 2, 3, 0)
    assert acts.lines[11:] == [("system", "3 line(s) dropped: more than 10 lines a second"), ("algo", "hi")]
    assert inst.dead is None


def test_a_log_flood_stores_only_the_burst_and_a_100k_line_call_runs_out_of_fuel() -> None:
    inst, acts = instance(LOGGER, limits=Limits(log_rate=100, log_burst=200), clock=lambda: 5.0)
    poke(inst, 0, b"spam")
    inst.on_quote(0, 0, 4, 1_500, 0)  # within a call's fuel (an import call costs fuel too)
    assert len(acts.lines) == 200 and inst.dead is None
    # 100,000 log calls in one call would hold the event loop for most of a second: the host's
    # work is charged in fuel, so the call runs out long before.
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, 0, 4, 100_000, 0)
    assert "fuel exhausted" in info.value.reason and "host calls count" in info.value.reason
    assert len(acts.lines) == 200  # the bucket was empty: nothing more was stored



def test_a_start_function_calling_imports_in_a_loop_is_told_its_own_fuel() -> None:
    """The reason quoted the per-call fuel (100,000 here) for a start function, which gets init's."""
    wat = f"""(module
      (import "seq" "log" (func $log (param i32 i32)))
      {MEM}
      (func $start (loop $l (call $log (i32.const 0) (i32.const 1)) (br $l)))
      (start $start)
      {ON_QUOTE_NOP})"""
    mod, _info = abi.check_module(engine(), wasm(wat))
    with pytest.raises(AlgoTrap) as info:
        AlgoInstance(mod, FakeActions(), Limits(fuel=100_000, init_fuel=1_000_000))
    reason = info.value.reason
    assert "fuel exhausted" in reason and "1,000,000" in reason and "100,000 " not in reason, reason
    assert "init and the start function get that much fuel" in reason, reason


def test_import_fuel_kept_as_a_debt_still_counts_and_still_runs_out_at_the_call_limit() -> None:
    """Imports are charged in batches (host.SETTLE_FUEL): a call's few imports are in its
    fuel_used all the same, and a loop of them traps within one batch of the limit."""
    inst, _acts = instance(LOGGER, limits=Limits(fuel=200_000, log_rate=1e9, log_burst=10**9))
    poke(inst, 0, b"x")
    inst.on_quote(0, 0, 1, 0, 0)
    base = inst.fuel_used  # the loop's own instructions, no import
    inst.on_quote(0, 0, 1, 3, 0)  # three logs: 3,000 units, under one batch
    assert 3 * 1_000 <= inst.fuel_used - base - 1 < 3 * 1_000 + 100
    before = inst.fuel_used
    inst.on_quote(0, 0, 1, 150, 0)  # 150,000 units of logs: within the call's 200,000
    assert inst.dead is None and inst.fuel_used - before >= 150_000
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, 0, 1, 1_000, 0)  # 1,000,000 units: five times the limit
    assert "fuel exhausted" in info.value.reason
    # Trapped inside the batch that crossed the limit: at most ~210 of the 1,000 lines ran.
    assert len(_acts.lines) - 1 - 3 - 150 <= 200 + 10


# -- params ------------------------------------------------------------------------------------------------

PARAMS = f"""(module
  (import "seq" "param" (func $param (param i32 i32 i32 i32) (result i32)))
  (import "seq" "param_i64" (func $pi (param i32 i32 i64) (result i64)))
  (import "seq" "param_1e8" (func $pe (param i32 i32 i64) (result i64)))
  (import "seq" "submit" (func $submit (param i32 i32 i64 i64 i32) (result i64)))
  {MEM}
  ;; on_quote(key_len, a, b, mode, _), the key at 0: mode 0 param(key, out=a, cap=b),
  ;; 1 param_i64(key, default=a), 2 param_1e8(key, default=a); the answer goes to submit's px
  (func (export "on_quote") {Q}
    (local $r i64)
    (if (i64.eqz (local.get 3))
      (then (local.set $r (i64.extend_i32_s (call $param (i32.const 0) (local.get 0)
              (i32.wrap_i64 (local.get 1)) (i32.wrap_i64 (local.get 2)))))))
    (if (i64.eq (local.get 3) (i64.const 1))
      (then (local.set $r (call $pi (i32.const 0) (local.get 0) (local.get 1)))))
    (if (i64.eq (local.get 3) (i64.const 2))
      (then (local.set $r (call $pe (i32.const 0) (local.get 0) (local.get 1)))))
    (drop (call $submit (i32.const 0) (i32.const 0) (local.get $r) (i64.const 1) (i32.const 0)))))"""

PARAM_VALUES = {"name": "hello world", "n": "42", "neg": " -7 ", "dec": "0.1", "price": "95000.12345678",
                "tiny": "0.00000001", "frac": "4.2", "word": "abc", "big": "99999999999999999999",
                "nan": "NaN", "inf": "Infinity", "empty": "", "exp": "1e3", "é": "unicode key",
                "huge_exp": "1e999999", "tiny_exp": "1e-999999999"}


@pytest.fixture
def params() -> tuple[AlgoInstance, FakeActions]:
    return instance(PARAMS, FakeActions(params=dict(PARAM_VALUES)))


def ask(inst: AlgoInstance, acts: FakeActions, key: str, mode: int, a: int = 0, b: int = 0) -> int:
    raw = key.encode()
    poke(inst, 0, raw)
    inst.on_quote(len(raw), a, b, mode, 0)
    return acts.submits[-1][2]


def test_param_copies_the_value_and_answers_its_length(params: tuple[AlgoInstance, FakeActions]) -> None:
    inst, acts = params
    poke(inst, 1000, b"#" * 32)
    assert ask(inst, acts, "name", 0, 1000, 64) == 11
    assert peek(inst, 1000, 12) == b"hello world#"
    assert ask(inst, acts, "é", 0, 2000, 64) == len(b"unicode key")
    assert peek(inst, 2000, 11) == b"unicode key"


def test_param_truncates_to_out_cap_but_answers_the_full_length(params: tuple[AlgoInstance, FakeActions]) -> None:
    inst, acts = params
    poke(inst, 1000, b"#" * 32)
    assert ask(inst, acts, "name", 0, 1000, 5) == 11
    assert peek(inst, 1000, 12) == b"hello#######"
    assert ask(inst, acts, "name", 0, 1000, 0) == 11  # cap 0: ask the length, write nothing
    assert peek(inst, 1000, 12) == b"hello#######"
    assert ask(inst, acts, "empty", 0, 1000, 8) == 0  # set but empty is not missing
    assert ask(inst, acts, "name", 0, 0xFFFF_FFFF, 0) == 11  # nothing written: no bounds to check


def test_param_missing_answers_minus_one(params: tuple[AlgoInstance, FakeActions]) -> None:
    inst, acts = params
    poke(inst, 1000, b"#" * 8)
    assert ask(inst, acts, "nope", 0, 1000, 8) == -1
    assert ask(inst, acts, "Name", 0, 1000, 8) == -1  # keys are case-sensitive
    assert ask(inst, acts, "", 0, 1000, 8) == -1
    assert peek(inst, 1000, 8) == b"#" * 8


def test_param_out_of_bounds_traps(params: tuple[AlgoInstance, FakeActions]) -> None:
    inst, acts = params
    with pytest.raises(AlgoTrap) as info:
        ask(inst, acts, "name", 0, 65_530, 64)
    assert "seq.param" in info.value.reason and "out of bounds" in info.value.reason


@pytest.mark.parametrize(("key", "default", "want"), [
    ("n", 5, 42), ("neg", 5, -7), ("nope", 5, 5), ("nope", -(2**63), -(2**63)), ("frac", 9, 9), ("word", 9, 9),
    ("big", 3, 3), ("empty", 4, 4), ("dec", 6, 6), ("exp", 8, 8),
])
def test_param_i64(params: tuple[AlgoInstance, FakeActions], key: str, default: int, want: int) -> None:
    inst, acts = params
    assert ask(inst, acts, key, 1, default) == want


@pytest.mark.parametrize(("key", "default", "want"), [
    ("dec", -1, 10_000_000), ("price", -1, 9_500_012_345_678), ("tiny", -1, 1), ("n", -1, 4_200_000_000),
    ("neg", 0, -700_000_000), ("frac", 0, 420_000_000), ("exp", 0, 100_000_000_000), ("nope", 77, 77),
    ("word", 77, 77), ("nan", 77, 77), ("inf", 77, 77), ("empty", 77, 77), ("big", 77, 77),
    ("tiny_exp", 77, 0),
    # Out of range for an i64 like "big", but past the decimal context's exponent too: the default,
    # not a trap (a host error would stop the algo over a param value).
    ("huge_exp", 77, 77),
])
def test_param_1e8_is_exact_decimal_fixed_point(params: tuple[AlgoInstance, FakeActions], key: str, default: int,
                                                 want: int) -> None:
    inst, acts = params
    assert ask(inst, acts, key, 2, default) == want


def test_a_malformed_param_is_reported_once_per_key(params: tuple[AlgoInstance, FakeActions]) -> None:
    inst, acts = params
    for _ in range(3):
        assert ask(inst, acts, "word", 1, 9) == 9
        assert ask(inst, acts, "word", 2, 9) == 9
    assert ask(inst, acts, "nope", 1, 9) == 9  # missing is not malformed
    said = [x for x in acts.system_lines() if "word" in x]
    assert len(said) == 1 and "'abc'" in said[0] and "default" in said[0]
    assert not any("nope" in x for x in acts.system_lines())


SYMBOL = f"""(module
  (import "seq" "symbol" (func $symbol (param i32 i32 i32) (result i32)))
  (import "seq" "submit" (func $submit (param i32 i32 i64 i64 i32) (result i64)))
  {MEM}
  (func (export "on_quote") {Q}
    (drop (call $submit (i32.const 0) (i32.const 0)
      (i64.extend_i32_s (call $symbol (local.get 0) (i32.wrap_i64 (local.get 1)) (i32.wrap_i64 (local.get 2))))
      (i64.const 1) (i32.const 0)))))"""


def test_symbol_writes_the_name_and_answers_its_length() -> None:
    inst, acts = instance(SYMBOL)
    poke(inst, 300, b"#" * 16)
    inst.on_quote(1, 300, 64, 0, 0)
    assert acts.submits[-1][2] == 7 and peek(inst, 300, 8) == b"ETH-USD#"
    inst.on_quote(0, 400, 3, 0, 0)
    assert acts.submits[-1][2] == 7 and peek(inst, 400, 3) == b"BTC"
    inst.on_quote(5, 300, 64, 0, 0)
    assert acts.submits[-1][2] == -1
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, 65_534, 64, 0, 0)
    assert "out of bounds" in info.value.reason


# -- book, submit, submit_graph, cancel, clock, timer -----------------------------------------------------

BOOK = f"""(module
  (import "seq" "book" (func $book (param i32 i32 i32 i32) (result i32)))
  (import "seq" "submit" (func $submit (param i32 i32 i64 i64 i32) (result i64)))
  {MEM}
  ;; on_quote(sym, side, out_ptr, max_levels, _): the number of levels goes to submit's px
  (func (export "on_quote") {Q}
    (drop (call $submit (i32.const 0) (i32.const 0)
      (i64.extend_i32_s (call $book (local.get 0) (i32.wrap_i64 (local.get 1)) (i32.wrap_i64 (local.get 2))
                                    (i32.wrap_i64 (local.get 3)))) (i64.const 1) (i32.const 0)))))"""


def test_book_writes_price_quantity_pairs() -> None:
    levels = [(95_000_12_000_000, 47_137_477), (95_000_00_000_000, 1), (-5, 2**62)]
    inst, acts = instance(BOOK, FakeActions(levels=levels))
    poke(inst, 512, b"\xaa" * 64)
    inst.on_quote(1, 1, 512, 10, 0)
    assert acts.book_calls == [(1, 1, 10)]
    assert acts.submits[-1][2] == 3
    got = peek(inst, 512, 48)
    assert [struct.unpack_from("<qq", got, 16 * i) for i in range(3)] == levels
    assert peek(inst, 512 + 48, 16) == b"\xaa" * 16  # nothing past the last level
    inst.on_quote(0, 0, 512, 2, 0)
    assert acts.submits[-1][2] == 2 and acts.book_calls[-1] == (0, 0, 2)


def test_book_with_a_bad_side_or_no_levels_answers_zero_without_asking() -> None:
    inst, acts = instance(BOOK, FakeActions(levels=[(1, 1)]))
    for side, n in ((2, 5), (-1, 5), (0, 0), (1, -3)):
        inst.on_quote(0, side, 512, n, 0)
        assert acts.submits[-1][2] == 0
    assert acts.book_calls == []
    inst.on_quote(0, 0, 512, 50_000, 0)  # asks for at most 1000 levels
    assert acts.book_calls == [(0, 0, 1000)]


def test_book_out_of_bounds_traps() -> None:
    inst, _acts = instance(BOOK, FakeActions(levels=[(1, 1), (2, 2)]))
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, 0, 65_536 - 16, 2, 0)  # room for one level, not two
    assert "seq.book" in info.value.reason and "out of bounds" in info.value.reason


SUBMIT = f"""(module
  (import "seq" "submit" (func $submit (param i32 i32 i64 i64 i32) (result i64)))
  (import "seq" "cancel" (func $cancel (param i64) (result i32)))
  {MEM}
  ;; on_quote(sym, px, qty, side, flags): the handle is stored at 0x100
  (func (export "on_quote") {Q}
    (i64.store (i32.const 0x100)
      (call $submit (local.get 0) (i32.wrap_i64 (local.get 3)) (local.get 1) (local.get 2)
                    (i32.wrap_i64 (local.get 4)))))
  ;; on_timer(handle): cancel's answer is stored at 0x200
  (func (export "on_timer") (param i64)
    (i32.store (i32.const 0x200) (call $cancel (local.get 0)))))"""


@pytest.mark.parametrize(("args", "result"), [
    ((0, 0, 95_000_12_000_000, 1_000_000, 0), 1),
    ((3, 1, 0, 2**63 - 1, 2), 9_223_372_036_854_775_000),
    ((-1, 7, -(2**63), -5, -1), abi.E_ARGUMENT),
    ((1, 0, 50_000_000, 100_000_000, 1), abi.E_RATE),
])
def test_submit_passes_its_arguments_through_and_its_result_back(args: tuple[int, int, int, int, int],
                                                                 result: int) -> None:
    inst, acts = instance(SUBMIT, FakeActions(submit_result=result))
    sym, side, px, qty, flags = args
    inst.on_quote(sym, px, qty, side, flags)
    assert acts.submits == [args]
    assert struct.unpack("<q", peek(inst, 0x100, 8))[0] == result


def test_quote_values_beyond_an_i64_reach_the_module_as_the_nearest_i64() -> None:
    """A price × 1e8 past 2**63 (a book priced in the billions) is clamped, not wrapped around
    to a negative price, and the quote still arrives."""
    inst, acts = instance(SUBMIT)  # on_quote(sym, px, qty, side, flags) → submit(sym, side, px, qty, flags)
    inst.on_quote(0, 2**70, 5, 0, 0)
    inst.on_quote(0, 3, -(2**70), 0, 0)
    assert acts.submits == [(0, 0, 2**63 - 1, 5, 0), (0, 0, 3, -(2**63), 0)]


def test_cancel_passes_the_handle_and_its_answer() -> None:
    inst, acts = instance(SUBMIT)
    inst.on_timer(5)
    assert peek(inst, 0x200, 4) == (0).to_bytes(4, "little")
    inst.on_timer(2**40)
    assert struct.unpack("<i", peek(inst, 0x200, 4))[0] == -1
    assert acts.cancels == [5, 2**40]


GRAPH = f"""(module
  (import "seq" "submit_graph" (func $g (param i32 i32) (result i64)))
  {MEM}
  (func (export "on_quote") {Q}
    (i64.store (i32.const 0x10) (call $g (i32.wrap_i64 (local.get 1)) (i32.wrap_i64 (local.get 2))))))"""


def test_submit_graph_passes_the_bytes_and_the_handle() -> None:
    inst, acts = instance(GRAPH)
    body = b'{"nodes": [{"node_id": "a", "symbol": "BTC-USD"}]}'
    poke(inst, 1024, body)
    inst.on_quote(0, 1024, len(body), 0, 0)
    assert acts.graphs == [body]
    assert struct.unpack("<q", peek(inst, 0x10, 8))[0] == 7


@pytest.mark.parametrize("length", [MAX_GRAPH_JSON + 1, 0x7FFF_FFFF, 0xFFFF_FFFF])
def test_submit_graph_refuses_a_huge_length_without_reading(length: int) -> None:
    inst, acts = instance(GRAPH)
    inst.on_quote(0, 0, length, 0, 0)
    assert acts.graphs == [] and inst.dead is None
    assert struct.unpack("<q", peek(inst, 0x10, 8))[0] == abi.E_ARGUMENT
    assert any(str(MAX_GRAPH_JSON) in line for line in acts.system_lines())


def test_the_system_lines_a_module_causes_are_rate_limited_too() -> None:
    """Each refused submit_graph writes a system line: a module calling it 300 times a call must
    not write 300 lines (the log rate limit is the module's, whatever writes the line)."""
    wat = f"""(module
      (import "seq" "submit_graph" (func $g (param i32 i32) (result i64)))
      {MEM}
      (func (export "on_quote") {Q}
        (local $n i32)
        (local.set $n (i32.const 300))
        (loop $l
          (drop (call $g (i32.const 0) (i32.const 0x7fffffff)))
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br_if $l (local.get $n)))))"""
    inst, acts = instance(wat, limits=Limits(log_rate=100, log_burst=200), clock=lambda: 5.0)
    inst.on_quote(0, 0, 0, 0, 0)
    assert acts.graphs == [] and inst.dead is None
    assert len(acts.lines) <= 200 + 1, f"{len(acts.lines)} lines from one call"


def test_submit_graph_out_of_bounds_traps() -> None:
    inst, acts = instance(GRAPH)
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, 60_000, 10_000, 0, 0)
    assert "seq.submit_graph" in info.value.reason and "out of bounds" in info.value.reason
    assert acts.graphs == []


def test_now_ms_and_set_timer_go_to_the_actions() -> None:
    wat = f"""(module
      (import "seq" "now_ms" (func $now (result i64)))
      (import "seq" "set_timer" (func $timer (param i64)))
      {MEM}
      (func (export "on_quote") {Q} (call $timer (i64.add (call $now) (local.get 1)))))"""
    inst, acts = instance(wat, FakeActions(now=1_000))
    inst.on_quote(0, 250, 0, 0, 0)
    inst.on_quote(0, -1000, 0, 0, 0)
    assert acts.timers == [1_250, 0]


# -- host errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["submit", "log", "book", "now_ms"])
def test_an_exception_in_a_host_function_is_a_trap_not_a_crash(which: str) -> None:
    wat = f"""(module
      (import "seq" "submit" (func $submit (param i32 i32 i64 i64 i32) (result i64)))
      (import "seq" "log" (func $log (param i32 i32)))
      (import "seq" "book" (func $book (param i32 i32 i32 i32) (result i32)))
      (import "seq" "now_ms" (func $now (result i64)))
      {MEM}
      (func (export "on_quote") {Q}
        (if (i64.eq (local.get 1) (i64.const 0))
          (then (drop (call $submit (i32.const 0) (i32.const 0) (i64.const 1) (i64.const 1) (i32.const 0)))))
        (if (i64.eq (local.get 1) (i64.const 1)) (then (call $log (i32.const 0) (i32.const 1))))
        (if (i64.eq (local.get 1) (i64.const 2)) (then (drop (call $book (i32.const 0) (i32.const 0)
                                                                        (i32.const 0) (i32.const 1)))))
        (if (i64.eq (local.get 1) (i64.const 3)) (then (drop (call $now))))
        (if (i64.eq (local.get 1) (i64.const 9)) (then unreachable))))"""
    inst, _ = instance(wat, FakeActions(fail=which, levels=[(1, 1)]))
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, ["submit", "log", "book", "now_ms"].index(which), 0, 0, 0)
    assert info.value.reason == f"host error in seq.{which}: RuntimeError: {which} exploded"
    assert inst.dead == info.value.reason
    # A second instance that traps on its own is not blamed on the first one's host error.
    other, _ = instance(wat)
    with pytest.raises(AlgoTrap) as info2:
        other.on_quote(0, 9, 0, 0, 0)
    assert "unreachable" in info2.value.reason and "host error" not in info2.value.reason


def test_after_a_host_error_the_next_instance_trap_is_explained_normally() -> None:
    wat = f"""(module
      (import "seq" "submit" (func $submit (param i32 i32 i64 i64 i32) (result i64)))
      {MEM}
      (func (export "on_quote") {Q}
        (drop (call $submit (i32.const 0) (i32.const 0) (i64.const 1) (i64.const 1) (i32.const 0)))))"""
    inst, _ = instance(wat, FakeActions(fail="submit"))
    with pytest.raises(AlgoTrap) as info:
        inst.on_quote(0, 0, 0, 0, 0)
    assert "host error in seq.submit" in info.value.reason
    with pytest.raises(AlgoTrap) as again:
        inst.on_quote(0, 0, 0, 0, 0)
    assert again.value.reason == info.value.reason


# -- determinism --------------------------------------------------------------------------------------------

DETERMINISTIC = f"""(module
  (import "seq" "submit" (func $submit (param i32 i32 i64 i64 i32) (result i64)))
  {MEM}
  (global $acc (mut f64) (f64.const 1))
  (func (export "on_quote") {Q}
    (local $mid f64)
    (local.set $mid (f64.div (f64.add (f64.convert_i64_s (local.get 1)) (f64.convert_i64_s (local.get 3)))
                             (f64.const 2)))
    (global.set $acc (f64.add (f64.mul (global.get $acc) (f64.const 0.9)) (f64.sqrt (local.get $mid))))
    ;; price: a float computation; qty: the bits of 0/0 (a NaN, which must be canonical)
    (drop (call $submit (local.get 0) (i32.const 0)
      (i64.trunc_sat_f64_s (f64.mul (global.get $acc) (f64.const 1e6)))
      (i64.reinterpret_f64 (f64.div (f64.convert_i64_s (local.get 2)) (f64.convert_i64_s (local.get 4))))
      (i32.const 0)))))"""

QUOTES = [(i % 3, 9_500_000_000_000 + 137 * i, 0, 9_500_000_000_100 + 71 * i, 0) for i in range(200)]


def run_quotes() -> list[tuple[int, int, int, int, int]]:
    inst, acts = instance(DETERMINISTIC)
    for q in QUOTES:
        inst.on_quote(*q)
    return acts.submits


def test_the_same_module_and_inputs_give_the_same_submits() -> None:
    first, second = run_quotes(), run_quotes()
    assert len(first) == len(QUOTES)
    assert first == second
    assert len({px for _s, _d, px, _q, _f in first}) > 100  # the computation did depend on its inputs
    canonical_nan = struct.unpack("<q", struct.pack("<Q", 0x7FF8_0000_0000_0000))[0]
    assert {qty for _s, _d, _p, qty, _f in first} == {canonical_nan}


def test_instances_of_one_module_do_not_share_state() -> None:
    mod = module(DETERMINISTIC)
    a, b = FakeActions(), FakeActions()
    ia, ib = AlgoInstance(mod, a), AlgoInstance(mod, b)
    for q in QUOTES[:10]:
        ia.on_quote(*q)
    ib.on_quote(*QUOTES[0])
    assert b.submits[0] == a.submits[0]


def test_calls_and_fuel_are_counted() -> None:
    inst, _ = instance(COUNT_LOOP)
    inst.on_quote(0, 10, 0, 0, 0)
    inst.on_quote(0, 10, 0, 0, 0)
    assert inst.calls == 2 and inst.fuel_used > 20


def test_a_start_function_may_call_the_imports_that_read_or_write_memory() -> None:
    """AssemblyScript runs top-level code in the start function: seq.log or seq.param there
    failed with "AttributeError: 'AlgoInstance' object has no attribute '_mem_ref'"."""
    wat = f"""(module
      (import "seq" "log" (func $log (param i32 i32)))
      (import "seq" "param" (func $param (param i32 i32 i32 i32) (result i32)))
      {MEM}
      (data (i32.const 1024) "hello from start")
      (data (i32.const 2048) "qty")
      (global (export "qty_len") (mut i32) (i32.const -9))
      (func $start
        (call $log (i32.const 1024) (i32.const 16))
        (global.set 0 (call $param (i32.const 2048) (i32.const 3) (i32.const 3072) (i32.const 64))))
      (start $start)
      {ON_QUOTE_NOP})"""
    inst, acts = instance(wat, FakeActions(params={"qty": "0.01"}), Limits(fuel=100_000, init_fuel=1_000_000))
    assert acts.algo_lines() == ["hello from start"]
    assert peek(inst, 3072, 4) == b"0.01"


def test_book_levels_past_an_i64_are_clamped_not_a_host_error() -> None:
    """Another client's order priced past 2^63 / 1e8 rested in the shared book, and every algo
    reading that book failed with "OverflowError: int too big to convert"."""
    huge = 92233720368_55 * 10**6  # $92,233,720,368.55 in 1e8 units: past an i64
    inst, _acts = instance(BOOK, FakeActions(levels=[(huge, 2**70), (-(2**70), 5)]))
    inst.on_quote(0, 1, 512, 10, 0)
    got = peek(inst, 512, 32)
    assert [struct.unpack_from("<qq", got, 16 * i) for i in range(2)] == [(2**63 - 1, 2**63 - 1), (-(2**63), 5)]
