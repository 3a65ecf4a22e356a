"""Trading tables (graphs, nodes, fills, positions), on the shared metadata.

Quantities are integers: ``*_1e8`` columns hold quantity × 10⁸ (the API's
``qty_1e8``) or US dollars × 10⁸; prices are integer units of the book
(``price_units / price_scale``). Nothing here is a float except timestamps and
the ``limit_price`` echo kept for display.

A node *is* its order: a node that activates places exactly one order, named
``node_order_id`` (``graph:{graph_id}:{node_id}:1``), and the node row carries
the order's working state (filled quantity, resting flag). Fills reference it.
"""

from __future__ import annotations

import sqlalchemy as sa

from sequence.store.tables import Ts, metadata

graphs = sa.Table(
    "graphs",
    metadata,
    sa.Column("graph_id", sa.String(40), primary_key=True),
    sa.Column("client_id", sa.String(32), sa.ForeignKey("clients.client_id", ondelete="CASCADE"), nullable=False),
    sa.Column("key_id", sa.String(40), nullable=False),
    sa.Column("run_id", sa.String(40), nullable=True),
    # The strategy whose run key submitted it (NULL for a client key): run keys see only these.
    sa.Column("strategy_id", sa.String(40), nullable=True),
    # Per client; NULLs never collide, so graphs without a key are unconstrained.
    sa.Column("idempotency_key", sa.String(255), nullable=True),
    sa.Column("request_hash", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("sandbox", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("node_count", sa.Integer, nullable=False),
    sa.Column("edge_count", sa.Integer, nullable=False),
    sa.Column("edges", sa.JSON, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("updated_at", Ts, nullable=False),
    sa.Column("ended_at", Ts, nullable=True),
    sa.UniqueConstraint("client_id", "idempotency_key"),
    sa.Index(None, "client_id", "created_at"),
    sa.Index(None, "strategy_id", "created_at"),
    sa.Index(None, "status"),
)

graph_nodes = sa.Table(
    "graph_nodes",
    metadata,
    sa.Column("graph_id", sa.String(40), sa.ForeignKey("graphs.graph_id", ondelete="CASCADE"), nullable=False),
    sa.Column("node_id", sa.String(64), nullable=False),
    sa.Column("idx", sa.Integer, nullable=False),
    sa.Column("client_id", sa.String(32), nullable=False),
    sa.Column("node_order_id", sa.String(160), nullable=False),
    sa.Column("symbol", sa.String(128), nullable=False),
    sa.Column("book_symbol", sa.String(128), nullable=False),
    sa.Column("venue", sa.String(32), nullable=False),
    sa.Column("instrument_type", sa.String(16), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),  # buy | sell, in the symbol's terms
    sa.Column("book_side", sa.String(4), nullable=False),  # bid | ask, in the book's terms
    sa.Column("qty_1e8", sa.BigInteger, nullable=False),
    sa.Column("limit_price", sa.Float, nullable=True),  # echo of the request, for display
    sa.Column("limit_units", sa.BigInteger, nullable=True),  # symbol's terms; NULL = market order
    sa.Column("book_limit", sa.BigInteger, nullable=True),  # book's terms
    sa.Column("price_scale", sa.Integer, nullable=False),
    sa.Column("size_scale", sa.BigInteger, nullable=False),
    sa.Column("urgency", sa.String(8), nullable=False),
    sa.Column("activation", sa.String(16), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    # Below the venue's minimum notional: accepted, working, never crosses.
    sa.Column("never_crosses", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("filled_1e8", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("notional_1e8", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("fees_1e8", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("fill_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("order_seq", sa.BigInteger, nullable=True),  # time priority among resting orders
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("activated_at", Ts, nullable=True),
    sa.Column("updated_at", Ts, nullable=False),
    sa.Column("ended_at", Ts, nullable=True),
    sa.PrimaryKeyConstraint("graph_id", "node_id"),
    sa.Index(None, "status"),
)

fills = sa.Table(
    "fills",
    metadata,
    sa.Column("fill_id", sa.String(40), primary_key=True),
    # Tie-breaker for fills sharing a timestamp (monotonic within a coordinator).
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("client_id", sa.String(32), nullable=False),
    sa.Column("graph_id", sa.String(40), sa.ForeignKey("graphs.graph_id", ondelete="CASCADE"), nullable=False),
    sa.Column("node_id", sa.String(64), nullable=False),
    sa.Column("node_order_id", sa.String(160), nullable=False),
    sa.Column("symbol", sa.String(128), nullable=False),
    sa.Column("venue", sa.String(32), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),
    sa.Column("price_units", sa.BigInteger, nullable=False),
    sa.Column("price_scale", sa.Integer, nullable=False),
    sa.Column("qty_1e8", sa.BigInteger, nullable=False),
    sa.Column("fee_1e8", sa.BigInteger, nullable=False),
    sa.Column("liquidity", sa.String(8), nullable=False),  # maker | taker
    sa.Column("sandbox", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("ts", Ts, nullable=False),
    sa.Index(None, "client_id", "ts"),
    sa.Index(None, "client_id", "symbol", "ts"),
    sa.Index(None, "graph_id"),
)

positions = sa.Table(
    "positions",
    metadata,
    sa.Column("client_id", sa.String(32), sa.ForeignKey("clients.client_id", ondelete="CASCADE"), nullable=False),
    sa.Column("sandbox", sa.Boolean, nullable=False),
    sa.Column("symbol", sa.String(128), nullable=False),
    sa.Column("venue", sa.String(32), nullable=False),
    sa.Column("net_1e8", sa.BigInteger, nullable=False),
    # Signed cost of the open quantity in USD × 1e8 (negative for a short).
    sa.Column("cost_1e8", sa.BigInteger, nullable=False),
    sa.Column("realized_1e8", sa.BigInteger, nullable=False),
    sa.Column("fees_1e8", sa.BigInteger, nullable=False),
    sa.Column("fill_count", sa.Integer, nullable=False),
    sa.Column("updated_at", Ts, nullable=False),
    sa.PrimaryKeyConstraint("client_id", "sandbox", "symbol"),
)
