"""``sequence market …`` and ``sequence connect`` — market data and venue credentials."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sequence.cli import config as cfgmod
from sequence.cli.http import Api
from sequence.cli.output import console, emit_json, err_console, fail, table
from sequence.venues import CREDENTIAL_FIELDS, credential_problem

app = typer.Typer(help="Market data: find markets and their symbols; record the venues for replay.",
                  no_args_is_help=True)

# How long `record` waits for a live venue's first listing, and for each chosen book.
CATALOGUE_WAIT_S = 60.0
BOOK_WAIT_S = 15.0


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="Words in the market's title, slug or symbol.",
                                                show_default=False)] = None,
    venue: Annotated[str | None, typer.Option("--venue", help="Only this venue: kalshi, polymarket or coinbase.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=500, help="At most this many markets.")] = 20,
    order: Annotated[str, typer.Option("--order", help="volume, liquidity or close_time.")] = "volume",
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (every field).")] = False,
) -> None:
    """Find markets and the symbols to trade them by (GET /v1/markets), most traded first.

    SYMBOL is what `--symbol`, `seq.quote()` and graph nodes take: a Coinbase product, or a
    Kalshi or Polymarket market's YES token (its NO token is in --json). Only open markets.
    """
    params: dict[str, Any] = {"limit": limit, "order": order, "active": "true", "expand": "outcomes"}
    if query:
        params["q"] = query
    if venue:
        params["venue"] = venue
    with Api(cfgmod.load()) as api:
        res = api.request("GET", "/v1/markets", params=params)
    if as_json:
        emit_json(res)
        return
    rows = res["markets"]
    if not rows:
        err_console.print("no open market matches" + (f" {query!r}" if query else "") +
                          (f" on {venue}" if venue else "") + "; try fewer words or another --venue")
        raise typer.Exit(1)
    table(["symbol", "venue", "bid", "ask", "title"],
          [(m.get("symbol") or m.get("yes_token_id") or m.get("slug"), m["venue"], m.get("best_bid"),
            m.get("best_ask"), m.get("title"))
           for m in rows], keep=["symbol"])


@app.command()
def record(
    out: Annotated[Path, typer.Option("--out", help="Where to write the recording (.jsonl, or .jsonl.gz).")],
    duration: Annotated[float, typer.Option("--duration", min=0.1, help="Seconds of market to record.")] = 60.0,
    venues: Annotated[str | None, typer.Option(
        "--venues", envvar="SEQUENCE_VENUES",
        help="Where each venue's data comes from: sim (default), live, or per venue, e.g. kalshi=live,coinbase=off.")] = None,
    symbol: Annotated[list[str] | None, typer.Option(
        "--symbol", help="Record only this market (token id, Kalshi ticker or product id); repeatable.")] = None,
    top: Annotated[int, typer.Option(
        "--top", min=1, max=500, help="Without --symbol: the N most-traded markets of each live venue.")] = 20,
    seed: Annotated[int, typer.Option("--seed", envvar="SEQUENCE_MARKET_SEED", help="Simulation seed.")] = 7,
    rate_hz: Annotated[float, typer.Option("--rate-hz", min=0.1, help="Update rate of the liquid markets.")] = 8.0,
) -> None:
    """Record the venues' book events; replay them with `sequence up --replay FILE`.

    Simulated venues are recorded whole. A live venue lists thousands of markets: the
    recording holds the --symbol markets, or the --top most-traded of each live venue."""
    from sequence.market.setup import build_market
    from sequence.settings import Settings, SettingsError, parse_venues

    if out.parent and not out.parent.exists():
        fail(f"folder {out.parent} does not exist")
    try:
        settings = Settings.from_env(venues=parse_venues(venues) if venues else None, market_seed=seed,
                                     market_rate_hz=rate_hz)
        svc = build_market(settings)
    except SettingsError as exc:
        fail(str(exc), "see `sequence market record --help` and docs/configuration.md")
    live = sorted(svc.live)

    async def run() -> None:
        await svc.start()
        try:
            chosen = await _choose(svc, symbol, top) if (live or symbol) else None
            release = svc.add_keeper(lambda: chosen or ())  # chosen books stay fed while recording
            rec = svc.record(out, symbols=chosen, meta={"seed": seed, "rate_hz": rate_hz, "duration_s": duration,
                                                         "modes": dict(settings.venues)})
            try:
                err_console.print(f"recording {duration:g}s to {out} …")
                await asyncio.sleep(duration)
            finally:
                rec.close()
                release()
        finally:
            await svc.stop()
            svc.close()

    what = ", ".join(f"{v} {m}" for v, m in settings.venues.items() if m != "off")
    err_console.print(f"recording from {what}" + (f" (seed {seed})" if "sim" in settings.venues.values() else ""))
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        err_console.print("interrupted; the recording so far is kept")
    except _NoMarkets as exc:
        fail(str(exc), "check the venue's status with `sequence up --venues live` and GET /v1/venues")
    console.print(f"wrote {out} ({out.stat().st_size} bytes); replay it with `sequence up --replay {out}`")


class _NoMarkets(Exception):
    """Nothing to record: a live venue listed nothing in time, or an asked-for symbol is unknown."""


async def _choose(svc: Any, symbols: list[str] | None, top: int) -> list[str]:
    """The markets to record: *symbols*, or the *top* most-traded of each live venue (plus every
    simulated market), once the live venues have listed and the books have their snapshots."""
    from sequence.market.errors import MarketError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + CATALOGUE_WAIT_S
    while any(v.status().get("catalogue_age_s") is None for v in svc.live.values()):
        if loop.time() > deadline:
            waiting = [n for n, v in svc.live.items() if v.status().get("catalogue_age_s") is None]
            notes = "; ".join(f"{n}: {svc.live[n].status().get('last_error') or 'no answer'}" for n in waiting)
            raise _NoMarkets(f"no market list from {', '.join(waiting)} after {CATALOGUE_WAIT_S:g}s ({notes})")
        await asyncio.sleep(0.2)
    if symbols:
        chosen = list(symbols)
        for sym in chosen:
            try:
                svc.market(sym)
            except MarketError:
                raise _NoMarkets(f"unknown symbol {sym!r}: see `GET /v1/markets` for the symbols") from None
    else:
        chosen = []
        for venue in svc.venues:
            names = svc.symbols(venue)
            if venue in svc.live:
                rows = svc.markets(venue=venue, limit=top, order="volume", active=True, expand="outcomes")["markets"]
                names = [r.get("symbol") or r["yes_token_id"] for r in rows if r.get("symbol") or r.get("yes_token_id")]
            chosen.extend(names)
    live_syms = [s for s in chosen if svc.market(s).venue in svc.live]
    ready = await asyncio.gather(*(svc.wait_ready(s, BOOK_WAIT_S) for s in live_syms))
    late = [s for s, ok in zip(live_syms, ready, strict=True) if not ok]
    if late:
        err_console.print(f"{len(late)} book(s) not ready after {BOOK_WAIT_S:g}s; recorded from their snapshot "
                          f"when it comes: {', '.join(late[:5])}{' …' if len(late) > 5 else ''}")
    if not chosen:
        raise _NoMarkets("the venues list no market to record")
    return chosen


def connect(
    venue: Annotated[str | None, typer.Argument(help="kalshi, polymarket or coinbase.", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="FIELD=VALUE, repeatable.")] = None,
    set_file: Annotated[list[str] | None, typer.Option("--set-file", help="FIELD=PATH: the field's value is the file's content (e.g. a PEM key).")] = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="Store them without checking them with the venue (a live venue checks by default).")] = False,
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
        res = api.request("PUT", f"/v1/venues/{venue}/credentials", json=fields,
                          params={"check": "false"} if no_check else None)
    if as_json:
        emit_json(res)
    else:
        console.print(f"{venue}: credentials sealed ({', '.join(res['credential_fields'])}); they are never shown again")
        checked = res.get("checked")
        if checked:  # a live venue answered an authenticated call with them
            balances = ", ".join(f"{cur} {amount}" for cur, amount in checked["balances"].items())
            console.print(f"{venue} accepted them: account {checked['account']}"
                          + (f"; available: {balances}" if balances else ""), highlight=False)
