"""The store writer's group commit: one step the database refuses fails alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sequence.execution import writer as writer_mod
from sequence.execution.writer import Writer
from sequence.store.trading import TradeBatch
from tests.execution.conftest import async_test


class _Store:
    """Commits batches into a list; a batch holding a fill marked ``poison`` never commits
    (as a value the database refuses), and takes its whole transaction down with it."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self.attempts = 0

    def commit_all(self, batches: list[TradeBatch]) -> None:
        self.attempts += 1
        if any(f.get("poison") for b in batches for f in b.fills):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        self.committed += [b.fills[0]["id"] for b in batches]


def _batch(name: str, poison: bool = False) -> TradeBatch:
    return TradeBatch([{"id": name, "poison": poison}], [], {}, {})


@async_test
async def test_a_step_the_database_refuses_fails_alone_and_the_rest_of_its_group_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer_mod.time, "sleep", lambda _s: None)
    store = _Store()
    w = Writer(store)  # type: ignore[arg-type]
    w.start()
    loop = asyncio.get_running_loop()
    ran: list[str] = []
    futs: dict[str, Any] = {}
    for name in ("a", "bad", "c"):  # one turn of the loop: one group
        futs[name] = w.commit(loop, _batch(name, poison=name == "bad"), lambda n=name: ran.append(n))
    await w.flush()
    assert store.committed == ["a", "c"]  # another client's fills of the same turn are kept
    assert ran == ["a", "c"]  # each committed step's messages go out, in order; the refused one's do not
    assert futs["a"].result() is None and futs["c"].result() is None
    assert isinstance(futs["bad"].exception(), OverflowError)
    await w.stop()


@async_test
async def test_a_group_that_commits_is_one_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    store = _Store()
    w = Writer(store)  # type: ignore[arg-type]
    w.start()
    loop = asyncio.get_running_loop()
    for name in ("a", "b", "c"):
        w.commit(loop, _batch(name), lambda: None)
    await w.flush()
    assert store.committed == ["a", "b", "c"] and store.attempts == 1
    await w.stop()
