"""A strategy printing more than its log retention, against the coordinator's database.

Before: a strategy printing 1 GiB of logs grew the database by 1.15 GiB, with
no per-strategy limit. Now each strategy keeps at most SEQUENCE_LOG_RETENTION_MB
of stored lines: the oldest lines of its older runs go first, then the oldest
of the current run, counted per run and reported by ``logs`` as ``dropped_lines``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sequence.store import tables as t
from tests.api.fake_runner import FakeRunner
from tests.helpers import LiveServer, create_body, start_server

MB = 1024 * 1024
LINE = 200  # characters per printed line


@pytest.fixture
def small_retention(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    srv = start_server(tmp_path / "data", database_url=db_url, environ={"SEQUENCE_LOG_RETENTION_MB": "1"})
    yield srv
    srv.stop()


def _print(runner: FakeRunner, spec: dict, first: int, count: int) -> int:
    lines = [f"{i:08d} " + "x" * (LINE - 9) for i in range(first, first + count)]
    r = runner.logs(spec, first, lines)
    assert r.status_code == 200, r.text
    return first + count


def _stored_bytes(srv: LiveServer) -> int:
    lc = t.log_chunks  # what the database holds: the chunks' bodies (lines, times, streams as JSON)
    with srv.core.store.db.read() as c:
        return int(c.execute(sa.select(sa.func.coalesce(sa.func.sum(sa.func.length(lc.c.body)), 0))).scalar_one())


def test_a_strategy_printing_past_its_retention_keeps_the_database_bounded(small_retention: LiveServer) -> None:
    srv = small_retention
    assert srv.settings.log_retention_mb == 1
    with srv.client() as c:
        sid = c.post("/v1/strategies", json=create_body(name="chatty", start=True)).json()["strategy_id"]
    runner = FakeRunner(srv)
    try:
        old = runner.claim_one()
        _print(runner, old, 1, 1000)  # an earlier run's ~0.2 MB
        assert runner.exit(old, code=0).status_code == 200
        with srv.client() as c:
            c.post(f"/v1/strategies/{sid}/start")
        cur = runner.claim_one()
        nxt = 1
        for _ in range(30):  # ~6 MB in 30 batches: six times the limit
            nxt = _print(runner, cur, nxt, 1000)
            # Bounded all along, not only at the end: the check is amortised, never skipped.
            assert _stored_bytes(srv) <= 1.3 * MB
        total = nxt - 1
        with srv.client() as c:
            page = c.get(f"/v1/strategies/{sid}/logs", params={"limit": 10000}).json()
            old_page = c.get(f"/v1/strategies/{sid}/logs", params={"run_id": old["run_id"]}).json()
            runs = {r["run_id"]: r for r in c.get(f"/v1/strategies/{sid}/runs").json()["runs"]}
        # The older run went first and entirely; the current run keeps its newest lines.
        assert old_page["lines"] == [] and old_page["dropped_lines"] == 1000
        dropped = page["dropped_lines"]
        assert dropped > 0 and runs[cur["run_id"]]["dropped_lines"] == dropped
        seqs = [x["seq"] for x in page["lines"]]
        assert seqs == list(range(dropped + 1, total + 1))  # contiguous up to the newest line
        assert page["lines"][-1]["line"].startswith(f"{total:08d} ")
        assert len(seqs) * (LINE + 64) >= 0.8 * MB  # and it keeps close to the limit, not far under
    finally:
        runner.close()
