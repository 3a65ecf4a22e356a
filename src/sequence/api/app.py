"""The coordinator's app: its shared objects, routes, error envelope and lifespan.

:func:`create_app` assembles everything: the store-backed routes
(strategies, keys, runners), and — with the market — the market service
(:func:`build_market`, from the settings), its routes ahead of every other
(``/v1/quotes`` is the hot path), the graph engine and its routes, and
``/v1/stream`` with the ``logs:`` channel. The lifespan starts the market
service, then the engine (which restores working orders), and stops them in
the reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sequence import __version__
from sequence.algos.manager import AlgoManager
from sequence.api import errors
from sequence.api.auth import Authenticator
from sequence.api.fastpath import CoordinatorApp, QuotesFastPath, request_id
from sequence.api.gcpace import GcPacer
from sequence.api.notify import QUEUE, Notifier, strategy_topic
from sequence.api.routes import (
    controls,
    deployments,
    keys,
    market,
    runners,
    strategies,
    stream,
    trading,
)
from sequence.api.routes import dashboard as dashboard_routes
from sequence.api.routes import layers as layer_routes
from sequence.api.services import dashboard as dashboard_service
from sequence.api.services import layers, logs, orders
from sequence.api.state import Core
from sequence.market import setup
from sequence.market.clock import Clock
from sequence.market.service import MarketService
from sequence.secrets import ENV_OLD_KEYS, KEY_FILE_NAME, KeyConfigError, Keyring
from sequence.settings import Settings
from sequence.store.db import Database
from sequence.store.store import Store

log = logging.getLogger("sequence.coordinator")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sequence_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("sequence_http_request_seconds", "HTTP request latency", ["route"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5))
        self.leases_expired = Counter("sequence_leases_expired_total", "Runs whose lease expired",
                                      registry=self.registry)
        self.strategies = Gauge("sequence_strategies", "Strategies by status", ["status"], registry=self.registry)
        self.runners = Gauge("sequence_runners_connected", "Runners seen within two lease periods",
                             registry=self.registry)
        self.gc_pause = Histogram("sequence_gc_pause_seconds", "Python garbage collections, by generation",
                                  ["generation"], registry=self.registry,
                                  buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5))


class VenueCollector:
    """``/metrics`` for the market's venues, read from :meth:`MarketService.venue_status` at
    scrape time (the same figures ``/v1/venues`` and ``/v1/health`` show)."""

    COUNTERS = ("messages", "resyncs", "reconnects", "stalls", "errors", "throttled")

    def __init__(self, core: Core) -> None:
        self.core = core

    def collect(self) -> Iterator[Metric]:
        market = self.core.market
        if market is None:
            return
        status = market.venue_status()
        up = GaugeMetricFamily("sequence_venue_connected", "1 while the venue's market data flows "
                               "(simulated and replayed venues: always)", labels=["venue", "mode"])
        age = GaugeMetricFamily("sequence_venue_last_message_age_seconds",
                                "Seconds since the live venue last sent anything", labels=["venue"])
        books = GaugeMetricFamily("sequence_venue_books_subscribed", "Live books being fed", labels=["venue"])
        counters = {name: CounterMetricFamily(f"sequence_venue_{name}", f"Live venue {name}", labels=["venue"])
                    for name in self.COUNTERS}
        for venue, st in status.items():
            up.add_metric([venue, st.get("mode", "sim")], 1.0 if st.get("connected", True) else 0.0)
            if st.get("mode") != "live":
                continue
            if st.get("last_message_age_s") is not None:
                age.add_metric([venue], float(st["last_message_age_s"]))
            books.add_metric([venue], float(st.get("subscribed", 0)))
            for name, family in counters.items():
                family.add_metric([venue], float(st.get(name, 0)))
        yield up
        yield age
        yield books
        yield from counters.values()


#: The methods /metrics counts by name; the rest are "other".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMiddleware:
    """Request ids and Prometheus metrics, as plain ASGI (cheap on hot paths)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                rid = v[:64]
                break
        rid = rid or request_id()
        scope["sequence.request_id"] = rid.decode("latin-1")
        start = time.perf_counter()
        status = [500]

        async def _send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
                msg.setdefault("headers", [])
                msg["headers"] = [*msg["headers"], (b"x-request-id", rid)]
            await send(msg)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            method = scope["method"]
            if method not in _METHODS:  # any token is a method to the server: one label each would grow for ever
                method = "other"
            self.metrics.requests.labels(method, path, str(status[0])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)


