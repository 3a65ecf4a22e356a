"""Deploying strategies: a bundle and its spec in, a stored (and queued) strategy out.

The routes (:mod:`sequence.api.routes.strategies`) read the request — JSON with
``artifact_base64`` or multipart — and call :func:`deploy` with the parsed
:class:`CreateSpec` and the artifact's bytes. Everything the platform decides
lives here: which checks a bundle must pass, which key the strategy runs as,
what is sealed, what a redeploy keeps. Also the lifecycle verbs a client calls
on a strategy (:func:`start`, :func:`stop`, :func:`delete`), which wake the
runners that must act on them.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from sequence import bundle
from sequence.api.errors import bad_request, forbidden, not_found, quota_exceeded, too_large
from sequence.api.notify import QUEUE, runner_topic, strategy_topic
from sequence.api.services import layers
from sequence.api.state import Core
from sequence.lifecycle import IllegalTransition
from sequence.secrets import strategy_api_key_label, strategy_secrets_label
from sequence.store.ids import new_uuid
from sequence.store.store import NotFound, Principal, QuotaExceeded

MAX_MANIFEST_DEPTH = 32
MAX_MANIFEST_BYTES = 1024 * 1024


class Placement(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    latency_target: list[str] = Field(default_factory=list, max_length=8)


class CreateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(max_length=500)
    runtime: str = Field("python", max_length=64)
    entrypoint: str = Field("main.py", max_length=255)
    artifact_sha256: str = Field(max_length=128)
    env: dict[str, str] = Field(default_factory=dict, max_length=500)
    # None (absent): a redeploy keeps the strategy's sealed secrets; {} clears them.
    secrets: dict[str, str] | None = Field(None, max_length=500)
    manifest: dict[str, Any] = Field(default_factory=dict)
    memory_mb: int = Field(512, ge=64, le=65536)
    stop_timeout_s: float = Field(10.0, gt=0, le=600)
    placement: Placement = Field(default_factory=Placement)
    # Workspace disk quota, enforced by the runner (breach ends the run with the reason).
    disk_mb: int = Field(bundle.DISK_MB_DEFAULT, ge=bundle.DISK_MB_MIN, le=bundle.DISK_MB_MAX)
    # "public": the run may reach public internet addresses through the runner's egress
    # proxy; "none": only the Sequence API.  Private, loopback and metadata ranges: never.
    egress: Literal["public", "none"] = "public"
    sequence_api_key: str | None = Field(None, max_length=200)
    # The dependency layer (POST /v1/layers, every wheel uploaded); None: standard library only.
    layer_id: str | None = Field(None, max_length=64)
    start: bool = False


class CreateJson(CreateSpec):
    artifact_base64: str


def forbid_run_key(p: Principal, what: str) -> None:
    """Run keys act for one running strategy: reading it and trading, nothing that manages."""
    if p.run_id is not None:
        raise forbidden(f"run-scoped keys cannot {what}; a strategy's SEQUENCE_API_KEY may only "
                        "read its own strategy and use the market API — use a client key for this", run_id=p.run_id)


def plausible_id(ident: str) -> bool:
    """Ids and names are short printable text; anything else cannot name an object."""
    return 0 < len(ident) <= 128 and ident.isprintable()


def strategy_or_404(core: Core, p: Principal, ident: str) -> dict[str, Any]:
    """The caller's strategy by id or name; a run key sees only its own strategy."""
    if not plausible_id(ident):
        raise not_found("strategy")
    row = core.store.get_strategy(p.client_id, ident)
    if row is None:
        sid = core.store.find_strategy_id(p.client_id, ident)
        row = core.store.get_strategy(p.client_id, sid) if sid else None
    if row is None or (p.strategy_id is not None and row["strategy_id"] != p.strategy_id):
        raise not_found("strategy")
    return row


def _depth(value: Any, limit: int) -> bool:
    """Whether ``value`` nests at most ``limit`` levels (iterative: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            if d > limit:
                return False
            stack.extend((x, d + 1) for x in v)
    return True


def _storable_text(value: Any, field: str) -> None:
    """Every string must be valid Unicode (JSON lets a body smuggle lone surrogates)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{field} contains text that is not valid Unicode (a lone surrogate)", field) from None


