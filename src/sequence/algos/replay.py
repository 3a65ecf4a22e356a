"""Run one algo against a recorded market, in virtual time, deterministically (``sequence algo replay``).

The recording (``sequence market record``) drives a :class:`MarketService` on a
:class:`ManualClock`; the same graph engine (paper trading) and the same
:class:`AlgoManager` as in the coordinator run the module. Time moves only from
one recorded event (or due timer) to the next, and after each step every
callback the step scheduled runs before the next, so nothing depends on the
machine's speed: the same recording, module and params give the same orders,
fills and log lines every time. The store is a throw-away SQLite file.

``sequence up --replay FILE`` replays the recording at its recorded pace to the
whole platform instead; an algo deployed there sees the replayed market, but
what it sees depends on when it was started and on wall-clock batching.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sequence.execution.engine import TradingEngine
from sequence.market.clock import ManualClock, iso, now_ms
from sequence.market.recording import RecordingReader
from sequence.market.service import MarketService
from sequence.store.db import Database
from sequence.store.store import Store
from sequence.store.trading import TradingStore

from .abi import AbiError
from .host import CompilerBusy, compile_module
from .manager import AlgoManager

CLIENT = "replay"


class ReplayError(ValueError):
    pass


async def replay(wasm: bytes, recording: Path, symbols: Sequence[str], params: Mapping[str, str], *,
                 fuel: int = 2_000_000, memory_mb: int = 16, until_ms: int | None = None) -> dict[str, Any]:
    """Replay *recording* to the module; returns its orders, fills, log lines and end state."""
    try:
        start_ms = RecordingReader(recording).start_ms
    except (OSError, ValueError, KeyError) as exc:
        raise ReplayError(f"cannot read the recording {recording}: {exc}") from None
    clock = ManualClock(start_ms / 1000)
    market = MarketService.from_recording(recording, clock=clock)
    with tempfile.TemporaryDirectory(prefix="sequence-replay-") as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'replay.db'}")
        db.migrate()
        store = Store(db)
        store.create_client(CLIENT, client_id=CLIENT)
        engine = TradingEngine(TradingStore(db), market)
        # The coordinator's own limits (rates by the market clock): a backtest meets E_RATE and
        # dropped log lines where a live run would.
        mgr = AlgoManager(store, market, engine, lease_seconds=3600, fuel=fuel, memory_mb=memory_mb, owner="replay")
        market.pump()  # the books as the recording begins
        await engine.start()
        await mgr.start(supervise=False)
        mgr.fence_until = float("inf")  # one process, no other coordinator: never fenced
        for sym in symbols:
            try:
                market.instrument(sym)
            except Exception:
                raise ReplayError(f"the recording has no market with the symbol {sym!r}") from None
        row = {"deployment_id": "dep_replay", "name": "replay", "client_id": CLIENT, "key_id": "replay",
               "wasm_sha256": hashlib.sha256(wasm).hexdigest(), "wasm": wasm, "symbols": list(symbols),
               "params": dict(params), "sandbox": True}
        try:
            module = compile_module(wasm, memory_mb << 20, wait=600)[0]  # the CLI's check compiled it
        except (AbiError, CompilerBusy) as exc:
            raise ReplayError(str(exc)) from None
        mgr._begin(row, 1, 1, module)
        await _settle()
        steps = 0
        while True:
            algo = mgr.algos.get("dep_replay")
            nxt = market.next_event_ms()
            if nxt is None or algo is None:  # the replay ends with the recording: a timer would tick for ever
                break
            at = min(t for t in (nxt, algo.timer_due) if t is not None)
            if until_ms is not None and at > until_ms:
                break
            clock.set(max(at, now_ms(clock)) / 1000)
            market.pump()
            mgr.run_due_timers()
            await _settle()
            steps += 1
        failed = mgr.algos.get("dep_replay") is None
        reason = None
        if failed:
            reason, _ = mgr._released.get("dep_replay", (None, True))
        await mgr.flush()
        orders = _orders(db)
        fills = _fills(db)
        logs = [{"ts": iso(r["ts"]), "stream": r["stream"], "line": r["line"]}
                for r in store.read_algo_logs("dep_replay", limit=1_000_000)]
        # The manager stamps log rows with the wall clock; the replay's record is by market time.
        await mgr.stop()
        await engine.stop()
        market.close()
    return {"recording": str(recording), "symbols": list(symbols), "params": dict(params), "steps": steps,
            "ended_at": iso(clock.now()), "failed": failed, "reason": reason,
            "orders": orders, "fills": fills, "log": [{"stream": x["stream"], "line": x["line"]} for x in logs]}


async def _settle() -> None:
    """Let every callback the last step scheduled run (re-matching, deliveries to the algo)."""
    for _ in range(4):
        await asyncio.sleep(0)


def _orders(db: Database) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from sequence.store import tables as t

    n = t.graph_nodes
    g = t.graphs
    with db.read() as c:
        rows = c.execute(sa.select(g.c.graph_id, g.c.status, n.c.symbol, n.c.side, n.c.qty_1e8, n.c.limit_price,
                                   n.c.status.label("node_status"), n.c.filled_1e8, n.c.activated_at, g.c.created_at)
                         .join(n, n.c.graph_id == g.c.graph_id).order_by(g.c.created_at, n.c.idx)).all()
    # graph ids are random: orders are numbered in the order they were placed instead.
    index: dict[str, int] = {}
    out = []
    for r in rows:
        k = index.setdefault(r.graph_id, len(index) + 1)
        out.append({"order": k, "at": iso(r.created_at), "symbol": r.symbol, "side": r.side,
                    "qty_1e8": int(r.qty_1e8), "limit_price": r.limit_price, "status": r.node_status,
                    "filled_1e8": int(r.filled_1e8)})
    return out


def _fills(db: Database) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from sequence.store import tables as t

    f = t.fills
    with db.read() as c:
        rows = c.execute(sa.select(f.c.symbol, f.c.side, f.c.price_units, f.c.price_scale, f.c.qty_1e8, f.c.fee_1e8,
                                   f.c.liquidity, f.c.ts).order_by(f.c.seq)).all()
    return [{"at": iso(r.ts), "symbol": r.symbol, "side": r.side, "price": r.price_units / r.price_scale,
             "qty_1e8": int(r.qty_1e8), "fee_1e8": int(r.fee_1e8), "liquidity": r.liquidity} for r in rows]


__all__ = ["ReplayError", "replay"]
