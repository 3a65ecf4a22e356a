"""The runner's HTTP client for the coordinator's /v1/runners/* protocol.

Exceptions::

    CoordinatorError
     ├── CoordinatorUnavailable   connection refused/reset, timeout, 5xx: retry later
     │    └── CoordinatorDown     positively not running: connection refused, or a
     │                            proxy's 502/503/504 (see RunnerDaemon fencing)
     ├── StaleRun                 409 stale_run: this run is not ours any more — kill it
     └── Rejected                 any other 4xx: a bug or a revoked token; not retried

Every call is one attempt: the callers decide what to retry (log delivery:
:mod:`sequence.runner.logs.uploader`). The wire shapes are :mod:`sequence.protocol`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from sequence.protocol import WATCH_KEEPALIVE_S, ExitReport, PollAnswer


class CoordinatorError(Exception):
    pass


class CoordinatorUnavailable(CoordinatorError):
    pass


class CoordinatorDown(CoordinatorUnavailable):
    """Nothing serves the coordinator's address: no coordinator can be expiring leases."""


class StaleRun(CoordinatorError):
    pass


class Rejected(CoordinatorError):
    """A 4xx other than the ones above: a bug or a revoked token; not retried."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class CoordinatorClient:
    def __init__(self, api_url: str, token: str, *, timeout: float = 30.0) -> None:
        self._token, self._timeout = token, timeout
        self.api_url = api_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.api_url, timeout=httpx.Timeout(timeout, connect=5.0),
            headers={"Authorization": f"Bearer {token}", "User-Agent": "sequence-runner"},
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16))
        self.runner_id: str | None = None

    def clone(self) -> CoordinatorClient:
        """Another client for the same runner, on its own connections (the heartbeat thread's:
        a renewal never queues behind artifact downloads or log uploads)."""
        other = CoordinatorClient(self.api_url, self._token, timeout=self._timeout)
        other.runner_id = self.runner_id
        return other

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                    timeout: float | None = None) -> httpx.Response:
        try:
            kw: dict[str, Any] = {"json": json, "params": params}
            if timeout is not None:
                kw["timeout"] = httpx.Timeout(timeout, connect=5.0)
            r = await self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise _unavailable(f"{method} {path}", exc) from exc
        if r.status_code >= 400:
            _raise_for(r, method, path)
        return r

    def _run_path(self, run_id: str, what: str) -> str:
        return f"/v1/runners/{self.runner_id}/runs/{run_id}/{what}"

    async def register(self, name: str, region: str, capacity: int, isolation: Mapping[str, Any]) -> dict[str, Any]:
        r = await self._call("POST", "/v1/runners/register", json={
            "name": name, "region": region, "capacity": capacity, "isolation": dict(isolation)})
        data: dict[str, Any] = r.json()
        self.runner_id = data["runner_id"]
        return data

    async def poll(self, free_slots: int, stopping: Sequence[str], wait_s: float) -> PollAnswer:
        r = await self._call("POST", f"/v1/runners/{self.runner_id}/poll",
                             json={"free_slots": free_slots, "stopping": list(stopping), "wait_s": wait_s,
                                   "beats": True},
                             timeout=wait_s + 15.0)
        out: PollAnswer = r.json()
        return out

    async def heartbeat(self, runs: Sequence[tuple[str, int]], timeout: float = 5.0,
                        usage: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, str]:
        """Renew leases; ``usage`` (run id -> ``{rss_bytes, cpu_seconds}``) rides along."""
        body = []
        for a, b in runs:
            ref: dict[str, Any] = {"run_id": a, "epoch": b}
            u = (usage or {}).get(a)
            if u and u.get("rss_bytes") is not None:
                ref["rss_bytes"] = int(u["rss_bytes"])
                if u.get("cpu_seconds") is not None:
                    ref["cpu_seconds"] = round(float(u["cpu_seconds"]), 3)
            body.append(ref)
        r = await self._call("POST", f"/v1/runners/{self.runner_id}/heartbeat",
                             json={"runs": body}, timeout=timeout)
        out: dict[str, str] = r.json()["runs"]
        return out

    async def watch(self, on_open: Callable[[int], None], on_down: Callable[[], None]) -> None:
        """Hold the watch connection open until it ends (then raise, or return on a clean end).

        ``on_open(epoch)`` runs once the coordinator sent the first line (it has renewed the
        leases and counts this watch); ``on_down()`` runs the moment it is no longer held —
        *before* this side closes it, so the runner's fencing clock starts no later than the
        coordinator's. Silence for 10 keep-alives is a dead connection: closed here.
        """
        opened = False
        try:
            async with self._http.stream("GET", f"/v1/runners/{self.runner_id}/watch",
                                         timeout=httpx.Timeout(10 * WATCH_KEEPALIVE_S, connect=5.0)) as r:
                if r.status_code >= 400:
                    await r.aread()
                    _raise_for(r, "GET", "watch")
                try:
                    async for line in r.aiter_lines():
                        if not opened and line.strip():
                            on_open(int(json.loads(line)["watch"]))
                            opened = True
                finally:
                    if opened:
                        on_down()
        except httpx.HTTPError as exc:
            raise _unavailable("GET watch", exc) from exc

    async def artifact(self, run_id: str, epoch: int) -> tuple[bytes, str]:
        r = await self._call("GET", self._run_path(run_id, "artifact"), params={"epoch": epoch}, timeout=120.0)
        return r.content, r.headers.get("x-artifact-sha256", "")

    async def wheel(self, run_id: str, epoch: int, sha256: str) -> bytes:
        """One wheel of the run's dependency layer (the runner checks its hash)."""
        r = await self._call("GET", self._run_path(run_id, f"wheels/{sha256}"), params={"epoch": epoch},
                             timeout=300.0)
        return r.content

    async def started(self, run_id: str, epoch: int) -> None:
        await self._call("POST", self._run_path(run_id, "started"), json={"epoch": epoch})

    async def logs_encoded(self, run_id: str, body: bytes, *, runner_id: str | None = None) -> int:
        """Upload a batch encoded by :func:`sequence.protocol.encode_logs` (so encoding can overlap uploads).

        *runner_id*: the runner the run belonged to, when it is not this one (spools
        of an earlier process of this runner, delivered after a restart)."""
        path = f"/v1/runners/{runner_id or self.runner_id}/runs/{run_id}/logs"
        try:
            r = await self._http.post(path, content=body, headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            raise _unavailable("POST logs", exc) from exc
        if r.status_code >= 400:
            # Same error mapping as every other call.
            _raise_for(r, "POST", path)
        return int(r.json()["next_seq"])

    async def exit(self, run_id: str, epoch: int, report: ExitReport) -> None:
        await self._call("POST", self._run_path(run_id, "exit"), json={"epoch": epoch, **report})


def _unavailable(what: str, exc: httpx.HTTPError) -> CoordinatorUnavailable:
    refused = False
    if isinstance(exc, httpx.ConnectError):  # walk the chain down to the socket error
        cur: BaseException | None = exc
        for _ in range(10):
            if cur is None:
                break
            if isinstance(cur, ConnectionRefusedError):
                refused = True
                break
            cur = cur.__cause__ or cur.__context__
    cls = CoordinatorDown if refused else CoordinatorUnavailable
    return cls(f"{what}: {exc.__class__.__name__}{' (connection refused)' if refused else ''}")


def _raise_for(r: httpx.Response, method: str, path: str) -> None:
    if r.status_code in (502, 503, 504) and "x-request-id" not in r.headers:
        # A proxy in front of the coordinator says no replica is serving.
        raise CoordinatorDown(f"{method} {path}: HTTP {r.status_code} from a proxy")
    if r.status_code >= 500:
        raise CoordinatorUnavailable(f"{method} {path}: HTTP {r.status_code}")
    try:
        err = r.json().get("error", {})
    except ValueError:
        err = {}
    code, msg = err.get("code", ""), err.get("message", r.text[:200])
    if code == "stale_run" or (r.status_code == 404 and "/runs/" in path):
        raise StaleRun(msg)
    raise Rejected(r.status_code, msg)
