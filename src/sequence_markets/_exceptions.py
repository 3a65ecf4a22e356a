"""Every error the SDK raises, under one root.

::

    SequenceError                 catch this to catch everything below
    ├── AuthenticationError       401 / 403, a refused stream upgrade, no API key
    ├── NotFoundError             404 (someone else's id answers 404 too)
    ├── ValidationError           400 / 422: bad input, the field is named
    ├── RateLimitError            429; .retry_after in seconds (or None)
    ├── ServerError               5xx
    ├── SequenceConnectionError   no usable answer: refused, reset, DNS, TLS
    │   └── SequenceTimeoutError  the socket timed out
    └── StreamError               WebSocket protocol violation or a
        │                         {"type": "error"} message from /v1/stream
        └── StreamClosed          the stream ended; .close_code, .close_reason

Other HTTP statuses (409, 413, ...) raise ``SequenceError`` itself. Every
error carries ``status`` (HTTP status or None), ``code`` (the machine code
from the error body, e.g. ``"not_found"``), ``message``, ``details`` and
``request_id`` (the ``X-Request-ID`` response header). Errors from the
standard library (``OSError``, ``ssl.SSLError``, ``http.client`` errors) are
translated at the boundary and kept as ``__cause__``.

Misusing a pure helper (``cross_price("hold", ...)``) raises ``ValueError``,
like any Python function given a bad argument.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Type


class SequenceError(Exception):
    """Root of every error the SDK raises."""

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        request_id: Optional[str] = None,
        details: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.details: Dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        head = " ".join(str(part) for part in (self.status, self.code) if part is not None)
        text = f"{head}: {self.message}" if head else self.message
        if self.request_id:
            text += f" (request_id={self.request_id})"
        return text

    def __reduce__(self) -> Any:
        # Keyword-only constructor arguments: rebuild from the instance dict.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: Type[SequenceError], state: Dict[str, Any]) -> SequenceError:
    error: SequenceError = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class AuthenticationError(SequenceError):
    """The API key is missing, unknown or not allowed to do this (401 / 403)."""


class NotFoundError(SequenceError):
    """No such object for this key (404)."""


class ValidationError(SequenceError):
    """The request was rejected as invalid (400 / 422); ``details`` names the field."""


class RateLimitError(SequenceError):
    """Too many requests (429). ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(SequenceError):
    """The server failed (5xx)."""


class SequenceConnectionError(SequenceError):
    """No usable response: connection refused or reset, DNS or TLS failure."""


class SequenceTimeoutError(SequenceConnectionError):
    """The socket timed out (connect, send or read)."""


class StreamError(SequenceError):
    """A WebSocket failure on ``/v1/stream``.

    Raised for protocol violations (``close_code`` is what the SDK sent the
    server, e.g. 1002) and for ``{"type": "error", ...}`` messages from the
    server, such as a subscription to an unknown channel (``code`` and
    ``details`` are taken from the message).
    """

    def __init__(self, message: str, *, close_code: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.close_code = close_code


class StreamClosed(StreamError):
    """The stream is closed: by ``close()``, or by the server's close frame."""

    def __init__(self, close_code: Optional[int] = None, close_reason: str = "") -> None:
        label = "stream closed"
        if close_code is not None:
            label += f" (code {close_code}{': ' + close_reason if close_reason else ''})"
        super().__init__(label, close_code=close_code)
        self.close_reason = close_reason


_BY_STATUS: Dict[int, type] = {
    400: ValidationError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    422: ValidationError,
    429: RateLimitError,
}


def error_class_for_status(status: int) -> type:
    """The exception class for an HTTP error status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    return SequenceError


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    reason: str = "",
    retry_after: Optional[float] = None,
) -> SequenceError:
    """Build the error for a non-2xx response.

    ``headers`` keys are lower-case. Reads the ``{"error": {code, message,
    details}}`` envelope, and falls back to a framework's ``{"detail": ...}``
    or the raw text so a misbehaving proxy still gives a useful message.
    """
    code: Optional[str] = None
    message = ""
    details: Dict[str, Any] = {}
    try:
        body = json.loads(content.decode("utf-8")) if content else None
    except (UnicodeDecodeError, ValueError):
        body = None
        message = content[:500].decode("utf-8", "replace").strip()
    if isinstance(body, dict):
        envelope = body.get("error")
        if isinstance(envelope, dict):
            code = _str_or_none(envelope.get("code"))
            message = _str_or_none(envelope.get("message")) or ""
            if isinstance(envelope.get("details"), dict):
                details = envelope["details"]
        elif isinstance(envelope, str):
            message = envelope
        elif "detail" in body:
            detail = body["detail"]
            message = detail if isinstance(detail, str) else json.dumps(detail)
            if not isinstance(detail, str):
                details = {"detail": detail}
    if not message:
        message = reason or f"HTTP {status}"
    cls = error_class_for_status(status)
    common: Dict[str, Any] = {
        "status": status,
        "code": code,
        "request_id": headers.get("x-request-id"),
        "details": details,
    }
    if cls is RateLimitError:
        return RateLimitError(message, retry_after=retry_after, **common)
    error: SequenceError = cls(message, **common)
    return error


def _str_or_none(value: Any) -> Optional[str]:
    return None if value is None else str(value)
