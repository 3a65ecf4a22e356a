"""Per-venue market sources from the settings: ``SEQUENCE_VENUES`` and the live venues' URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sequence.market import ManualClock, MarketService
from sequence.market.setup import build_market, live_config, venue_modes
from sequence.market.venues.live import LiveVenue
from sequence.settings import LIVE_URLS, Settings, SettingsError, parse_venues
from tests.market.conftest import run_for


@pytest.mark.parametrize(("text", "modes"), [
    ("sim", {"kalshi": "sim", "polymarket": "sim", "coinbase": "sim"}),
    ("live", {"kalshi": "live", "polymarket": "live", "coinbase": "live"}),
    ("kalshi=live", {"kalshi": "live", "polymarket": "sim", "coinbase": "sim"}),
    (" coinbase = off , polymarket=live,", {"kalshi": "sim", "polymarket": "live", "coinbase": "off"}),
])
def test_venue_modes_parse(text: str, modes: dict[str, str]) -> None:
    assert parse_venues(text) == modes
    assert Settings.from_env({"SEQUENCE_VENUES": text}).venues == modes


@pytest.mark.parametrize("text", ["real", "kalshi=real", "binance=live", "kalshi", "=live", "kalshi:live"])
def test_a_bad_venue_mode_is_refused_with_what_is_allowed(text: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"SEQUENCE_VENUES": text})
    assert "SEQUENCE_VENUES" in str(err.value) and "kalshi, polymarket, coinbase" in str(err.value)


@pytest.mark.parametrize(("env", "needle"), [
    ({"SEQUENCE_VENUES": "kalshi=off,polymarket=off,coinbase=off"}, "at least one"),
    ({"SEQUENCE_VENUES": "kalshi=replay"}, "needs a recording"),
    ({"SEQUENCE_KALSHI_API_URL": "external-api.kalshi.com"}, "SEQUENCE_KALSHI_API_URL"),
    ({"SEQUENCE_KALSHI_KEY_ID": "abc"}, "SEQUENCE_KALSHI_PRIVATE_KEY_FILE"),
    ({"SEQUENCE_LIVE_CATALOGUE_SECONDS": "1"}, "live_catalogue_seconds"),
    ({"SEQUENCE_LIVE_MAX_MARKETS": "many"}, "SEQUENCE_LIVE_MAX_MARKETS"),
])
def test_bad_live_settings_are_refused_by_name(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert needle in str(err.value)


def test_the_default_is_the_simulators_and_the_real_venues_urls() -> None:
    s = Settings.from_env({})
    assert set(s.venues.values()) == {"sim"}
    assert s.kalshi_api_url == LIVE_URLS["kalshi_api_url"] == "https://external-api.kalshi.com/trade-api/v2"
    svc = build_market(s, clock=ManualClock())
    assert not svc.live and [a.name for a in svc.adapters] == ["kalshi", "polymarket", "coinbase"]


def test_mixed_modes_build_live_and_simulated_venues_side_by_side(tmp_path: Path) -> None:
    s = Settings.from_env({"SEQUENCE_VENUES": "kalshi=live,polymarket=off",
                           "SEQUENCE_KALSHI_API_URL": "http://127.0.0.1:9/trade-api/v2",
                           "SEQUENCE_KALSHI_WS_URL": "ws://127.0.0.1:9/trade-api/ws/v2"})
    svc = build_market(s, clock=ManualClock())
    assert [a.name for a in svc.adapters] == ["kalshi", "coinbase"]
    assert isinstance(svc.adapters[0], LiveVenue) and set(svc.live) == {"kalshi"}
    assert svc.adapters[0].config.api_url == "http://127.0.0.1:9/trade-api/v2"
    status = svc.venue_status()
    assert status["kalshi"]["mode"] == "live" and status["coinbase"] == {"mode": "sim", "state": "running"}
    assert "polymarket" not in status
    svc.close()


def test_the_kalshi_key_file_is_read_at_start_up_and_a_bad_path_names_the_setting(tmp_path: Path) -> None:
    pem = tmp_path / "k.pem"
    pem.write_text("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
    env = {"SEQUENCE_KALSHI_KEY_ID": "id-1", "SEQUENCE_KALSHI_PRIVATE_KEY_FILE": str(pem)}
    cfg = live_config(Settings.from_env(env), "kalshi")
    assert cfg.key_id == "id-1" and cfg.private_key_pem == pem.read_text()
    assert "BEGIN" not in repr(cfg)  # the key never shows in a repr (logs)
    missing = Settings.from_env({**env, "SEQUENCE_KALSHI_PRIVATE_KEY_FILE": str(tmp_path / "nope.pem")})
    with pytest.raises(SettingsError, match="SEQUENCE_KALSHI_PRIVATE_KEY_FILE"):
        live_config(missing, "kalshi")
    poly = live_config(Settings.from_env({}), "polymarket")
    assert poly.urls == {"gamma": "https://gamma-api.polymarket.com"} and poly.key_id is None


def test_a_recording_replays_the_venues_that_would_be_simulated_and_only_those(tmp_path: Path) -> None:
    clock = ManualClock()
    sim = MarketService.simulated(seed=1, clock=clock)
    with sim.record(tmp_path / "day.jsonl"):
        run_for(sim, clock, 1.0)
    everything = Settings(data_dir=tmp_path, market_replay=tmp_path / "day.jsonl")
    assert set(venue_modes(everything).values()) == {"replay"}
    svc = build_market(everything, clock=ManualClock())
    assert [a.name for a in svc.adapters] == ["replay"]
    assert {m.venue for m in svc.catalogue} == {"kalshi", "polymarket", "coinbase"}
    svc.close()

    part = Settings(data_dir=tmp_path, market_replay=tmp_path / "day.jsonl",
                    venues={"kalshi": "off", "polymarket": "sim", "coinbase": "replay"})
    clock2 = ManualClock()
    svc = build_market(part, clock=clock2)
    assert [a.name for a in svc.adapters] == ["replay"]  # polymarket replays too (sim + a recording)
    assert {m.venue for m in svc.catalogue} == {"polymarket", "coinbase"}
    assert run_for(svc, clock2, 1.0) > 0  # replayed events of an excluded venue never reach the service
    assert svc.unknown_events == 0
    svc.close()
