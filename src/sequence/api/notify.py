"""In-process wake-ups for long polls (runner claims, log follows).

Callers may be in worker threads (sync routes), so ``notify`` is thread-safe.
Waiters re-check the store after waking: a notification is a hint, never the
data, so a missed one costs at most one ``timeout``.  With several coordinator
replicas on PostgreSQL the timeout is the cross-replica fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger("sequence.notify")


class Notifier:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, set[asyncio.Event]] = {}
        self._observers: list[Callable[[str], None]] = []

    def observe(self, fn: Callable[[str], None]) -> None:
        """Call ``fn(topic)`` on the event loop for every notification (the dashboard's
        ``strategies`` channel follows ``strategy:<id>`` this way)."""
        self._observers.append(fn)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, topic: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fire(topic)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._fire, topic)

    def _fire(self, topic: str) -> None:
        for ev in self._events.get(topic, ()):
            ev.set()
        for fn in self._observers:
            try:
                fn(topic)
            except Exception:  # an observer's bug must not break the wake-ups
                log.exception("notifier observer failed on %s", topic)

    def waiter(self, topic: str) -> asyncio.Event:
        """Register interest before checking the store, to close the race."""
        ev = asyncio.Event()
        self._events.setdefault(topic, set()).add(ev)
        return ev

    def release(self, topic: str, ev: asyncio.Event) -> None:
        waiters = self._events.get(topic)
        if waiters is not None:
            waiters.discard(ev)
            if not waiters:
                self._events.pop(topic, None)


QUEUE = "queue"
#: Runners reported their runs' memory and CPU (Core.run_usage changed).
USAGE = "usage"


def logs_topic(run_id: str) -> str:
    return f"logs:{run_id}"


def runner_topic(runner_id: str) -> str:
    return f"runner:{runner_id}"


def strategy_topic(strategy_id: str) -> str:
    return f"strategy:{strategy_id}"
