"""Every small example under examples/ deployed with the real ``sequence``
binary against one ``sequence up``: deploy → logs → the records it promises."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.harness import EXAMPLES, Platform, events, only, stage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform(tmp_path_factory.mktemp("examples-platform")).start()
    try:
        yield p
    finally:
        p.close()


def _ended_cleanly(platform: Platform, name: str) -> dict:
    s = platform.inspect(name)
    assert s["status"] == "stopped", s
    assert s["last_exit"] and s["last_exit"]["code"] == 0, s
    assert s["restart_count"] == 0, s
    return s


def test_taker_crosses_the_spread_detects_its_fill_and_flattens(platform: Platform) -> None:
    deployed = platform.deploy(EXAMPLES / "taker")
    assert deployed["name"] == "taker"
    raw, recs = platform.follow("taker")
    assert not events(recs, "crash") and not events(recs, "fatal"), raw

    chosen = only(recs, "chosen")
    assert chosen["tick"] == 0.01, raw
    price = only(recs, "price")
    submits = events(recs, "submit")
    assert [s["side"] for s in submits] == ["buy", "sell"], raw
    buy = submits[0]
    assert buy["reference"] == price["ask"], raw
    assert buy["limit_price"] == pytest.approx(price["ask"] + chosen["tick"]), raw  # one tick through

    fills = events(recs, "filled")
    assert [f["side"] for f in fills] == ["buy", "sell"], raw
    assert all(f["qty_1e8"] == 100_000_000 for f in fills), raw
    assert {f["graph_id"] for f in fills} == {s["graph_id"] for s in submits}, raw
    assert only(recs, "done")["filled"] is True, raw
    _ended_cleanly(platform, "taker")


def test_two_leg_fires_both_venues_in_parallel_from_one_graph(platform: Platform) -> None:
    platform.deploy(EXAMPLES / "two_leg")
    raw, recs = platform.follow("two-leg")
    assert not events(recs, "crash") and not events(recs, "fatal"), raw

    sub = only(recs, "submit")
    assert sub["node_count"] == 2 and sub["edge_count"] == 0, raw
    assert sub["polymarket_notional"] >= 1.0, raw  # clears Polymarket's $1 minimum
    filled = {f["node_id"]: f for f in events(recs, "filled")}
    assert set(filled) == {"kalshi-leg", "polymarket-leg"}, raw
    assert filled["kalshi-leg"]["venue"] == "kalshi" and filled["polymarket-leg"]["venue"] == "polymarket"
    graph = only(recs, "graph")
    assert graph["status"] == "completed", raw
    assert graph["nodes"] == {"kalshi-leg": "filled", "polymarket-leg": "filled"}, raw
    assert only(recs, "done")["legs_filled"] == 2, raw
    _ended_cleanly(platform, "two-leg")


def test_config_slots_reach_the_process_and_secrets_never_leave_it(platform: Platform, tmp_path: Path) -> None:
    folder = stage(EXAMPLES / "config_slots", tmp_path / "config_slots")
    shutil.copy(folder / "secrets.json.example", folder / "secrets.json")
    secrets = json.loads((folder / "secrets.json").read_text())

    deployed = platform.deploy(folder, "--secrets-file", str(folder / "secrets.json"), "--env", "THRESHOLD=7")
    raw, recs = platform.follow("config-slots")
    assert not events(recs, "crash"), raw

    boot = only(recs, "boot")
    assert boot["strategy_id"] == deployed["strategy_id"] and boot["client_id"], raw
    assert boot["sandbox"] == "false", raw
    env = only(recs, "env")
    assert env["LOG_LEVEL"] == "info", raw
    assert env["THRESHOLD"] == 7, raw  # --env overrides [hosted.env]
    # a secret shadows a same-named env entry, and secret values are masked in the logs
    assert env["GREETING_is_the_env_value"] is False and env["GREETING"] == "***", raw
    sec = only(recs, "secrets")
    assert sec["present"] == {"SLACK_WEBHOOK": True, "GCP_CALLBACK_TOKEN": True}, raw
    assert sec["lengths"] == {k: len(secrets[k]) for k in ("SLACK_WEBHOOK", "GCP_CALLBACK_TOKEN")}, raw
    man = only(recs, "manifest")
    assert man["path"].endswith(".sequence/manifest.json"), raw
    assert man["markets"] == ["BTC-USD", "ETH-USD"], raw
    assert man["limits"] == {"max_notional_usd": 25.0, "max_orders_per_min": 6}, raw
    assert man["pairs"] == [["KXBTCD-26NOV30-T98000", "BTC-USD"]], raw  # structured env → manifest
    assert [q["symbol"] for q in events(recs, "quote")] == ["BTC-USD", "ETH-USD"], raw
    assert only(recs, "done")["markets"] == 2, raw

    s = _ended_cleanly(platform, "config-slots")
    assert s["env"]["LOG_LEVEL"] == "info" and s["env"]["THRESHOLD"] == "7", s
    assert s["secret_names"] == ["GCP_CALLBACK_TOKEN", "GREETING", "SLACK_WEBHOOK"], s
    assert s["manifest"]["markets"] == ["BTC-USD", "ETH-USD"], s
    inspected = platform.cli("strategy", "inspect", "config-slots").stdout + json.dumps(s)
    for name, value in secrets.items():
        assert value not in inspected, f"inspect shows the value of secret {name}"
        assert value not in raw, f"the logs show the value of secret {name}"


def test_daemon_runs_until_stopped_then_handles_sigterm_and_exits_0(platform: Platform) -> None:
    platform.deploy(EXAMPLES / "daemon")
    platform.wait_for("daemon", lambda s: s["status"] == "running", "status running")
    platform.wait_for_records("daemon", lambda r: len(events(r, "heartbeat")) >= 2, "two heartbeats")
    assert platform.inspect("daemon")["status"] == "running"  # still going: a daemon never exits by itself

    stopped = platform.cli_json("strategy", "stop", "daemon")
    assert stopped["status"] in ("stopping", "stopped"), stopped
    raw, recs = platform.follow("daemon", timeout=60)

    beats = events(recs, "heartbeat")
    assert beats and any(b["msgs"] > 0 for b in beats), raw
    assert only(recs, "sigterm")["signal"] == "SIGTERM", raw
    assert only(recs, "shutdown")["exit_code"] == 0, raw
    assert recs[-1]["event"] == "shutdown", raw

    s = platform.wait_for("daemon", lambda s: s["status"] == "stopped", "status stopped")
    assert s["last_exit"]["code"] == 0 and not s["last_exit"].get("signal"), json.dumps(s, indent=1)  # handled, not killed
    assert s["restart_count"] == 0 and s["desired_state"] == "stopped", s
