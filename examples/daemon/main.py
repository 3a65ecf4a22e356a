"""A daemon: runs until stopped, then shuts down cleanly and exits 0.

* ``while True`` — a process that never exits runs forever (exit 0 would mean
  "done, don't bring me back"; a non-zero exit is restarted with backoff).
* ``sequence strategy stop daemon`` sends SIGTERM, waits ``stop_timeout_s``
  (Sequence.toml), then SIGKILL. The handler below only sets a flag; the loop
  notices within a second, closes the stream, logs and returns 0.
* One persistent WebSocket (``seq.open_stream``) read with a timeout, so the
  loop can check the flag between messages; the SDK reconnects by itself.

Log records: boot, heartbeat (every HEARTBEAT_S seconds), sigterm, shutdown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from sequence_markets import Sequence


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str), flush=True)


class StopFlag:
    """Set by a signal handler, polled by the loop."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_on_signals(*signums: int) -> Iterator[StopFlag]:
    """Turn SIGTERM/SIGINT into a flag the loop polls; restore the old handlers after."""
    flag = StopFlag()

    def handler(signum: int, _frame: Any) -> None:
        # Only set the flag: printing here could re-enter a print the signal interrupted.
        flag.signum = signum

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield flag
    finally:
        for s, old in previous.items():
            # Once stopping, a repeated SIGTERM must not kill the clean shutdown
            # (the default action would): ignore it. SIGKILL after the grace still works.
            signal.signal(s, signal.SIG_IGN if flag else old)


def main() -> int:
    symbol = os.environ.get("SYMBOL", "BTC-USD")
    every = float(os.environ.get("HEARTBEAT_S", "2"))
    seq = Sequence()
    log("boot", symbol=symbol, run_id=os.environ.get("SEQUENCE_RUN_ID"))
    msgs, last, next_beat = 0, None, time.monotonic() + every
    with stop_on_signals(signal.SIGTERM, signal.SIGINT) as stop, \
            seq.open_stream([f"prices:{symbol}"]) as stream:
        while not stop:
            msg = stream.recv(timeout=1.0)  # None after 1 s without a message
            if msg is not None:
                msgs, last = msgs + 1, msg["data"]
            if time.monotonic() >= next_beat:
                log("heartbeat", msgs=msgs, bid=(last or {}).get("bid"), ask=(last or {}).get("ask"),
                    reconnects=stream.reconnects)
                next_beat += every
        log("sigterm", signal=signal.Signals(stop.signum or signal.SIGTERM).name)
    log("shutdown", msgs=msgs, exit_code=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
