"""WASM algo deployments: validate a deploy, apply the lifecycle, present a deployment.

The module is compiled and checked against the ABI (:mod:`sequence.algos.abi`)
before anything is stored, so a deployment in the store always compiles; the
manager (:mod:`sequence.algos.manager`) runs it in this process and is poked
after every change so it acts at once rather than on its next pass.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from sequence.algos import abi
from sequence.algos.host import COMPILE_SLOTS, CompilerBusy, Limits, compile_module
from sequence.api.errors import (
    bad_request,
    forbidden,
    not_found,
    quota_exceeded,
    too_large,
    unavailable,
)
from sequence.api.services.deploy import forbid_run_key, plausible_id
from sequence.api.state import Core
from sequence.bundle import validate_name
from sequence.market.clock import iso
from sequence.market.errors import MarketError
from sequence.store.errors import NotFound, QuotaExceeded
from sequence.store.store import Principal

MAX_SYMBOLS = 16
MAX_PARAMS = 64
PARAM_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")  # \Z: "$" also matches before a final newline
MAX_PARAM_VALUE = 1024
#: The JSON body: base64 of the largest module, plus room for the rest.
MAX_BODY = abi.MAX_MODULE_BYTES * 4 // 3 + 256 * 1024


class DeployAlgo(BaseModel):
    """``POST /v1/deployments``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=64, description="letters, digits, '.', '_', '-'")
    wasm_base64: str = Field(..., min_length=1, description="the module's bytes, base64 (at most 4 MiB decoded)")
    symbols: list[str] = Field(..., min_length=1, max_length=MAX_SYMBOLS,
                               description="the symbols it trades; the module names them by index")
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="read by the module with seq.param / param_i64 / param_1e8")
    # Strict: lax booleans took "no", "off", 0 and "f" for false, one typo from trading live.
    sandbox: StrictBool = Field(False, description="paper trading (always, for a seq_test_ key)")
    start: StrictBool = Field(False, description="start it now (a running deployment restarts with the new module)")


