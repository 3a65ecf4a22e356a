"""Dependency layers on the coordinator: the runners' wheel target, locks, wheel uploads,
what a deploy and a claim need of a layer, and garbage collection.

The deploying machine resolves ``requirements.txt`` with pip for the target this
module names (the runners' interpreter, from their registrations), posts the lock,
uploads the wheels the coordinator says it lacks — each checked here against the
lock's hash and size and for being a wheel — and deploys with the layer id.
Docs: docs/configuration.md ("Dependencies"), docs/design.md (why pip on the
deploying machine).
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from collections import Counter
from typing import Any

from sequence import deps
from sequence.api.errors import bad_request, not_found, stale_run, too_large, unavailable
from sequence.api.state import Core
from sequence.store.store import Principal

log = logging.getLogger("sequence.layers")


class LayerGone(LookupError):
    """A claimed run's layer is not stored: the run fails with this reason."""


def target(core: Core) -> dict[str, Any]:
    """The wheel target of the connected runners: the most common one first.

    Runners seen within two leases count; when none is, any runner ever
    registered does (a deploy may come before the runner's next poll)."""
    runners = core.store.list_runners(seen_within=core.settings.lease_seconds * 2) or core.store.list_runners()
    seen: Counter[str] = Counter()
    shapes: dict[str, dict[str, Any]] = {}
    for r in runners:
        t = (r.get("isolation") or {}).get("wheel_target")
        try:
            wt = deps.WheelTarget.from_dict(t)
        except deps.LockError:
            continue
        key = wt.abi + " " + " ".join(wt.platforms)
        seen[key] += 1
        shapes[key] = wt.to_dict()
    if not seen:
        raise unavailable("no runner has registered yet, so the interpreter to lock requirements for is unknown; "
                          "start a runner (`sequence up` starts one) and deploy again")
    ranked = [shapes[k] | {"runners": n} for k, n in seen.most_common()]
    return {"target": ranked[0], "others": ranked[1:]}


def create(core: Core, p: Principal, body: Any) -> dict[str, Any]:
    """Record a lock; the layer id and the wheels this client still has to upload."""
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object {target, wheels}")
    unknown = set(body) - {"target", "wheels"}
    if unknown:
        raise bad_request(f"unknown fields: {', '.join(sorted(map(str, unknown)))[:200]}", sorted(map(str, unknown))[0])
    try:
        wt = deps.WheelTarget.from_dict(body.get("target"))
        wheels = deps.parse_lock(body.get("wheels"), wt, max_wheel_bytes=core.settings.max_wheel_bytes,
                                 max_layer_bytes=core.settings.max_layer_bytes)
    except deps.LockTooLarge as exc:
        raise too_large(f"{exc} (SEQUENCE_MAX_WHEEL_MB={core.settings.max_wheel_mb}, "
                        f"SEQUENCE_MAX_LAYER_MB={core.settings.max_layer_mb})", field=exc.field) from None
    except deps.LockError as exc:
        raise bad_request(str(exc), exc.field) from None
    lid = deps.layer_id(wheels, wt)
    size = sum(w.size for w in wheels)
    core.store.register_layer(lid, wt.to_dict(), [w.to_dict() for w in wheels], size)
    missing = set(core.store.wheels_missing(p.client_id, [w.sha256 for w in wheels]))
    return {"layer_id": lid, "size_bytes": size, "wheels": [w.to_dict() for w in wheels],
            "missing": [w.to_dict() for w in wheels if w.sha256 in missing]}


def _layer_or_404(core: Core, layer_id: str) -> dict[str, Any]:
    row = core.store.get_layer(layer_id) if deps.SHA256_RE.match(layer_id) else None
    if row is None:
        raise not_found("layer")
    return row


def expected_wheel(core: Core, layer_id: str, sha256: str) -> dict[str, Any]:
    """The lock's entry for a wheel about to be uploaded (404 unless the layer lists it)."""
    layer = _layer_or_404(core, layer_id)
    for w in layer["wheels"]:
        if w["sha256"] == sha256:
            return dict(w)
    raise not_found("wheel", layer_id=layer_id)


