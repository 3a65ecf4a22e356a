"""Storage verbs for trading: graphs, nodes (their orders), fills, positions.

The only trading code that speaks SQL. Every read is scoped to a client, and
with ``strategy_id`` (a run-scoped key's strategy) to the graphs that
strategy's runs submitted, their fills, and the positions those fills make.
:meth:`TradingStore.commit` writes fills, node and graph status and the
positions they move in **one transaction**, so a reader never sees a fill
whose node or graph status does not reflect it.

Paper trading: the ``graphs``, ``fills`` and ``positions`` tables name its flag
``sandbox`` (the wire's name; renaming the column would need a migration). Rows
keep the column's name; the code around them says ``paper``.

Exceptions::

    TradingStoreError
     ├── Fenced               the caller's run is no longer current: nothing was written
     └── IdempotencyConflict  the Idempotency-Key was used for a different request
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from sequence.store import tables as t
from sequence.store.base import row as _row
from sequence.store.db import Database
from sequence.trading.positions import Position, apply_fill_row


class TradingStoreError(Exception):
    pass


class Fenced(TradingStoreError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} is no longer current; requests made with its key place nothing")
        self.run_id = run_id


class IdempotencyConflict(TradingStoreError):
    def __init__(self, key: str, graph_id: str) -> None:
        super().__init__("this Idempotency-Key was already used for a different graph request")
        self.key, self.graph_id = key, graph_id


@dataclass
class TradeBatch:
    """Everything one engine step changed; written atomically by :meth:`TradingStore.commit`.

    ``nodes`` and ``graphs`` hold the full new values of the columns that
    changed (later updates in a batch overwrite earlier ones); ``fills`` are
    new rows, folded into ``positions`` inside the same transaction.
    """

    fills: list[dict[str, Any]] = field(default_factory=list)
    # New graphs (their row and node rows), inserted first: the algos' graphs are stored
    # with the step that placed them (TradingEngine.submit_now).
    creates: list[tuple[dict[str, Any], list[dict[str, Any]]]] = field(default_factory=list)
    nodes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    graphs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.fills or self.nodes or self.graphs or self.creates)

    def node(self, graph_id: str, node_id: str, **values: Any) -> None:
        self.nodes.setdefault((graph_id, node_id), {}).update(values)

    def graph(self, graph_id: str, **values: Any) -> None:
        self.graphs.setdefault(graph_id, {}).update(values)


@dataclass(frozen=True)
class Created:
    graph: dict[str, Any]
    created: bool  # False: an idempotent replay of an earlier submit


class TradingStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._updates: dict[tuple[str, tuple[str, ...]], sa.Update] = {}  # compiled once per column set
        self._inserts: dict[tuple[str, tuple[str, ...]], str] = {}  # SQLite's driver INSERTs, per column set

    # -- graphs ---------------------------------------------------------------------
    def create_graph(self, graph: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]], *,
                     run_id: str | None = None) -> Created:
        """Insert a graph and its nodes, unless fenced or an idempotent replay.

        With ``run_id`` (a run-scoped key) the run must still be current —
        ``runs.active_guard IS NOT NULL`` and it is its strategy's
        ``current_run_id`` — checked under a share lock inside this
        transaction, so a run ending concurrently either commits first (and we
        refuse) or waits for us.
        """
        key = graph.get("idempotency_key")
        client_id = graph["client_id"]
        graph = dict(graph)
        try:
            with self.db.write() as c:
                if run_id is not None:
                    graph["strategy_id"] = self._check_current(c, run_id)
                # A used Idempotency-Key is found by the unique (client_id, idempotency_key)
                # refusing the insert (below), not by a read first: a retry is rare, every
                # submit would pay the read.
                if self.db.is_sqlite:
                    # On every submit's path: driver SQL costs 0.2 ms less than Core here.
                    self._insert_sqlite(c, "graphs", {**graph, "edges": json.dumps(graph["edges"])})
                    for n in nodes:
                        self._insert_sqlite(c, "graph_nodes", n)
                else:
                    # Bound parameters, not .values(): the compiled INSERT is cached, and building a
                    # statement per graph cost more than the transaction (the real-order send waits on it).
                    c.execute(t.graphs.insert(), graph)
                    if len(nodes) == 1:
                        c.execute(t.graph_nodes.insert(), dict(nodes[0]))
                    elif nodes:
                        c.execute(t.graph_nodes.insert(), [dict(n) for n in nodes])
        except IntegrityError:
            # The key was used (a retry, or a concurrent submit that won): answer with that graph.
            if key is None:
                raise
            with self.db.read() as c:
                existing = self._by_key(c, client_id, key)
            if existing is None:
                raise
            return self._replay(existing, graph)
        return Created(dict(graph), True)

    def _insert_sqlite(self, c: Connection, table: str, row: Mapping[str, Any]) -> None:
        """INSERT one row by the driver, its statement cached per set of columns. The columns
        are the table's own (the rows come from the engine; their names are never user input)."""
        keys = tuple(row)
        sql = self._inserts.get((table, keys))
        if sql is None:
            known = t.metadata.tables[table].c
            if any(k not in known for k in keys):
                raise ValueError(f"{table}: unknown columns {[k for k in keys if k not in known]}")
            sql = f"INSERT INTO {table} ({', '.join(keys)}) VALUES ({', '.join(':' + k for k in keys)})"
            self._inserts[(table, keys)] = sql
        c.exec_driver_sql(sql, dict(row))

    @staticmethod
    def _replay(existing: dict[str, Any], graph: Mapping[str, Any]) -> Created:
        if existing.get("strategy_id") != graph.get("strategy_id"):
            # Another strategy's (or the client's own) graph: never hand it to this caller.
            raise IdempotencyConflict(str(graph.get("idempotency_key")), "")
        if existing.get("request_hash") != graph.get("request_hash"):
            raise IdempotencyConflict(str(graph.get("idempotency_key")), existing["graph_id"])
        return Created(existing, False)

    def _by_key(self, c: Connection, client_id: str, key: str) -> dict[str, Any] | None:
        r = c.execute(sa.select(t.graphs).where(t.graphs.c.client_id == client_id,
                                                 t.graphs.c.idempotency_key == key)).first()
        return _row(r) if r else None

    def _check_current(self, c: Connection, run_id: str) -> str:
        """The run's strategy id, if the run is current; else raises Fenced."""
        q = sa.select(t.runs.c.active_guard, t.runs.c.strategy_id).where(t.runs.c.run_id == run_id)
        if not self.db.is_sqlite:
            q = q.with_for_update(read=True)
        run = c.execute(q).first()
        if run is None or run.active_guard is None:
            raise Fenced(run_id)
        cur = c.execute(sa.select(t.strategies.c.current_run_id)
                        .where(t.strategies.c.strategy_id == run.strategy_id)).scalar()
        if cur != run_id:
            raise Fenced(run_id)
        return str(run.strategy_id)

    def graph_visible(self, client_id: str, graph_id: str, strategy_id: str | None) -> bool:
        """Whether the caller may see the graph: its client's, and with ``strategy_id`` that strategy's."""
        g = t.graphs
        q = sa.select(g.c.graph_id).where(g.c.graph_id == graph_id, g.c.client_id == client_id)
        if strategy_id is not None:
            q = q.where(g.c.strategy_id == strategy_id)
        with self.db.read() as c:
            return c.execute(q).first() is not None

    def get_graph(self, client_id: str, graph_id: str, *, strategy_id: str | None = None) -> dict[str, Any] | None:
        """The graph row with ``nodes`` (in submission order), or ``None`` for someone else's id."""
        q = sa.select(t.graphs).where(t.graphs.c.graph_id == graph_id, t.graphs.c.client_id == client_id)
        if strategy_id is not None:
            q = q.where(t.graphs.c.strategy_id == strategy_id)
        with self.db.read() as c:
            g = c.execute(q).first()
            if g is None:
                return None
            nodes = c.execute(sa.select(t.graph_nodes).where(t.graph_nodes.c.graph_id == graph_id)
                              .order_by(t.graph_nodes.c.idx)).all()
        out = _row(g)
        out["nodes"] = [_row(n) for n in nodes]
        return out

    def list_graphs(self, client_id: str, *, status: str | None = None, limit: int = 50,
                    before: tuple[float, str] | None = None, strategy_id: str | None = None) -> list[dict[str, Any]]:
        g = t.graphs
        q = sa.select(g).where(g.c.client_id == client_id)
        if strategy_id is not None:
            q = q.where(g.c.strategy_id == strategy_id)
        if status is not None:
            q = q.where(g.c.status == status)
        if before is not None:
            ts, gid = before
            q = q.where(sa.or_(g.c.created_at < ts, sa.and_(g.c.created_at == ts, g.c.graph_id < gid)))
        q = q.order_by(g.c.created_at.desc(), g.c.graph_id.desc()).limit(limit)
        with self.db.read() as c:
            return [_row(r) for r in c.execute(q)]

    def load_active(self) -> list[dict[str, Any]]:
        """Every active graph with its nodes (for the engine's restore on startup)."""
        with self.db.read() as c:
            graphs = [_row(r) for r in c.execute(
                sa.select(t.graphs).where(t.graphs.c.status == "active").order_by(t.graphs.c.created_at))]
            if not graphs:
                return []
            by_id = {g["graph_id"]: g for g in graphs}
            for g in graphs:
                g["nodes"] = []
            ids = list(by_id)
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                for r in c.execute(sa.select(t.graph_nodes).where(t.graph_nodes.c.graph_id.in_(chunk))
                                   .order_by(t.graph_nodes.c.graph_id, t.graph_nodes.c.idx)):
                    by_id[r.graph_id]["nodes"].append(_row(r))
        return graphs

    # -- the engine's atomic step ---------------------------------------------------
    def commit(self, batch: TradeBatch) -> None:
        self.commit_all([batch])

    def commit_all(self, batches: Sequence[TradeBatch]) -> None:
        """Several engine steps in one transaction, in order (the writer's group commit)."""
        batches = [b for b in batches if b]
        if not batches:
            return
        apply = self._apply_sqlite if self.db.is_sqlite else self._apply
        with self.db.write() as c:
            for batch in batches:
                apply(c, batch)

    def _apply_sqlite(self, c: Connection, batch: TradeBatch) -> None:
        """:meth:`_apply` by driver SQL: the same rows, a statement cached per set of columns.
        A marketable order's fill waits on this commit, and Core's per-statement work was
        most of it (0.85 -> 0.4 ms a fill step here; bench/README.md)."""
        for graph, nodes in batch.creates:
            self._insert_sqlite(c, "graphs", {**graph, "edges": json.dumps(graph["edges"])})
            for n in nodes:
                self._insert_sqlite(c, "graph_nodes", n)
        if batch.fills:
            for f in batch.fills:
                self._insert_sqlite(c, "fills", f)
            self._fold_positions(c, batch.fills)
        groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
        for (gid, nid), values in batch.nodes.items():
            groups.setdefault(("graph_nodes", tuple(values)), []).append({**values, "_gid": gid, "_nid": nid})
        for gid, values in batch.graphs.items():
            groups.setdefault(("graphs", tuple(values)), []).append({**values, "_gid": gid})
        for (table, columns), rows in groups.items():
            c.exec_driver_sql(self._update_sql(table, columns), rows if len(rows) > 1 else rows[0])

    def _update_sql(self, table: str, columns: tuple[str, ...]) -> str:
        sql = self._inserts.get(("update:" + table, columns))
        if sql is None:
            known = t.metadata.tables[table].c
            if any(k not in known for k in columns):
                raise ValueError(f"{table}: unknown columns {[k for k in columns if k not in known]}")
            where = "graph_id = :_gid" + (" AND node_id = :_nid" if table == "graph_nodes" else "")
            sql = f"UPDATE {table} SET {', '.join(f'{k} = :{k}' for k in columns)} WHERE {where}"
            self._inserts[("update:" + table, columns)] = sql
        return sql

    def _apply(self, c: Connection, batch: TradeBatch) -> None:
        """One step's writes: new graphs, fills (folded into positions), node and graph updates."""
        for graph, nodes in batch.creates:
            c.execute(t.graphs.insert(), graph)
            c.execute(t.graph_nodes.insert(), nodes)
        if batch.fills:
            c.execute(t.fills.insert(), batch.fills)
            self._fold_positions(c, batch.fills)
        # One cached UPDATE per set of changed columns, run with bound parameters for every
        # row that changed those columns (building a statement per row cost ~1 ms a node, and
        # on SQLite the write lock is held meanwhile).
        groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
        for (gid, nid), values in batch.nodes.items():
            groups.setdefault(("n", tuple(sorted(values))), []).append(
                {"_gid": gid, "_nid": nid, **{"v_" + k: v for k, v in values.items()}})
        for gid, values in batch.graphs.items():
            groups.setdefault(("g", tuple(sorted(values))), []).append(
                {"_gid": gid, **{"v_" + k: v for k, v in values.items()}})
        for key, rows in groups.items():
            c.execute(self._update(*key), rows)

    def _update(self, table: str, columns: tuple[str, ...]) -> sa.Update:
        stmt = self._updates.get((table, columns))
        if stmt is None:
            if table == "n":
                n = t.graph_nodes
                stmt = n.update().where(n.c.graph_id == sa.bindparam("_gid"), n.c.node_id == sa.bindparam("_nid"))
            else:
                g = t.graphs
                stmt = g.update().where(g.c.graph_id == sa.bindparam("_gid"))
            stmt = stmt.values({k: sa.bindparam("v_" + k) for k in columns})
            self._updates[(table, columns)] = stmt
        return stmt

    def _fold_positions(self, c: Connection, fills: Iterable[Mapping[str, Any]]) -> None:
        p = t.positions
        groups: dict[tuple[str, bool, str], list[Mapping[str, Any]]] = {}
        for f in fills:
            groups.setdefault((f["client_id"], bool(f["sandbox"]), f["symbol"]), []).append(f)
        for (client_id, paper, symbol), rows in groups.items():
            if self.db.is_sqlite:  # driver SQL, as in _apply_sqlite (the write lock is held)
                cur = c.exec_driver_sql("SELECT * FROM positions WHERE client_id = ? AND sandbox = ? AND symbol = ?",
                                        (client_id, paper, symbol)).first()
                pos = Position() if cur is None else Position.from_row(_row(cur))
                for f in rows:
                    pos = apply_fill_row(pos, f)
                values = {"venue": rows[-1]["venue"], **pos.columns(), "updated_at": rows[-1]["ts"]}
                if cur is None:
                    self._insert_sqlite(c, "positions", {"client_id": client_id, "sandbox": paper, "symbol": symbol,
                                                         **values})
                else:
                    sets = ", ".join(f"{k} = :{k}" for k in values)
                    c.exec_driver_sql(f"UPDATE positions SET {sets} WHERE client_id = :_c AND sandbox = :_s "
                                      "AND symbol = :_y", {**values, "_c": client_id, "_s": paper, "_y": symbol})
                continue
            where = (p.c.client_id == client_id, p.c.sandbox == paper, p.c.symbol == symbol)
            q = sa.select(p).where(*where).with_for_update()
            cur = c.execute(q).first()
            pos = Position() if cur is None else Position.from_row(_row(cur))
            for f in rows:
                pos = apply_fill_row(pos, f)
            values = {"venue": rows[-1]["venue"], **pos.columns(), "updated_at": rows[-1]["ts"]}
            if cur is None:
                c.execute(p.insert().values(client_id=client_id, sandbox=paper, symbol=symbol, **values))
            else:
                c.execute(p.update().where(*where).values(**values))

    # -- fills & positions ------------------------------------------------------------
    def list_fills(self, client_id: str, *, symbol: str | None = None, graph_id: str | None = None,
                   since: float | None = None, limit: int = 50,
                   before: tuple[float, int] | None = None, strategy_id: str | None = None) -> list[dict[str, Any]]:
        """Newest first: by ``ts`` then ``seq``. ``since`` is inclusive; ``before`` is a keyset cursor."""
        f = t.fills
        q = sa.select(f).where(f.c.client_id == client_id)
        if strategy_id is not None:
            q = q.where(f.c.graph_id.in_(sa.select(t.graphs.c.graph_id).where(
                t.graphs.c.client_id == client_id, t.graphs.c.strategy_id == strategy_id)))
        if symbol is not None:
            q = q.where(f.c.symbol == symbol)
        if graph_id is not None:
            q = q.where(f.c.graph_id == graph_id)
        if since is not None:
            q = q.where(f.c.ts >= since)
        if before is not None:
            ts, seq = before
            q = q.where(sa.or_(f.c.ts < ts, sa.and_(f.c.ts == ts, f.c.seq < seq)))
        q = q.order_by(f.c.ts.desc(), f.c.seq.desc()).limit(limit)
        with self.db.read() as c:
            return [_row(r) for r in c.execute(q)]

    def real_fills(self) -> list[dict[str, Any]]:
        """Every real (not paper) fill with its graph's ``strategy_id``, oldest first: the
        engine folds them into the risk exposure (positions, today's realized P&L) at start."""
        f, g = t.fills, t.graphs
        q = (sa.select(f.c.client_id, f.c.symbol, f.c.side, f.c.price_units, f.c.price_scale, f.c.qty_1e8,
                       f.c.fee_1e8, f.c.ts, f.c.venue, f.c.venue_fill_id, g.c.strategy_id)
             .join(g, g.c.graph_id == f.c.graph_id).where(f.c.sandbox == sa.false())
             .order_by(f.c.ts, f.c.seq))
        with self.db.read() as c:
            return [_row(r) for r in c.execute(q)]

    def max_fill_seq(self) -> int:
        with self.db.read() as c:
            return int(c.execute(sa.select(sa.func.max(t.fills.c.seq))).scalar() or 0)

    def max_order_seq(self) -> int:
        with self.db.read() as c:
            return int(c.execute(sa.select(sa.func.max(t.graph_nodes.c.order_seq))).scalar() or 0)

    def positions(self, client_id: str, *, paper: bool | None = None,
                  symbol: str | None = None, strategy_id: str | None = None) -> list[dict[str, Any]]:
        """Positions per (paper, symbol); ``paper`` None: both paper and live rows."""
        if strategy_id is not None:
            return self._strategy_positions(client_id, strategy_id, paper=paper, symbol=symbol)
        p = t.positions
        q = sa.select(p).where(p.c.client_id == client_id)
        if paper is not None:
            q = q.where(p.c.sandbox == paper)
        if symbol is not None:
            q = q.where(p.c.symbol == symbol)
        q = q.order_by(p.c.sandbox, p.c.symbol)
        with self.db.read() as c:
            return [_row(r) for r in c.execute(q)]

    def _strategy_positions(self, client_id: str, strategy_id: str, *, paper: bool | None,
                            symbol: str | None) -> list[dict[str, Any]]:
        """One strategy's positions, folded from its fills in commit order (the rows
        :meth:`commit` keeps are per client; a run key sees only its strategy's)."""
        f, g = t.fills, t.graphs
        q = (sa.select(f).where(f.c.client_id == client_id, f.c.graph_id.in_(
            sa.select(g.c.graph_id).where(g.c.client_id == client_id, g.c.strategy_id == strategy_id))))
        if paper is not None:
            q = q.where(f.c.sandbox == paper)
        if symbol is not None:
            q = q.where(f.c.symbol == symbol)
        folded: dict[tuple[bool, str], tuple[Position, Mapping[str, Any]]] = {}
        with self.db.read() as c:
            for r in c.execute(q.order_by(f.c.seq)):
                key = (bool(r.sandbox), r.symbol)
                pos = folded[key][0] if key in folded else Position()
                fill = _row(r)
                folded[key] = (apply_fill_row(pos, fill), fill)
        out = []
        for (sb, sym), (pos, last) in sorted(folded.items()):
            out.append({"client_id": client_id, "sandbox": sb, "symbol": sym, "venue": last["venue"],
                        **pos.columns(), "updated_at": last["ts"]})
        return out
