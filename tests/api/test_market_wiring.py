"""How the coordinator app gets its market service, graph engine and stream (``sequence.api.app``)."""

from __future__ import annotations

from pathlib import Path

from sequence.api.app import build_market, create_app
from sequence.api.state import core_of
from sequence.market import ManualClock, MarketService
from sequence.settings import Settings
from tests.market.conftest import run_for


def test_the_app_exposes_the_service_the_settings_describe_and_its_routes(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, market_seed=3, market_rate_hz=16.0), environ={})
    core = core_of(app)
    service = core.market
    assert service is not None and app.state.market is service and app.state.hub is service.hub
    assert core.trading is not None and core.trading.market is service
    assert {"/v1/markets", "/v1/quotes", "/v1/graphs", "/v1/fills"} <= app.openapi()["paths"].keys()
    assert app.router.routes[0].path in ("/v1/markets", "/v1/quotes")  # the hot path comes first
    assert any(getattr(r, "path", None) == "/v1/stream" for r in app.router.routes)
    assert service.adapters[0].config.seed == 3
    assert service.adapters[0].config.rate_hz == 16.0
    core.store.db.dispose()


def test_the_app_uses_a_given_service(tmp_path: Path) -> None:
    given = MarketService.simulated(seed=1, clock=ManualClock())
    app = create_app(Settings(data_dir=tmp_path), environ={}, market=given)
    assert core_of(app).market is given
    core_of(app).store.db.dispose()


def test_settings_with_a_replay_build_a_replaying_service(tmp_path: Path) -> None:
    clock = ManualClock()
    live = MarketService.simulated(seed=1, clock=clock, venues=["coinbase"])
    with live.record(tmp_path / "day.jsonl"):
        run_for(live, clock, 1.0)
    svc = build_market(Settings(data_dir=tmp_path, market_replay=tmp_path / "day.jsonl"), clock=ManualClock())
    assert [a.name for a in svc.adapters] == ["replay"]
    assert svc.symbols() == ["BTC-USD", "ETH-USD", "SOL-USD"]
    svc.close()
