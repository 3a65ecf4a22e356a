"""TradingStore on SQLite and PostgreSQL (the ``store`` fixture is parametrized over both)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sequence.store.store import ExitReport, Store
from sequence.store.trading import Fenced, IdempotencyConflict, TradeBatch, TradingStore
from tests.helpers import make_tar

Q = 100_000_000


@pytest.fixture
def ts(store: Store) -> TradingStore:
    return TradingStore(store.db)


@pytest.fixture
def client_id(store: Store) -> str:
    return store.create_client("acme")


def graph_row(gid: str, cid: str, *, key: str | None = None, rhash: str | None = None,
              created: float = 100.0, paper: bool = False) -> dict[str, Any]:
    return {"graph_id": gid, "client_id": cid, "key_id": "k", "run_id": None, "idempotency_key": key,
            "request_hash": rhash, "status": "active", "sandbox": paper, "node_count": 1, "edge_count": 0,
            "edges": [], "reason": None, "created_at": created, "updated_at": created, "ended_at": None}


def node_row(gid: str, cid: str, nid: str = "leg", idx: int = 0) -> dict[str, Any]:
    return {"graph_id": gid, "node_id": nid, "idx": idx, "client_id": cid,
            "node_order_id": f"graph:{gid}:{nid}:1", "symbol": "S-YES", "book_symbol": "S-YES",
            "venue": "kalshi", "instrument_type": "prediction", "side": "buy", "book_side": "bid",
            "qty_1e8": 2 * Q, "limit_price": 0.5, "limit_units": 5000, "book_limit": 5000,
            "price_scale": 10_000, "size_scale": 100, "urgency": "normal", "activation": "root",
            "status": "pending", "never_crosses": False, "filled_1e8": 0, "notional_1e8": 0, "fees_1e8": 0,
            "fill_count": 0, "order_seq": None, "reason": None, "activated_at": None, "updated_at": 100.0,
            "ended_at": None}


def fill_row(gid: str, cid: str, seq: int, *, ts: float, side: str = "buy", price: int = 5000,
             qty: int = Q, symbol: str = "S-YES", paper: bool = False) -> dict[str, Any]:
    return {"fill_id": f"fill_{gid}_{seq}", "seq": seq, "client_id": cid, "graph_id": gid, "node_id": "leg",
            "node_order_id": f"graph:{gid}:leg:1", "symbol": symbol, "venue": "kalshi", "side": side,
            "price_units": price, "price_scale": 10_000, "qty_1e8": qty, "fee_1e8": 1_000_000,
            "liquidity": "taker", "sandbox": paper, "ts": ts}  # column sandbox: paper trading


def test_a_graph_reads_back_as_written_edges_flags_and_all(ts: TradingStore, client_id: str) -> None:
    """The submit path writes graphs by driver SQL on SQLite (Core on PostgreSQL): what comes
    back through Core is the same on both."""
    edges = [{"from": "a", "to": "b", "trigger": "filled"}]
    g = {**graph_row("g2", client_id, key="k-2", rhash="h" * 64, paper=True), "node_count": 2, "edge_count": 1,
         "edges": edges, "strategy_id": None}
    nodes = [{**node_row("g2", client_id, "a", 0), "never_crosses": True},
             {**node_row("g2", client_id, "b", 1), "activation": "after", "limit_units": None, "book_limit": None,
              "limit_price": None}]
    assert ts.create_graph(g, nodes).created
    got = ts.get_graph(client_id, "g2")
    assert got is not None
    assert got["edges"] == edges and got["sandbox"] is True and got["idempotency_key"] == "k-2"
    assert [(n["node_id"], n["never_crosses"], n["limit_units"], n["activation"]) for n in got["nodes"]] == [
        ("a", True, 5000, "root"), ("b", False, None, "after")]
    assert ts.create_graph(g, nodes).created is False  # the same key and request: a replay


def test_create_and_read_back_scoped_to_the_client(store: Store, ts: TradingStore, client_id: str) -> None:
    other = store.create_client("other")
    created = ts.create_graph(graph_row("g1", client_id), [node_row("g1", client_id)])
    assert created.created
    got = ts.get_graph(client_id, "g1")
    assert got is not None and got["nodes"][0]["node_order_id"] == "graph:g1:leg:1"
    assert got["sandbox"] is False and got["edges"] == []
    assert ts.get_graph(other, "g1") is None
    assert [g["graph_id"] for g in ts.list_graphs(client_id)] == ["g1"]
    assert ts.list_graphs(other) == []


def test_idempotency_key_replays_and_conflicts(store: Store, ts: TradingStore, client_id: str) -> None:
    first = ts.create_graph(graph_row("g1", client_id, key="k1", rhash="h"), [node_row("g1", client_id)])
    again = ts.create_graph(graph_row("g2", client_id, key="k1", rhash="h"), [node_row("g2", client_id)])
    assert first.created and not again.created and again.graph["graph_id"] == "g1"
    assert ts.get_graph(client_id, "g2") is None  # nothing new placed
    with pytest.raises(IdempotencyConflict):
        ts.create_graph(graph_row("g3", client_id, key="k1", rhash="other"), [])
    # keys are per client
    other = store.create_client("other")
    assert ts.create_graph(graph_row("g4", other, key="k1", rhash="h"), []).created


def test_a_key_used_by_another_strategy_is_never_handed_over(ts: TradingStore, client_id: str) -> None:
    """Strategy B's run key replaying an Idempotency-Key strategy A (or the client) used gets a
    conflict, never A's graph: the used key is found by the insert failing, then compared."""
    ts.create_graph({**graph_row("gA", client_id, key="shared", rhash="h"), "strategy_id": "strat-A"},
                    [node_row("gA", client_id)])
    for sid in ("strat-B", None):
        with pytest.raises(IdempotencyConflict):
            ts.create_graph({**graph_row("gB", client_id, key="shared", rhash="h"), "strategy_id": sid},
                            [node_row("gB", client_id)])
    assert ts.get_graph(client_id, "gB") is None
    again = ts.create_graph({**graph_row("gA2", client_id, key="shared", rhash="h"), "strategy_id": "strat-A"}, [])
    assert not again.created and again.graph["graph_id"] == "gA"


