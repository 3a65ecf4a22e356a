"""``sequence market …`` and ``sequence connect`` — market data and venue credentials."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from sequence.cli import config as cfgmod
from sequence.cli.http import Api
from sequence.cli.output import console, emit_json, err_console, fail, table
from sequence.venues import CREDENTIAL_FIELDS, credential_problem

app = typer.Typer(help="Market data: record the simulated venues for replay.", no_args_is_help=True)

# The fields each venue's API needs (VENUES.md); `--set` may add others.


@app.command()
def record(
    out: Annotated[Path, typer.Option("--out", help="Where to write the recording (.jsonl, or .jsonl.gz).")],
    duration: Annotated[float, typer.Option("--duration", min=0.1, help="Seconds of market to record.")] = 60.0,
    seed: Annotated[int, typer.Option("--seed", envvar="SEQUENCE_MARKET_SEED", help="Simulation seed.")] = 7,
    rate_hz: Annotated[float, typer.Option("--rate-hz", min=0.1, help="Update rate of the liquid markets.")] = 8.0,
) -> None:
    """Record the simulated venues' book events; replay them with `sequence up --replay FILE`."""
    from sequence.market.service import MarketService
    from sequence.market.venues.sim import SimConfig

    if out.parent and not out.parent.exists():
        fail(f"folder {out.parent} does not exist")

    async def run() -> None:
        svc = MarketService.simulated(config=SimConfig(seed=seed, rate_hz=rate_hz))
        rec = svc.record(out, meta={"seed": seed, "rate_hz": rate_hz, "duration_s": duration})
        try:
            await svc.start()
            await asyncio.sleep(duration)
        finally:
            await svc.stop()
            rec.close()

    err_console.print(f"recording {duration:g}s of the simulated venues (seed {seed}) to {out} …")
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        err_console.print("interrupted; the recording so far is kept")
    console.print(f"wrote {out} ({out.stat().st_size} bytes); replay it with `sequence up --replay {out}`")


def connect(
    venue: Annotated[str | None, typer.Argument(help="kalshi, polymarket or coinbase.", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="FIELD=VALUE, repeatable.")] = None,
    set_file: Annotated[list[str] | None, typer.Option("--set-file", help="FIELD=PATH: the field's value is the file's content (e.g. a PEM key).")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Delete this venue's credentials.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="Show which venues have credentials.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Register venue API credentials once; they are sealed and never returned.

    Strategies use them transitively when they place live orders. Without --set,
    the CLI prompts for each field (secret ones hidden).
    """
    with Api(cfgmod.load()) as api:
        if list_ or venue is None:
            res = api.request("GET", "/v1/venues")
            if as_json:
                emit_json(res)
            else:
                table(["venue", "credentials", "fields", "updated"],
                      [(v["venue"], "yes" if v["has_credentials"] else "no", ", ".join(v["credential_fields"]),
                        v["updated_at"] or "") for v in res["venues"]])
            return
        if venue not in CREDENTIAL_FIELDS:
            fail(f"unknown venue '{venue}'", f"use one of: {', '.join(CREDENTIAL_FIELDS)}")
        spec = CREDENTIAL_FIELDS[venue]
        if remove:
            res = api.request("DELETE", f"/v1/venues/{venue}/credentials")
            emit_json(res) if as_json else console.print(f"removed {venue} credentials")
            return
        fields: dict[str, str] = {}
        for item in set_ or []:
            k, sep, v = item.partition("=")
            if not sep or not k or not v:
                fail(f"--set {k or item!r}=… must look like FIELD=VALUE")
            fields[k] = v
        for item in set_file or []:
            k, sep, p = item.partition("=")
            if not sep or not k or not p:
                fail("--set-file must look like FIELD=PATH")
            try:
                fields[k] = Path(p).read_text().strip()
            except OSError as exc:
                fail(f"cannot read {p}: {exc.strerror}")
        names = ", ".join(f"{f.name}{'' if f.required else ' (optional)'}" for f in spec)
        if not fields:
            if not sys.stdin.isatty():
                fail("no credentials given", f"pass --set FIELD=VALUE or --set-file FIELD=PATH (fields: {names})")
            for f in spec:
                value = typer.prompt(f"{f.name} ({f.help})", hide_input=f.secret, default="" if not f.required else None,
                                     show_default=False)
                if value:
                    fields[f.name] = value
        problem = credential_problem(venue, fields)
        if problem:
            fail(problem, f"fields: {names}")
        res = api.request("PUT", f"/v1/venues/{venue}/credentials", json=fields)
    if as_json:
        emit_json(res)
    else:
        console.print(f"{venue}: credentials sealed ({', '.join(res['credential_fields'])}); they are never shown again")
