"""What the store tests share: a settable clock, strategy fields, a deploy."""

from __future__ import annotations

from typing import Any

from sequence.store.store import Store
from tests.helpers import make_tar


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fields(name: str = "s1", sha: str = "a" * 64, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name, "runtime": "python", "entrypoint": "main.py", "artifact_sha256": sha, "artifact_size": 10,
        "env": {"A": "1"}, "manifest": {"m": [1]}, "secret_names": [], "memory_mb": 512, "stop_timeout_s": 10.0,
        "placement": {"latency_target": []}, "region": None, "api_key_id": None, "is_sandbox": False,
    }
    base.update(kw)
    return base


def deploy(store: Store, cid: str, sid: str = "sid-1", start: bool = True, **kw: Any) -> dict[str, Any]:
    row, _created = store.deploy_strategy(sid, cid, fields(**kw), make_tar({"main.py": "x"}), start=start)
    return row
