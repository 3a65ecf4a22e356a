"""The ``sequence`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from sequence import __version__
from sequence.cli import admin, keys, strategy
from sequence.cli import config as cfgmod
from sequence.cli import market as market_cmds
from sequence.cli import runner as runner_cmds
from sequence.cli.http import Api
from sequence.cli.output import console, emit_json, fail

app = typer.Typer(
    name="sequence",
    help="Sequence: deploy hosted Python trading strategies and run the platform they run on.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(strategy.app, name="strategy")
app.add_typer(keys.app, name="keys")
app.add_typer(admin.app, name="admin")
app.command("runner")(runner_cmds.runner)
app.command("doctor")(runner_cmds.doctor)
app.add_typer(market_cmds.app, name="market")
app.command("connect")(market_cmds.connect)

DISTRIBUTION = "sequence-platform"


def _version(value: bool) -> None:
    if value:
        print(f"sequence {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the CLI version and exit.")] = False,
) -> None:
    """Sequence CLI."""


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option("--data-dir", envvar="SEQUENCE_DATA_DIR",
                                           help="Where the SQLite store, keys and runner workspaces live [env SEQUENCE_DATA_DIR].")] = Path(".sequence"),
    host: Annotated[str, typer.Option("--host", envvar="SEQUENCE_HOST", help="Listen address [env SEQUENCE_HOST].")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", envvar="SEQUENCE_PORT", help="Listen port [env SEQUENCE_PORT].")] = 8700,
    runner: Annotated[bool, typer.Option("--runner/--no-runner", help="Start one local runner.")] = True,
    runner_region: Annotated[str, typer.Option("--runner-region", help="Regions the local runner serves (comma-separated).")] = "us-east-1,eu-west-1",
    runner_capacity: Annotated[int, typer.Option("--runner-capacity", help="Concurrent strategies on the local runner.")] = 50,
    replay: Annotated[Path | None, typer.Option("--replay", help="Drive the simulated venues from a recording (sequence market record).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", envvar="SEQUENCE_MARKET_SEED", help="Seed of the simulated venues [env SEQUENCE_MARKET_SEED].")] = None,
    unsandboxed: Annotated[bool, typer.Option("--unsandboxed", help="Let the local runner run strategies WITHOUT bubblewrap (no isolation; said on every deploy, inspect and run log).")] = False,
) -> None:
    """Run the whole platform locally: coordinator, simulated venues and a runner."""
    from sequence.cli.up import run_up

    if replay is not None and not replay.is_file():
        fail(f"recording {replay} does not exist", "make one with `sequence market record --out day.jsonl`")
    run_up(data_dir, host, port, runner=runner, runner_region=runner_region, runner_capacity=runner_capacity,
           replay=replay, seed=seed, unsandboxed=unsandboxed)


@app.command()
def login(
    api_url: Annotated[str, typer.Option("--api-url", help="The coordinator URL, e.g. http://127.0.0.1:8700.")],
    api_key: Annotated[str, typer.Option("--api-key", help="A seq_live_… or seq_test_… key.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Save the API URL and key to the CLI config (mode 0600), after checking them."""
    if not api_key.startswith(("seq_live_", "seq_test_")):
        fail("API keys start with seq_live_ or seq_test_", "create one with `sequence keys create`")
    cfg = cfgmod.CliConfig(api_url=api_url.rstrip("/"), api_key=api_key)
    with Api(cfg) as api:
        me = api.request("GET", "/v1/me")
    path = cfgmod.save({"api_url": cfg.api_url, "api_key": api_key})
    if as_json:
        emit_json({"config_path": str(path), **me})
    else:
        console.print(f"logged in to {cfg.api_url} as client {me['client_id']} ({me['mode']} key); saved to {path}")


@app.command()
def update(
    source: Annotated[str, typer.Option("--source", help="Package spec or path to install from.")] = DISTRIBUTION,
) -> None:
    """Upgrade the installed CLI and platform (pip install --upgrade)."""
    cmd = [sys.executable, "-m", "pip", "install", "--upgrade", source]
    console.print(" ".join(cmd))
    rc = subprocess.call(cmd)
    if rc != 0:
        fail("the upgrade failed", "check your network or pass --source with a local path or wheel", code=rc)
    subprocess.call([sys.executable, "-m", "sequence.cli.main", "--version"])


def run() -> None:
    # Make `python -m sequence.cli.main` and the console script behave alike.
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # never a bare traceback for a user
        if os.environ.get("SEQUENCE_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: rerun with SEQUENCE_DEBUG=1 for the traceback, and report it", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
