"""The WASM algo ABI, version 1: what a module may import and must export (docs/algos.md).

An algo is a WebAssembly module with no WASI and no imports but these. The
host calls its exports on events and the module calls the imports to act.
Prices and quantities are fixed-point integers × 10⁸ (``px_1e8``, ``qty_1e8``,
the API's ``qty_1e8``); a symbol is its index in the deployment's ``symbols``
list; sides are 0 (buy / bid) and 1 (sell / ask).

:func:`check_module` compiles a module and checks it against this table before
anything is stored: a malformed module, an import outside the ABI (WASI, a
``seq`` function with the wrong signature, a memory or table import) or a
missing ``memory`` or handler is refused at deploy with the name of the item.
"""

from __future__ import annotations

from dataclasses import dataclass

import wasmtime

#: The import module every host function lives in.
MODULE = "seq"
#: Bytes a module may have (the API's body limit is larger: base64).
MAX_MODULE_BYTES = 4 * 1024 * 1024
#: Functions a module may define. Compiling costs memory by the function: 195,000 tiny ones
#: (4 MB) took 1.3 GB and 18 s. An AssemblyScript or Rust algo has hundreds to a few thousand.
MAX_FUNCTIONS = 20_000
#: Bytes one function's body may have. Compiling a function costs more than linearly in its
#: size: 150,000 nested ifs in one 2 MB function took 33 s and 1.2 GB; 384 KB of them 3.3 s,
#: 96 KB 0.3 s. The examples' largest is 308 bytes.
MAX_FUNCTION_BYTES = 64 * 1024
#: Tables a module may define, and elements in all (the store's limits at instantiation).
MAX_TABLES = 4
MAX_TABLE_ELEMENTS = 100_000
PAGE = 65536

I32, I64 = "i32", "i64"

#: ``seq`` imports: name -> (params, results).
IMPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "log": ((I32, I32), ()),                            # (ptr, len): one line, UTF-8
    "param": ((I32, I32, I32, I32), (I32,)),            # (key_ptr, key_len, out_ptr, out_cap) -> len | -1
    "param_i64": ((I32, I32, I64), (I64,)),             # (key_ptr, key_len, default) -> integer value
    "param_1e8": ((I32, I32, I64), (I64,)),             # (key_ptr, key_len, default) -> decimal × 1e8
    "book": ((I32, I32, I32, I32), (I32,)),             # (sym, side, out_ptr, max_levels) -> levels written
    "submit": ((I32, I32, I64, I64, I32), (I64,)),      # (sym, side, px_1e8, qty_1e8, flags) -> handle | error
    #                                                   px_1e8 0: a market order
    "submit_graph": ((I32, I32), (I64,)),               # (json_ptr, json_len) -> handle | error
    "cancel": ((I64,), (I32,)),                         # (handle) -> 0 | -1
    "symbol": ((I32, I32, I32), (I32,)),                # (sym, out_ptr, out_cap) -> the name's length | -1
    "now_ms": ((), (I64,)),                             # the market clock, ms since the epoch
    "set_timer": ((I64,), ()),                          # (interval_ms): on_timer every interval; 0 = off
}

#: AssemblyScript's runtime imports ``env.abort(msg, file, line, col)``: allowed; it traps
#: with the message.
EXTRA_IMPORTS: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    ("env", "abort"): ((I32, I32, I32, I32), ()),
}

#: Exports the host calls (all optional but one handler): name -> (params, results).
EXPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "init": ((), ()),
    "on_quote": ((I32, I64, I64, I64, I64), ()),        # (sym, bid_px, bid_qty, ask_px, ask_qty)
    "on_fill": ((I64, I32, I32, I64, I64), ()),         # (handle, sym, side, px_1e8, qty_1e8)
    "on_order": ((I64, I32), ()),                       # (handle, status): the order ended
    "on_timer": ((I64,), ()),                           # (now_ms)
}
HANDLERS = ("on_quote", "on_timer")

