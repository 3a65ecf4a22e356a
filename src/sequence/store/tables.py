"""The relational schema, declared once (SQLAlchemy Core).

Migrations in ``migrations/versions`` must produce exactly this schema; a test
compares the two on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Timestamps are stored as epoch seconds (float): portable across SQLite and
# PostgreSQL, cheap to compare, and rendered to ISO-8601 at the API edge.
Ts = sa.Float

clients = sa.Table(
    "clients",
    metadata,
    sa.Column("client_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", Ts, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(40), primary_key=True),
    sa.Column("client_id", sa.String(32), sa.ForeignKey("clients.client_id", ondelete="CASCADE"), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(24), nullable=False),
    sa.Column("mode", sa.String(8), nullable=False),  # live | test
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    # A run-scoped key is minted for one run and dies with it (fencing).
    sa.Column("run_id", sa.String(40), nullable=True, index=True),
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("revoked_at", Ts, nullable=True),
    sa.Column("last_used_at", Ts, nullable=True),
)

strategies = sa.Table(
    "strategies",
    metadata,
    sa.Column("strategy_id", sa.String(40), primary_key=True),
    sa.Column("client_id", sa.String(32), sa.ForeignKey("clients.client_id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("runtime", sa.String(16), nullable=False),
    sa.Column("entrypoint", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("desired_state", sa.String(16), nullable=False),
    sa.Column("artifact_id", sa.String(40), nullable=True),
    sa.Column("artifact_sha256", sa.String(64), nullable=False),
    sa.Column("artifact_size", sa.BigInteger, nullable=False),
    sa.Column("env", sa.JSON, nullable=False),
    sa.Column("manifest", sa.JSON, nullable=False),
    sa.Column("secret_names", sa.JSON, nullable=False),
    sa.Column("secrets_ciphertext", sa.LargeBinary, nullable=True),
    sa.Column("secrets_nonce", sa.LargeBinary, nullable=True),
    sa.Column("secrets_key_id", sa.String(32), nullable=True),
    sa.Column("sequence_api_key_ciphertext", sa.LargeBinary, nullable=True),
    sa.Column("sequence_api_key_nonce", sa.LargeBinary, nullable=True),
    sa.Column("sequence_api_key_key_id", sa.String(32), nullable=True),
    sa.Column("api_key_id", sa.String(40), nullable=True),
    sa.Column("is_sandbox", sa.Boolean, nullable=False),
    sa.Column("memory_mb", sa.Integer, nullable=False),
    sa.Column("stop_timeout_s", sa.Float, nullable=False),
    sa.Column("placement", sa.JSON, nullable=False),
    sa.Column("region", sa.String(32), nullable=True),
    # Workspace disk quota (MiB) and egress policy ("public" | "none"), enforced by the runner.
    sa.Column("disk_mb", sa.Integer, nullable=False, server_default="1024"),
    sa.Column("egress", sa.String(16), nullable=False, server_default="public"),
    sa.Column("restart_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_restart_at", Ts, nullable=True),
    sa.Column("last_exit", sa.JSON, nullable=True),
    sa.Column("current_run_id", sa.String(40), nullable=True),
    # The dependency layer (sequence.deps: the lock's hash) the strategy runs with, if any.
    sa.Column("layer_id", sa.String(64), nullable=True),
    sa.Column("queued_at", Ts, nullable=True),
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("updated_at", Ts, nullable=False),
    sa.UniqueConstraint("client_id", "name"),
    sa.Index(None, "status", "next_restart_at"),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("artifact_id", sa.String(40), primary_key=True),
    sa.Column("strategy_id", sa.String(40), sa.ForeignKey("strategies.strategy_id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", Ts, nullable=False),
)

# Dependency layers (docs/configuration.md, "Dependencies"): a lock (wheel file names,
# hashes, sizes) and the wheels' bytes, stored once however many strategies and clients
# use them. A client may deploy a layer only once it has uploaded every wheel itself
# (wheel_owners): a wheel's hash alone proves nothing about having its bytes.
layers = sa.Table(
    "layers",
    metadata,
    sa.Column("layer_id", sa.String(64), primary_key=True),
    sa.Column("target", sa.JSON, nullable=False),
    sa.Column("wheels", sa.JSON, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("last_used_at", Ts, nullable=False),
)

wheels = sa.Table(
    "wheels",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", Ts, nullable=False),
)

wheel_owners = sa.Table(
    "wheel_owners",
    metadata,
    sa.Column("client_id", sa.String(32), sa.ForeignKey("clients.client_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("sha256", sa.String(64), sa.ForeignKey("wheels.sha256", ondelete="CASCADE"), primary_key=True),
)

runners = sa.Table(
    "runners",
    metadata,
    sa.Column("runner_id", sa.String(40), primary_key=True),
    sa.Column("token_id", sa.String(40), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("region", sa.String(200), nullable=False),  # comma-separated
    sa.Column("capacity", sa.Integer, nullable=False),
    sa.Column("isolation", sa.JSON, nullable=False),
    sa.Column("registered_at", Ts, nullable=False),
    sa.Column("last_seen_at", Ts, nullable=False),
    # Bumped each time the runner opens its watch connection: a close only shortens
    # the leases if no newer watch was opened since (RunsStore.watch_closed).
    sa.Column("watch_epoch", sa.Integer, nullable=False, server_default="0"),
    # Set by its first exit report that says it is shutting down: a poll it still has open is
    # given no new run (it would never start it, and the run would wait out a lease).
    sa.Column("draining_at", Ts, nullable=True),
    # Its last heartbeat (a poll does not count: a poll left open by a frozen or cut-off
    # runner must not be given runs). None: registered before migration 0009.
    sa.Column("beat_at", Ts, nullable=True),
)

runner_tokens = sa.Table(
    "runner_tokens",
    metadata,
    sa.Column("token_id", sa.String(40), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("revoked_at", Ts, nullable=True),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("strategy_id", sa.String(40), sa.ForeignKey("strategies.strategy_id", ondelete="CASCADE"), nullable=False),
    sa.Column("client_id", sa.String(32), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("runner_id", sa.String(40), nullable=True),
    sa.Column("region", sa.String(32), nullable=True),
    sa.Column("artifact_id", sa.String(40), nullable=True),
    sa.Column("artifact_sha256", sa.String(64), nullable=False),
    sa.Column("layer_id", sa.String(64), nullable=True),  # the strategy's layer when claimed
    sa.Column("lease_expires_at", Ts, nullable=True),
    sa.Column("stop_requested_at", Ts, nullable=True),
    sa.Column("claimed_at", Ts, nullable=False),
    sa.Column("started_at", Ts, nullable=True),
    sa.Column("ended_at", Ts, nullable=True),
    # 'A' while the run is active, NULL once it ended.  NULLs never collide in
    # a unique constraint, so uq_runs_one_active makes "two active runs of one
    # strategy" impossible in the database itself, on SQLite and PostgreSQL.
    sa.Column("active_guard", sa.String(1), nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("exit_signal", sa.Integer, nullable=True),
    sa.Column("oom", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("peak_rss_bytes", sa.BigInteger, nullable=True),
    sa.Column("cpu_seconds", sa.Float, nullable=True),
    sa.Column("log_lines", sa.BigInteger, nullable=False, server_default="0"),
    # Retention: bytes of this run's stored lines, and how many of its oldest lines
    # were dropped (they are always a prefix: seq 1..dropped_lines).
    sa.Column("log_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("dropped_lines", sa.BigInteger, nullable=False, server_default="0"),
    sa.UniqueConstraint("strategy_id", "active_guard", name="uq_runs_one_active"),
    sa.Index(None, "strategy_id", "claimed_at"),
    sa.Index(None, "status", "lease_expires_at"),
)

# A run's log lines, one row per batch its runner sent (a "chunk"): consecutive seqs
# first_seq..last_seq, their columns in ``body`` as the runner's batch JSON
# ({"ts": [...], "streams": "oe…", "lines": [...], "partial": [...]}; store/logs.py).
# A row per line cost a B-tree insert and a driver round trip per line: the
# ingest ceiling on SQLite. Keyed by last_seq so "lines after seq N" is one seek.
log_chunks = sa.Table(
    "log_chunks",
    metadata,
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    # What retention counts for these lines: their characters + LOG_LINE_OVERHEAD each.
    sa.Column("nbytes", sa.BigInteger, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("run_id", "last_seq"),
    sqlite_with_rowid=False,
)

venue_credentials = sa.Table(
    "venue_credentials",
    metadata,
    sa.Column("client_id", sa.String(32), sa.ForeignKey("clients.client_id", ondelete="CASCADE"), nullable=False),
    sa.Column("venue", sa.String(32), nullable=False),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("nonce", sa.LargeBinary, nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("field_names", sa.JSON, nullable=False),
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("updated_at", Ts, nullable=False),
    sa.PrimaryKeyConstraint("client_id", "venue"),
)

# Monotonic counters (claim epochs).  One row per name, bumped inside the
# claiming transaction so epochs are strictly increasing across runners.
counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)


# -- trading: graphs, their nodes (one order each), fills and positions ------------------
#
# Quantities are integers: ``*_1e8`` columns hold quantity × 10⁸ (the API's
# ``qty_1e8``) or US dollars × 10⁸; prices are integer units of the book
# (``price_units / price_scale``). Nothing here is a float except timestamps and
# the ``limit_price`` echo kept for display.
#
# A node *is* its order: a node that activates places exactly one order, named
# ``node_order_id`` (``graph:{graph_id}:{node_id}:1``), and the node row carries
# the order's working state (filled quantity, resting flag). Fills reference it.

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
    sa.Column("sandbox", sa.Boolean, nullable=False, server_default=sa.false()),  # paper trading
    sa.Column("node_count", sa.Integer, nullable=False),
    sa.Column("edge_count", sa.Integer, nullable=False),
    sa.Column("edges", sa.JSON, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("updated_at", Ts, nullable=False),
    sa.Column("ended_at", Ts, nullable=True),
    # The WASM algo deployment that submitted it (NULL for API keys and hosted strategies).
    sa.Column("deployment_id", sa.String(40), nullable=True),
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
    # A real order at a venue (issue 14): our client order id, written before it is sent
    # (so a restart knows to look it up), and the venue's id once it acknowledged.
    sa.Column("client_order_id", sa.String(64), nullable=True),
    sa.Column("venue_order_id", sa.String(128), nullable=True),
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
    # The venue's id of a real fill: one row per venue fill, however often it is reported.
    sa.Column("venue_fill_id", sa.String(128), nullable=True),
    sa.Index(None, "client_id", "ts"),
    sa.Index(None, "client_id", "symbol", "ts"),
    sa.Index(None, "graph_id"),
    sa.Index(None, "venue", "venue_fill_id", unique=True),
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

# Risk limits of real orders (trading/risk.py): a client's (strategy_id "") and a strategy's.
risk_limits = sa.Table(
    "risk_limits",
    metadata,
    sa.Column("client_id", sa.String(32), sa.ForeignKey("clients.client_id", ondelete="CASCADE"), nullable=False),
    sa.Column("strategy_id", sa.String(40), nullable=False, server_default=""),
    sa.Column("limits", sa.Text, nullable=False),  # JSON {name: number | null}
    sa.Column("updated_at", Ts, nullable=False),
    sa.PrimaryKeyConstraint("client_id", "strategy_id"),
)

# Kill switches engaged (POST /v1/kill): the client's (strategy_id "") or one strategy's.
# While one is engaged, no real order of its scope is sent.
kill_switches = sa.Table(
    "kill_switches",
    metadata,
    sa.Column("client_id", sa.String(32), sa.ForeignKey("clients.client_id", ondelete="CASCADE"), nullable=False),
    sa.Column("strategy_id", sa.String(40), nullable=False, server_default=""),
    sa.Column("engaged_at", Ts, nullable=False),
    sa.PrimaryKeyConstraint("client_id", "strategy_id"),
)


# -- WASM algos (POST /v1/deployments): a module, its symbols and params, its lifecycle ------
#
# An algo runs inside one coordinator's market process. ``owner`` and
# ``lease_expires_at`` say which coordinator runs it; ``epoch`` counts its starts
# (its log lines carry the epoch they were written in).
deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("deployment_id", sa.String(40), primary_key=True),
    sa.Column("client_id", sa.String(32), sa.ForeignKey("clients.client_id", ondelete="CASCADE"), nullable=False),
    sa.Column("key_id", sa.String(40), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("wasm", sa.LargeBinary, nullable=False),
    sa.Column("wasm_sha256", sa.String(64), nullable=False),
    sa.Column("wasm_size", sa.Integer, nullable=False),
    sa.Column("symbols", sa.JSON, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("sandbox", sa.Boolean, nullable=False),  # paper trading (forced for seq_test_ keys)
    sa.Column("desired_state", sa.String(16), nullable=False),  # running | stopped
    sa.Column("status", sa.String(16), nullable=False),  # queued | running | stopped | failed
    sa.Column("restarts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_reason", sa.Text, nullable=True),
    sa.Column("last_exit_at", Ts, nullable=True),
    sa.Column("next_attempt_at", Ts, nullable=True),
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", Ts, nullable=True),
    sa.Column("epoch", sa.Integer, nullable=False, server_default="0"),
    sa.Column("started_at", Ts, nullable=True),
    sa.Column("created_at", Ts, nullable=False),
    sa.Column("updated_at", Ts, nullable=False),
    sa.UniqueConstraint("client_id", "name"),
    sa.Index(None, "desired_state", "status"),
)

deployment_logs = sa.Table(
    "deployment_logs",
    metadata,
    sa.Column("deployment_id", sa.String(40), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("ts", Ts, nullable=False),
    sa.Column("stream", sa.String(8), nullable=False),  # algo (its log import) | system
    sa.Column("line", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("deployment_id", "seq"),
    sqlite_with_rowid=False,
)
