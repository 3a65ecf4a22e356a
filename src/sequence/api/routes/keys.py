"""/v1/keys — a client's API keys; /v1/venues — sealed venue credentials."""

from __future__ import annotations

from typing import Any, Literal

import anyio
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from sequence.api import present
from sequence.api.auth import require_principal
from sequence.api.errors import bad_request, forbidden, not_found
from sequence.api.services import orders
from sequence.api.state import core_of
from sequence.secrets import venue_credentials_label
from sequence.store.store import Principal
from sequence.venues import CREDENTIAL_FIELDS, VENUES, credential_problem

router = APIRouter(tags=["keys"])

_VENUE = Path(json_schema_extra={"enum": list(VENUES)})
_CREDENTIALS = Body(json_schema_extra={"minProperties": 1, "maxProperties": 20,
                                       "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 65536}})

_R: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad input; `details.field` names it"},
    401: {"description": "no key, or a bad or revoked one"},
    403: {"description": "run-scoped keys cannot manage keys or credentials"},
    422: {"description": "the body does not match the schema"},
}
_R404: dict[int | str, dict[str, Any]] = {**_R, 404: {"description": "no such key (or not yours)"}}


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    mode: Literal["live", "test"] = "live"
    name: str = Field("", max_length=200)


def _client_key(p: Principal) -> Principal:
    if p.run_id is not None:
        raise forbidden("run-scoped keys cannot manage keys or credentials; use a client key", run_id=p.run_id)
    return p


@router.post("/v1/keys", status_code=201, responses=_R)
def create_key(request: Request, body: NewKey | None = Body(None),
               p: Principal = Depends(require_principal)) -> dict[str, Any]:
    _client_key(p)
    body = body or NewKey(mode="live", name="")
    core = core_of(request.app)
    row, plaintext = core.store.create_api_key(p.client_id, body.mode, body.name)
    return {**present.api_key(row), "key": plaintext}


@router.get("/v1/keys", responses=_R)
def list_keys(request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    _client_key(p)
    return {"keys": [present.api_key(r) for r in core_of(request.app).store.list_api_keys(p.client_id)]}


@router.delete("/v1/keys/{key_id}", responses=_R404)
def revoke_key(key_id: str, request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    _client_key(p)
    if not (0 < len(key_id) <= 64 and key_id.isprintable()):
        raise not_found("API key")
    core = core_of(request.app)
    row = core.store.revoke_api_key(p.client_id, key_id)
    core.auth.invalidate()
    if core.algos is not None:  # the algos it ran as are stopped: end them now
        core.algos.poke()
    return {**present.api_key(row), "revoked": True}


@router.get("/v1/me", responses={401: _R[401]})
def whoami(request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    return {"client_id": p.client_id, "key_id": p.key_id, "mode": p.mode, "is_sandbox": p.is_paper,
            "run_id": p.run_id, "strategy_id": p.strategy_id}


@router.get("/v1/venues", responses={401: _R[401]})
def list_venues(request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
    core = core_of(request.app)
    have = {r["venue"]: r for r in core.store.venue_credentials(p.client_id)}
    # Where each venue's market data comes from and how its connection is (docs/markets.md).
    status = core.market.venue_status() if core.market is not None else {}
    return {"venues": [{"venue": v, "has_credentials": v in have,
                        "credential_fields": have[v]["field_names"] if v in have else [],
                        "updated_at": present.iso(have[v]["updated_at"]) if v in have else None,
                        "market": status.get(v, {"mode": "off", "state": "off"})} for v in VENUES]}


def _put_credentials(request: Request, venue: str, body: dict[str, Any], p: Principal,
                     check: bool = True) -> dict[str, Any]:
    """Seal and store this client's credentials for a venue (an object of non-empty strings).
    On a live venue they are first checked with one authenticated call to the venue
    (``check=false`` skips it), and the answer says what the venue reported."""
    _client_key(p)
    if venue not in VENUES:
        raise bad_request(f"unknown venue '{venue}'; use one of: {', '.join(VENUES)}", "venue")
    if not body or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in body.items()):
        raise bad_request("credentials must be a non-empty JSON object of non-empty strings", "body")
    problem = credential_problem(venue, body)
    if problem:
        raise bad_request(problem, "body", allowed=[f.name for f in CREDENTIAL_FIELDS[venue]])
    if len(body) > 20 or sum(len(v) for v in body.values()) > 64 * 1024:
        raise bad_request("credentials object is too large", "body")
    try:
        "".join(f"{k}{v}" for k, v in body.items()).encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("credentials must be valid Unicode text (no lone surrogates)", "body") from None
    core = core_of(request.app)
    account = None
    if check and core.settings.venues.get(venue) == "live":
        account = anyio.from_thread.run(orders.check_credentials, core.settings, venue, body)
    sealed = core.keyring.seal_json(body, venue_credentials_label(p.client_id, venue))
    core.store.put_venue_credentials(p.client_id, venue, sealed.ciphertext, sealed.nonce, sealed.key_id, sorted(body))
    out: dict[str, Any] = {"venue": venue, "has_credentials": True, "credential_fields": sorted(body)}
    if account is not None:
        out["checked"] = account
    return out


def _credentials_schema(venue: str) -> dict[str, Any]:
    """The body schema for one venue: its declared fields only (``sequence.venues``)."""
    fields = CREDENTIAL_FIELDS[venue]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object",
        "title": f"{venue.title()}Credentials",
        "properties": {f.name: {"type": "string", "minLength": 1, "maxLength": 65536, "description": f.help}
                       for f in fields},
        "required": [f.name for f in fields if f.required],
        "additionalProperties": False,
    }}}}}


