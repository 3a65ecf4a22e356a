"""What users hit at the CLI's edges: flags mistyped, deletes from scripts, hints that name
commands, the config after `sequence up` in another folder."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

from sequence.cli.algo import parse_params
from sequence.cli.errors import CliError
from tests.helpers import LiveServer

SEQ = str(Path(sys.executable).parent / "sequence")
_TOML = '[strategy]\nname = "victim"\nruntime = "python"\n\n[hosted]\nentrypoint = "main.py"\n'
_NOP_WASM = base64.b64encode(wasmtime.wat2wasm(
    '(module (memory (export "memory") 1) (func (export "on_quote") (param i32 i64 i64 i64 i64)))')).decode()


def test_params_parse_and_a_key_given_twice_is_refused_not_overwritten() -> None:
    assert parse_params(["buy_below=0.45", "qty=", "note=a=b"]) == {"buy_below": "0.45", "qty": "", "note": "a=b"}
    with pytest.raises(CliError, match=r"--param qty is given twice \('1' and '2'\)"):
        parse_params(["qty=1", "buy_below=0.4", "qty=2"])
    with pytest.raises(CliError, match="is not KEY=VALUE"):
        parse_params(["=1"])


@pytest.mark.parametrize("n", ["0", "-3", "10001"])
def test_logs_tail_out_of_range_is_refused_by_the_cli(n: str, tmp_path: Path) -> None:
    # No server at this address: the flag is refused before any request is made.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SEQUENCE_API_URL": "http://127.0.0.1:9",
           "SEQUENCE_API_KEY": "seq_live_x", "COLUMNS": "200"}
    p = subprocess.run([SEQ, "algo", "logs", "taker", "--tail", n], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Invalid value for '--tail'" in p.stderr and "Traceback" not in p.stderr, p.stderr


@pytest.mark.parametrize("args", [["strategy", "delete", "victim"], ["algo", "delete", "victim"]])
def test_delete_without_yes_and_without_a_terminal_refuses_and_deletes_nothing(
    args: list[str], env: dict[str, str], server: LiveServer, tmp_path: Path
) -> None:
    """Piped or scripted (stdin not a terminal), `delete NAME` deleted at once: nobody was asked."""
    from tests.cli.test_cli import make_folder, run

    if args[0] == "strategy":
        run(["strategy", "deploy", str(make_folder(tmp_path / "victim", _TOML))], env)
        path = "/v1/strategies/victim"
    else:
        with server.client() as c:
            r = c.post("/v1/deployments", json={"name": "victim", "wasm_base64": _NOP_WASM, "symbols": ["BTC-USD"]})
            assert r.status_code == 201, r.text
        path = "/v1/deployments/victim"
    p = subprocess.run([SEQ, *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "--yes" in p.stderr and "Traceback" not in p.stderr, (p.stdout, p.stderr)
    with server.client() as c:
        assert c.get(path).status_code == 200, "deleted without asking"
    run([*args, "--yes"], env)
    with server.client() as c:
        assert c.get(path).status_code == 404


def test_a_key_not_found_points_to_the_keys_list(env: dict[str, str]) -> None:
    p = subprocess.run([SEQ, "keys", "revoke", "nope"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "sequence keys list" in p.stderr and "strategy list" not in p.stderr, p.stderr


def test_market_search_lists_symbols_an_algo_or_strategy_can_trade(env: dict[str, str]) -> None:
    """The deploy hints sent users to `sequence market search`, which did not exist."""
    from tests.cli.test_cli import run

    out = run(["market", "search", "fed", "--venue", "kalshi", "-n", "5"], env).stdout
    rows = [[cell.strip() for cell in line.split("│")] for line in out.splitlines() if line.startswith("KXFED-")]
    assert rows and all(r[0].endswith("-YES") and r[1] == "kalshi" for r in rows), out
    coin = run(["market", "search", "--venue", "coinbase", "--json"], env).stdout
    import json

    assert "BTC-USD" in {m["symbol"] for m in json.loads(coin)["markets"]}
    none = subprocess.run([SEQ, "market", "search", "no-such-market-anywhere"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert none.returncode == 1 and "no open market matches" in none.stderr, none.stderr
    bad = subprocess.run([SEQ, "market", "search", "--venue", "nyse"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "venue" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_up_in_another_folder_and_back_leaves_both_configured_keys_working(tmp_path: Path) -> None:
    """`sequence up` elsewhere (a new store) rewrote the CLI config; back here, `up` renewed the live
    key but left the other platform's test key, which was then refused (401)."""
    from types import SimpleNamespace

    from sequence.cli import config as cfgmod
    from sequence.cli.up import bootstrap
    from sequence.store.db import Database
    from sequence.store.store import Store

    environ = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "HOME": str(tmp_path)}
    stores = []
    for name in ("here", "elsewhere"):
        db = Database(f"sqlite:///{tmp_path / name}.db")
        db.migrate()
        stores.append(Store(db))
    here, elsewhere = (SimpleNamespace(store=s, settings=SimpleNamespace(api_url="http://127.0.0.1:8700")) for s in stores)
    bootstrap(here, environ)  # type: ignore[arg-type]
    bootstrap(elsewhere, environ)  # type: ignore[arg-type]
    bootstrap(here, environ)  # type: ignore[arg-type]
    cfg = cfgmod.read_file(cfgmod.config_path(environ))
    assert stores[0].authenticate(cfg["api_key"]) is not None
    assert stores[0].authenticate(cfg["test_api_key"]) is not None, "the other platform's test key was kept"
    for s in stores:
        s.db.dispose()


@pytest.mark.parametrize("url", ["127.0.0.1:8700", "localhost:8700/", "ftp://127.0.0.1:8700"])
def test_an_api_url_without_http_says_how_to_write_it(url: str, tmp_path: Path) -> None:
    """It failed as "request to 127.0.0.1:8700 failed: UnsupportedProtocol"."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SEQUENCE_API_URL": url, "SEQUENCE_API_KEY": "seq_live_x"}
    p = subprocess.run([SEQ, "strategy", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    assert "does not start with http:// or https://" in p.stderr and "SEQUENCE_API_URL=http://" in p.stderr, p.stderr
    assert "UnsupportedProtocol" not in p.stderr
