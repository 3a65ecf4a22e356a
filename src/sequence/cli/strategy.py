"""``sequence strategy …`` — deploy and manage hosted strategies."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.text import Text

from sequence import bundle
from sequence.cli import config as cfgmod
from sequence.cli.deps import describe as describe_layer
from sequence.cli.deps import prepare_layer, requirements_path
from sequence.cli.errors import CliError
from sequence.cli.http import Api
from sequence.cli.output import (
    confirm_or_refuse,
    console,
    emit_json,
    err_console,
    exit_words,
    fail,
    literal,
    short_id,
    status_text,
    table,
    when,
)
from sequence.cli.terminal import LogWriter

MULTIPART_THRESHOLD = 8 * 1024 * 1024


class StrategyGroup(typer.core.TyperGroup):
    """Turns old-style invocations into a helpful message instead of a bare usage error."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            word = args[0]
            if Path(word).exists():
                fail(f"'{word}' is not a subcommand", f"to deploy a folder, run `sequence strategy deploy {word} --start`",
                     code=2)
            aliases = {"create": "deploy", "upload": "deploy", "push": "deploy", "ls": "list", "show": "inspect",
                       "get": "inspect", "status": "inspect", "rm": "delete", "remove": "delete", "log": "logs",
                       "tail": "logs --follow", "run": "start", "restart": "start", "kill": "stop"}
            if word in aliases:
                fail(f"unknown subcommand '{word}'", f"did you mean `sequence strategy {aliases[word]}`?", code=2)
        return super().resolve_command(ctx, args)