# Codes the action imports answer with (negative; a handle is positive).
E_ARGUMENT = -1      # a bad symbol index, side, price or quantity
E_REFUSED = -2       # the engine refused the order (the reason is in the algo's log)
E_STOPPED = -3       # the algo is stopping or no longer holds its lease: nothing is placed
E_RATE = -4          # more orders a second than the algo's limit
E_OPEN = -5          # too many open orders

# on_order statuses.
ORDER_FILLED, ORDER_CANCELLED, ORDER_REJECTED = 0, 1, 2

# submit flags: bits 0-1 urgency.
URGENCY = {0: "normal", 1: "low", 2: "high"}


class AbiError(ValueError):
    """A module the host will not run; ``item`` names the offending import or export."""

    def __init__(self, item: str, message: str) -> None:
        super().__init__(message)
        self.item = item
        self.message = message


@dataclass(frozen=True)
class ModuleInfo:
    imports: tuple[str, ...]
    exports: tuple[str, ...]
    memory_pages: int


def _sig(ft: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(p) for p in ft.params), tuple(str(r) for r in ft.results)


def _fmt(sig: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    params, results = sig
    return f"({', '.join(params)}) -> ({', '.join(results)})"


def _leb(data: bytes, i: int) -> tuple[int, int]:
    """An unsigned LEB128 at *i*: (value, next index)."""
    out = shift = 0
    while True:
        b = data[i]
        i += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, i
        shift += 7
        if shift > 35:
            raise ValueError("LEB128 too long")


def _limits(data: bytes, i: int) -> tuple[int, bool, int]:
    """A limits entry at *i*: (minimum, shared, next index)."""
    flags, i = _leb(data, i)
    low, i = _leb(data, i)
    if flags & 1:
        _high, i = _leb(data, i)
    return low, bool(flags & 2), i


def check_sizes(wasm: bytes, memory_bytes: int) -> None:
    """Refuse, before compiling, what could never run here: too many functions (compiling
    them is what costs), tables or table elements over the store's limits, a memory whose
    minimum is over *memory_bytes*, a shared memory. A malformed module passes: compiling it
    gives the error."""
    memories: list[tuple[int, bool]] = []
    try:
        i, functions, tables, elements = 8, 0, 0, 0
        largest = (0, -1)  # (a body's size, its index among the module's own functions)
        while i < len(wasm):
            sid, i = _leb(wasm, i)
            size, i = _leb(wasm, i)
            body, end = i, i + size
            if sid == 3:  # function section: a vector of type indices
                functions, _ = _leb(wasm, body)
            elif sid == 4:  # table section: (reftype, limits)*
                tables, j = _leb(wasm, body)
                for _ in range(min(tables, 1000)):
                    low, _shared, j = _limits(wasm, j + 1)
                    elements += low
            elif sid == 5:  # memory section: limits*
                n, j = _leb(wasm, body)
                for _ in range(min(n, 100)):
                    low, shared, j = _limits(wasm, j)
                    memories.append((low, shared))
            elif sid == 10:  # code section: (size, body)*
                n, j = _leb(wasm, body)
                for k in range(min(n, MAX_FUNCTIONS + 1)):
                    length, j = _leb(wasm, j)
                    largest = max(largest, (length, k))
                    j += length
                    if j > end:
                        break
            i = end
    except (IndexError, ValueError):  # malformed: the compile says how
        return
    for low, shared in memories:
        if shared:
            raise AbiError("memory", "a shared memory is not supported (algos run on one thread)")
        if low * PAGE > memory_bytes:
            raise AbiError("memory", f"the module's memory starts at {low} pages ({low * PAGE // 1024} "
                           f"KiB), over the {memory_bytes // (1024 * 1024)} MiB an algo may use")
    if functions > MAX_FUNCTIONS:
        raise AbiError("functions", f"the module defines {functions:,} functions; at most {MAX_FUNCTIONS:,}")
    if largest[0] > MAX_FUNCTION_BYTES:
        raise AbiError("functions", f"function {largest[1]} (of the module's own) is {largest[0]:,} bytes of code; "
                       f"at most {MAX_FUNCTION_BYTES:,} (compiling one large function costs far more than "
                       "several small ones: split it)")
    if tables > MAX_TABLES:
        raise AbiError("tables", f"the module defines {tables} tables; at most {MAX_TABLES}")
    if elements > MAX_TABLE_ELEMENTS:
        raise AbiError("tables", f"the module's tables start with {elements:,} elements; at most "
                       f"{MAX_TABLE_ELEMENTS:,}")


def check_module(engine: wasmtime.Engine, wasm: bytes,
                 memory_bytes: int = 16 * 1024 * 1024) -> tuple[wasmtime.Module, ModuleInfo]:
    """Compile *wasm* and check it against the ABI (raises :class:`AbiError`)."""
    if len(wasm) > MAX_MODULE_BYTES:
        raise AbiError("wasm", f"the module is {len(wasm)} bytes; the limit is {MAX_MODULE_BYTES}")
    if wasm[:4] != b"\0asm":
        raise AbiError("wasm", "not a WebAssembly binary (it must start with \\0asm; "
                       "compile text (.wat) first, e.g. with wat2wasm)")
    check_sizes(wasm, memory_bytes)
    try:
        module = wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as exc:
        # "failed to parse WebAssembly module\n\nCaused by:\n    multiple memories (at offset 0x1e)"
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip() and ln.strip() != "Caused by:"]
        text = ": ".join(dict.fromkeys(lines[:1] + lines[-1:])) if lines else "invalid module"
        raise AbiError("wasm", f"the module does not compile: {text[:300]}") from None
    imports = []
    for imp in module.imports:
        where = f"import {imp.module}.{imp.name}"
        want = IMPORTS.get(imp.name or "") if imp.module == MODULE else EXTRA_IMPORTS.get((imp.module, imp.name or ""))
        if want is None:
            hint = " (algos get no WASI: no files, clock, network or randomness)" if imp.module.startswith("wasi") else ""
            raise AbiError(where, f"{where} is not part of the algo ABI{hint}; allowed: "
                           + ", ".join(f"seq.{n}" for n in IMPORTS))
        if not isinstance(imp.type, wasmtime.FuncType):
            raise AbiError(where, f"{where} must be a function")
        got = _sig(imp.type)
        if got != want:
            raise AbiError(where, f"{where} has type {_fmt(got)}; the ABI's is {_fmt(want)}")
        imports.append(f"{imp.module}.{imp.name}")
    exports = []
    pages = 0
    for exp in module.exports:
        ty = exp.type
        if exp.name == "memory":
            if not isinstance(ty, wasmtime.MemoryType):
                raise AbiError("export memory", "export memory must be a memory")
            if ty.is_64:
                raise AbiError("export memory", "export memory must be a 32-bit memory")
            pages = ty.limits.min
            exports.append("memory")
            continue
        want = EXPORTS.get(exp.name)
        if want is None:
            continue  # helpers the module exports for itself are ignored
        if not isinstance(ty, wasmtime.FuncType):
            raise AbiError(f"export {exp.name}", f"export {exp.name} must be a function")
        got = _sig(ty)
        if got != want:
            raise AbiError(f"export {exp.name}", f"export {exp.name} has type {_fmt(got)}; the ABI's is {_fmt(want)}")
        exports.append(exp.name)
    if "memory" not in exports:
        raise AbiError("export memory", "the module must export its memory as \"memory\"")
    if not any(h in exports for h in HANDLERS):
        raise AbiError("exports", "the module exports no handler: export on_quote or on_timer (or both)")
    return module, ModuleInfo(tuple(imports), tuple(exports), pages)


__all__ = [
    "EXPORTS", "IMPORTS", "MAX_MODULE_BYTES", "MODULE", "AbiError", "ModuleInfo", "check_module",
]