class _DenialNoiseFilter(logging.Filter):
    """uvicorn logs "ASGI callable returned without completing handshake" after a
    WebSocket denial response (our 401 with a JSON body for a bad key), although
    the client received that 401. Drop exactly that line; every other error stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


def _quiet_ws_denials() -> None:
    lg = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DenialNoiseFilter) for f in lg.filters):
        lg.addFilter(_DenialNoiseFilter())


def build_core(settings: Settings, environ: Mapping[str, str] | None = None) -> Core:
    db = Database(settings.effective_database_url)
    db.migrate()
    store = Store(db, lease_seconds=settings.lease_seconds, log_retention_bytes=settings.log_retention_bytes)
    sealed = store.sealed_key_ids()
    # A store with sealed values and no key configured is a restored backup without its key
    # file (or a wrong data dir): a new key would be generated and every secret stay sealed.
    try:
        keyring = Keyring.load(settings.data_dir, environ, create=not sealed)
    except KeyConfigError as exc:
        if not sealed:
            raise
        raise KeyConfigError(f"{exc}, and the store holds {sum(sealed.values())} value(s) sealed under credential "
                             f"key(s) {', '.join(sorted(sealed))}: restore that key file (or set the variable) from "
                             "your backup; a new key could not open them") from None
    missing = {k: n for k, n in sealed.items() if not keyring.has(k)}
    if missing:
        log.error("%d stored secret(s) are sealed under credential key(s) %s, which are not loaded: the "
                  "strategies and venue credentials sealed under them cannot be used until the key is given "
                  "back (as an older line of %s, or in %s)", sum(missing.values()), ", ".join(sorted(missing)),
                  KEY_FILE_NAME, ENV_OLD_KEYS)
    return Core(settings=settings, store=store, keyring=keyring, auth=Authenticator(store), notifier=Notifier())


def build_market(settings: Settings, *, clock: Clock | None = None) -> MarketService:
    """The market service the settings describe (:func:`sequence.market.setup.build_market`)."""
    return setup.build_market(settings, clock=clock)


def create_app(settings: Settings | None = None, *, environ: Mapping[str, str] | None = None,
               core: Core | None = None, market: MarketService | None = None,
               with_market: bool = True) -> FastAPI:
    """The coordinator app. ``market``: use this service instead of :func:`build_market`'s;
    ``with_market=False``: no market, trading or stream routes."""
    settings = settings or Settings.from_env(environ)
    core = core or build_core(settings, environ)
    _quiet_ws_denials()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        core.notifier.bind(asyncio.get_running_loop())
        core.store.db.start_checkpointer()  # SQLite: WAL checkpoints off the commit path
        core.auth.start()  # PostgreSQL: hear the other replicas' key invalidations
        if core.market is not None:
            await core.market.start()
        if core.trading is not None:
            await core.trading.start()  # after the market: it restores orders into its books
        if core.algos is not None:
            await core.algos.start()  # after the engine: algos place orders through it
        # Leases that lapsed while this coordinator was down are not the runners' fault: they get
        # one lease from now — when it can answer them, not from when it began starting (a slow
        # start, say a big restore on a busy machine, would otherwise eat the grace).
        core.store.begin_lease_grace()
        # Last: what startup built is frozen out of every later collection.
        pacer = GcPacer(settings.gc_pacing_ms / 1000, lambda gen, s: metrics.gc_pause.labels(str(gen)).observe(s))
        pacer.start()
        tasks = [asyncio.create_task(_reaper(core, metrics)), asyncio.create_task(_layer_collector(core))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await pacer.stop()
            if core.algos is not None:
                await core.algos.stop()  # first: it cancels its algos' working orders
            if core.trading is not None:
                await core.trading.stop()
            if core.market is not None:
                await core.market.stop()
            await anyio.to_thread.run_sync(core.auth.stop)  # joins its threads (≤ 1 s)
            await anyio.to_thread.run_sync(core.store.db.stop_checkpointer)

    app = CoordinatorApp(title="Sequence", version=__version__, lifespan=lifespan,
                         description="Hosted Python strategies and the market API they call.")
    app.state.core = core
    app.state.auth = core.auth
    app.state.metrics = metrics
    errors.install(app)

    metrics.registry.register(VenueCollector(core))

    @app.get("/v1/health", tags=["health"])
    def health() -> dict[str, Any]:
        out: dict[str, Any] = {"ok": True, "version": __version__}
        if core.market is not None:  # mode and connection only: errors are for /v1/venues (authenticated)
            out["venues"] = {v: {k: st.get(k) for k in ("mode", "state", "connected", "last_message_age_s")}
                             for v, st in core.market.venue_status().items()}
        return out

    @app.get("/metrics", include_in_schema=False)
    def prom() -> Response:
        counts = core.store.count_strategies_by_status()
        for status in ("queued", "running", "stopping", "stopped", "failed"):
            metrics.strategies.labels(status).set(counts.get(status, 0))
        metrics.runners.set(len(core.store.list_runners(seen_within=core.settings.lease_seconds * 2)))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(strategies.router)
    app.include_router(layer_routes.router)
    app.include_router(keys.router)
    app.include_router(runners.router)
    dashboard_routes.install(app)  # /dashboard: the web dashboard (pages, not in /openapi.json)
    if with_market:
        _attach_market(app, core, market or build_market(settings))
    app.add_middleware(RequestMiddleware, metrics=metrics)
    return app


def _attach_market(app: FastAPI, core: Core, service: MarketService) -> None:
    """The market service, the graph engine over it, their routes and ``/v1/stream``."""
    core.market = service
    app.state.market = service  # the market routes read it (the standalone app has no core)
    app.state.hub = service.hub
    market.install_routes(app)  # ahead of the others: /v1/quotes is the hot path
    if isinstance(app, CoordinatorApp):  # and its plain, authorised case before the framework
        metrics = app.state.metrics
        app.quotes_fast_path = QuotesFastPath(service, core.auth, metrics.requests, metrics.latency)
    core.trading = orders.build_engine(core, service)  # real orders route to the live venues
    app.include_router(trading.router)
    app.include_router(controls.router)  # /v1/risk, /v1/kill
    st = core.settings
    core.algos = AlgoManager(core.store, service, core.trading, lease_seconds=st.lease_seconds, fuel=st.algo_fuel,
                             memory_mb=st.algo_memory_mb, log_rate=st.algo_log_rate, order_rate=st.algo_order_rate)
    app.include_router(deployments.router)  # /v1/deployments: WASM algos
    # A bearer key, or the dashboard's session cookie from a page of this origin.
    stream.install_route(app, ws_authenticator=dashboard_service.ws_principal)
    logs.register(core, service.hub)  # the logs: channel of /v1/stream
    dashboard_service.register(core, service.hub)  # the strategies channel


async def _layer_collector(core: Core, every: float = 600.0) -> None:
    """Garbage-collect dependency layers no strategy used for the retention period (and their wheels)."""
    while True:
        await asyncio.sleep(every)
        try:
            await anyio.to_thread.run_sync(layers.collect, core)
        except Exception:
            log.exception("layer collection failed")


async def _reaper(core: Core, metrics: Metrics) -> None:
    """Expire lapsed leases (4 times a second: failover time is lease + this tick); lost runs re-queue."""
    while True:
        await asyncio.sleep(0.25)
        try:
            lost = await anyio.to_thread.run_sync(core.store.expire_leases)
        except Exception:  # keep the reaper alive through transient DB errors
            log.exception("lease reaper failed")
            continue
        if lost:
            metrics.leases_expired.inc(len(lost))
            log.warning("runner lost: expired %d run(s): %s", len(lost), ", ".join(lost))
            core.auth.invalidate()
            core.notifier.notify(QUEUE)
            if core.trading is not None:  # a lost run's real orders must not keep working
                for run_id in lost:
                    core.trading.cancel_run_soon(run_id)
            for run_id in lost:
                run = await anyio.to_thread.run_sync(core.store.get_run, run_id)
                if run:
                    core.notifier.notify(strategy_topic(run["strategy_id"]))
