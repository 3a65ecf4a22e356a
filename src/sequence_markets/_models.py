"""The two values that cross the transport boundary."""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional
from urllib.parse import parse_qsl, urlsplit


class Request:
    """An HTTP request, fully built and ready to send.

    ``idempotent`` says a retry cannot repeat a side effect: true for GETs,
    for ``POST /v1/graphs`` (it carries an ``Idempotency-Key``) and for the
    cancel POST (cancelling twice is cancelling once).
    """

    __slots__ = ("content", "headers", "idempotent", "method", "url")

    def __init__(
        self,
        method: str,
        url: str,
        *,
        headers: Optional[Mapping[str, str]] = None,
        content: Optional[bytes] = None,
        idempotent: bool = False,
    ) -> None:
        self.method = method
        self.url = url
        self.headers: Dict[str, str] = dict(headers or {})
        self.content = content
        self.idempotent = idempotent

    @property
    def path(self) -> str:
        """The URL path, without the query."""
        return urlsplit(self.url).path

    @property
    def params(self) -> Dict[str, str]:
        """The query string as a dict (last value wins)."""
        return dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))

    def header(self, name: str) -> Optional[str]:
        """A header's value, matched case-insensitively."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None

    def json(self) -> Any:
        """The decoded JSON body (``None`` when there is no body)."""
        return None if not self.content else json.loads(self.content.decode("utf-8"))

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"


class Response:
    """An HTTP response: status, lower-cased headers and the raw body."""

    __slots__ = ("content", "headers", "reason", "status")

    def __init__(
        self,
        status: int,
        *,
        headers: Optional[Mapping[str, str]] = None,
        content: bytes = b"",
        reason: str = "",
    ) -> None:
        self.status = status
        self.headers: Dict[str, str] = {k.lower(): v for k, v in (headers or {}).items()}
        self.content = content
        self.reason = reason

    @classmethod
    def from_json(
        cls, status: int, data: Any, *, headers: Optional[Mapping[str, str]] = None
    ) -> Response:
        """A JSON response, handy in a ``MockTransport`` handler."""
        merged = {"content-type": "application/json"}
        merged.update({k.lower(): v for k, v in (headers or {}).items()})
        return cls(status, headers=merged, content=json.dumps(data).encode("utf-8"))

    def json(self) -> Any:
        """The decoded JSON body."""
        return json.loads(self.content.decode("utf-8"))

    def __repr__(self) -> str:
        return f"<Response {self.status}>"
