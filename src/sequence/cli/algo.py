"""``sequence algo …`` — deploy and manage WASM algos (``/v1/deployments``, docs/algos.md)."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.text import Text

from sequence.cli import config as cfgmod
from sequence.cli.errors import CliError
from sequence.cli.http import Api
from sequence.cli.output import (
    confirm_or_refuse,
    console,
    emit_json,
    literal,
    short_id,
    status_text,
    table,
    when,
)
from sequence.cli.terminal import LogWriter

app = typer.Typer(help="Deploy and manage WASM algos: small modules that react to every quote in the market "
                  "process (docs/algos.md).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
Ident = Annotated[str, typer.Argument(help="Algo name or deployment id.", show_default=False)]


def _api() -> Api:
    try:
        return Api(cfgmod.load())
    except cfgmod.ConfigError as exc:
        raise CliError(str(exc)) from None


def _path(ident: str, suffix: str = "") -> str:
    return f"/v1/deployments/{quote(ident, safe='')}{suffix}"


def read_module(path: Path) -> bytes:
    """The module's bytes: a .wasm as it is, a .wat (WebAssembly text) compiled here."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CliError(f"{path}: no such file", "give the path of a .wasm (or .wat) module") from None
    except IsADirectoryError:
        raise CliError(f"{path} is a folder", "give the path of a .wasm (or .wat) module; hosted Python strategies "
                       "deploy with `sequence strategy deploy`") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    if data[:4] == b"\0asm":
        return data
    if path.suffix == ".wat" or data.lstrip()[:1] == b"(":
        import wasmtime

        try:
            return bytes(wasmtime.wat2wasm(data.decode("utf-8", "replace")))
        except wasmtime.WasmtimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid text"
            raise CliError(f"{path}: not valid WebAssembly text: {first}") from None
    raise CliError(f"{path} is not a WebAssembly module (no \\0asm header)",
                   "build it first (e.g. `bash examples/algos/build.sh`), or pass the .wat source")