def _check_spec(core: Core, spec: CreateSpec, artifact: bytes) -> str:
    """Every check a deploy must pass before anything is stored; the artifact's SHA-256."""
    if spec.runtime != "python":
        raise bad_request("runtime must be 'python'", "runtime")
    err = bundle.validate_name(spec.name)
    if err:
        raise bad_request(err, "name")
    err = bundle.validate_entrypoint(spec.entrypoint)
    if err or not spec.entrypoint.isprintable():
        raise bad_request(err or "entrypoint must be printable text", "entrypoint")
    sha = spec.artifact_sha256.lower()
    if bundle.sha256_hex(artifact) != sha:
        raise bad_request("artifact_sha256 does not match the artifact's SHA-256", "artifact_sha256")
    for slot, values in (("env", spec.env), ("secrets", spec.secrets or {})):
        reserved = bundle.reserved_names(values)
        if reserved:
            raise bad_request(f"{slot} uses reserved names: {', '.join(reserved)} (SEQUENCE_* is reserved)",
                              slot, names=reserved)
        bad = bundle.invalid_env_names(values)
        if bad:
            raise bad_request(f"{slot} has invalid variable names: {', '.join(bad[:10])}", slot, names=bad[:50])
        _storable_text(values, slot)
    problem = bundle.env_value_problem({"env": spec.env, "secrets": spec.secrets or {}})
    if problem:
        slot, name, message = problem
        raise bad_request(message, f"{slot}.{name}" if name else slot, **({"name": name} if name else {}))
    unknown = [x for x in spec.placement.latency_target if x not in core.settings.regions]
    if unknown:
        raise bad_request(f"unknown latency_target {', '.join(unknown)}; use one of: "
                          f"{', '.join(sorted(core.settings.regions))}", "placement.latency_target")
    if not _depth(spec.manifest, MAX_MANIFEST_DEPTH):
        raise bad_request(f"manifest nests more than {MAX_MANIFEST_DEPTH} levels deep", "manifest")
    _storable_text(spec.manifest, "manifest")
    if len(json.dumps(spec.manifest)) > MAX_MANIFEST_BYTES:
        raise bad_request("manifest is larger than 1 MiB", "manifest")
    return sha


async def deploy(core: Core, p: Principal, spec: CreateSpec, artifact: bytes,
                 caller_key: str) -> tuple[dict[str, Any], bool]:
    """Create or redeploy (same client and name) a strategy; ``(row, created)``.

    ``caller_key``: the key the request came with, which the strategy runs as
    when the spec names none (``sequence_api_key``).
    """
    sha = _check_spec(core, spec, artifact)
    cap = core.settings.max_unpacked_bytes

    def inspect_and_find() -> str | None:  # one thread hop (the deploy → first line path counts them)
        bundle.inspect_archive(artifact, spec.entrypoint, max_unpacked=cap)
        return core.store.find_strategy_id(p.client_id, spec.name)

    try:
        existing = await anyio.to_thread.run_sync(inspect_and_find)
    except bundle.ArchiveTooLarge as exc:
        raise too_large(f"{exc} (SEQUENCE_MAX_UNPACKED_MB={core.settings.max_unpacked_mb})",
                        field="artifact", limit_mb=core.settings.max_unpacked_mb) from None
    except bundle.BundleError as exc:
        raise bad_request(str(exc), "artifact") from None

    # Which key the strategy runs as (its client and mode): the given one, else the caller's.
    key_text = spec.sequence_api_key
    if key_text is None:
        key_text = caller_key
        key_principal: Principal | None = p
    else:
        key_principal = core.auth.resolve(key_text)
        if key_principal is None or key_principal.client_id != p.client_id or key_principal.run_id is not None:
            raise bad_request("sequence_api_key is not a valid API key of this client", "sequence_api_key")
    assert key_principal is not None

    if spec.layer_id is not None:
        await anyio.to_thread.run_sync(layers.for_deploy, core, p, spec.layer_id)

    sid = existing or new_uuid()
    fields: dict[str, Any] = {
        "name": spec.name,
        "runtime": spec.runtime,
        "entrypoint": spec.entrypoint,
        "artifact_sha256": sha,
        "artifact_size": len(artifact),
        "env": spec.env,
        "manifest": spec.manifest,
        "memory_mb": spec.memory_mb,
        "disk_mb": spec.disk_mb,
        "egress": spec.egress,
        "stop_timeout_s": float(spec.stop_timeout_s),
        "placement": {"latency_target": spec.placement.latency_target},
        "region": core.settings.regions[spec.placement.latency_target[0]] if spec.placement.latency_target else None,
        "api_key_id": key_principal.key_id,
        "is_sandbox": key_principal.is_paper,  # the column keeps the wire's name
        "layer_id": spec.layer_id,
    }
    if spec.secrets:
        sealed = core.keyring.seal_json(spec.secrets, strategy_secrets_label(sid))
        fields.update(secrets_ciphertext=sealed.ciphertext, secrets_nonce=sealed.nonce, secrets_key_id=sealed.key_id,
                      secret_names=sorted(spec.secrets))
    elif spec.secrets is not None or existing is None:
        fields.update(secrets_ciphertext=None, secrets_nonce=None, secrets_key_id=None, secret_names=[])
    # else: a redeploy that gives no secrets keeps the sealed ones (they survive deploys)
    sk = core.keyring.seal(key_text.encode(), strategy_api_key_label(sid))
    fields.update(sequence_api_key_ciphertext=sk.ciphertext, sequence_api_key_nonce=sk.nonce,
                  sequence_api_key_key_id=sk.key_id)
    try:
        row, created = await anyio.to_thread.run_sync(lambda: core.store.deploy_strategy(
            sid, p.client_id, fields, artifact, start=spec.start, max_per_client=core.settings.max_strategies))
    except QuotaExceeded as exc:
        raise quota_exceeded("strategies", exc.limit, "SEQUENCE_MAX_STRATEGIES", "sequence strategy delete") from None
    core.notifier.notify(QUEUE)
    core.notifier.notify(strategy_topic(sid))
    if row.get("current_run_id"):
        run = await anyio.to_thread.run_sync(core.store.get_run, row["current_run_id"])
        if run and run["runner_id"]:
            core.notifier.notify(runner_topic(run["runner_id"]))
    return row, created


