"""One algo instance in Wasmtime: the imports it may call, the exports the host calls, its limits.

The hot path is a quote → ``on_quote`` → ``seq.submit`` → the matching engine,
so calls into and out of the module use Wasmtime's *unchecked* C entry points
through the ``wasmtime`` package's own bindings: the checked wrappers
(``Func.__call__``, ``Linker.define_func``) re-read the function's type and box
every value on every call, which cost ~90 µs a call here against ~4 µs this
way. The types were checked once, at deploy (:mod:`.abi`), so the unchecked
calls are safe. The three calls a quote makes into Wasmtime (set the fuel, call,
read the fuel) go through ctypes with no argument types and prebuilt arguments
(:func:`_bare`), and an import's fuel is charged as a debt settled every
``SETTLE_FUEL`` units: a quote that places an order took 13.7 µs in and out of
the module before, 6.1 µs now (20,000 calls in a loop, both ways on one machine).

Limits, per instance:

* **fuel**: every call gets ``fuel`` units (about one per instruction); running
  out traps ("all fuel consumed"), so a loop that never ends is interrupted,
  deterministically (fuel, unlike a timer, does not depend on the machine);
* **memory**: the linear memory may not grow past ``memory_bytes``
  (``memory.grow`` answers -1; a module that needs more at instantiation is refused);
* **log rate**: ``log_rate`` lines a second with a burst of ``log_burst``; the
  excess is dropped and counted in one system line;
* floats are NaN-canonicalised, so a module's results do not depend on the CPU.

A trap (from the module, fuel, or an error in a host function) raises
:class:`AlgoTrap` with the reason; the instance must not be called again.
"""

from __future__ import annotations

import ctypes
import hashlib
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import wasmtime
from wasmtime import _bindings as _bind
from wasmtime import _ffi as ffi

from . import abi

# The same entry points, called without releasing the GIL: ctypes' default (CDLL) releases it
# around every foreign call and every callback re-takes it, and any other thread (the engine's
# store writer, say) then holds it for up to the switch interval (5 ms) before this call may go
# on. A call is bounded by its fuel, so holding the GIL through it is the cheaper choice.
_NOGIL = ctypes.PyDLL(ffi.dll._name)


def _nogil(name: str) -> Any:
    """The library's *name*, with the wasmtime package's own signature, called holding the GIL."""
    fn = _NOGIL[name]
    checked = getattr(_bind, "_" + name)
    fn.restype, fn.argtypes = checked.restype, checked.argtypes
    return fn


_set_fuel = _nogil("wasmtime_context_set_fuel")
_get_fuel = _nogil("wasmtime_context_get_fuel")


def _bare(name: str) -> Any:
    """The library's *name* with no argument types: ctypes then converts nothing, so each
    argument must already be a ctypes object of the C type (a Python int would be passed as
    a C int). Converting through the declared types cost ~1.4 µs of a 2.1 µs call into a
    module; the hot path (:meth:`AlgoInstance._call`) passes prebuilt objects only."""
    fn = _NOGIL[name]  # a new function object (attribute access shares one with _nogil's)
    fn.restype = ctypes.c_void_p  # an int (an error or trap pointer) or None
    return fn


