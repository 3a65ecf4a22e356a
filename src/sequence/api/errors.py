"""One JSON error envelope and the handlers that produce it.

Every error leaves as ``{"error": {"code", "message", "details"}}`` with an
HTTP status, from :func:`envelope` and nowhere else: the API's own
:class:`ApiError`, market-data errors (:class:`~sequence.market.errors.MarketError`,
which carry their status and code), store and lifecycle errors, FastAPI's and
Starlette's. Nothing — not a validation error, not a crash — echoes a request
value back unless a message chose to show it (it may be a secret).
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sequence.lifecycle import IllegalTransition
from sequence.market.errors import MarketError
from sequence.store.store import Conflict, NotFound, StaleWrite

log = logging.getLogger("sequence.api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}


# -- the errors routes raise: each status and code is spelled here once --------------------------


def bad_request(message: str, field: str | None = None, **details: Any) -> ApiError:
    """400: bad input; ``field`` names it."""
    if field:
        details["field"] = field
    return ApiError(400, "bad_request", message, details)


def invalid_json(message: str = "request body is not valid JSON", field: str = "body") -> ApiError:
    """400: a body (or part) that is not JSON, or nests too deeply."""
    return ApiError(400, "invalid_json", message, {"field": field})


def invalid(field: str, message: str) -> ApiError:
    """422: a JSON body that does not match its schema; ``field`` names where."""
    return ApiError(422, "validation_error", message, {"field": field})


def unauthorized(message: str, **details: Any) -> ApiError:
    """401: no key, a bad or revoked one (or runner token), a run key whose run ended."""
    return ApiError(401, "unauthorized", message, details)


def forbidden(message: str, **details: Any) -> ApiError:
    """403: a run-scoped key doing more than its strategy needs."""
    return ApiError(403, "forbidden", message, details)


def not_found(what: str, **details: Any) -> ApiError:
    """404: no such object, or not the caller's."""
    return ApiError(404, "not_found", f"{what} not found", details)


def stale_run(message: str) -> ApiError:
    """409: a runner writing for a run that is not its own at this epoch."""
    return ApiError(409, "stale_run", message)


def too_large(message: str, **details: Any) -> ApiError:
    """413: a body or artifact over its limit."""
    return ApiError(413, "payload_too_large", message, details)


def quota_exceeded(what: str, limit: int, setting: str, verb: str) -> ApiError:
    """A client at its most *what* creating one more (409: deleting one resolves it)."""
    return ApiError(409, "quota_exceeded", f"this client has {limit} {what}, the most it may have "
                    f"({setting} on the coordinator): `{verb}` one first, or redeploy one by its name",
                    {"field": "name", "limit": limit})


def unsupported_media_type(message: str) -> ApiError:
    """415: a body in a format the route does not read."""
    return ApiError(415, "unsupported_media_type", message)


def unavailable(message: str) -> ApiError:
    """503: a part of the coordinator that is starting or stopping."""
    return ApiError(503, "unavailable", message)


def from_market(exc: MarketError) -> ApiError:
    """The API error a market-data error answers (its status, code, message and details)."""
    return ApiError(exc.status, exc.code, exc.message, dict(exc.details))


def envelope(status: int, code: str, message: str, details: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details or {}}},
                        status_code=status, headers=headers)


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
                 422: "validation_error", 429: "rate_limited"}


_PARAMETERS = frozenset({"query", "path", "header", "cookie"})