def _wake_runner(core: Core, row: dict[str, Any]) -> None:
    core.notifier.notify(QUEUE)
    core.notifier.notify(strategy_topic(row["strategy_id"]))
    cur = row.get("current_run")
    if cur and cur.get("runner_id"):
        core.notifier.notify(runner_topic(cur["runner_id"]))


def start(core: Core, p: Principal, ident: str) -> dict[str, Any]:
    """Queue the strategy to run (its desired state becomes running)."""
    forbid_run_key(p, "start strategies")
    row = strategy_or_404(core, p, ident)
    row = core.store.start_strategy(p.client_id, row["strategy_id"])
    _wake_runner(core, row)
    return row


def stop(core: Core, p: Principal, ident: str) -> dict[str, Any]:
    """Ask the strategy's runner to stop it (its desired state becomes stopped)."""
    forbid_run_key(p, "stop strategies")
    row = strategy_or_404(core, p, ident)
    row = core.store.stop_strategy(p.client_id, row["strategy_id"])
    _wake_runner(core, row)
    return row


#: The longest a delete waits for a running strategy to stop (clients time out at 30 s).
DELETE_WAIT_S = 25.0
#: Run statuses whose process may be alive.
_LIVE_RUN = frozenset({"starting", "running", "stopping"})


async def delete(core: Core, p: Principal, ident: str) -> dict[str, Any]:
    """Delete the strategy (its run keys stop working at once); the deleted row.

    A running strategy is stopped first, as ``stop`` does (SIGTERM, its stop timeout), and
    deleted once its run ended: deleted at once, it was SIGKILLed at its runner's next
    heartbeat, and a strategy created again under its name ran beside it meanwhile. Past
    its stop timeout (and at most :data:`DELETE_WAIT_S`) it is deleted anyway: its runner
    kills what is left at its next heartbeat."""
    forbid_run_key(p, "delete strategies")
    row = await anyio.to_thread.run_sync(strategy_or_404, core, p, ident)
    sid = row["strategy_id"]
    cur = row.get("current_run")
    if cur is not None and cur.get("status") in _LIVE_RUN:
        if row["status"] not in ("stopping", "stopped"):
            with contextlib.suppress(IllegalTransition):
                row = await anyio.to_thread.run_sync(core.store.stop_strategy, p.client_id, sid)
            _wake_runner(core, row)
        # Its stop timeout, and a little for the runner to hear of it: at most DELETE_WAIT_S (a
        # client waits for the answer; past it the runner's heartbeat kills what is left).
        deadline = time.monotonic() + min(float(row["stop_timeout_s"]) + 3.0, DELETE_WAIT_S)
        while time.monotonic() < deadline:
            ended = core.notifier.waiter(strategy_topic(sid))
            now_row = await anyio.to_thread.run_sync(core.store.get_strategy, p.client_id, sid)
            if now_row is None:
                raise not_found("strategy")
            run = now_row.get("current_run")
            if run is None or run.get("status") not in _LIVE_RUN:
                break
            with anyio.move_on_after(0.5):
                await ended.wait()
    try:
        await anyio.to_thread.run_sync(core.store.delete_strategy, p.client_id, sid)
    except NotFound:
        raise not_found("strategy") from None
    core.auth.invalidate()
    _wake_runner(core, row)
    return row
