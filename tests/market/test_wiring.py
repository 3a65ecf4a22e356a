"""``sequence.market.wiring``: how the coordinator app gets the market service."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from fastapi import FastAPI

from sequence.market import ManualClock, MarketService
from sequence.market.wiring import attach, build_service

from .conftest import run_for


def test_attach_exposes_the_service_and_routes() -> None:
    app = FastAPI()
    core = SimpleNamespace(market=None)
    settings = SimpleNamespace(market_seed=3, market_replay=None, market_rate_hz=16.0)
    service = attach(app, core, settings)
    assert core.market is service and app.state.market is service
    assert {"/v1/markets", "/v1/quotes"} <= app.openapi()["paths"].keys()
    assert service.adapters[0].config.seed == 3
    assert service.adapters[0].config.rate_hz == 16.0


def test_attach_uses_a_given_service() -> None:
    given = MarketService.simulated(seed=1, clock=ManualClock())
    core = SimpleNamespace(market=None)
    assert attach(FastAPI(), core, SimpleNamespace(), given) is given and core.market is given


def test_settings_with_a_replay_build_a_replaying_service(tmp_path: Path) -> None:
    clock = ManualClock()
    live = MarketService.simulated(seed=1, clock=clock, venues=["coinbase"])
    with live.record(tmp_path / "day.jsonl"):
        run_for(live, clock, 1.0)
    svc = build_service(SimpleNamespace(market_replay=tmp_path / "day.jsonl"), clock=ManualClock())
    assert [a.name for a in svc.adapters] == ["replay"]
    assert svc.symbols() == ["BTC-USD", "ETH-USD", "SOL-USD"]
    svc.close()