_call_bare = _bare("wasmtime_func_call_unchecked")
_set_fuel_bare = _bare("wasmtime_context_set_fuel")
_get_fuel_bare = _bare("wasmtime_context_get_fuel")
_ERROR_PTR = ctypes.POINTER(ffi.wasmtime_error_t)
# on_quote's arguments straight into its wasmtime_val_raw array (16 bytes a value, little-endian:
# an i32 then four i64). Wasmtime keeps raw values little-endian on every host.
_PACK_QUOTE = struct.Struct("<i12xq8xq8xq8xq").pack_into
_I64 = 2**63
_PAIR = struct.Struct("<qq").pack  # a book level: price and quantity, little-endian i64s
_caller_context = _nogil("wasmtime_caller_context")
_memory_data = _nogil("wasmtime_memory_data")
_memory_data_size = _nogil("wasmtime_memory_data_size")
_RAW = ffi.wasmtime_val_raw
_TRAP_PTR = ctypes.POINTER(ffi.wasm_trap_t)
_NOOP_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _env: None)
_VALTYPES = {"i32": wasmtime.ValType.i32, "i64": wasmtime.ValType.i64}
MAX_LOG_LINE = 4096
#: Longest JSON graph a module may pass to ``submit_graph``.
MAX_GRAPH_JSON = 64 * 1024
PAGE = abi.PAGE
#: What an import call costs in fuel, about what it costs the host in instructions' time: a
#: module looping on seq.log (≈ 8 µs a call) runs out of fuel after ≈ 2,000 lines, not 200,000.
IMPORT_FUEL = {"log": 1_000, "submit": 1_000, "submit_graph": 5_000, "cancel": 500, "book": 500, "*": 100}
#: Import fuel is kept as a debt and taken from the module's fuel once it reaches this much (or
#: a twentieth of a call's fuel, if less): reading and setting the fuel costs three calls into
#: Wasmtime, more than the import itself. A call may so overrun its fuel by this much at most.
SETTLE_FUEL = 10_000
#: Elements a module's tables may hold in all (function references; 8 bytes each).
MAX_TABLE_ELEMENTS = abi.MAX_TABLE_ELEMENTS

_engine: wasmtime.Engine | None = None
_engine_lock = threading.Lock()


def engine() -> wasmtime.Engine:
    """The process's Wasmtime engine: fuel metering and NaN canonicalisation on."""
    global _engine
    with _engine_lock:
        if _engine is None:
            cfg = wasmtime.Config()
            cfg.consume_fuel = True
            cfg.cranelift_nan_canonicalization = True
            cfg.wasm_multi_memory = False  # one memory: the exported one, under the cap
            _engine = wasmtime.Engine(cfg)
        return _engine


@dataclass(frozen=True)
class Limits:
    fuel: int = 2_000_000            # per call
    init_fuel: int = 20_000_000      # for init()
    memory_bytes: int = 16 * 1024 * 1024
    log_rate: float = 100.0          # lines a second
    log_burst: int = 200


class Actions(Protocol):
    """What an instance's imports do: the algo manager provides them."""

    @property
    def params(self) -> Mapping[str, str]: ...

    def submit(self, sym: int, side: int, px_1e8: int, qty_1e8: int, flags: int) -> int: ...
    def submit_graph(self, body: bytes) -> int: ...
    def cancel(self, handle: int) -> int: ...
    def log(self, line: str, stream: str = "algo") -> None: ...
    def now_ms(self) -> int: ...
    def set_timer(self, interval_ms: int) -> None: ...
    def book(self, sym: int, side: int, max_levels: int) -> list[tuple[int, int]]: ...
    def symbol_name(self, sym: int) -> str | None: ...


