"""The newcomer's list: what a first-time user types, and what they should see."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

from tests.cli.test_cli import SEQ, make_folder, run
from tests.helpers import LiveServer


def test_logs_of_a_strategy_that_never_ran_says_how_to_start_it(env: dict[str, str], tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "n", '[strategy]\nname = "idle"\n')
    run(["strategy", "deploy", str(folder)], env)
    out = run(["strategy", "logs", "idle"], env)
    assert out.stdout == "" and "idle has never run" in out.stderr
    assert "sequence strategy start idle" in out.stderr
    t = time.monotonic()
    out = run(["strategy", "logs", "idle", "--follow"], env)  # must not hang
    assert time.monotonic() - t < 30 and "has never run" in out.stderr


def test_tables_fit_80_columns_and_keep_names_whole(env: dict[str, str], tmp_path: Path) -> None:
    long_name = "a-rather-long-strategy-name-for-btc"
    folder = make_folder(tmp_path / "l", f'[strategy]\nname = "{long_name}"\n')
    run(["strategy", "deploy", str(folder)], env)
    out = run(["strategy", "list"], {**env, "COLUMNS": "80"}).stdout
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), out
    assert any(long_name in line for line in lines), out  # not truncated
    assert "stopped" in out and "…" not in out


def test_inspect_prints_user_values_literally(env: dict[str, str], tmp_path: Path) -> None:
    toml = '[strategy]\nname = "lit"\n[hosted.env]\nGREETING = "from [hosted.env]"\nSTYLE = "[red]x[/red]"\n'
    folder = make_folder(tmp_path / "lit", toml)
    run(["strategy", "deploy", str(folder), "--env", "X=[/bold]"], env)
    out = run(["strategy", "inspect", "lit"], env).stdout
    assert "from [hosted.env]" in out and "[red]x[/red]" in out and "[/bold]" in out
    assert "paper trading" in out and "no (live orders)" in out and "sandbox" not in out
    test_key = json.loads(run(["keys", "create", "--test", "--json"], env).stdout)["key"]
    run(["strategy", "deploy", str(folder), "--start"], {**env, "SEQUENCE_API_KEY": test_key})
    out = run(["strategy", "inspect", "lit"], env).stdout
    assert "yes (every order is paper-filled)" in out


def test_keys_create_test_says_how_to_use_the_key(env: dict[str, str], server: LiveServer) -> None:
    out = run(["keys", "create", "--test"], env)
    key = out.stdout.strip()
    assert key.startswith("seq_test_")
    assert "paper-filled" in out.stderr and "SEQUENCE_API_KEY=<key>" in out.stderr and "sequence login" in out.stderr


def test_a_bad_key_hint_needs_no_valid_key(env: dict[str, str]) -> None:
    out = run(["strategy", "list"], {**env, "SEQUENCE_API_KEY": "seq_live_nope"}, check=False)
    assert out.returncode != 0 and "invalid or revoked" in out.stderr
    assert "sequence keys create" not in out.stderr and "sequence login" in out.stderr


def test_revoking_a_key_returns_the_time_it_was_revoked(server: LiveServer) -> None:
    with server.client() as c:
        key = c.post("/v1/keys", json={"mode": "live", "name": "tmp"}).json()
        r = c.delete(f"/v1/keys/{key['key_id']}")
        assert r.status_code == 200 and r.json()["revoked"] is True
        first = r.json()["revoked_at"]
        assert first and first.startswith("20")
        assert c.delete(f"/v1/keys/{key['key_id']}").json()["revoked_at"] == first  # once revoked, that time


def test_help_lists_strategy_first_takes_dash_h_and_shows_placeholders(env: dict[str, str]) -> None:
    top = run(["-h"], env).stdout
    panel = top.split("Commands", 1)[1]
    commands = [ln.split()[1] for ln in panel.splitlines() if ln.startswith("│ ") and len(ln.split()) > 2]
    assert commands[0] == "strategy", commands
    deploy = run(["strategy", "deploy", "-h"], env).stdout
    assert "<str>" not in deploy and "--secrets-file            PATH" in deploy and "--name                    NAME" in deploy
    assert "[env" not in run(["up", "--help"], env).stdout.replace("[env var:", "")


def test_up_on_a_busy_port_says_which_and_what_to_do(env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = subprocess.run([SEQ, "up", "--port", str(port), "--data-dir", str(tmp_path / "d")], env=env,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr
    assert "already running" in out.stderr and "--port" in out.stderr and "Traceback" not in out.stderr


def test_update_from_a_source_checkout_says_git_pull(env: dict[str, str]) -> None:
    out = run(["update"], env)
    assert "git" in out.stdout and "pull" in out.stdout and "pip install" not in out.stdout
