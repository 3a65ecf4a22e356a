"""The product document's "Deploying" section, done exactly as written.

    mkdir -p /tmp/my-strategy
    cp …/hosted_strategy_prediction.py /tmp/my-strategy/main.py
    cat > /tmp/my-strategy/Sequence.toml <<'EOF' … EOF
    sequence strategy deploy /tmp/my-strategy --start
    sequence strategy logs e2e-pred-test --follow

with the real ``sequence`` binary against ``sequence up`` on a fresh data dir.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.harness import EXAMPLES, SEED_TOML, Platform, events, only

pytestmark = pytest.mark.slow


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform(tmp_path / "platform").start()
    try:
        yield p
    finally:
        p.close()


def test_seed_deploy_runs_the_prediction_example_end_to_end_and_stays_stopped(
        platform: Platform, tmp_path: Path) -> None:
    # 1. Stage the strategy: the example as main.py, the seed's Sequence.toml verbatim.
    folder = tmp_path / "my-strategy"
    folder.mkdir()
    (folder / "main.py").write_bytes((EXAMPLES / "hosted_strategy_prediction.py").read_bytes())
    (folder / "Sequence.toml").write_text(SEED_TOML)

    # 2. Deploy. With Sequence.toml present, no flags needed.
    out = platform.cli("strategy", "deploy", str(folder), "--start").stdout
    assert "deployed" in out and "e2e-pred-test" in out, out

    # 3. Tail the JSON log stream as it runs; it ends by itself when the strategy stops.
    raw, recs = platform.follow("e2e-pred-test", timeout=120)
    context = f"\n--- logs ---\n{raw}\n--- sequence up ---\n{platform.up_log()}"
    assert not events(recs, "crash") and not events(recs, "fatal"), context

    boot = only(recs, "boot")
    assert boot["has_api_key"] is True, context
    assert boot["strategy_id"] and boot["run_id"], context
    assert boot["sequence_api_url"].startswith("http://127.0.0.1:"), context

    assert only(recs, "health_check")["ok"] is True, context

    disc = only(recs, "discovery_done")
    assert disc["kalshi_slug"] and disc["polymarket_slug"], context
    assert disc["kalshi_chosen_side"] in ("yes", "no"), context

    ws = events(recs, "ws_msg")
    assert 1 <= len(ws) <= 8, context  # bounded by max_msgs=8
    assert any(isinstance(m.get("bid"), (int, float)) and m["bid"] > 0 for m in ws), context
    assert all(m["channel"].startswith("prices:") for m in ws), context

    levels = events(recs, "book_level")
    for venue in ("kalshi", "polymarket"):
        mine = [lv for lv in levels if lv["venue"] == venue]
        assert any(lv["side"] == "bid" for lv in mine), f"no {venue} bid levels{context}"
        for side in ("bid", "ask"):
            assert len([lv for lv in mine if lv["side"] == side]) <= 5, context

    intents = events(recs, "graph_submit_intent")
    assert sorted(i["venue"] for i in intents) == ["kalshi", "polymarket"], context
    for i in intents:
        assert 0.01 <= i["limit_price"] <= i["best_bid"] / 2 + 1e-9, context  # rests, never crosses

    statuses = events(recs, "graph_status")
    assert len(statuses) == 2 and all(s["status"] == "active" for s in statuses), context

    cancelled = events(recs, "graph_cancelled")
    assert len(cancelled) == 2, context
    assert {c["graph_id"] for c in cancelled} == {s["graph_id"] for s in statuses}, context

    assert only(recs, "done")["graphs_submitted"] == 2, context
    assert recs[-1]["event"] == "done", context
    names = [r["event"] for r in recs]
    order = ["boot", "health_check", "discovery_done", "graph_submit_intent", "graph_status",
             "graph_cancelled", "done"]
    assert [n for n in names if n in order] == sorted((n for n in names if n in order), key=order.index), context

    # Exit 0 means "I'm done": stopped, and not brought back.
    s = platform.inspect("e2e-pred-test")
    assert s["status"] == "stopped", s
    assert s["last_exit"] and s["last_exit"]["code"] == 0, s
    time.sleep(4)
    s = platform.inspect("e2e-pred-test")
    assert s["status"] == "stopped" and s["restart_count"] == 0, s
    runs = platform.cli_json("strategy", "runs", "e2e-pred-test")["runs"]
    assert len(runs) == 1, runs

    # The graphs it cancelled are cancelled on the platform too (what `curl` would show).
    with platform.http() as http:
        for c in cancelled:
            g = http.get(f"/v1/graphs/{c['graph_id']}").json()
            assert g["status"] == "cancelled", g

    # Ctrl-C stops everything: 0, or 130 (128 + SIGINT, the shell's convention for an
    # interrupted command), no traceback, and no runner or strategy process left behind.
    rc = platform.interrupt()
    log = platform.up_log(400)
    assert rc in (0, 130), f"`sequence up` exited {rc} on SIGINT\n{log}"
    assert "Traceback" not in log and log.rstrip().endswith("stopped"), log
    assert platform.leftover_processes() == [], platform.leftover_processes()