class AlgoTrap(Exception):
    """The module trapped (or a host function failed); ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenBucket:
    """*rate* a second, bursts of *burst*; ``dropped`` counts refusals since it was last reset."""

    __slots__ = ("burst", "dropped", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.last: float | None = None
        self.dropped = 0

    def take(self, now: float) -> bool:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.dropped += 1
        return False


def _parse_1e8(text: str) -> int | None:
    try:
        d = Decimal(text.strip())
        if not d.is_finite():
            return None
        v = int((d * 100_000_000).to_integral_value())
    except (ArithmeticError, ValueError):  # InvalidOperation, Overflow (1e999999999), …
        return None
    return v if -(2**63) <= v < 2**63 else None


class _Export:
    """A fast caller of one export (unchecked: its type was checked at deploy)."""

    __slots__ = ("args", "cap", "func", "mem", "n", "name")

    def __init__(self, name: str, func: wasmtime.Func, nparams: int) -> None:
        self.name = name
        self.func = ctypes.byref(func._func)
        self.n = nparams
        self.cap = ctypes.c_size_t(max(nparams, 1))  # ctypes objects: see _bare
        self.args = (_RAW * max(nparams, 1))()
        self.mem = memoryview(self.args).cast("B")  # the same bytes, for struct.pack_into


class AlgoInstance:
    """A module instantiated with its imports bound to *actions*."""

    def __init__(self, module: wasmtime.Module, actions: Actions, limits: Limits | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.limits = limits or Limits()
        self.actions = actions
        self._clock = clock or time.monotonic
        self.store = wasmtime.Store(engine())
        # Tables are host memory too (8 bytes an element): bounded like the linear memory.
        self.store.set_limits(memory_size=self.limits.memory_bytes, table_elements=MAX_TABLE_ELEMENTS,
                              instances=1, tables=abi.MAX_TABLES, memories=1)
        self._ctx = self.store._context()
        self._ctx_bare = ctypes.c_void_p(ctypes.cast(self._ctx, ctypes.c_void_p).value)  # see _bare
        self._fuel = ctypes.c_uint64(self.limits.fuel)
        self._init_fuel = ctypes.c_uint64(self.limits.init_fuel)
        self._trap = _TRAP_PTR()
        self._trap_ref = ctypes.byref(self._trap)
        self._left = ctypes.c_uint64()  # fuel left, read after each call
        self._left_ref = ctypes.byref(self._left)
        self._debt = 0  # import fuel not yet taken from the module's (SETTLE_FUEL)
        self._budget = self.limits.init_fuel  # the running call's fuel: the start function's first
        self._settle_at = max(1, min(SETTLE_FUEL, self.limits.fuel // 20))
        self._keep: list[Any] = []  # ctypes callbacks must outlive the instance
        self._mem_ref: Any = None  # set once instantiated; the start function finds it itself (_mem)
        self._logs = TokenBucket(self.limits.log_rate, self.limits.log_burst)
        self._host_error: str | None = None
        self._warned: set[str] = set()
        self.dead: str | None = None
        self.calls = 0
        self.fuel_used = 0
        imports = [self._import(imp.module, imp.name or "") for imp in module.imports]
        # A module may have a start function (AssemblyScript makes one for module-level values):
        # it runs at instantiation, on init's fuel.
        self.store.set_fuel(self.limits.init_fuel)
        try:
            self.instance = wasmtime.Instance(self.store, module, imports)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            message = exc.message if isinstance(exc, wasmtime.Trap) else str(exc)
            raise AlgoTrap(self._explain(message, at_start=True)) from None
        exports = self.instance.exports(self.store)
        mem = exports["memory"]
        assert isinstance(mem, wasmtime.Memory)  # abi.check_module
        self._memory = mem
        self._mem_ref = ctypes.byref(mem._memory)
        self._exports: dict[str, _Export] = {}
        for name, (params, _results) in abi.EXPORTS.items():
            try:
                f = exports[name]
            except KeyError:
                continue
            if isinstance(f, wasmtime.Func):
                self._exports[name] = _Export(name, f, len(params))
        self._on_quote = self._exports.get("on_quote")

    def has(self, export: str) -> bool:
        return export in self._exports

    # -- calling the module -----------------------------------------------------------------
    def _call(self, ex: _Export, fuel: ctypes.c_uint64) -> None:
        """Call *ex* with *fuel* (one of this instance's prebuilt values) and its ``args``."""
        if self.dead is not None:
            raise AlgoTrap(self.dead)
        ctx = self._ctx_bare
        err = _set_fuel_bare(ctx, fuel)
        if err:
            raise AlgoTrap(f"host error: {_error(err)}")
        self._debt = 0
        self._budget = fuel.value
        err = _call_bare(ctx, ex.func, ex.args, ex.cap, self._trap_ref)
        self.calls += 1
        if err or self._trap:
            if err:
                message = _error(err)
            else:
                message = wasmtime.Trap._from_ptr(self._trap).message
                self._trap = _TRAP_PTR()
                self._trap_ref = ctypes.byref(self._trap)
            reason = self._explain(message, in_init=fuel is self._init_fuel)
            self.dead = reason
            raise AlgoTrap(reason)
        if not _get_fuel_bare(ctx, self._left_ref):
            self.fuel_used += fuel.value - self._left.value + self._debt

    def _explain(self, message: str, at_start: bool = False, in_init: bool = False) -> str:
        """A trap's message as a reason a user can act on."""
        host, self._host_error = self._host_error, None
        if host is not None:
            return host
        text = message.strip().splitlines()
        first = next((line for line in text if "wasm trap:" in line), text[-1] if text else "trap")
        first = first.strip()
        if "all fuel consumed" in message:
            fuel = self.limits.init_fuel if at_start or in_init else self.limits.fuel
            where = "the module's start function" if at_start else "init" if in_init else "a call"
            each = "it gets" if at_start or in_init else "each call gets"
            return (f"trap: fuel exhausted: {where} ran more than {fuel:,} instructions "
                    f"(an endless loop?); {each} that much fuel")
        if at_start and ("memory" in message and ("limit" in message or "minimum" in message or "resource" in message)):
            return (f"memory limit: the module needs more than {self.limits.memory_bytes // (1024 * 1024)} MiB "
                    "of linear memory at start")
        reason = "trap: " + first.replace("wasm trap: ", "")
        memory = getattr(self, "_memory", None)
        try:
            size = memory.data_len(self.store) if memory is not None else 0
        except Exception:
            size = 0
        cap = self.limits.memory_bytes
        if size + PAGE > cap:
            reason += f" (the memory limit, {cap // (1024 * 1024)} MiB, was reached)"
        elif size + max(PAGE, cap // 16) > cap:  # an allocator grows in chunks: it stops short of the cap
            reason += (f" (memory limit: {size / (1024 * 1024):.1f} of {cap // (1024 * 1024)} MiB in use, "
                       "so a memory.grow was likely refused)")
        return reason

    def init(self) -> None:
        ex = self._exports.get("init")
        if ex is not None:
            self._call(ex, self._init_fuel)

    def on_quote(self, sym: int, bid_px: int, bid_qty: int, ask_px: int, ask_qty: int) -> None:
        ex = self._on_quote
        if ex is None:
            return
        try:
            _PACK_QUOTE(ex.mem, 0, sym, bid_px, bid_qty, ask_px, ask_qty)  # 0.2 µs; five union fields 1.0
        except struct.error:  # beyond an i64 (a price over ~92 billion): the largest there is
            _PACK_QUOTE(ex.mem, 0, sym, *(max(-_I64, min(_I64 - 1, v)) for v in (bid_px, bid_qty, ask_px, ask_qty)))
        self._call(ex, self._fuel)

    def on_fill(self, handle: int, sym: int, side: int, px_1e8: int, qty_1e8: int) -> None:
        ex = self._exports.get("on_fill")
        if ex is None:
            return
        a = ex.args
        a[0].i64 = handle
        a[1].i32 = sym
        a[2].i32 = side
        a[3].i64 = max(-_I64, min(_I64 - 1, px_1e8))  # ctypes would wrap it silently
        a[4].i64 = max(-_I64, min(_I64 - 1, qty_1e8))
        self._call(ex, self._fuel)

    def on_order(self, handle: int, status: int) -> None:
        ex = self._exports.get("on_order")
        if ex is None:
            return
        ex.args[0].i64 = handle
        ex.args[1].i32 = status
        self._call(ex, self._fuel)

    def on_timer(self, now_ms: int) -> None:
        ex = self._exports.get("on_timer")
        if ex is None:
            return
        ex.args[0].i64 = now_ms
        self._call(ex, self._fuel)

    @property
    def memory_bytes(self) -> int:
        return int(self._memory.data_len(self.store))

    # -- the imports ------------------------------------------------------------------------------
    def _import(self, module: str, name: str) -> wasmtime.Func:
        if module == "env" and name == "abort":
            impl: Callable[[Any, Any], int | None] = self._abort
            params, results = abi.EXTRA_IMPORTS[("env", "abort")]
        else:
            impl = getattr(self, "_imp_" + name)
            params, results = abi.IMPORTS[name]
        ty = wasmtime.FuncType([_VALTYPES[p]() for p in params], [_VALTYPES[r]() for r in results])

        cost = IMPORT_FUEL.get(name, IMPORT_FUEL["*"])

        def callback(_env: Any, caller: Any, args: Any, _n: int) -> int:
            try:
                self._debt += cost  # an import's fuel: see _settle
                if self._debt >= self._settle_at:
                    self._settle(caller)
                impl(caller, args)
                return 0
            except BaseException as exc:  # never unwind through Wasmtime: turn it into a trap
                if self._host_error is None:
                    self._host_error = exc.reason if isinstance(exc, AlgoTrap) else (
                        f"host error in seq.{name}: {type(exc).__name__}: {exc}")
                msg = self._host_error.encode()
                trap = ffi.wasmtime_trap_new(ctypes.create_string_buffer(msg), len(msg))
                return ctypes.cast(trap, ctypes.c_void_p).value or 0

        cb = ffi.wasmtime_func_unchecked_callback_t(callback)
        self._keep.extend((cb, ty))
        raw = ffi.wasmtime_func_t()
        ffi.wasmtime_func_new_unchecked(self._ctx, ty.ptr(), cb, None, _NOOP_FINALIZER, ctypes.byref(raw))
        return wasmtime.Func._from_raw(raw)

    def _settle(self, caller: Any) -> None:
        """Take the imports' fuel debt from the module's fuel: a module calling the host in a
        loop runs out of fuel as fast as one computing, so a call cannot hold the event loop
        much longer than its fuel. Called every ``SETTLE_FUEL`` units of debt."""
        ctx = _caller_context(caller)
        if _get_fuel(ctx, self._left_ref):
            return
        left, debt = self._left.value, self._debt
        if left < debt:
            each = "each call gets" if self._budget == self.limits.fuel else "init and the start function get"
            raise AlgoTrap(f"trap: fuel exhausted: a call ran more than {self._budget:,} units of fuel "
                           f"(host calls count: see docs/algos.md); {each} that much fuel")
        _set_fuel(ctx, left - debt)
        self._debt = 0

    def _mem(self, caller: Any, what: str) -> Any:
        """The module's memory: known once instantiated; during the start function (which runs
        inside instantiation: AssemblyScript's top-level code) looked up through the caller."""
        ref = self._mem_ref
        if ref is None:
            mem = wasmtime.Caller(caller).get("memory")
            if not isinstance(mem, wasmtime.Memory):  # abi.check_module requires it: not reached
                raise AlgoTrap(f"trap: seq.{what} needs the module's exported memory")
            self._keep.append(mem)
            ref = ctypes.byref(mem._memory)
        return ref

    def _bytes(self, caller: Any, ptr: int, length: int, what: str) -> bytes:
        ctx = _caller_context(caller)
        mem_ref = self._mem(caller, what)
        size = _memory_data_size(ctx, mem_ref)
        ptr &= 0xFFFFFFFF
        length &= 0xFFFFFFFF
        if ptr + length > size:
            raise AlgoTrap(f"trap: seq.{what} was given memory out of bounds ({ptr}+{length} > {size} bytes)")
        base = _memory_data(ctx, mem_ref)
        return ctypes.string_at(ctypes.addressof(base.contents) + ptr, length)

    def _write(self, caller: Any, ptr: int, data: bytes, what: str) -> None:
        ctx = _caller_context(caller)
        mem_ref = self._mem(caller, what)
        size = _memory_data_size(ctx, mem_ref)
        ptr &= 0xFFFFFFFF
        if ptr + len(data) > size:
            raise AlgoTrap(f"trap: seq.{what} was given memory out of bounds ({ptr}+{len(data)} > {size} bytes)")
        base = _memory_data(ctx, mem_ref)
        ctypes.memmove(ctypes.addressof(base.contents) + ptr, data, len(data))

    def _abort(self, caller: Any, a: Any) -> None:
        msg = self._as_string(caller, a[0].i32)
        file = self._as_string(caller, a[1].i32)
        raise AlgoTrap(f"trap: abort: {msg or 'no message'}" + (f" at {file}:{a[2].i32}:{a[3].i32}" if file else ""))

    def _as_string(self, caller: Any, ptr: int) -> str:
        """An AssemblyScript string (UTF-16, its byte length 4 bytes before it); '' if unreadable."""
        if ptr <= 4:
            return ""
        try:
            n = int.from_bytes(self._bytes(caller, ptr - 4, 4, "abort"), "little")
            return self._bytes(caller, ptr, min(n, 2048), "abort").decode("utf-16-le", "replace")
        except AlgoTrap:
            return ""

    def _imp_log(self, caller: Any, a: Any) -> None:
        length = min(a[1].i32 & 0xFFFFFFFF, MAX_LOG_LINE)
        data = self._bytes(caller, a[0].i32, length, "log")
        self._emit(data.decode("utf-8", "replace"), "algo")

    def _emit(self, line: str, stream: str) -> None:
        """A line the module wrote or caused (a refused call): both count against its log rate."""
        if self._logs.take(self._clock()):
            if self._logs.dropped:
                self.actions.log(f"{self._logs.dropped} line(s) dropped: more than "
                                 f"{self.limits.log_rate:g} lines a second", "system")
                self._logs.dropped = 0
            self.actions.log(line, stream)

    def _key(self, caller: Any, ptr: int, length: int, what: str) -> str | None:
        if length < 0 or length > 256:
            return None
        return self._bytes(caller, ptr, length, what).decode("utf-8", "replace")

    def _imp_param(self, caller: Any, a: Any) -> None:
        key = self._key(caller, a[0].i32, a[1].i32, "param")
        value = None if key is None else self.actions.params.get(key)
        if value is None:
            a[0].i32 = -1
            return
        data = value.encode()
        cap = a[3].i32
        if cap > 0:
            self._write(caller, a[2].i32, data[:cap], "param")
        a[0].i32 = len(data)

    def _imp_param_i64(self, caller: Any, a: Any) -> None:
        key = self._key(caller, a[0].i32, a[1].i32, "param_i64")
        value = None if key is None else self.actions.params.get(key)
        default = a[2].i64
        try:
            v = int(value.strip(), 10) if value is not None else default
        except ValueError:
            v = None
        if v is None or not -(2**63) <= v < 2**63:
            self._bad_param(key, value, "an integer")
            v = default
        a[0].i64 = v

    def _imp_param_1e8(self, caller: Any, a: Any) -> None:
        key = self._key(caller, a[0].i32, a[1].i32, "param_1e8")
        value = None if key is None else self.actions.params.get(key)
        v = _parse_1e8(value) if value is not None else None
        if v is None and value is not None:
            self._bad_param(key, value, "a decimal number")
        a[0].i64 = a[2].i64 if v is None else v

    def _bad_param(self, key: str | None, value: str | None, what: str) -> None:
        """A malformed param is not silently the default: say so (once per key)."""
        if key is None or key in self._warned:
            return
        self._warned.add(key)
        self._emit(f"param {key}={value!r} is not {what}; the module gets its default", "system")

    def _imp_symbol(self, caller: Any, a: Any) -> None:
        name = self.actions.symbol_name(a[0].i32)
        if name is None:
            a[0].i32 = -1
            return
        data = name.encode()
        cap = a[2].i32
        if cap > 0:
            self._write(caller, a[1].i32, data[:cap], "symbol")
        a[0].i32 = len(data)

    def _imp_book(self, caller: Any, a: Any) -> None:
        sym, side, out, n = a[0].i32, a[1].i32, a[2].i32, a[3].i32
        if n <= 0 or side not in (0, 1):
            a[0].i32 = 0
            return
        levels = self.actions.book(sym, side, min(n, 1000))
        # Clamped into an i64 as on_quote's are: another client's order at a price past 2^63/1e8
        # raised OverflowError here and failed every algo that read that book.
        buf = b"".join(_PAIR(min(max(px, -_I64), _I64 - 1), min(max(qty, -_I64), _I64 - 1)) for px, qty in levels)
        self._write(caller, out, buf, "book")
        a[0].i32 = len(levels)

    def _imp_submit(self, _caller: Any, a: Any) -> None:
        a[0].i64 = self.actions.submit(a[0].i32, a[1].i32, a[2].i64, a[3].i64, a[4].i32)

    def _imp_submit_graph(self, caller: Any, a: Any) -> None:
        length = a[1].i32 & 0xFFFFFFFF
        if length > MAX_GRAPH_JSON:
            a[0].i64 = abi.E_ARGUMENT
            self._emit(f"submit_graph: the JSON is {length} bytes; the limit is {MAX_GRAPH_JSON}", "system")
            return
        a[0].i64 = self.actions.submit_graph(self._bytes(caller, a[0].i32, length, "submit_graph"))

    def _imp_cancel(self, _caller: Any, a: Any) -> None:
        a[0].i32 = self.actions.cancel(a[0].i64)

    def _imp_now_ms(self, _caller: Any, a: Any) -> None:
        a[0].i64 = self.actions.now_ms()

    def _imp_set_timer(self, _caller: Any, a: Any) -> None:
        self.actions.set_timer(a[0].i64)


def _error(err: int) -> str:
    """The message of a ``wasmtime_error_t*`` (an int from a bare call); frees it."""
    return str(wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, _ERROR_PTR)))


