"""A runner that speaks the /v1/runners/* protocol over HTTP, step by step.

For API tests that need a claimed run (and its run-scoped key) without a real
sandbox: register, poll, then heartbeat, upload logs or report an exit by hand.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.helpers import LiveServer


class FakeRunner:
    def __init__(self, server: LiveServer, name: str = "fake", region: str = "us-east-1,eu-west-1",
                 capacity: int = 10, token: str | None = None) -> None:
        if token is None:
            _tid, token = server.core.store.create_runner_token(name)
        self.token = token
        self.http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        reg = self.http.post("/v1/runners/register", json={"name": name, "region": region, "capacity": capacity})
        assert reg.status_code == 200, reg.text
        self.runner_id: str = reg.json()["runner_id"]

    def close(self) -> None:
        self.http.close()

    def claim(self, free: int = 1, wait_s: float = 5.0) -> list[dict[str, Any]]:
        r = self.http.post(f"/v1/runners/{self.runner_id}/poll", json={"free_slots": free, "wait_s": wait_s})
        assert r.status_code == 200, r.text
        claims: list[dict[str, Any]] = r.json()["claims"]
        return claims

    def claim_one(self) -> dict[str, Any]:
        claims = self.claim(1)
        assert len(claims) == 1, claims
        return claims[0]

    def logs(self, spec: dict[str, Any], first_seq: int, lines: list[str], streams: str | None = None,
             runner_id: str | None = None) -> httpx.Response:
        body = {"epoch": spec["epoch"], "first_seq": first_seq, "ts": [1.0] * len(lines),
                "streams": streams or "o" * len(lines), "lines": lines}
        return self.http.post(f"/v1/runners/{runner_id or self.runner_id}/runs/{spec['run_id']}/logs", json=body)

    def heartbeat(self, spec: dict[str, Any]) -> httpx.Response:
        return self.http.post(f"/v1/runners/{self.runner_id}/heartbeat",
                              json={"runs": [{"run_id": spec["run_id"], "epoch": spec["epoch"]}]})

    def exit(self, spec: dict[str, Any], code: int = 0) -> httpx.Response:
        return self.http.post(f"/v1/runners/{self.runner_id}/runs/{spec['run_id']}/exit",
                              json={"epoch": spec["epoch"], "code": code})