def check_wheel(entry: dict[str, Any], data: bytes) -> None:
    """The uploaded bytes are the locked wheel: its size, its SHA-256, and a wheel archive."""
    if len(data) != entry["size"]:
        raise bad_request(f"{entry['filename']}: {len(data)} bytes sent, the lock says {entry['size']}", "body")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise bad_request(f"{entry['filename']}: the bytes' SHA-256 is not the lock's", "body")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise bad_request(f"{entry['filename']} is not a wheel (not a zip archive)", "body") from None
    if not any(n.count("/") == 1 and n.split("/")[0].endswith(".dist-info") and n.endswith("/WHEEL") for n in names):
        raise bad_request(f"{entry['filename']} is not a wheel (no .dist-info/WHEEL)", "body")


def upload(core: Core, p: Principal, layer_id: str, sha256: str, data: bytes) -> dict[str, Any]:
    entry = expected_wheel(core, layer_id, sha256)
    check_wheel(entry, data)
    wrote = core.store.put_wheel(p.client_id, sha256, data)
    return {"sha256": sha256, "size": len(data), "stored": wrote}


def for_deploy(core: Core, p: Principal, layer_id: str) -> dict[str, Any]:
    """The layer a deploy names, complete for this client (it uploaded every wheel)."""
    layer = core.store.get_layer(layer_id) if deps.SHA256_RE.match(layer_id) else None
    if layer is None:
        raise bad_request("layer_id names no layer: post the lock to /v1/layers first", "layer_id")
    missing = core.store.wheels_missing(p.client_id, [w["sha256"] for w in layer["wheels"]])
    if missing:
        names = [w["filename"] for w in layer["wheels"] if w["sha256"] in set(missing)]
        raise bad_request(f"layer {layer_id[:12]}… is missing {len(missing)} wheel(s) you have not uploaded: "
                          f"{', '.join(names[:5])}", "layer_id", missing=missing[:50])
    core.store.touch_layer(layer_id)
    return layer


def describe(layer: dict[str, Any] | None) -> dict[str, Any] | None:
    """A layer as ``inspect`` shows it: the lock as package == version, and its size."""
    if layer is None:
        return None
    return {"layer_id": layer["layer_id"], "size_bytes": layer["size_bytes"],
            "python": (layer.get("target") or {}).get("python"),
            "packages": [{"name": w["name"], "version": w["version"]} for w in layer["wheels"]]}


def claim_layer(core: Core, layer_id: str | None) -> dict[str, Any] | None:
    """What a runner needs to build the layer of a claimed run."""
    if not layer_id:
        return None
    layer = core.store.get_layer(layer_id)
    if layer is None:  # a strategy's layer is never collected; a database restored without it could lack it
        raise LayerGone(f"the strategy's dependency layer {layer_id[:12]}… is not stored; redeploy the strategy")
    # No touch here: a layer a strategy names is never collected, so a claim writes nothing for it.
    return {"layer_id": layer_id, "target": layer["target"], "size_bytes": layer["size_bytes"],
            "wheels": [{"filename": w["filename"], "sha256": w["sha256"], "size": w["size"]} for w in layer["wheels"]]}


def runner_wheel(core: Core, runner_id: str, run_id: str, epoch: int, sha256: str) -> bytes:
    """A wheel of a current run's layer, for the runner that runs it."""
    run = core.store.get_run(run_id) if run_id.isprintable() else None
    if run is None or run["epoch"] != epoch or run["runner_id"] != runner_id or run["ended_at"] is not None:
        raise stale_run(f"run {run_id} epoch {epoch} is not current")
    layer = core.store.get_layer(run["layer_id"]) if run.get("layer_id") else None
    if layer is None or not any(w["sha256"] == sha256 for w in layer["wheels"]):
        raise not_found("wheel")
    data = core.store.wheel_data(sha256)
    if data is None:
        raise not_found("wheel")
    return data


def collect(core: Core) -> None:
    """Delete layers unused for the retention period, and the wheels only they held."""
    layers, wheels, size = core.store.collect_layers(core.settings.layer_retention_hours * 3600)
    if layers or wheels:
        log.info("layers: collected %d unused layer(s) and %d wheel(s) (%d bytes)", layers, wheels, size)