def _delete_credentials(request: Request, venue: str, p: Principal) -> dict[str, Any]:
    _client_key(p)
    if venue not in VENUES:
        raise bad_request(f"unknown venue '{venue}'", "venue")
    core_of(request.app).store.delete_venue_credentials(p.client_id, venue)
    return {"venue": venue, "has_credentials": False}


def _venue_routes(venue: str) -> None:
    """PUT and DELETE for one venue: one operation each, so the published schema names each
    venue's fields exactly (a client or fuzzer sending Kalshi's fields to Coinbase is told so
    by the schema, not only by the 400). The handler still validates the body itself, so a bad
    body gets the 400 that names the fields there are."""

    def put(request: Request, body: dict[str, Any] = Body(),
            check: bool = Query(True, description="on a live venue, check them with the venue first"),
            p: Principal = Depends(require_principal)) -> dict[str, Any]:
        return _put_credentials(request, venue, body, p, check)

    def delete(request: Request, p: Principal = Depends(require_principal)) -> dict[str, Any]:
        return _delete_credentials(request, venue, p)

    path, title = f"/v1/venues/{venue}/credentials", venue.title()
    router.put(path, responses=_R, name=f"put_{venue}_credentials", summary=f"Put {title} credentials",
               openapi_extra=_credentials_schema(venue))(put)
    router.delete(path, responses=_R, name=f"delete_{venue}_credentials",
                  summary=f"Delete {title} credentials")(delete)


for _venue in VENUES:
    _venue_routes(_venue)


# Any other venue: a 400 naming the venues there are (not in the schema: the venues are).
@router.put("/v1/venues/{venue}/credentials", responses=_R, include_in_schema=False)
def put_credentials(request: Request, venue: str = _VENUE, body: dict[str, Any] = _CREDENTIALS,
                    p: Principal = Depends(require_principal)) -> dict[str, Any]:
    return _put_credentials(request, venue, body, p)


@router.delete("/v1/venues/{venue}/credentials", responses=_R, include_in_schema=False)
def delete_credentials(request: Request, venue: str = _VENUE,
                       p: Principal = Depends(require_principal)) -> dict[str, Any]:
    return _delete_credentials(request, venue, p)
