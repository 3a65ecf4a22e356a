"""The CLI's HTTP client: every failure raises a :class:`~sequence.cli.errors.CliError`
whose message and hint say what to do (the command group renders it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from sequence.cli.config import CliConfig
from sequence.cli.errors import CliError


class Api:
    def __init__(self, cfg: CliConfig, *, timeout: float = 30.0, need_key: bool = True) -> None:
        if need_key and not cfg.api_key:
            raise CliError("no API key configured",
                           "run `sequence up` (local platform), `sequence login --api-url URL --api-key KEY`, "
                           "or set SEQUENCE_API_KEY")
        if not cfg.api_url.lower().startswith(("http://", "https://")):  # httpx: "UnsupportedProtocol"
            raise CliError(f"the API URL {cfg.api_url!r} does not start with http:// or https://",
                           f"e.g. SEQUENCE_API_URL=http://{cfg.api_url.split('://')[-1]} (or log in again with "
                           "`sequence login --api-url http://HOST:PORT --api-key KEY`)")
        self.cfg = cfg
        headers = {"User-Agent": "sequence-cli"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        self.client = httpx.Client(base_url=cfg.api_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.client.request(method, path, **kw)
        except httpx.ConnectError:
            raise CliError(f"cannot reach the Sequence API at {self.cfg.api_url}",
                           "is the platform running? start it with `sequence up`, or check SEQUENCE_API_URL") from None
        except httpx.TimeoutException:
            raise CliError(f"the Sequence API at {self.cfg.api_url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise CliError(f"request to {self.cfg.api_url} failed: {exc.__class__.__name__}") from None
        return self.check(r)

    def check(self, r: httpx.Response) -> Any:
        """The JSON of a successful answer; a :class:`CliError` for an error answer."""
        if r.status_code < 400:
            return r.json() if r.content else None
        try:
            err = r.json().get("error", {})
        except (json.JSONDecodeError, AttributeError):
            err = {}
        msg = err.get("message") or f"HTTP {r.status_code}"
        hint = None
        if r.status_code == 401:
            hint = ("your API key is missing, invalid or revoked: log in with a valid one "
                    "(`sequence login --api-url URL --api-key KEY`, or SEQUENCE_API_KEY); on a local platform, "
                    "restarting `sequence up` writes a working key to the CLI config")
        elif r.status_code == 404:
            path = r.request.url.path  # the list that names what was not found (revoke said "strategy list")
            for prefix, what in (("/v1/deployments", "algo"), ("/v1/keys", "keys"), ("/v1/strategies", "strategy")):
                if path.startswith(prefix):
                    hint = f"check the name or id with `sequence {what} list`"
        elif r.status_code == 413 and r.request.url.path.startswith("/v1/layers"):  # a wheel or a layer
            hint = "depend on fewer or smaller packages, or raise the setting named above on the coordinator"
        elif r.status_code == 413 and r.request.url.path.startswith("/v1/deployments"):
            hint = "a module is at most 4 MiB: build it smaller (e.g. an optimised release build)"
        elif r.status_code == 413:
            hint = "make the folder smaller (large data files belong elsewhere) or raise SEQUENCE_MAX_ARTIFACT_MB"
        raise CliError(msg, hint)

    def stream_lines(self, path: str, params: dict[str, Any]) -> Iterator[str]:
        try:
            with self.client.stream("GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)) as r:
                if r.status_code >= 400:
                    r.read()
                    self.check(r)
                yield from r.iter_lines()
        except httpx.ConnectError:
            raise CliError(f"cannot reach the Sequence API at {self.cfg.api_url}",
                           "is the platform running? (`sequence up`)") from None
        except httpx.RemoteProtocolError:
            raise CliError("the connection to the Sequence API was closed while following logs") from None
