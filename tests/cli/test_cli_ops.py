"""Operator and venue commands: connect, admin rotate-key, market record + up --replay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from sequence.secrets import Keyring, Sealed
from tests.cli.test_cli import SEQ, run
from tests.helpers import LiveServer, create_body, free_socket


def test_connect_seals_venue_credentials(env: dict[str, str], server: LiveServer, tmp_path: Path) -> None:
    pem = tmp_path / "k.pem"
    pem.write_text("-----BEGIN PRIVATE KEY-----\nSECRET-PEM-BODY\n-----END PRIVATE KEY-----\n")
    out = json.loads(run(["connect", "kalshi", "--set", "api_key_id=abc-123", "--set-file",
                          f"private_key_pem={pem}", "--json"], env).stdout)
    assert out == {"venue": "kalshi", "has_credentials": True, "credential_fields": ["api_key_id", "private_key_pem"]}
    bad = run(["connect", "kalshi", "--set", "key_id=abc-123"], env, check=False)
    assert bad.returncode == 1 and "unknown kalshi credential field(s): key_id" in bad.stderr
    assert "api_key_id, private_key_pem" in bad.stderr
    listed = json.loads(run(["connect", "--list", "--json"], env).stdout)["venues"]
    assert {v["venue"]: v["has_credentials"] for v in listed} == {"kalshi": True, "polymarket": False,
                                                                  "coinbase": False}
    assert "SECRET-PEM-BODY" not in json.dumps(listed)
    db = Path(server.settings.effective_database_url.split("///", 1)[1])
    assert b"SECRET-PEM-BODY" not in b"".join(p.read_bytes() for p in db.parent.glob("sequence.db*"))
    p = run(["connect", "nasdaq", "--set", "a=b"], env, check=False)
    assert p.returncode == 1 and "unknown venue" in p.stderr
    p = run(["connect", "kalshi"], env, check=False, input="")
    assert p.returncode == 1 and "no credentials given" in p.stderr
    run(["connect", "kalshi", "--remove"], env)
    listed = json.loads(run(["connect", "--list", "--json"], env).stdout)["venues"]
    assert not any(v["has_credentials"] for v in listed)


def test_rotate_key_reseals_everything_and_a_running_coordinator_keeps_working(
        env: dict[str, str], server: LiveServer) -> None:
    with server.client() as c:
        sid = c.post("/v1/strategies", json=create_body(name="s", secrets={"TOKEN": "t0p-secret"})).json()["strategy_id"]
        c.put("/v1/venues/coinbase/credentials", json={"api_key_name": "n", "private_key_pem": "pk"}).raise_for_status()
    old_id = server.core.keyring.primary_id
    data_dir = server.settings.data_dir
    out = json.loads(run(["admin", "rotate-key", "--data-dir", str(data_dir), "--json"], env).stdout)
    assert out["strategies"] == 1 and out["venue_credentials"] == 1 and out["old_key_id"] == old_id
    assert out["new_key_id"] != old_id
    key_file = data_dir / "credential.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    row = server.core.store.get_strategy(None, sid, with_sealed=True)
    assert row is not None and row["secrets_key_id"] == out["new_key_id"]
    sealed = Sealed(row["secrets_ciphertext"], row["secrets_nonce"], row["secrets_key_id"])
    # A fresh load opens it with the new key ...
    assert Keyring.load(data_dir, {}).unseal_json(sealed, f"strategy:{sid}:secrets") == {"TOKEN": "t0p-secret"}
    # ... and the running coordinator, which still had the old key, reloads the file.
    assert server.core.keyring.unseal_json(sealed, f"strategy:{sid}:secrets") == {"TOKEN": "t0p-secret"}
    assert server.core.keyring.seal(b"x", "a").key_id == out["new_key_id"]


def test_market_record_then_up_replay(env: dict[str, str], tmp_path: Path) -> None:
    rec = tmp_path / "day.jsonl"
    run(["market", "record", "--out", str(rec), "--duration", "1.5", "--seed", "3"], env)
    header = json.loads(rec.read_text().splitlines()[0])
    assert header["type"] == "header" and header["symbols"]
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    e = {**env, "XDG_CONFIG_HOME": str(tmp_path / "cfg2")}
    e.pop("SEQUENCE_API_URL")
    e.pop("SEQUENCE_API_KEY")
    proc = subprocess.Popen([SEQ, "up", "--data-dir", str(tmp_path / "d"), "--port", str(port), "--no-runner",
                             "--replay", str(rec)], env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/v1/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "sequence up did not start"
            time.sleep(0.1)
        cfg = (tmp_path / "cfg2" / "sequence" / "config.toml").read_text()
        key = next(ln.split('"')[1] for ln in cfg.splitlines() if ln.startswith("api_key"))
        h = {"Authorization": f"Bearer {key}"}
        sym = header["symbols"][0]
        q = httpx.get(url + "/v1/quotes", params={"symbol": sym}, headers=h).json()
        assert q["symbol"] == sym
        markets = httpx.get(url + "/v1/markets", params={"limit": 500}, headers=h).json()["markets"]
        assert markets
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
    assert b"Traceback" not in out


def test_up_bootstraps_once_and_keeps_the_config(tmp_path: Path) -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    e = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCE_")}
    e.update(XDG_CONFIG_HOME=str(tmp_path / "cfg"), HOME=str(tmp_path))
    cfg = tmp_path / "cfg" / "sequence" / "config.toml"
    keys = []
    for _ in range(2):
        proc = subprocess.Popen([SEQ, "up", "--data-dir", str(tmp_path / "d"), "--port", str(port), "--no-runner"],
                                env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not cfg.exists() or "api_key" not in cfg.read_text():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/health")
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        keys.append(cfg.read_text())
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out.decode()
    assert keys[0] == keys[1]  # second start reuses the bootstrapped keys and config
    assert cfg.stat().st_mode & 0o777 == 0o600
    text = keys[0]
    assert "seq_live_" in text and "seq_test_" in text and f"http://127.0.0.1:{port}" in text