def test_concurrent_submits_with_one_key_make_one_graph(store: Store, ts: TradingStore, client_id: str) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def go(i: int) -> None:
        try:
            r = ts.create_graph(graph_row(f"g{i}", client_id, key="same", rhash="h"), [node_row(f"g{i}", client_id)])
            results.append(r.graph["graph_id"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(set(results)) == 1 and len(ts.list_graphs(client_id)) == 1


def test_a_run_that_is_no_longer_current_places_nothing(store: Store, ts: TradingStore, client_id: str) -> None:
    fields = {"name": "s1", "runtime": "python", "entrypoint": "main.py", "artifact_sha256": "a" * 64,
              "artifact_size": 10, "env": {}, "manifest": {}, "secret_names": [], "memory_mb": 512,
              "stop_timeout_s": 10.0, "placement": {}, "region": None, "api_key_id": None, "is_sandbox": False}
    store.deploy_strategy("sid-1", client_id, fields, make_tar({"main.py": "x"}), start=True)
    tid, _ = store.create_runner_token("r")
    runner = store.register_runner(tid, "r1", "us-east-1", 10, {})
    run = store.claim(runner, ["us-east-1"], 5)
    assert run is not None
    assert ts.create_graph(graph_row("g1", client_id), [node_row("g1", client_id)], run_id=run["run_id"]).created
    store.report_exit(run["run_id"], run["epoch"], runner, ExitReport(code=1))
    with pytest.raises(Fenced):
        ts.create_graph(graph_row("g2", client_id), [node_row("g2", client_id)], run_id=run["run_id"])
    with pytest.raises(Fenced):
        ts.create_graph(graph_row("g3", client_id), [], run_id="no-such-run")
    assert ts.get_graph(client_id, "g2") is None


def test_commit_writes_fills_status_and_positions_together(store: Store, ts: TradingStore, client_id: str) -> None:
    ts.create_graph(graph_row("g1", client_id), [node_row("g1", client_id)])
    batch = TradeBatch()
    batch.fills += [fill_row("g1", client_id, 1, ts=101.0), fill_row("g1", client_id, 2, ts=101.0)]
    batch.node("g1", "leg", status="filled", filled_1e8=2 * Q, notional_1e8=Q, fill_count=2, fees_1e8=2_000_000)
    batch.graph("g1", status="completed", ended_at=101.0, updated_at=101.0)
    ts.commit(batch)
    g = ts.get_graph(client_id, "g1")
    assert g is not None and g["status"] == "completed" and g["nodes"][0]["status"] == "filled"
    fills = ts.list_fills(client_id)
    assert [f["seq"] for f in fills] == [2, 1]  # newest first, seq breaks ties
    (pos,) = ts.positions(client_id)
    assert (pos["net_1e8"], pos["cost_1e8"], pos["fees_1e8"], pos["fill_count"]) == (2 * Q, Q, 2_000_000, 2)
    # selling one back realizes P&L on the existing row
    later = TradeBatch(fills=[fill_row("g1", client_id, 3, ts=102.0, side="sell", price=6000)])
    ts.commit(later)
    (pos,) = ts.positions(client_id)
    assert (pos["net_1e8"], pos["realized_1e8"]) == (Q, Q // 10)
    assert ts.max_fill_seq() == 3


def test_a_failed_commit_leaves_nothing_behind(store: Store, ts: TradingStore, client_id: str) -> None:
    ts.create_graph(graph_row("g1", client_id), [node_row("g1", client_id)])
    bad = TradeBatch(fills=[fill_row("g1", client_id, 1, ts=1.0), fill_row("g1", client_id, 1, ts=1.0)])
    bad.node("g1", "leg", status="filled")
    with pytest.raises(Exception):  # noqa: B017 - duplicate primary key, either driver's error
        ts.commit(bad)
    assert ts.list_fills(client_id) == [] and ts.positions(client_id) == []
    g = ts.get_graph(client_id, "g1")
    assert g is not None and g["nodes"][0]["status"] == "pending"


def test_fill_filters_and_keyset_paging(store: Store, ts: TradingStore, client_id: str) -> None:
    ts.create_graph(graph_row("g1", client_id), [node_row("g1", client_id)])
    ts.create_graph(graph_row("g2", client_id), [node_row("g2", client_id)])
    batch = TradeBatch(fills=[fill_row("g1", client_id, i, ts=100.0 + i) for i in range(1, 6)]
                       + [fill_row("g2", client_id, 9, ts=103.0, symbol="T-YES", paper=True)])
    ts.commit(batch)
    assert len(ts.list_fills(client_id)) == 6
    assert [f["seq"] for f in ts.list_fills(client_id, graph_id="g2")] == [9]
    assert [f["seq"] for f in ts.list_fills(client_id, symbol="S-YES", since=103.0)] == [5, 4, 3]
    page = ts.list_fills(client_id, limit=2)
    assert [f["seq"] for f in page] == [5, 4]
    rest = ts.list_fills(client_id, before=(page[-1]["ts"], page[-1]["seq"]))
    assert [f["seq"] for f in rest] == [9, 3, 2, 1]
    assert {p["sandbox"] for p in ts.positions(client_id)} == {True, False}
    assert [p["symbol"] for p in ts.positions(client_id, paper=True)] == ["T-YES"]


def test_load_active_returns_graphs_with_their_nodes(store: Store, ts: TradingStore, client_id: str) -> None:
    ts.create_graph(graph_row("g1", client_id), [node_row("g1", client_id, "a", 0), node_row("g1", client_id, "b", 1)])
    ts.create_graph(graph_row("g2", client_id), [node_row("g2", client_id)])
    done = TradeBatch()
    done.graph("g2", status="completed")
    ts.commit(done)
    (g,) = ts.load_active()
    assert g["graph_id"] == "g1" and [n["node_id"] for n in g["nodes"]] == ["a", "b"]


def test_a_step_writes_the_same_rows_by_driver_sql_as_by_core(tmp_path: Any) -> None:
    """On SQLite a step is written by driver SQL (``_apply_sqlite``); the Core path
    (``_apply``, PostgreSQL's) must leave every table the same: creates with edges, fills
    folded into a new and an existing position (paper and real apart), node and graph
    updates with different column sets, NULLs and booleans."""
    import sqlalchemy as sa

    from sequence.store import tables as t
    from sequence.store.db import Database

    def run(driver: bool) -> dict[str, list[tuple[Any, ...]]]:
        db = Database(f"sqlite:///{tmp_path / ('d' if driver else 'c')}.db")
        db.migrate()
        cid = Store(db).create_client("acme")
        ts = TradingStore(db)
        if not driver:
            ts._apply_sqlite = ts._apply  # type: ignore[method-assign]  # Core, as on PostgreSQL
        ts.create_graph(graph_row("g1", cid), [node_row("g1", cid)])
        first = TradeBatch()
        edges = [{"from": "a", "to": "b", "trigger": "filled"}]
        first.creates.append(({**graph_row("g2", cid, paper=True), "node_count": 2, "edge_count": 1, "edges": edges},
                              [{**node_row("g2", cid, "a", 0), "never_crosses": True},
                               {**node_row("g2", cid, "b", 1), "activation": "after", "limit_units": None,
                                "book_limit": None, "limit_price": None}]))
        first.fills += [fill_row("g1", cid, 1, ts=101.0), fill_row("g2", cid, 2, ts=101.5, paper=True)]
        first.node("g1", "leg", status="working", filled_1e8=Q, fill_count=1, reason=None)
        first.node("g2", "a", status="filled", filled_1e8=2 * Q, ended_at=101.5)
        first.graph("g2", updated_at=101.5)
        second = TradeBatch(fills=[fill_row("g1", cid, 3, ts=102.0, side="sell", price=6000)])
        second.node("g1", "leg", status="filled", ended_at=102.0, reason="done")
        second.graph("g1", status="completed", ended_at=102.0, updated_at=102.0)
        ts.commit_all([first, second])
        out = {}
        with db.read() as c:
            for table in (t.graphs, t.graph_nodes, t.fills, t.positions):
                cols = [col for col in table.c if col.name != "client_id"]  # a fresh id per database
                out[table.name] = [tuple(r) for r in c.execute(sa.select(*cols).order_by(*table.primary_key.c))]
        db.dispose()
        return out

    driver, core = run(True), run(False)
    assert driver == core
    assert len(driver["fills"]) == 3 and len(driver["positions"]) == 2 and len(driver["graph_nodes"]) == 3
