"""``sequence runner`` and ``sequence doctor``."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from sequence.cli.errors import CliError
from sequence.cli.output import console, emit_json


def _sandbox(data_dir: Path, runtime: str | None, unsandboxed: bool, *,  # type: ignore[no-untyped-def]
             egress: bool = True, egress_allow: str | None = None, bwrap: str | None = None):
    from sequence.runner.logs import LogPumpConfig
    from sequence.runner.sandbox import Sandbox, SandboxConfig

    # Big batches when a strategy is chatty (one HTTP request and one insert
    # per batch); the 50 ms linger keeps a quiet strategy's lines prompt.
    # Spool to disk only while the coordinator is down; when it is merely
    # slower than a chatty strategy, the strategy's writes wait (backpressure).
    logs = LogPumpConfig(batch_lines=20_000, batch_bytes=4 << 20, memory_bytes=16 << 20, spool_when_slow=False)
    # Secure by default: bubblewrap is required unless the operator says --unsandboxed.
    return Sandbox(SandboxConfig(data_dir=data_dir, runtime=runtime, logs=logs,
                                 bubblewrap=not unsandboxed,
                                 bwrap_path=bwrap or os.environ.get("SEQUENCE_RUNNER_BWRAP") or "bwrap",
                                 egress=egress, egress_allow=egress_allow))


UNSANDBOXED_HELP = ("Run strategies WITHOUT bubblewrap (no namespaces, no seccomp: a strategy can read the "
                    "runner's files and reach its network). Every deploy, inspect and run log says so.")
NO_BWRAP_HINT = ("install bubblewrap (`apt-get install bubblewrap`; it needs unprivileged user namespaces), check "
                 "with `sequence doctor`, or start with --unsandboxed to run strategies without isolation")


def runner(
    api_url: Annotated[str, typer.Option("--api-url", envvar="SEQUENCE_RUNNER_API_URL",
                                         help="Coordinator URL.")] = "http://127.0.0.1:8700",
    token: Annotated[str | None, typer.Option("--token", envvar="SEQUENCE_RUNNER_TOKEN",
                                              help="Runner token from `sequence admin runner-token create`.")] = None,
    region: Annotated[str, typer.Option("--region", envvar="SEQUENCE_RUNNER_REGION",
                                        help="Region(s) served, comma-separated.")] = "us-east-1",
    capacity: Annotated[int, typer.Option("--capacity", envvar="SEQUENCE_RUNNER_CAPACITY", min=1,
                                          help="Concurrent strategies.")] = 50,
    data_dir: Annotated[Path, typer.Option("--data-dir", envvar="SEQUENCE_RUNNER_DATA_DIR",
                                           help="Run directories and log spools.")] = Path(".sequence/runner"),
    name: Annotated[str | None, typer.Option("--name", help="Runner name (default: host name + suffix).")] = None,
    runtime: Annotated[str | None, typer.Option("--runtime", envvar="SEQUENCE_RUNNER_RUNTIME",
                                                help="Python interpreter for strategies (default: a CPython 3.12 if found).")] = None,
    unsandboxed: Annotated[bool, typer.Option("--unsandboxed", "--no-sandbox", help=UNSANDBOXED_HELP)] = False,
    no_egress: Annotated[bool, typer.Option("--no-egress", envvar="SEQUENCE_RUNNER_NO_EGRESS",
                                            help="No strategy on this runner reaches the internet, whatever its "
                                                 "Sequence.toml says.")] = False,
    egress_allow: Annotated[str | None, typer.Option("--egress-allow", envvar="SEQUENCE_RUNNER_EGRESS_ALLOW",
                                                     help="Extra networks (CIDRs, comma-separated) the egress proxy may "
                                                          "reach besides public addresses, e.g. a database in your VPC.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Only check this host can run strategies; exit non-zero if not.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --check: print the report as JSON.")] = False,
) -> None:
    """Run a runner daemon: claim strategies from a coordinator and run them sandboxed."""
    from sequence.cli import datadir, lifeline

    try:  # first: started by `sequence up`, this process must not outlive it
        lifeline.die_with_parent(os.environ)
    except lifeline.ParentGone as exc:
        raise CliError(f"not starting the runner: {exc}") from None
    datadir.private_umask()
    from sequence.runner.client import CoordinatorClient
    from sequence.runner.daemon import RunnerDaemon, default_name, stop_on_signals
    from sequence.runner.errors import RunnerError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    data_dir = data_dir.expanduser().absolute()  # absolute before anything changes directory
    datadir.prepare(data_dir)
    if egress_allow:
        from sequence.runner.network import EgressPolicy

        try:
            EgressPolicy.parse(egress_allow)
        except ValueError as exc:
            raise CliError(f"--egress-allow: {exc}", "give networks as CIDRs, e.g. 10.0.0.0/8,192.168.1.10/32") from None
    sandbox = _sandbox(data_dir, runtime, unsandboxed, egress=not no_egress, egress_allow=egress_allow)
    if check:
        report = sandbox.check()
        if as_json:
            emit_json(report.to_dict())
        else:
            console.print(report.render())
        raise typer.Exit(report.exit_code())
    if not token:
        raise CliError("no runner token", "create one with `sequence admin runner-token create` and pass --token "
                                          "or SEQUENCE_RUNNER_TOKEN")

    async def main() -> None:
        client = CoordinatorClient(api_url, token)
        daemon = RunnerDaemon(client, sandbox, name=name or default_name(), region=region, capacity=capacity)
        stop = asyncio.Event()
        try:
            with stop_on_signals(asyncio.get_running_loop(), stop):
                await daemon.run(stop)
        finally:
            await client.aclose()

    try:
        asyncio.run(main())
    except RunnerError as exc:
        raise CliError(str(exc), NO_BWRAP_HINT if "bubblewrap" in str(exc) else "see `sequence doctor`", code=2) from None


def doctor(
    runtime: Annotated[str | None, typer.Option("--runtime", envvar="SEQUENCE_RUNNER_RUNTIME",
                                                help="Interpreter to check.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Print the isolation level strategies get on this host, and why."""
    from sequence import __version__
    from sequence.cli import config as cfgmod

    with tempfile.TemporaryDirectory(prefix="sequence-doctor-") as tmp:
        report = _sandbox(Path(tmp), runtime, False).check()
    cfg = cfgmod.load()
    if as_json:
        emit_json({"version": __version__, "api_url": cfg.api_url, "isolation": report.to_dict()})
    else:
        console.print(f"sequence {__version__}; CLI talks to {cfg.api_url}")
        console.print(report.render(), markup=False)
        if not report.can_run:
            console.print(f"hint: {NO_BWRAP_HINT}", markup=False)
    raise typer.Exit(report.exit_code())
