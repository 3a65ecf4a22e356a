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


def bad_request(message: str, field: str | None = None, **details: Any) -> ApiError:
    if field:
        details["field"] = field
    return ApiError(400, "bad_request", message, details)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


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


def _loc(err: dict[str, Any]) -> str:
    parts = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
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
        for e in exc.errors():
            # Deliberately drop "input" and "ctx": they can contain secret values.
            errors.append({"field": _loc(e), "message": e.get("msg", "invalid"), "type": e.get("type", "")})
        if any(e["type"] == "json_invalid" for e in errors):
            return envelope(400, "invalid_json", "request body is not valid JSON", {"errors": errors})
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return envelope(422, "validation_error", f"{first['field']}: {first['message']}", {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        msg = exc.detail if isinstance(exc.detail, str) else code
        headers = getattr(exc, "headers", None)
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