app = typer.Typer(cls=StrategyGroup, help="Deploy and manage hosted strategies.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
Ident = Annotated[str, typer.Argument(help="Strategy name or id.", show_default=False)]


def _api() -> Api:
    try:
        return Api(cfgmod.load())
    except cfgmod.ConfigError as exc:
        raise CliError(str(exc)) from None


def _path(ident: str, suffix: str = "") -> str:
    return f"/v1/strategies/{quote(ident, safe='')}{suffix}"


def _parse_env(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise CliError(f"--env {p!r} must look like KEY=VALUE")
        out[k] = v
    return out


def _upload_body(payload: bytes, show: bool) -> Iterator[bytes]:
    chunk = 256 * 1024
    if not show:
        yield payload
        return
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=err_console, transient=True) as prog:
        task = prog.add_task("uploading", total=len(payload))
        for i in range(0, len(payload), chunk):
            yield payload[i:i + chunk]
            prog.update(task, advance=min(chunk, len(payload) - i))


@dataclass
class Plan:
    """A deploy, ready to send: the spec, the artifact, and what was left out of it."""

    spec: dict[str, Any]
    artifact: bytes
    left_out: list[tuple[str, str]]
    requirements: Path | None = None  # resolved and uploaded as a dependency layer at deploy


def plan_deploy(root: Path, *, start: bool, name: str | None, entrypoint: str | None, env: list[str],
                secrets_file: Path | None, manifest: Path | None, memory_mb: int | None, disk_mb: int | None,
                egress: str | None, clear_secrets: bool, latency_target: list[str]) -> Plan:
    """The folder and the options as a spec and an artifact, checked as the coordinator will."""
    if not root.is_dir():
        raise CliError(f"{root} is not a folder", "pass the strategy folder, e.g. `sequence strategy deploy . --start`")
    toml = root / "Sequence.toml"
    try:
        cfg = bundle.parse_config(toml) if toml.exists() else bundle.StrategyConfig()
    except bundle.BundleError as exc:
        raise CliError(str(exc)) from None
    if name:
        cfg.name = name
    if entrypoint:
        cfg.entrypoint = entrypoint
    if memory_mb is not None:
        cfg.memory_mb = memory_mb
    if disk_mb is not None:
        if not bundle.DISK_MB_MIN <= disk_mb <= bundle.DISK_MB_MAX:
            raise CliError(f"--disk-mb must be from {bundle.DISK_MB_MIN} to {bundle.DISK_MB_MAX} MiB")
        cfg.disk_mb = disk_mb
    if egress is not None:
        if egress not in bundle.EGRESS_CHOICES:
            raise CliError(f"--egress must be one of: {', '.join(bundle.EGRESS_CHOICES)}")
        cfg.egress = egress
    if latency_target:
        cfg.latency_target = list(latency_target)
    cfg.env.update(_parse_env(env))
    exclude: dict[Path, str] = {}
    if secrets_file is not None:
        try:
            extra = bundle.load_json_object(secrets_file, "secrets file")
        except bundle.BundleError as exc:
            raise CliError(str(exc)) from None
        bad = [k for k, v in extra.items() if not isinstance(v, str)]
        if bad:
            raise CliError(f"secrets file values must be strings; not for: {', '.join(sorted(bad))}")
        cfg.secrets.update(extra)
        exclude[secrets_file] = "--secrets-file"  # secrets never travel inside the artifact
    if manifest is not None:
        try:
            cfg.manifest = bundle.load_json_object(manifest, "manifest file")
        except bundle.BundleError as exc:
            raise CliError(str(exc)) from None
        exclude[manifest] = "--manifest"
    if clear_secrets and cfg.secrets:
        raise CliError("--clear-secrets drops the strategy's secrets, but this deploy also gives some",
                       "use one or the other")
    if not cfg.name:
        if not toml.exists():
            raise CliError(f"no Sequence.toml in {root}", "create one with [strategy] name = \"...\" (README.md, "
                           "Quick start), or pass --name")
        raise CliError("the strategy has no name", "add [strategy] name = \"...\" to Sequence.toml or pass --name")
    for check in (bundle.validate_name(cfg.name), bundle.validate_entrypoint(cfg.entrypoint)):
        if check:
            raise CliError(check)
    if cfg.runtime != "python":
        raise CliError(f"runtime must be 'python' (Sequence.toml says {cfg.runtime!r})")
    if not (root / cfg.entrypoint).is_file():
        raise CliError(f"entrypoint {cfg.entrypoint} not found in {root}", "create it or set [hosted] entrypoint")
    try:
        broken = bundle.syntax_error((root / cfg.entrypoint).read_bytes(), cfg.entrypoint)
    except OSError as exc:
        raise CliError(f"cannot read {cfg.entrypoint}: {exc.strerror}") from None
    if broken:
        raise CliError(broken, "fix it and deploy again (it would exit at start and restart)")
    for slot, values in (("env", cfg.env), ("secrets", cfg.secrets)):
        reserved = bundle.reserved_names(values)
        if reserved:
            raise CliError(f"{slot} uses reserved names: {', '.join(reserved)}",
                           "SEQUENCE_* variables are set by the runner")
    try:
        collected = bundle.collect_files(root, exclude)
        artifact = bundle.build_artifact(root, collected=collected)
    except (bundle.BundleError, OSError) as exc:
        raise CliError(f"cannot bundle {root}: {exc}") from None
    spec: dict[str, Any] = {
        "name": cfg.name, "runtime": cfg.runtime, "entrypoint": cfg.entrypoint,
        "artifact_sha256": bundle.sha256_hex(artifact), "env": cfg.env, "manifest": cfg.manifest,
        "placement": {"latency_target": cfg.latency_target}, "start": start,
    }
    # Secrets are sent only when this deploy gives some (or clears them): a
    # redeploy without them keeps the strategy's sealed secrets.
    if cfg.secrets or clear_secrets:
        spec["secrets"] = cfg.secrets
    if cfg.memory_mb is not None:
        spec["memory_mb"] = cfg.memory_mb
    if cfg.stop_timeout_s is not None:
        spec["stop_timeout_s"] = float(cfg.stop_timeout_s)
    if cfg.disk_mb is not None:
        spec["disk_mb"] = cfg.disk_mb
    if cfg.egress is not None:
        spec["egress"] = cfg.egress
    return Plan(spec, artifact, collected.left_out,
                requirements_path(root, cfg.entrypoint, cfg.requirements))


def deploy_strategy(api: Api, plan: Plan, *, show_progress: bool) -> dict[str, Any]:
    """Upload the plan: the created or redeployed strategy. With ``start``, it runs as the CLI's key."""
    spec = dict(plan.spec)
    if spec["start"]:
        spec["sequence_api_key"] = api.cfg.api_key
    artifact = plan.artifact
    if len(artifact) < MULTIPART_THRESHOLD:
        payload = json.dumps({**spec, "artifact_base64": base64.b64encode(artifact).decode()}).encode()
        res: dict[str, Any] = api.request("POST", "/v1/strategies", content=_upload_body(payload, show_progress),
                                          headers={"Content-Type": "application/json",
                                                   "Content-Length": str(len(payload))})
    else:
        # Large artifacts go as multipart so nothing is base64-inflated.
        res = api.request("POST", "/v1/strategies", files={"artifact": ("artifact.tar.gz", artifact, "application/gzip")},
                          data={"spec": json.dumps(spec)})
    return res


@app.command()
def deploy(
    path: Annotated[Path, typer.Argument(help="Strategy folder (with main.py and optionally Sequence.toml).")] = Path("."),
    start: Annotated[bool, typer.Option("--start", help="Queue it to run now, acting as your current API key.")] = False,
    name: Annotated[str | None, typer.Option("--name", help="Override \\[strategy] name.")] = None,
    entrypoint: Annotated[str | None, typer.Option("--entrypoint", help="Override \\[hosted] entrypoint.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE, repeatable; layered on \\[hosted.env].")] = None,
    secrets_file: Annotated[Path | None, typer.Option("--secrets-file", help="JSON object of secret env vars, merged on \\[hosted.secrets].")] = None,
    manifest: Annotated[Path | None, typer.Option("--manifest", help="JSON object replacing the synthesized manifest.")] = None,
    memory_mb: Annotated[int | None, typer.Option("--memory-mb", help="Override \\[hosted] memory_mb.")] = None,
    disk_mb: Annotated[int | None, typer.Option("--disk-mb", help="Override \\[hosted] disk_mb: the /workspace quota (MiB).")] = None,
    egress: Annotated[str | None, typer.Option("--egress", help="Override \\[hosted] egress: 'public' (internet through the runner's proxy) or 'none'.")] = None,
    clear_secrets: Annotated[bool, typer.Option("--clear-secrets", help="Drop the strategy's sealed secrets (a redeploy otherwise keeps them unless new ones are given).")] = False,
    latency_target: Annotated[list[str] | None, typer.Option("--latency-target", help="Placement hint (coinbase, kalshi, polymarket); repeatable.")] = None,
    refresh_deps: Annotated[bool, typer.Option("--refresh-deps", help="Resolve requirements.txt again with pip (the newest versions it allows) instead of reusing this machine's lock of it.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Bundle a folder and create or redeploy the strategy.

    A requirements.txt beside the entrypoint (or \\[hosted] requirements) is resolved by pip
    for the runners' interpreter, binary wheels only, and uploaded once as a dependency layer."""
    plan = plan_deploy(path, start=start, name=name, entrypoint=entrypoint, env=env or [], secrets_file=secrets_file,
                       manifest=manifest, memory_mb=memory_mb, disk_mb=disk_mb, egress=egress,
                       clear_secrets=clear_secrets, latency_target=latency_target or [])
    show = not as_json and sys.stderr.isatty()
    layer = None
    with _api() as api:
        if plan.requirements is not None:
            layer = prepare_layer(api, plan.requirements, show_progress=show, refresh=refresh_deps)
            if layer is not None:
                plan.spec["layer_id"] = layer.layer_id
        res = deploy_strategy(api, plan, show_progress=show)
    if as_json:
        emit_json({**res, "left_out": [{"path": p, "reason": why} for p, why in plan.left_out],
                   "layer_upload": describe_layer(layer) if layer else None})
        return
    _left_out_notice(plan.left_out)
    shown = literal(res["name"])
    console.print(Text.assemble(("deployed", "bold green"), " ", shown, "  id ", literal(res["strategy_id"], "bold"),
                                "  status ", literal(res["status"], "bold")))
    console.print(Text.assemble("  artifact sha256 ", literal(res["artifact_sha256"][:16]), "…  (",
                                literal(res["artifact_size"]), " bytes)"))
    if layer is not None:
        pkgs = ", ".join(f"{n}=={v}" for n, v in layer.packages[:6]) + (" …" if len(layer.packages) > 6 else "")
        sent = (f"uploaded {layer.uploaded_wheels} wheel(s), {layer.uploaded_bytes} bytes" if layer.uploaded_wheels
                else "nothing to upload: the coordinator has every wheel")
        if layer.from_cache:
            sent += "; requirements unchanged, lock reused (--refresh-deps resolves again)"
        console.print(Text.assemble("  dependencies ", literal(pkgs), "  (layer ", literal(layer.layer_id[:12]),
                                    "…, ", literal(layer.size_bytes), " bytes; ", sent, ")"))
    if res.get("secret_names"):
        kept = "" if "secrets" in plan.spec else " (kept from the previous deploy)"
        console.print(Text.assemble("  secrets ", literal(", ".join(res["secret_names"])), kept))
    warning = (res.get("isolation") or {}).get("warning")
    if warning:
        console.print(Text.assemble("  ", ("warning: ", "bold yellow"), literal(warning, "yellow")))
    if res.get("waiting_reason"):
        console.print(Text.assemble("  ", literal(res["waiting_reason"], "yellow")))
    if res.get("desired_state") == "running":
        if not start and res.get("status") in ("stopping", "queued"):
            console.print("  it was running: it restarts with the new code on its own")
        console.print(Text.assemble("  follow its logs: sequence strategy logs ", shown, " --follow"))
    else:
        console.print(Text.assemble("  start it: sequence strategy start ", shown))


def _left_out_notice(left_out: list[tuple[str, str]], most: int = 8) -> None:
    if not left_out:
        return
    items = [f"{p} ({why})" for p, why in left_out[:most]]
    more = f", and {len(left_out) - most} more" if len(left_out) > most else ""
    err_console.print(Text.assemble("left out of the artifact: ", literal(", ".join(items) + more)))


def list_strategies(api: Api) -> list[dict[str, Any]]:
    """Every strategy of the client, oldest first (all pages)."""
    res = api.request("GET", "/v1/strategies", params={"limit": 500})
    items: list[dict[str, Any]] = res["strategies"]
    while res.get("next_cursor"):
        res = api.request("GET", "/v1/strategies", params={"limit": 500, "cursor": res["next_cursor"]})
        items.extend(res["strategies"])
    return items


def get_strategy(api: Api, ident: str) -> dict[str, Any]:
    s: dict[str, Any] = api.request("GET", _path(ident))
    return s


def change_strategy(api: Api, verb: str, ident: str) -> dict[str, Any]:
    """``start`` or ``stop`` it; the strategy as it is now."""
    s: dict[str, Any] = api.request("POST", _path(ident, f"/{verb}"))
    return s


def delete_strategy(api: Api, ident: str) -> dict[str, Any]:
    res: dict[str, Any] = api.request("DELETE", _path(ident))
    return res


def run_history(api: Api, ident: str, limit: int | None = None) -> dict[str, Any]:
    res: dict[str, Any] = api.request("GET", _path(ident, "/runs"), params={"limit": limit} if limit else None)
    return res


def log_pages(api: Api, ident: str, params: dict[str, Any], page: int = 5000) -> Iterator[dict[str, Any]]:
    """A run's lines page by page (``{"lines", "next_seq", "run_id", "dropped_lines"}``), to its end."""
    params = dict(params)
    while True:
        res: dict[str, Any] = api.request("GET", _path(ident, "/logs"), params={**params, "limit": page})
        yield res
        if len(res["lines"]) < page:
            return
        params["after_seq"] = res["next_seq"]
        params["run_id"] = res["run_id"]


def follow_logs(api: Api, ident: str, params: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """Records as the coordinator streams them, with their raw NDJSON line, until the strategy ends."""
    for raw_line in api.stream_lines(_path(ident, "/logs"), {**params, "follow": "true"}):
        if raw_line:
            yield json.loads(raw_line), raw_line


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List your strategies."""
    with _api() as api:
        items = list_strategies(api)
    res = {"strategies": items}
    if as_json:
        emit_json(res)
        return
    rows = [(s["name"], status_text(s["status"]), s["restart_count"], exit_words(s.get("last_exit")),
             short_id(s["strategy_id"]), s["artifact_sha256"][:8]) for s in res["strategies"]]
    if not rows:
        console.print("no strategies yet: `sequence strategy deploy . --start`")
        return
    table(["name", "status", "restarts", "last exit", "id", "sha256"], rows, keep=("name",), drop=("sha256", "id"))


@app.command()
def inspect(ident: Ident, as_json: JsonOpt = False) -> None:
    """Show one strategy: status, config (env, manifest, secret names), last exit."""
    with _api() as api:
        s = get_strategy(api, ident)
    if as_json:
        emit_json(s)
        return
    console.print(Text.assemble(literal(s["name"], "bold"), "  ", literal(s["strategy_id"])))
    cur = s.get("current_run")
    fields = [
        ("status", Text.assemble(status_text(s["status"]), f" (desired {s['desired_state']})")),
        ("waiting", s.get("waiting_reason")),
        ("paper trading", "yes (every order is paper-filled)" if s["is_sandbox"] else "no (live orders)"),
        ("entrypoint", s["entrypoint"]),
        ("artifact", f"{s['artifact_sha256']} ({s['artifact_size']} bytes)"),
        ("isolation", _isolation_text(s.get("isolation"))),
        ("memory", f"{s['memory_mb']} MB"),
        ("disk", f"{s['disk_mb']} MB" if s.get("disk_mb") else None),
        ("egress", s.get("egress")),
        ("placement", ", ".join(s["placement"].get("latency_target") or []) or "any region"),
        ("restarts", s["restart_count"]),
        ("next restart", when(s["next_restart_at"]) or None),
        ("last exit", exit_words(s["last_exit"]) or None),
        ("latest run", f"{cur['run_id']} ({cur['status']} on {cur['runner_id']} since {when(cur['started_at'])})"
         if cur else None),
        ("env", json.dumps(s["env"])),
        ("secrets", ", ".join(s["secret_names"]) or "(none)"),
        ("dependencies", _deps_text(s.get("dependencies"))),
        ("manifest", json.dumps(s["manifest"])),
    ]
    for k, v in fields:
        if v is not None:
            console.print(Text.assemble(f"  {k:<13} ", v if isinstance(v, Text) else literal(v)), soft_wrap=True)


def _deps_text(d: dict[str, Any] | None) -> str:
    if not d:
        return "(standard library and the SDK only)"
    pkgs = " ".join(f"{p['name']}=={p['version']}" for p in d["packages"])
    return f"{pkgs}  (layer {d['layer_id'][:12]}…, {d['size_bytes']} bytes, CPython {d.get('python')})"


def _isolation_text(iso: dict[str, Any] | None) -> str | None:
    if not iso:
        return None
    return str(iso["level"]) + (f" — {iso['warning']}" if iso.get("warning") else "")


def _lifecycle(verb: str, ident: str, as_json: bool) -> None:
    with _api() as api:
        s = change_strategy(api, verb, ident)
    if as_json:
        emit_json(s)
    else:
        console.print(Text.assemble(literal(s["name"]), ": ", literal(s["status"])))


@app.command()
def start(ident: Ident, as_json: JsonOpt = False) -> None:
    """Queue a stopped or failed strategy to run again."""
    _lifecycle("start", ident, as_json)


@app.command()
def stop(ident: Ident, as_json: JsonOpt = False) -> None:
    """Stop it gracefully: SIGTERM, then SIGKILL after the grace period."""
    _lifecycle("stop", ident, as_json)


@app.command()
def delete(ident: Ident, yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
           as_json: JsonOpt = False) -> None:
    """Delete it: artifact, row, runs and logs (a running one is stopped)."""
    confirm_or_refuse(f"delete {ident} with all its runs and logs?", yes)
    with _api() as api:
        res = delete_strategy(api, ident)
    if as_json:
        emit_json(res)
    else:
        console.print(Text.assemble("deleted ", literal(res["strategy_id"])))


@app.command()
def logs(
    ident: Ident,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream new lines until the strategy stops.")] = False,
    run_id: Annotated[str | None, typer.Option("--run-id", help="A specific run (default: the latest).")] = None,
    after_seq: Annotated[int, typer.Option("--after-seq", help="Only lines after this sequence number.")] = 0,
    raw: Annotated[bool, typer.Option("--raw", help="Write lines exactly as stored, even to a terminal.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print a run's log lines: exact when piped, control characters escaped on a terminal.

    On a terminal, control characters a strategy printed (escape sequences,
    carriage returns, backspaces, ...) are shown escaped the way Python writes
    them (\\x1b, \\r, \\x08) so they cannot control your terminal, and the
    platform's own lines (exit reasons, rate-limit notices) are prefixed
    \\[sequence] and dimmed. Piped or redirected, or with --raw, stdout gets
    the strategy's lines exactly as stored, so `| jq` works, and the platform's
    lines go to stderr. With --json every record is on stdout.
    """
    params: dict[str, Any] = {"after_seq": after_seq}
    if run_id:
        params["run_id"] = run_id
    out = LogWriter(sys.stdout.buffer, escape=not raw and sys.stdout.isatty(), as_json=as_json,
                    dim=console.color_system is not None and not console.no_color,
                    notes=sys.stderr.buffer, notes_escape=sys.stderr.isatty())
    with _api() as api:
        if not run_id and not _has_run(api, ident, follow):
            return
        if follow:
            try:
                for rec, raw_line in follow_logs(api, ident, params):
                    if "line" not in rec:  # not a log line: a notice, perhaps
                        _dropped_notice(rec)
                        continue
                    out.write(rec, raw_line)
                    out.flush()
            except KeyboardInterrupt:
                return
            return
        for i, res in enumerate(log_pages(api, ident, params)):
            if i == 0:
                _dropped_notice(res)
            for rec in res["lines"]:
                out.write(rec)
        out.flush()


def _dropped_notice(res: dict[str, Any]) -> None:
    """Say on stderr that the log retention limit removed lines of this run."""
    n = res.get("dropped_lines")
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        what = "older line of this run was" if n == 1 else "older lines of this run were"
        err_console.print(f"[yellow]{n} {what} dropped by the log retention limit[/]")


def _has_run(api: Api, ident: str, follow: bool) -> bool:
    """False (after saying why and what to do) for a strategy that never ran and will not."""
    s = get_strategy(api, ident)
    if s.get("current_run") or run_history(api, ident, limit=1)["runs"]:
        return True
    name = s["name"]
    if s["desired_state"] != "running":
        err_console.print(Text.assemble(literal(name, "bold"), " has never run: start it with ",
                                        (f"sequence strategy start {name}", "bold"),
                                        " (or deploy with --start)"))
        return False
    if follow:
        why = s.get("waiting_reason") or f"it is {s['status']}"
        err_console.print(Text.assemble(literal(name, "bold"), " has not started yet (", literal(why),
                                        "); following its first run …"))
    return True


@app.command()
def runs(ident: Ident, as_json: JsonOpt = False) -> None:
    """Run history with exit reasons and resource figures."""
    with _api() as api:
        res = run_history(api, ident)
    if as_json:
        emit_json(res)
        return
    runs_table(res["runs"])


def runs_table(runs: list[dict[str, Any]]) -> None:
    """The runs as a table; at 80 columns only the log line count gives way (README and
    quickstart promise peak RSS and CPU), then the exit reason folds."""
    rows = []
    for r in runs:
        ex = r["exit"] or {}
        rss = f"{r['peak_rss_bytes'] / 1048576:.1f} MB" if r["peak_rss_bytes"] else ""
        cpu = f"{r['cpu_seconds']:.2f}" if r["cpu_seconds"] is not None else ""
        dur = f"{r['duration_s']:.1f}" if isinstance(r["duration_s"], (int, float)) else ""
        rows.append((short_id(r["run_id"]), status_text(r["status"]), when(r["started_at"] or r["claimed_at"]),
                     dur, exit_words(ex), rss, cpu, r["log_lines"]))
    table(["run", "status", "started", "secs", "exit", "peak rss", "cpu s", "lines"], rows, keep=("run", "started"),
          drop=("lines",))
