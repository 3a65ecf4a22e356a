"""Artifacts, sinks and a one-call "run this strategy" for the runner tests."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
import textwrap
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sequence.runner import ExitInfo, LogRecord, RunHandle, RunSpec, Sandbox


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def file_member(name: str, data: bytes | str, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data.encode() if isinstance(data, str) else data


def make_artifact(files: Mapping[str, bytes | str]) -> tuple[bytes, str]:
    data = tar_gz([file_member(n, c) for n, c in files.items()])
    return data, hashlib.sha256(data).hexdigest()


def spec_for(
    code: str | None = None,
    *,
    files: Mapping[str, bytes | str] | None = None,
    run_id: str | None = None,
    **overrides: Any,
) -> RunSpec:
    content = dict(files or {})
    if code is not None:
        content["main.py"] = textwrap.dedent(code)
    artifact, sha = make_artifact(content)
    values: dict[str, Any] = {
        "run_id": run_id or f"run-{uuid.uuid4().hex[:12]}",
        "strategy_id": "3f1c6a2e-0000-4000-8000-000000000001",
        "client_id": "acme",
        "api_key": "seq_test_abc123",
        "api_url": "http://127.0.0.1:8700",
        "is_sandbox": True,
        "artifact": artifact,
        "artifact_sha256": sha,
        "manifest": {"PRED_ARB_PAIRS_JSON": [["A", "B"]]},
    }
    values.update(overrides)
    return RunSpec(**values)


@dataclass
class Collector:
    """A sink that records every batch it accepts."""

    records: list[LogRecord] = field(default_factory=list)
    batches: int = 0

    async def __call__(self, batch: list[LogRecord]) -> None:
        self.batches += 1
        self.records.extend(batch)

    def lines(self, stream: str | None = None) -> list[str]:
        return [r["line"] for r in self.records if stream is None or r["stream"] == stream]

    def text(self) -> str:
        return "\n".join(self.lines())


@dataclass
class RunResult:
    info: ExitInfo
    logs: Collector
    handle: RunHandle

    @property
    def stdout(self) -> list[str]:
        return self.logs.lines("stdout")

    @property
    def stderr(self) -> list[str]:
        return self.logs.lines("stderr")


async def run_code(
    sandbox: Sandbox,
    code: str | None = None,
    *,
    files: Mapping[str, bytes | str] | None = None,
    during: Callable[[RunHandle, Collector], Awaitable[None]] | None = None,
    timeout: float = 120.0,
    **spec: Any,
) -> RunResult:
    """Start a strategy, optionally act on it while it runs, wait, flush, close."""
    logs = Collector()
    handle = await sandbox.start(spec_for(code, files=files, **spec), logs)
    try:
        if during is not None:
            await asyncio.wait_for(during(handle, logs), timeout)
        info = await asyncio.wait_for(handle.wait(), timeout)
        assert await handle.flush_logs(timeout)
    finally:
        await handle.close()
    return RunResult(info, logs, handle)


async def wait_for_line(logs: Collector, needle: str, timeout: float = 30.0) -> None:
    """Wait until a record containing *needle* reached the sink."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not any(needle in r["line"] for r in logs.records):
        if loop.time() > deadline:
            raise AssertionError(f"{needle!r} never logged; got {logs.lines()[-10:]}")
        await asyncio.sleep(0.01)


def workspace_of(sandbox: Sandbox, run_id: str) -> Path:
    return sandbox.config.runs_dir / run_id / "workspace"