def _loc(err: dict[str, Any]) -> str:
    parts = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    """The handlers that turn every error into the envelope, and its place in /openapi.json."""
    _document(app)

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return envelope(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(MarketError)
    async def _market(_req: Request, exc: MarketError) -> JSONResponse:
        err = from_market(exc)
        return envelope(err.status, err.code, err.message, err.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        params = []
        for e in exc.errors():
            # Deliberately drop "input" and "ctx": they can contain secret values.
            errors.append({"field": _loc(e), "message": e.get("msg", "invalid"), "type": e.get("type", "")})
            loc = e.get("loc", ())
            if loc and loc[0] in _PARAMETERS:
                params.append((".".join(str(p) for p in loc[1:]) or str(loc[0]), e.get("msg", "invalid")))
        if any(e["type"] == "json_invalid" for e in errors):
            return envelope(400, "invalid_json", "request body is not valid JSON", {"errors": errors})
        if params:
            # A bad query-string (or path, header) value is bad input, like on the
            # hand-parsed routes: 400 naming the parameter, not the 422 of bodies.
            field, msg = params[0]
            return envelope(400, "bad_request", f"{field}: {msg}", {"field": field, "errors": errors})
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return envelope(422, "validation_error", f"{first['field']}: {first['message']}", {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        msg = exc.detail if isinstance(exc.detail, str) else code
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            # Starlette names only the first route that matched the path; a path served by
            # several routes (GET and POST /v1/strategies) supports all of theirs.
            fallback = (headers or {}).get("Allow", "")
            headers = {**(headers or {}), "Allow": _allowed(req) or fallback}
        return envelope(exc.status_code, code, msg, headers=headers)

    @app.exception_handler(DataError)
    async def _data(req: Request, exc: DataError) -> JSONResponse:
        # The database refused a value (out of range, a NUL byte): the input's fault.
        log.warning("database refused a value on %s %s: %s", req.method, req.url.path, exc.orig)
        return envelope(400, "bad_request", "a value in the request cannot be stored (out of range, or it "
                        "contains a NUL byte)", {"request_id": request_id(req)})

    @app.exception_handler(UnicodeEncodeError)
    async def _unicode(req: Request, exc: UnicodeEncodeError) -> JSONResponse:
        log.warning("text that is not valid Unicode on %s %s", req.method, req.url.path)
        return envelope(400, "bad_request", "a value in the request is not valid Unicode text (a lone surrogate)",
                        {"request_id": request_id(req)})

    @app.exception_handler(NotFound)
    async def _nf(_req: Request, exc: NotFound) -> JSONResponse:
        return envelope(404, "not_found", str(exc))

    @app.exception_handler(IllegalTransition)
    async def _illegal(_req: Request, exc: IllegalTransition) -> JSONResponse:
        return envelope(409, "conflict", str(exc), {"state": exc.state, "event": exc.event})

    @app.exception_handler(Conflict)
    async def _conflict(_req: Request, exc: Conflict) -> JSONResponse:
        return envelope(409, "conflict", str(exc))

    @app.exception_handler(StaleWrite)
    async def _stale(_req: Request, exc: StaleWrite) -> JSONResponse:
        return envelope(409, "stale_run", str(exc))

    @app.exception_handler(RecursionError)
    async def _deep(req: Request, exc: RecursionError) -> JSONResponse:
        return envelope(400, "invalid_json", "request body is nested too deeply", {"field": "body"})

    @app.exception_handler(Exception)
    async def _crash(req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", req.method, req.url.path)
        return envelope(500, "internal", "internal error; see the coordinator log",
                        {"request_id": request_id(req)})


_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {
        "type": "object", "required": ["code", "message", "details"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}}}},
}


def _document(app: FastAPI) -> None:
    """Every route answers errors in one envelope; say so in /openapi.json.

    Adds the answers any route can give — 400 for bad input (a body that is not
    JSON, a malformed number or cursor), 401 on authenticated routes, 404 where
    the path names an object — and gives every 4xx the envelope's schema
    (FastAPI's default 422 schema is not what the coordinator sends). A 422 is
    a body that does not match its schema: routes without a body answer none.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = build()
        doc.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
        ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for path, ops in doc.get("paths", {}).items():
            for op in ops.values():
                if not isinstance(op, dict) or "responses" not in op:
                    continue
                res = op["responses"]
                if op.get("parameters") or op.get("requestBody"):
                    res.setdefault("400", {"description": "bad input; `details.field` names it"})
                if path.startswith("/v1/") and path != "/v1/health":
                    res.setdefault("401", {"description": "missing, bad or revoked key (or runner token)"})
                if "{" in path:
                    res.setdefault("404", {"description": "no such object (or not yours)"})
                if not op.get("requestBody"):
                    res.pop("422", None)  # a bad parameter is a 400 (see install)
                for code, r in res.items():
                    if code.startswith("4"):
                        r["content"] = ref
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def request_id(req: Request) -> str:
    """The id RequestMiddleware gave this request (also in the X-Request-ID response header)."""
    rid = req.scope.get("sequence.request_id")
    return str(rid) if rid else req.headers.get("x-request-id", "")


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


@functools.lru_cache(maxsize=256)
def _template(path: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)))


def _allowed(req: Request) -> str:
    """The methods /openapi.json documents for this path (HEAD wherever GET is)."""
    methods: set[str] = set()
    path = req.scope.get("path", "")
    for template, ops in req.app.openapi().get("paths", {}).items():
        if _template(template).fullmatch(path):
            methods |= {m.upper() for m in ops if m in _HTTP_METHODS}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))
