"""/v1/layers — dependency layers: the runners' wheel target, locks, wheel uploads.

``sequence strategy deploy`` calls these when a strategy has a
``requirements.txt``: the target to lock for, the lock (answering which wheels
to upload), one PUT per missing wheel, then the deploy with ``layer_id``.
The logic is :mod:`sequence.api.services.layers`.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from sequence.api.auth import require_principal
from sequence.api.errors import too_large
from sequence.api.routes.strategies import loads, read_body
from sequence.api.services import layers
from sequence.api.services.deploy import forbid_run_key
from sequence.api.state import core_of
from sequence.store.store import Principal

router = APIRouter(tags=["layers"])

_E = {400: {"description": "bad input; `details.field` names it"},
      401: {"description": "no key, or a bad or revoked one"},
      403: {"description": "a run-scoped key cannot do this"},
      404: {"description": "no such layer, or the wheel is not in its lock"},
      413: {"description": "a wheel or the layer over SEQUENCE_MAX_WHEEL_MB / SEQUENCE_MAX_LAYER_MB"},
      503: {"description": "no runner has registered: the interpreter to lock for is unknown"}}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: _E[c] for c in codes}


@router.get("/v1/layers/target", responses=error_responses(401, 503))
def wheel_target(request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    """The interpreter the runners run strategies on, as pip's target options: lock for ``target``."""
    return layers.target(core_of(request.app))


@router.post("/v1/layers", responses=error_responses(400, 401, 403, 413), openapi_extra={"requestBody": {
    "required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["target", "wheels"],
        "properties": {"target": {"type": "object"}, "wheels": {"type": "array", "items": {
            "type": "object", "required": ["filename", "sha256", "size"],
            "properties": {"filename": {"type": "string"}, "sha256": {"type": "string"},
                           "size": {"type": "integer"}}}}}}}}}})
async def create_layer(request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    """Record a lock; answers its ``layer_id`` and the wheels you have not uploaded yet (``missing``)."""
    forbid_run_key(p, "create dependency layers")
    core = core_of(request.app)
    body = loads(await read_body(request, 1024 * 1024))
    return await anyio.to_thread.run_sync(layers.create, core, p, body)


@router.put("/v1/layers/{layer_id}/wheels/{sha256}", responses=error_responses(400, 401, 403, 404, 413),
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_wheel(layer_id: str, sha256: str, request: Request,
                       p: Principal = Depends(require_principal)) -> JSONResponse:
    """Upload one wheel of a posted lock (its bytes, checked against the lock's hash and size)."""
    forbid_run_key(p, "upload wheels")
    core = core_of(request.app)
    entry = await anyio.to_thread.run_sync(layers.expected_wheel, core, layer_id, sha256)
    cl = request.headers.get("content-length")
    if cl and cl.isdigit() and int(cl) > entry["size"]:
        raise too_large(f"{entry['filename']} is {entry['size']} bytes in the lock; {cl} were sent", field="body")
    data = await read_body(request, entry["size"])
    out = await anyio.to_thread.run_sync(layers.upload, core, p, layer_id, sha256, data)
    return JSONResponse(out, status_code=201 if out["stored"] else 200)
