"""``sequence risk …`` and ``sequence kill`` — the controls on real trading (docs/trading.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sequence.cli import config as cfgmod
from sequence.cli.http import Api
from sequence.cli.output import console, emit_json, err_console, fail, table

app = typer.Typer(help="Risk limits of real orders: show them, change them, reset them.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
StrategyOpt = Annotated[str | None, typer.Option("--strategy", help="A strategy's own limits (default: the client's).")]
LIMITS = ("max_order_notional", "max_position_notional", "max_open_orders", "max_orders_per_second", "max_daily_loss")


def _params(strategy: str | None) -> dict[str, str]:
    return {"strategy": strategy} if strategy else {}


def _show(res: dict[str, Any]) -> None:
    scope = "client" if res["scope"] == "client" else f"strategy {res['strategy_id']}"
    limits = res["limits"]
    if limits is None:
        console.print(f"{scope}: no limits of its own (the client's apply)")
    else:
        defaults = res.get("defaults") or {}
        table(["limit", "value", "default"],
              [(name, "none" if limits[name] is None else f"{limits[name]:g}",
                "" if name not in defaults else f"{defaults[name]:g}") for name in LIMITS], keep=("limit",))
    console.print(f"cancel_on_stop: {'on' if res['cancel_on_stop'] else 'off'} (a run's real orders are "
                  f"{'' if res['cancel_on_stop'] else 'not '}cancelled when it stops)", highlight=False)
    e = res["exposure"]
    console.print(f"exposure: {e['open_orders']} open real order(s), realized today {e['realized_today']:g}"
                  + "".join(f", {s} {q:g}" for s, q in e["positions"].items()))


@app.command()
def show(strategy: StrategyOpt = None, as_json: JsonOpt = False) -> None:
    """The limits in force and the exposure they are checked against."""
    with Api(cfgmod.load()) as api:
        res = api.request("GET", "/v1/risk", params=_params(strategy))
    if as_json:
        emit_json(res)
    else:
        _show(res)


@app.command("set")
def set_(
    changes: Annotated[list[str], typer.Argument(help="LIMIT=VALUE … (VALUE a number, or none for no limit): "
                                                     + ", ".join(LIMITS) + "; and cancel_on_stop=true|false.")],
    strategy: StrategyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change some limits; the others stay as they are."""
    body: dict[str, float | bool | None] = {}
    for item in changes:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in (*LIMITS, "cancel_on_stop"):
            fail(f"{item!r} is not LIMIT=VALUE", f"the limits are: {', '.join(LIMITS)}, cancel_on_stop")
        text = value.strip().lower()
        if name == "cancel_on_stop":
            if text not in ("true", "false", "on", "off", "yes", "no"):
                fail(f"cancel_on_stop: {value!r} is not true or false")
            body[name] = text in ("true", "on", "yes")
            continue
        if text in ("none", "null", "off"):
            body[name] = None
            continue
        try:
            body[name] = float(text)
        except ValueError:
            fail(f"{name}: {value!r} is not a number", "give a number, or none for no limit")
    with Api(cfgmod.load()) as api:
        res = api.request("PUT", "/v1/risk", params=_params(strategy), json=body)
    if as_json:
        emit_json(res)
    else:
        _show(res)


@app.command()
def reset(strategy: StrategyOpt = None, as_json: JsonOpt = False) -> None:
    """Back to the defaults (a strategy's own limits are removed)."""
    with Api(cfgmod.load()) as api:
        res = api.request("DELETE", "/v1/risk", params=_params(strategy))
    if as_json:
        emit_json(res)
    else:
        _show(res)


def kill(
    strategy: Annotated[str | None, typer.Option("--strategy", help="Only this strategy's orders and runs.")] = None,
    release: Annotated[bool, typer.Option("--release", help="Release the kill switch (strategies stay stopped).")] = False,
    status: Annotated[bool, typer.Option("--status", help="Show the engaged kill switches.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Cancel every working order at every venue, stop the strategies, refuse new real orders."""
    with Api(cfgmod.load()) as api:
        if status:
            res = api.request("GET", "/v1/kill")
        elif release:
            res = api.request("DELETE", "/v1/kill", params=_params(strategy))
        else:
            res = api.request("POST", "/v1/kill", json={"strategy": strategy} if strategy else {})
    if as_json:
        emit_json(res)
        return
    if status:
        if not res["engaged"]:
            console.print("no kill switch is engaged")
        for k in res["engaged"]:
            console.print(f"engaged since {k['engaged_at']}: {'strategy ' + k['strategy_id'] if k['strategy_id'] else 'every strategy'}")
        return
    if release:
        console.print("kill switch released" if res["released"] else "no kill switch was engaged",
                      highlight=False)
        if res["released"]:
            err_console.print("strategies stay stopped: start them with `sequence strategy start NAME`")
        return
    console.print(f"kill switch engaged: {res['orders_cancelled']} order(s) cancelled "
                  f"({res['real_orders_cancelled']} at venues) in {res['graphs']} graph(s); "
                  f"stopped: {', '.join(res['strategies_stopped']) or 'none'}", highlight=False)
    if res["not_cancelled"]:
        err_console.print(f"NOT confirmed cancelled by the venue: {', '.join(res['not_cancelled'])} — check them "
                          "at the venue", markup=False)
        raise typer.Exit(1)
    err_console.print("new real orders are refused until `sequence kill --release`")