class CompilerBusy(Exception):
    """Every compile slot is taken (a deploy answers 503: retry shortly)."""


#: Modules compiled at once in this process: compiling a big module takes hundreds of MB,
#: and four at once took 3.7 GB.
COMPILE_SLOTS = 2
#: Compiled modules kept (by SHA-256): a deploy's compile is the start's.
KEEP_COMPILED = 16
_compiles = threading.BoundedSemaphore(COMPILE_SLOTS)
_compiled: OrderedDict[tuple[str, int], tuple[wasmtime.Module, abi.ModuleInfo]] = OrderedDict()
_compiled_lock = threading.Lock()


def compile_module(wasm: bytes, memory_bytes: int = Limits.memory_bytes, *,
                   wait: float | None = None) -> tuple[wasmtime.Module, abi.ModuleInfo]:
    """Compile and check *wasm* against the ABI (raises :class:`~.abi.AbiError`), or the
    module compiled before from the same bytes. CPU work: call it off the event loop. With
    every compile slot taken: wait up to *wait* seconds (None: do not wait), then
    :class:`CompilerBusy`."""
    key = (hashlib.sha256(wasm).hexdigest(), memory_bytes)  # checked against that memory cap
    with _compiled_lock:
        hit = _compiled.get(key)
        if hit is not None:
            _compiled.move_to_end(key)
            return hit
    got = _compiles.acquire(timeout=wait) if wait else _compiles.acquire(blocking=False)
    if not got:
        raise CompilerBusy(f"{COMPILE_SLOTS} modules are being compiled; retry in a moment")
    try:
        out = abi.check_module(engine(), wasm, memory_bytes)  # its size checks come before compiling
    finally:
        _compiles.release()
    with _compiled_lock:
        _compiled[key] = out
        while len(_compiled) > KEEP_COMPILED:
            _compiled.popitem(last=False)
    return out


__all__ = ["Actions", "AlgoInstance", "AlgoTrap", "CompilerBusy", "Limits", "compile_module", "engine"]