def parse_params(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--param {pair!r} is not KEY=VALUE", "e.g. --param buy_below=0.45")
        if key in out:  # the last one silently won: a typo'd second value traded
            raise CliError(f"--param {key} is given twice ({out[key]!r} and {value!r})", "give each param once")
        out[key] = value
    return out


@app.command()
def deploy(
    file: Annotated[Path, typer.Argument(help="The module: a .wasm file (or .wat text).", show_default=False)],
    symbol: Annotated[list[str], typer.Option("--symbol", "-s", help="A symbol it trades (repeat; the module "
                                              "names them 0, 1, … in this order).")] = [],  # noqa: B006
    param: Annotated[list[str], typer.Option("--param", "-p", help="KEY=VALUE the module reads (repeat).")] = [],  # noqa: B006
    name: Annotated[str | None, typer.Option("--name", help="Its name (default: the file's name).")] = None,
    sandbox: Annotated[bool, typer.Option("--sandbox", help="Paper trading (always, with a seq_test_ key).")] = False,
    start: Annotated[bool, typer.Option("--start", help="Start it now (a running algo restarts with this module).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Deploy a WASM algo: the module is compiled and checked against the ABI before it is stored.

    Deploying an existing name replaces its module, symbols and params (a
    running algo restarts with them). Example:

        sequence algo deploy examples/algos/threshold_taker.wasm --symbol BTC-USD --param buy_below=60000 --start
    """
    if not symbol:
        raise CliError("give at least one --symbol", "e.g. --symbol BTC-USD (find symbols with `sequence market search WORDS`)")
    wasm = read_module(file)
    body = {"name": name or file.stem.replace("_", "-"), "wasm_base64": base64.b64encode(wasm).decode(),
            "symbols": symbol, "params": parse_params(param), "sandbox": sandbox, "start": start}
    with _api() as api:
        res = api.request("POST", "/v1/deployments", json=body)
    if as_json:
        emit_json(res)
        return
    console.print(Text.assemble("deployed ", literal(res["name"], "bold"), "  ", literal(res["deployment_id"]),
                                "  ", status_text(res["status"])))
    console.print(Text.assemble("  module   ", literal(f"{res['wasm_size']} bytes, sha256 {res['wasm_sha256'][:12]}…; "
                                                     f"exports {', '.join(res['module']['exports'])}")))
    if res["status"] == "stopped":
        console.print(f"  start it: sequence algo start {res['name']}")
    console.print(f"  logs:     sequence algo logs {res['name']} --follow")


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List your WASM algos."""
    with _api() as api:
        res = api.request("GET", "/v1/deployments")
    if as_json:
        emit_json(res)
        return
    rows = [(d["name"], status_text(d["status"]), ", ".join(d["symbols"]), d["restarts"],
             (d.get("last_reason") or "")[:60], short_id(d["deployment_id"], 12)) for d in res["deployments"]]
    if not rows:
        console.print("no algos yet: `sequence algo deploy FILE.wasm --symbol SYMBOL --start`")
        return
    table(["name", "status", "symbols", "restarts", "last ended", "id"], rows, keep=("name",), drop=("id",))


@app.command()
def inspect(ident: Ident, as_json: JsonOpt = False) -> None:
    """Show one algo: status, symbols, params, module, restarts, live figures, recent orders."""
    with _api() as api:
        d = api.request("GET", _path(ident))
    if as_json:
        emit_json(d)
        return
    console.print(Text.assemble(literal(d["name"], "bold"), "  ", literal(d["deployment_id"])))
    live = d.get("live") or {}
    fields: list[tuple[str, Any]] = [
        ("status", Text.assemble(status_text(d["status"]), f" (desired {d['desired_state']})")),
        ("paper", "yes (every order is paper-filled)" if d["sandbox"] else "no (live where the venue is live)"),
        ("symbols", ", ".join(f"{i}={s}" for i, s in enumerate(d["symbols"]))),
        ("params", json.dumps(d["params"])),
        ("module", f"{d['wasm_size']} bytes, sha256 {d['wasm_sha256']}"),
        ("restarts", d["restarts"]),
        ("last ended", d.get("last_reason")),  # why it last stopped (kept while it runs again)
        ("next start", when(d.get("next_attempt_at")) or None),
        ("started", when(d.get("started_at")) or None),
    ]
    if live:
        fields.append(("live", f"{live['quotes']} quotes, {live['orders']} orders ({live['orders_refused']} refused), "
                               f"{live['fills']} fills, {live['open_orders']} open; {live['calls']} calls, "
                               f"fuel {live['fuel_used']:,}, memory {live['memory_bytes'] // 1024} KiB"))
    for k, v in fields:
        if v is not None:
            console.print(Text.assemble(f"  {k:<12} ", v if isinstance(v, Text) else literal(v)), soft_wrap=True)
    graphs = d.get("recent_graphs") or []
    if graphs:
        console.print("  recent orders (newest first):")
        for g in graphs[:10]:
            console.print(Text.assemble("    ", literal(g["graph_id"]), "  ", status_text(g["status"])))


def _lifecycle(verb: str, ident: str, as_json: bool) -> None:
    with _api() as api:
        d = api.request("POST", _path(ident, f"/{verb}"))
    if as_json:
        emit_json(d)
    else:
        # The coordinator acts within a moment: say what is under way, as `strategy stop` does.
        moving = {"stop": "stopping", "start": "starting"}[verb] if d["status"] != d["desired_state"] else None
        console.print(Text.assemble(literal(d["name"]), ": ", moving or status_text(d["status"]),
                                    f" (now {d['status']})" if moving else ""))


@app.command()
def start(ident: Ident, as_json: JsonOpt = False) -> None:
    """Start a stopped or failed algo (its failure count starts again)."""
    _lifecycle("start", ident, as_json)


@app.command()
def stop(ident: Ident, as_json: JsonOpt = False) -> None:
    """Stop it: no more calls into the module; its working orders are cancelled."""
    _lifecycle("stop", ident, as_json)


@app.command()
def delete(ident: Ident, yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
           as_json: JsonOpt = False) -> None:
    """Delete it with its logs (a running one is stopped first)."""
    confirm_or_refuse(f"delete the algo {ident} and its logs?", yes)
    with _api() as api:
        res = api.request("DELETE", _path(ident))
    if as_json:
        emit_json(res)
    else:
        console.print(Text.assemble("deleted ", literal(res["deployment_id"])))


def _log_writer(as_json: bool, raw: bool = False) -> LogWriter:
    """Log lines as `sequence strategy logs` writes them: on a terminal, the module's bytes
    (and a trap's message, which the module may write) escaped, never obeyed; piped, exact."""
    return LogWriter(sys.stdout.buffer, escape=not raw and sys.stdout.isatty(), as_json=as_json,
                     dim=console.color_system is not None and not console.no_color,
                     notes=sys.stderr.buffer, notes_escape=sys.stderr.isatty())


@app.command()
def logs(
    ident: Ident,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C ends).")] = False,
    tail: Annotated[int | None, typer.Option("--tail", "-n", min=1, max=10_000,
                                             help="Only the last N lines (1 to 10,000).")] = None,
    as_json: JsonOpt = False,
    raw: Annotated[bool, typer.Option("--raw", help="Write lines exactly as stored, even to a terminal.")] = False,
) -> None:
    """Print the algo's log lines: its own (stdout) and the platform's (starts, stops, traps,
    refused orders; on stderr, prefixed \\[sequence]). On a terminal, control and bidi
    characters are shown escaped (--raw: as stored)."""
    out = _log_writer(as_json, raw)
    with _api() as api:
        params: dict[str, Any] = {"tail": tail} if tail is not None else {"after_seq": 0}
        after = 0
        try:
            while True:
                res = api.request("GET", _path(ident, "/logs"), params=params)
                for rec in res["lines"]:
                    out.write(rec)
                out.flush()
                sys.stderr.flush()
                after = res["next_after_seq"]
                if res["lines"] and len(res["lines"]) >= 1000 and tail is None:
                    params = {"after_seq": after}
                    continue  # more pages
                if not follow:
                    return
                params = {"after_seq": after}
                time.sleep(0.5)
        except KeyboardInterrupt:
            return


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="The module: a .wasm file (or .wat text).", show_default=False)],
    recording: Annotated[Path, typer.Option("--recording", "-r", help="A recording from `sequence market record`.",
                                            show_default=False)],
    symbol: Annotated[list[str], typer.Option("--symbol", "-s", help="A symbol it trades (repeat).")] = [],  # noqa: B006
    param: Annotated[list[str], typer.Option("--param", "-p", help="KEY=VALUE the module reads (repeat).")] = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Run an algo against a recorded market in virtual time, on paper, and print its orders and fills.

    No platform is needed (nothing is deployed). Time moves from one recorded
    event to the next, so the same recording, module and params give the same
    orders, fills and log lines every time: a backtest you can diff.
    """
    import asyncio

    from sequence.algos.abi import AbiError
    from sequence.algos.host import compile_module
    from sequence.algos.replay import ReplayError
    from sequence.algos.replay import replay as run_replay

    if not symbol:
        raise CliError("give at least one --symbol", "the symbols of markets in the recording")
    if not recording.is_file():
        raise CliError(f"{recording}: no such recording", "make one with `sequence market record --out FILE`")
    wasm = read_module(file)
    try:
        compile_module(wasm)
    except AbiError as exc:
        raise CliError(f"{file}: {exc.message}") from None
    try:
        res = asyncio.run(run_replay(wasm, recording, symbol, parse_params(param)))
    except ReplayError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        emit_json(res)
        return
    out = _log_writer(False)
    for rec in res["log"]:
        out.write(rec)
    out.flush()
    table(["#", "at", "symbol", "side", "qty", "limit", "status"],
          [(o["order"], when(o["at"]), o["symbol"], o["side"], o["qty_1e8"] / 1e8, o["limit_price"], o["status"])
           for o in res["orders"]], title="orders")
    table(["at", "symbol", "side", "price", "qty", "liquidity"],
          [(when(f["at"]), f["symbol"], f["side"], f["price"], f["qty_1e8"] / 1e8, f["liquidity"]) for f in res["fills"]],
          title="fills")
    end = f"failed: {res['reason']}" if res["failed"] else "ran to the end of the recording"  # the module's words
    console.print(literal(f"{res['steps']} market steps replayed; {len(res['orders'])} orders, "
                          f"{len(res['fills'])} fills; {end}"))
