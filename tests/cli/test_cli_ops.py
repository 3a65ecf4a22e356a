"""Operator and venue commands: connect, admin rotate-key, market record + up --replay."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

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


def _up(data_dir: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([SEQ, "up", "--data-dir", str(data_dir), "--port", str(port), "--no-runner"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health").status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()


def test_admin_commands_find_the_coordinators_store_or_say_where_it_is(
        tmp_path: Path, _pg_db: object, pg_url: str, request: pytest.FixtureRequest) -> None:
    """operations.md's `sequence admin rotate-key --data-dir …` on a coordinator that keeps its
    store in PostgreSQL opened a new, empty SQLite store in the data dir, re-sealed nothing and
    said it had succeeded; a second rotation then dropped the key the PostgreSQL rows were
    sealed under. Admin commands now never create a store, and name the one `up` used."""
    from tests.conftest import _truncate
    _truncate(_pg_db)  # type: ignore[arg-type]
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    data = tmp_path / "d"
    base = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCE_")}
    base.update(XDG_CONFIG_HOME=str(tmp_path / "cfg"), HOME=str(tmp_path))
    with_pg = {**base, "SEQUENCE_DATABASE_URL": pg_url}
    proc = _up(data, port, with_pg)
    try:
        cfg = (tmp_path / "cfg" / "sequence" / "config.toml").read_text()
        key = next(ln.split('"')[1] for ln in cfg.splitlines() if ln.startswith("api_key"))
        r = httpx.post(f"http://127.0.0.1:{port}/v1/strategies", headers={"Authorization": f"Bearer {key}"},
                       json=create_body(name="sec", secrets={"TOK": "abcdefghij-secret"}))
        assert r.status_code == 201, r.text
    finally:
        _stop(proc)

    # The data dir alone: refused, pointing at PostgreSQL, and no store made.
    for args in (["rotate-key"], ["runner-token", "create", "--name", "eu-1"]):
        p = run(["admin", *args, "--data-dir", str(data)], base, check=False)
        assert p.returncode == 1, p.stdout
        assert "keeps its store in postgresql://" in p.stderr and "SEQUENCE_DATABASE_URL" in p.stderr, p.stderr
    assert not (data / "sequence.db").exists()
    # Another directory: no store there.
    p = run(["admin", "client", "list", "--data-dir", str(tmp_path / "elsewhere")], base, check=False)
    assert p.returncode == 1 and "no store in" in p.stderr and not (tmp_path / "elsewhere" / "sequence.db").exists()
    # With the URL: twice, and the coordinator still opens the secrets after both.
    for _ in range(2):
        out = json.loads(run(["admin", "rotate-key", "--data-dir", str(data), "--json"], with_pg).stdout)
        assert out["strategies"] == 1
    keyring = Keyring.load(data, {})
    from sequence.store.engine import Database
    from sequence.store.store import Store
    db = Database(pg_url)
    try:
        assert set(Store(db).sealed_key_ids()) == {keyring.primary_id}
    finally:
        db.dispose()

    # Times read as times (the tables showed raw epoch floats).
    listed = run(["admin", "client", "list", "--data-dir", str(data)], with_pg).stdout
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", listed) and not re.search(r"\d{10}\.\d", listed), listed

    # The key file lost (a restore without it): `up` refuses to start with a new key.
    (data / "credential.key").unlink()
    p = subprocess.run([SEQ, "up", "--data-dir", str(data), "--port", str(port), "--no-runner"], env=with_pg,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "restore that key file" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (data / "credential.key").exists()


def test_a_coordinator_says_at_start_which_sealed_values_it_cannot_open(
        server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    """Dropping CREDENTIAL_ENCRYPTION_KEYS_OLD too soon after a rotation left strategies failing
    one by one at their next start; the coordinator now says so when it starts."""
    from sequence.api.app import build_core
    from sequence.secrets import new_key_text, write_key_file

    with server.client() as c:
        assert c.post("/v1/strategies", json=create_body(name="s", secrets={"T": "abcdefghij"})).status_code == 201
    old_id = server.core.keyring.primary_id
    write_key_file(server.settings.data_dir / "credential.key", new_key_text())  # the old key dropped
    with caplog.at_level("ERROR", logger="sequence.coordinator"):
        core = build_core(server.settings, {})
    core.store.db.dispose()
    assert f"2 stored secret(s) are sealed under credential key(s) {old_id}, which are not loaded" in caplog.text


def test_update_upgrades_from_where_the_package_was_installed(tmp_path: Path) -> None:
    """`sequence update` on a copy installed from a folder ran `pip install --upgrade
    sequence-platform`: a name this project does not publish, so whoever registers it on an
    index would have had their code installed (as root, often)."""
    from sequence.cli.app import upgrade_source

    assert upgrade_source({}, "sequence-platform") == "sequence-platform"  # from an index: the same index
    assert upgrade_source({"url": tmp_path.as_uri(), "dir_info": {}}, "sequence-platform") == str(tmp_path)
    wheel = tmp_path / "sequence_platform-0.4.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert upgrade_source({"url": wheel.as_uri(), "archive_info": {}}, "sequence-platform") == str(wheel)
    assert upgrade_source({"url": "https://git.example/seq.git", "vcs_info": {"vcs": "git", "commit_id": "ab"}},
                          "sequence-platform") == "git+https://git.example/seq.git"
    import typer
    with pytest.raises(typer.Exit):
        upgrade_source({"url": (tmp_path / "gone").as_uri()}, "sequence-platform")


def test_reseal_moves_everything_under_the_current_key(env: dict[str, str], server: LiveServer) -> None:
    """The environment-key rotation's last step: values sealed under the old key while the
    coordinators restarted are re-sealed under the new one before the old one is dropped."""
    from sequence.secrets import new_key_text, write_key_file

    with server.client() as c:
        assert c.post("/v1/strategies", json=create_body(name="s", secrets={"T": "abcdefghij"})).status_code == 201
    data = server.settings.data_dir
    old = server.core.keyring.key_text(server.core.keyring.primary_id)
    write_key_file(data / "credential.key", new_key_text(), [old])  # a new primary; the rows are under the old
    new_id = Keyring.load(data, {}).primary_id
    out = json.loads(run(["admin", "rotate-key", "--reseal", "--data-dir", str(data), "--json"], env).stdout)
    assert out["strategies"] == 1 and out["new_key_id"] == new_id
    assert set(server.core.store.sealed_key_ids()) == {new_id}