def _check(core: Core, spec: DeployAlgo) -> tuple[bytes, abi.ModuleInfo]:
    err = validate_name(spec.name)
    if err:
        raise bad_request(err, "name")
    try:
        wasm = base64.b64decode(spec.wasm_base64, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("wasm_base64 is not valid base64", "wasm_base64") from None
    if len(wasm) > abi.MAX_MODULE_BYTES:
        raise too_large(f"the module is {len(wasm)} bytes; the limit is {abi.MAX_MODULE_BYTES}", field="wasm_base64")
    if len(set(spec.symbols)) != len(spec.symbols):
        raise bad_request("symbols must not repeat (the module names them by index)", "symbols")
    market = core.market
    if market is None:
        raise unavailable("this coordinator runs without the market: algos need it")
    for i, sym in enumerate(spec.symbols):
        try:
            market.instrument(sym)
        except (MarketError, KeyError, TypeError):
            raise bad_request(f"symbols[{i}]: no market has the symbol {sym[:80]!r} "
                              "(find one with `sequence market search WORDS`)", f"symbols[{i}]") from None
    if len(spec.params) > MAX_PARAMS:
        raise bad_request(f"at most {MAX_PARAMS} params", "params")
    for k, v in spec.params.items():
        if not PARAM_KEY_RE.match(k):
            raise bad_request("param names are 1-64 characters: a letter or '_', then letters, digits, "
                              "'_', '.', '-'", f"params.{k[:64]}")
        if len(_param_text(v)) > MAX_PARAM_VALUE:
            raise bad_request(f"a param value has at most {MAX_PARAM_VALUE} characters", f"params.{k}")
    memory = core.algos.limits.memory_bytes if core.algos is not None else Limits.memory_bytes
    try:
        _module, info = compile_module(wasm, memory)  # kept: the start does not compile it again
    except abi.AbiError as exc:
        raise bad_request(exc.message, "wasm_base64", item=exc.item) from None
    except CompilerBusy as exc:
        raise unavailable(f"{exc} (this coordinator compiles {COMPILE_SLOTS} modules at a time)") from None
    return wasm, info


def _param_text(v: str | int | float | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


async def deploy(core: Core, p: Principal, spec: DeployAlgo) -> tuple[dict[str, Any], bool]:
    forbid_run_key(p, "deploy algos")
    # Compiling is CPU work (milliseconds; more for a big module): off the event loop.
    wasm, info = await anyio.to_thread.run_sync(_check, core, spec)
    params = {k: _param_text(v) for k, v in spec.params.items()}
    try:
        row, created = await anyio.to_thread.run_sync(lambda: core.store.deploy_algo(
            p.client_id, p.key_id, spec.name, wasm, hashlib.sha256(wasm).hexdigest(), spec.symbols, params,
            spec.sandbox or p.is_paper, spec.start, max_per_client=core.settings.max_algos))
    except QuotaExceeded as exc:
        raise quota_exceeded("algo deployments", exc.limit, "SEQUENCE_MAX_ALGOS", "sequence algo delete") from None
    poke(core)
    out = render(core, row)
    out["module"] = {"imports": list(info.imports), "exports": list(info.exports),
                     "memory_pages": info.memory_pages}
    return out, created


def poke(core: Core) -> None:
    if core.algos is not None:
        core.algos.poke()


def deployment_or_404(core: Core, p: Principal, ref: str) -> dict[str, Any]:
    """The caller's deployment by id or name (a run key has none)."""
    if not plausible_id(ref) or p.run_id is not None:
        raise not_found("deployment")
    try:
        return core.store.get_deployment(p.client_id, ref)
    except NotFound:
        raise not_found("deployment") from None


def set_desired(core: Core, p: Principal, ref: str, desired: str) -> dict[str, Any]:
    forbid_run_key(p, "start or stop algos")
    row = deployment_or_404(core, p, ref)
    if desired == "running" and p.is_paper and not row["sandbox"]:
        raise forbidden("a seq_test_ key trades on paper only, and this algo trades live: start it with a live "
                        "key, or redeploy it with this key (it is then paper)", deployment_id=row["deployment_id"])
    try:
        # It runs as the key that started it (a key revoked since deploy stopped it).
        row = core.store.set_algo_desired(p.client_id, row["deployment_id"], desired,
                                          key_id=p.key_id if desired == "running" else None)
    except NotFound:
        raise not_found("deployment") from None
    poke(core)
    return row


def delete(core: Core, p: Principal, ref: str) -> dict[str, Any]:
    forbid_run_key(p, "delete algos")
    row = deployment_or_404(core, p, ref)
    try:
        core.store.delete_deployment(p.client_id, row["deployment_id"])
    except NotFound:
        raise not_found("deployment") from None
    poke(core)
    return row


def render(core: Core, row: dict[str, Any]) -> dict[str, Any]:
    """A deployment as the API shows it (never the module's bytes)."""
    live = core.algos.stats(row["deployment_id"]) if core.algos is not None else None
    return {
        "deployment_id": row["deployment_id"],
        "name": row["name"],
        "status": row["status"],
        "desired_state": row["desired_state"],
        "symbols": list(row["symbols"]),
        "params": dict(row["params"]),
        "sandbox": bool(row["sandbox"]),
        "wasm_sha256": row["wasm_sha256"],
        "wasm_size": row["wasm_size"],
        "restarts": row["restarts"],
        "consecutive_failures": row["consecutive_failures"],
        "last_reason": row["last_reason"],
        "last_exit_at": iso(row["last_exit_at"]) if row["last_exit_at"] else None,
        "next_attempt_at": iso(row["next_attempt_at"]) if row["next_attempt_at"] else None,
        "epoch": row["epoch"],
        "started_at": iso(row["started_at"]) if row["started_at"] else None,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "live": live,
    }


def log_line(r: dict[str, Any]) -> dict[str, Any]:
    return {"seq": r["seq"], "epoch": r["epoch"], "ts": iso(r["ts"]), "stream": r["stream"], "line": r["line"]}


__all__ = ["MAX_BODY", "DeployAlgo", "delete", "deploy", "deployment_or_404", "log_line", "poke", "render",
           "set_desired"]
