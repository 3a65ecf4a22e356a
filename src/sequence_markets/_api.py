"""The I/O-free core: turns method calls into ``Request`` objects and
responses into results. Nothing here touches a socket or a clock."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote, urlencode, urlsplit

from ._exceptions import AuthenticationError, SequenceError
from ._graph import graph_body
from ._models import Request, Response
from ._version import __version__

USER_AGENT = f"sequence-markets/{__version__}"

_Param = Union[str, int, float, bool, None]


def normalize_base_url(base_url: str) -> str:
    """Validate an ``http(s)://host[:port][/prefix]`` URL, minus trailing slash."""
    base = base_url.strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must look like https://host[:port], not {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base_url must not have a query or fragment: {base_url!r}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ValueError(f"base_url has an invalid port: {base_url!r}") from exc
    return base


def stream_url(base_url: str) -> str:
    """The WebSocket URL of ``/v1/stream`` for an http(s) base URL."""
    scheme, rest = base_url.split("://", 1)
    return ("wss" if scheme == "https" else "ws") + "://" + rest + "/v1/stream"


def encode_query(params: Iterable[Tuple[str, _Param]]) -> str:
    """``None`` values are left out; booleans are sent as ``true``/``false``."""
    pairs = []
    for key, value in params:
        if value is None:
            continue
        if isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        else:
            pairs.append((key, str(value)))
    return urlencode(pairs)


class RequestBuilder:
    """Builds every request the client sends."""

    def __init__(self, base_url: str, api_key: Optional[str]) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self._headers = {"Accept": "application/json", "User-Agent": USER_AGENT}

    def health(self) -> Request:
        return self._get("/v1/health", (), auth=False)

    def markets(
        self,
        venue: Optional[str],
        limit: Optional[int],
        order: Optional[str],
        active: Optional[bool],
        expand: Optional[str],
        q: Optional[str],
        cursor: Optional[str],
    ) -> Request:
        params = (
            ("venue", venue),
            ("limit", limit),
            ("order", order),
            ("active", active),
            ("expand", expand),
            ("q", q),
            ("cursor", cursor),
        )
        return self._get("/v1/markets", params)

    def quote(self, symbol: str, depth: int) -> Request:
        return self._get("/v1/quotes", (("symbol", symbol), ("depth", depth)))

    def submit_graph(
        self,
        nodes: Sequence[Mapping[str, Any]],
        edges: Optional[Iterable[Mapping[str, Any]]],
        sandbox: Optional[bool],
        idempotency_key: str,
    ) -> Request:
        body = graph_body(nodes, edges, sandbox)
        headers = self.auth_headers()
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = idempotency_key
        return Request(
            "POST",
            self.base_url + "/v1/graphs",
            headers=headers,
            content=json.dumps(body, separators=(",", ":")).encode("utf-8"),
            # The key makes a replay return the first graph, never a second one.
            idempotent=True,
        )

    def graph_status(self, graph_id: str) -> Request:
        return self._get("/v1/graphs/" + _segment(graph_id), ())

    def cancel(self, graph_id: str) -> Request:
        return Request(
            "POST",
            self.base_url + "/v1/graphs/" + _segment(graph_id) + "/cancel",
            headers=self.auth_headers(),
            # Cancelling a cancelled graph changes nothing: safe to retry.
            idempotent=True,
        )

    def fills(
        self, symbol: Optional[str], graph_id: Optional[str], limit: Optional[int]
    ) -> Request:
        return self._get(
            "/v1/fills", (("symbol", symbol), ("graph_id", graph_id), ("limit", limit))
        )

    def positions(self) -> Request:
        return self._get("/v1/positions", ())

    def _get(
        self, path: str, params: Iterable[Tuple[str, _Param]], *, auth: bool = True
    ) -> Request:
        query = encode_query(params)
        url = self.base_url + path + ("?" + query if query else "")
        headers = self.auth_headers() if auth else dict(self._headers)
        return Request("GET", url, headers=headers, idempotent=True)

    def auth_headers(self) -> Dict[str, str]:
        """Default headers plus ``Authorization``; raises if there is no key."""
        if not self.api_key:
            raise AuthenticationError(
                "no API key: pass Sequence(api_key=...) or set SEQUENCE_API_KEY"
            )
        headers = dict(self._headers)
        headers["Authorization"] = "Bearer " + self.api_key
        return headers


def _segment(value: str) -> str:
    if not value:
        raise ValueError("an id must be a non-empty string")
    return quote(str(value), safe="")


def decode_json(response: Response) -> Any:
    """The JSON in a 2xx response (``{}`` for an empty body)."""
    if not response.content.strip():
        return {}
    try:
        return json.loads(response.content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SequenceError(
            "response is not valid JSON",
            status=response.status,
            request_id=response.headers.get("x-request-id"),
        ) from exc


def decode_object(response: Response) -> Dict[str, Any]:
    """The JSON object in a 2xx response."""
    body = decode_json(response)
    if not isinstance(body, dict):
        raise SequenceError(
            f"expected a JSON object, got {type(body).__name__}",
            status=response.status,
            request_id=response.headers.get("x-request-id"),
        )
    return body
