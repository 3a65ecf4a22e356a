"""``sequence runner`` and ``sequence doctor``."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from sequence.cli.errors import CliError
from sequence.cli.output import console, emit_json
from sequence.settings import RunnerSettings, SettingsError


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
                                 bwrap_path=bwrap or _runner_settings().bwrap,
                                 layer_cache=_runner_settings().layer_cache,
                                 egress=egress, egress_allow=egress_allow))


def _runner_settings(**overrides: Any) -> RunnerSettings:
    """The runner's settings: SEQUENCE_RUNNER_* variables, overridden by the flags given."""
    try:
        return RunnerSettings.from_env(os.environ, **overrides)
    except SettingsError as exc:
        raise CliError(str(exc), "see `sequence runner --help` and docs/configuration.md") from None


UNSANDBOXED_HELP = ("Run strategies WITHOUT bubblewrap (no namespaces, no seccomp: a strategy can read the "
                    "runner's files and reach its network). Every deploy, inspect and run log says so.")
NO_BWRAP_HINT = ("install bubblewrap (`apt-get install bubblewrap`; it needs unprivileged user namespaces), check "
                 "with `sequence doctor`, or start with --unsandboxed to run strategies without isolation")


def runner(
    api_url: Annotated[str | None, typer.Option("--api-url", help="Coordinator URL (SEQUENCE_RUNNER_API_URL; "
                                                "default http://127.0.0.1:8700).", show_default=False)] = None,
    token: Annotated[str | None, typer.Option("--token", help="Runner token from `sequence admin runner-token "
                                              "create` (SEQUENCE_RUNNER_TOKEN).", show_default=False)] = None,
    region: Annotated[str | None, typer.Option("--region", help="Region(s) served, comma-separated "
                                               "(SEQUENCE_RUNNER_REGION; default us-east-1).", show_default=False)] = None,
    capacity: Annotated[int | None, typer.Option("--capacity", min=1, help="Concurrent strategies "
                                                 "(SEQUENCE_RUNNER_CAPACITY; default 50).", show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Run directories and log spools "
                                                  "(SEQUENCE_RUNNER_DATA_DIR; default .sequence/runner).",
                                                  show_default=False)] = None,
    name: Annotated[str | None, typer.Option("--name", help="Runner name (default: host name + suffix).")] = None,
    runtime: Annotated[str | None, typer.Option("--runtime", help="Python interpreter for strategies "
                                                "(SEQUENCE_RUNNER_RUNTIME; default: a CPython 3.12 if found).",
                                                show_default=False)] = None,
    unsandboxed: Annotated[bool, typer.Option("--unsandboxed", "--no-sandbox", help=UNSANDBOXED_HELP)] = False,
    no_egress: Annotated[bool, typer.Option("--no-egress", help="No strategy on this runner reaches the internet, "
                                            "whatever its Sequence.toml says (SEQUENCE_RUNNER_NO_EGRESS=1).")] = False,
    egress_allow: Annotated[str | None, typer.Option("--egress-allow", help="Extra networks (CIDRs, comma-separated) "
                                                     "the egress proxy may reach besides public addresses, e.g. a "
                                                     "database in your VPC (SEQUENCE_RUNNER_EGRESS_ALLOW).",
                                                     show_default=False)] = None,
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

    rs = _runner_settings(api_url=api_url, token=token, region=region, capacity=capacity, data_dir=data_dir,
                          runtime=runtime, no_egress=no_egress or None, egress_allow=egress_allow)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    data_dir = rs.data_dir  # absolute (RunnerSettings) before anything changes directory
    datadir.prepare(data_dir)
    token, egress_allow = rs.token, rs.egress_allow
    if egress_allow:
        from sequence.runner.network import EgressPolicy

        try:
            EgressPolicy.parse(egress_allow)
        except ValueError as exc:
            raise CliError(f"--egress-allow: {exc}", "give networks as CIDRs, e.g. 10.0.0.0/8,192.168.1.10/32") from None
    sandbox = _sandbox(data_dir, rs.runtime, unsandboxed, egress=not rs.no_egress, egress_allow=egress_allow,
                       bwrap=rs.bwrap)
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
        client = CoordinatorClient(rs.api_url, token)
        daemon = RunnerDaemon(client, sandbox, name=name or default_name(), region=rs.region, capacity=rs.capacity,
                              layer_retention_s=rs.layer_retention_hours * 3600, max_starting=rs.max_starting)
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
    runtime: Annotated[str | None, typer.Option("--runtime", help="Interpreter to check (SEQUENCE_RUNNER_RUNTIME).",
                                                show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Print the isolation level strategies get on this host, and why."""
    from sequence import __version__
    from sequence.cli import config as cfgmod

    with tempfile.TemporaryDirectory(prefix="sequence-doctor-") as tmp:
        report = _sandbox(Path(tmp), _runner_settings(runtime=runtime).runtime, False).check()
    cfg = cfgmod.load()
    if as_json:
        emit_json({"version": __version__, "api_url": cfg.api_url, "isolation": report.to_dict()})
    else:
        console.print(f"sequence {__version__}; CLI talks to {cfg.api_url}")
        console.print(report.render(), markup=False)
        if not report.can_run:
            console.print(f"hint: {NO_BWRAP_HINT}", markup=False)
    raise typer.Exit(report.exit_code())
