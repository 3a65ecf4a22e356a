"""`sequence risk …` and `sequence kill` with the real binary against a coordinator."""

from __future__ import annotations

import json

from tests.cli.test_cli import make_folder, run
from tests.helpers import LiveServer


def test_risk_show_set_and_reset(server: LiveServer, env: dict[str, str]) -> None:
    out = run(["risk", "show"], env).stdout
    assert "max_order_notional" in out and "100" in out and "0 open real order(s)" in out
    res = json.loads(run(["risk", "set", "max_order_notional=250", "max_daily_loss=none", "--json"], env).stdout)
    assert res["limits"]["max_order_notional"] == 250 and res["limits"]["max_daily_loss"] is None
    assert json.loads(run(["risk", "reset", "--json"], env).stdout)["limits"]["max_order_notional"] == 100


def test_bad_risk_input_says_what_to_do(server: LiveServer, env: dict[str, str]) -> None:
    for args, needle in [(["risk", "set", "max_orders=5"], "the limits are: max_order_notional"),
                         (["risk", "set", "max_daily_loss=lots"], "is not a number"),
                         (["risk", "set", "max_daily_loss=-1"], "max_daily_loss"),
                         (["risk", "show", "--strategy", "nope"], "not found")]:
        r = run(args, env, check=False)
        assert r.returncode != 0, (args, r.stdout)
        assert needle in r.stderr + r.stdout, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_kill_stops_strategies_then_release(server: LiveServer, env: dict[str, str], tmp_path: object) -> None:
    from pathlib import Path

    folder = make_folder(Path(str(tmp_path)))
    run(["strategy", "deploy", str(folder), "--name", "bot", "--start"], env)
    out = run(["kill"], env).stdout
    assert "kill switch engaged" in out and "stopped: bot" in out
    status = run(["kill", "--status"], env).stdout
    assert "engaged since" in status and "every strategy" in status
    strategies = json.loads(run(["strategy", "list", "--json"], env).stdout)["strategies"]
    assert all(s["desired_state"] == "stopped" for s in strategies), strategies
    assert "kill switch released" in run(["kill", "--release"], env).stdout
    assert "no kill switch is engaged" in run(["kill", "--status"], env).stdout
