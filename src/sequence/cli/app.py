"""The ``sequence`` command's commands (Typer): imported by :mod:`sequence.cli.main`
only when the fast path does not answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from sequence import __version__
from sequence.cli import admin, algo, controls, keys, strategy
from sequence.cli import config as cfgmod
from sequence.cli import market as market_cmds
from sequence.cli import runner as runner_cmds
from sequence.cli.errors import CliError
from sequence.cli.http import Api
from sequence.cli.output import console, emit_json, fail, render_error

# What a newcomer reaches for first comes first in `sequence --help`.
ORDER = ("strategy", "algo", "up", "keys", "connect", "market", "login", "update", "runner", "doctor", "admin")


class _Ordered(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        names = list(self.commands)
        return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))

    def invoke(self, ctx: Any) -> Any:
        """Run the command; a :class:`CliError` it lets through becomes its message and exit code."""
        try:
            return super().invoke(ctx)
        except CliError as exc:
            render_error(exc)


app = typer.Typer(
    name="sequence",
    cls=_Ordered,
    help="Sequence: deploy hosted Python trading strategies and run the platform they run on.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(strategy.app, name="strategy")
app.add_typer(algo.app, name="algo")
app.add_typer(keys.app, name="keys")
app.add_typer(admin.app, name="admin")
app.command("runner")(runner_cmds.runner)
app.command("doctor")(runner_cmds.doctor)
app.add_typer(market_cmds.app, name="market")
app.command("connect")(market_cmds.connect)
app.add_typer(controls.app, name="risk")
app.command("kill")(controls.kill)

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
                                           help="Where the SQLite store, keys and runner workspaces live.")] = Path(".sequence"),
    host: Annotated[str, typer.Option("--host", envvar="SEQUENCE_HOST", help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", envvar="SEQUENCE_PORT", help="Listen port.")] = 8700,
    runner: Annotated[bool, typer.Option("--runner/--no-runner", help="Start one local runner.")] = True,
    runner_region: Annotated[str, typer.Option("--runner-region", help="Regions the local runner serves (comma-separated).")] = "us-east-1,eu-west-1",
    runner_capacity: Annotated[int, typer.Option("--runner-capacity", help="Concurrent strategies on the local runner.")] = 50,
    venues: Annotated[str | None, typer.Option("--venues", envvar="SEQUENCE_VENUES", help="Where each venue's market data comes from: sim (default), live (the real venues), or per venue, e.g. kalshi=live,coinbase=off.")] = None,
    replay: Annotated[Path | None, typer.Option("--replay", help="Drive the simulated venues from a recording (sequence market record).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", envvar="SEQUENCE_MARKET_SEED", help="Seed of the simulated venues.")] = None,
    unsandboxed: Annotated[bool, typer.Option("--unsandboxed", help="Let the local runner run strategies WITHOUT bubblewrap (no isolation; said on every deploy, inspect and run log).")] = False,
) -> None:
    """Run the whole platform locally: coordinator, market venues (simulated unless --venues says live) and a runner."""
    from sequence.cli.up import run_up

    if replay is not None and not replay.is_file():
        fail(f"recording {replay} does not exist", "make one with `sequence market record --out day.jsonl`")
    run_up(data_dir, host, port, runner=runner, runner_region=runner_region, runner_capacity=runner_capacity,
           replay=replay, seed=seed, unsandboxed=unsandboxed, venues=venues)


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
    """Upgrade the installed CLI and platform (pip install --upgrade), from where it was installed."""
    checkout = _source_checkout()
    if checkout is not None and source == DISTRIBUTION:
        console.print(f"this sequence runs from a source checkout ({checkout}): update it there with "
                      f"`git -C {checkout} pull` (then `make venv` if dependencies changed)", markup=False)
        return
    if source == DISTRIBUTION:
        source = upgrade_source(_direct_url(), DISTRIBUTION)
    cmd = [sys.executable, "-m", "pip", "install", "--upgrade", source]
    console.print(" ".join(cmd), markup=False)
    rc = subprocess.call(cmd)
    if rc != 0:
        fail("the upgrade failed", "check your network or pass --source with a local path or wheel", code=rc)
    subprocess.call([sys.executable, "-m", "sequence.cli.main", "--version"])


def _direct_url() -> dict[str, Any]:
    """pip's record of where this package was installed from (PEP 610), if it was not an index."""
    import json
    from importlib import metadata

    try:
        info = json.loads(metadata.distribution(DISTRIBUTION).read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def upgrade_source(direct_url: dict[str, Any], default: str) -> str:
    """What ``update`` installs: the folder, archive or URL this copy came from, if it came
    from one. The distribution's name on an index only for a copy installed from an index: a
    copy installed from a folder would otherwise be "upgraded" to whatever a stranger
    published under that name."""
    url = direct_url.get("url")
    if not isinstance(url, str) or not url:
        return default
    if url.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        path = unquote(urlsplit(url).path)
        if not Path(path).exists():
            fail(f"this sequence was installed from {path}, which is gone",
                 "pass --source with the folder, wheel or package spec to upgrade from")
        return path
    vcs = direct_url.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs"):
        return f"{vcs['vcs']}+{url}"
    return url


def _source_checkout() -> Path | None:
    """The git checkout this package is installed from (editable install), if any."""
    info = _direct_url()
    here = Path(__file__).resolve()
    if info.get("dir_info", {}).get("editable") or not str(here).count("site-packages"):
        for parent in here.parents:
            if (parent / ".git").exists():
                return parent
    return None


_PLACEHOLDERS = (("url", "URL"), ("port", "PORT"), ("host", "HOST"), ("dir", "PATH"), ("file", "PATH"),
                 ("path", "PATH"), ("out", "PATH"), ("replay", "PATH"), ("runtime", "PATH"), ("key", "KEY"),
                 ("token", "TOKEN"), ("name", "NAME"), ("region", "REGION"), ("env", "KEY=VALUE"), ("set", "FIELD=VALUE"))


def _placeholder(param: Any) -> str:
    name = (param.name or "").lower()
    for part, shown in _PLACEHOLDERS:
        if part in name:
            return shown
    desc = getattr(param, "type_descriptor", None)
    annotation = getattr(desc, "annotation", None)
    if annotation is Path or getattr(desc, "is_path", False):
        return "PATH"
    if annotation is int:
        return "N"
    if annotation is float:
        return "SECONDS" if "timeout" in name or "duration" in name else "X"
    return name.upper() or "VALUE"


def _with_placeholders(cmd: Any) -> None:
    """Real placeholders (NAME, PATH, URL) instead of `<str>`, and none on flags.

    (Typer carries its own copy of click, so parameters are told apart by their
    ``param_type_name``, not by click's classes.)"""
    for param in cmd.params:
        if param.param_type_name == "option":
            if getattr(param, "is_flag", False) or getattr(param, "count", False):
                param.metavar = ""
            elif param.metavar is None:
                param.metavar = _placeholder(param)
        elif param.param_type_name == "argument" and param.metavar is None:
            param.metavar = "NAME" if param.name == "ident" else _placeholder(param)
    for sub in getattr(cmd, "commands", {}).values():
        _with_placeholders(sub)


def command() -> Any:
    """The ``sequence`` command as run (and as docs/cli.md shows it)."""
    cmd = typer.main.get_command(app)
    _with_placeholders(cmd)
    return cmd


def run() -> None:
    # Make `python -m sequence.cli.main` and the console script behave alike.
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    try:
        command()(prog_name="sequence")
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # never a bare traceback for a user
        if os.environ.get("SEQUENCE_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: rerun with SEQUENCE_DEBUG=1 for the traceback, and report it", file=sys.stderr)
        sys.exit(1)
