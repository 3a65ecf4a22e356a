"""What a deploy puts in the artifact, what it leaves out, and what a redeploy keeps."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from sequence import bundle
from tests.cli.test_cli import make_folder, run
from tests.helpers import LiveServer


def _names(artifact: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(artifact), mode="r:gz") as tar:
        return {m.name for m in tar.getmembers()}


def _artifact_of(server: LiveServer, name: str) -> bytes:
    sid = server.core.store.find_strategy_id(server.client_id, name)
    row = server.core.store.get_strategy(server.client_id, sid)
    assert row is not None
    got = server.core.store.artifact(row["artifact_id"])
    assert got is not None
    return got[1]


def test_secrets_never_travel_in_the_artifact(env: dict[str, str], tmp_path: Path, server: LiveServer) -> None:
    folder = make_folder(tmp_path / "s", '[strategy]\nname = "leaky"\n')
    (folder / "secrets.json").write_text(json.dumps({"TOKEN": "tok-in-secrets-json"}))
    (folder / "secrets.prod.json").write_text("{}")
    (folder / ".env").write_text("TOKEN=dotenv-secret\n")
    (folder / "client.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (folder / "manifest.json").write_text(json.dumps({"markets": ["BTC-USD"]}))
    (folder / ".gitignore").write_text("data/\n*.csv\n")
    (folder / ".sequenceignore").write_text("notes.txt\n")
    (folder / "data").mkdir()
    (folder / "data" / "big.bin").write_bytes(b"x" * 1000)
    (folder / "prices.csv").write_text("1,2\n")
    (folder / "notes.txt").write_text("private notes")
    (folder / "lib").mkdir()
    (folder / "lib" / "helper.py").write_text("X = 1\n")
    out = run(["strategy", "deploy", str(folder), "--secrets-file", str(folder / "secrets.json"),
               "--manifest", str(folder / "manifest.json"), "--json"], env)
    res = json.loads(out.stdout)
    left = {x["path"]: x["reason"] for x in res["left_out"]}
    assert left == {
        "secrets.json": "--secrets-file", "manifest.json": "--manifest", "secrets.prod.json": "looks like a secret",
        ".env": "looks like a secret", "client.pem": "looks like a secret", "data/": ".gitignore",
        "prices.csv": ".gitignore", "notes.txt": ".sequenceignore",
    }
    names = _artifact_of(server, "leaky")
    shipped = _names(names)
    assert {"main.py", "lib/helper.py", ".gitignore", ".sequenceignore"} <= shipped
    assert not shipped & set(left) and not any(n.startswith("data/") for n in shipped)
    assert b"tok-in-secrets-json" not in names and b"dotenv-secret" not in names
    # the human output says what was left out
    human = run(["strategy", "deploy", str(folder), "--secrets-file", str(folder / "secrets.json")], env)
    assert "left out of the artifact: " in human.stderr and "secrets.json (--secrets-file)" in human.stderr


def test_a_fifo_or_socket_is_refused_at_once(env: dict[str, str], tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", '[strategy]\nname = "fifo"\n')
    os.mkfifo(folder / "pipe")
    out = run(["strategy", "deploy", str(folder)], env, check=False)  # would block forever reading the FIFO
    assert out.returncode != 0 and "pipe is a FIFO" in out.stderr and ".sequenceignore" in out.stderr
    (folder / ".sequenceignore").write_text("pipe\n")
    assert run(["strategy", "deploy", str(folder), "--json"], env).returncode == 0


def test_a_too_large_folder_is_refused_before_it_is_bundled(env: dict[str, str], tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "big", '[strategy]\nname = "big"\n')
    with open(folder / "huge.bin", "wb") as f:  # sparse: no disk is used, but it is 600 MiB
        f.truncate(600 << 20)
    out = run(["strategy", "deploy", str(folder)], env, check=False)
    assert out.returncode != 0 and "more than 512 MiB" in out.stderr and ".sequenceignore" in out.stderr


def test_collect_files_rules(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".env.local").write_text("A=1")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"")
    got = bundle.collect_files(tmp_path)
    assert [r for r, _ in got.files] == ["main.py"]
    assert got.left_out == [("sub/.env.local", "looks like a secret")]


def test_a_redeploy_keeps_sealed_secrets_unless_cleared(
    env: dict[str, str], tmp_path: Path, server: LiveServer
) -> None:
    folder = make_folder(tmp_path / "k", '[strategy]\nname = "keeper"\n')
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"SLACK_WEBHOOK": "https://hooks/x"}))
    first = json.loads(run(["strategy", "deploy", str(folder), "--secrets-file", str(secrets), "--json"], env).stdout)
    assert first["secret_names"] == ["SLACK_WEBHOOK"]
    again = json.loads(run(["strategy", "deploy", str(folder), "--json"], env).stdout)
    assert again["secret_names"] == ["SLACK_WEBHOOK"], "a redeploy without --secrets-file keeps them"
    row = server.core.store.get_strategy(server.client_id, first["strategy_id"], with_sealed=True)
    assert row is not None and row["secrets_ciphertext"]
    human = run(["strategy", "deploy", str(folder)], env).stdout
    assert "SLACK_WEBHOOK (kept from the previous deploy)" in human
    cleared = json.loads(run(["strategy", "deploy", str(folder), "--clear-secrets", "--json"], env).stdout)
    assert cleared["secret_names"] == []
    row = server.core.store.get_strategy(server.client_id, first["strategy_id"], with_sealed=True)
    assert row is not None and row["secrets_ciphertext"] is None


@pytest.mark.parametrize(("body", "names"), [({}, []), ({"secrets": {}}, []), ({"secrets": {"B": "2"}}, ["B"])])
def test_the_api_keeps_secrets_when_the_field_is_absent(server: LiveServer, body: dict[str, object],
                                                       names: list[str]) -> None:
    from tests.helpers import create_body

    with server.client() as c:
        c.post("/v1/strategies", json=create_body(name="k2", secrets={"A": "1"})).raise_for_status()
        r = c.post("/v1/strategies", json=create_body(name="k2", **body))
        assert r.status_code == 200, r.text
        want = ["A"] if "secrets" not in body else names
        assert r.json()["secret_names"] == want


def test_a_redeploy_resets_restarts_and_restarts_a_crash_loop_at_once(server: LiveServer) -> None:
    from tests.api.fake_runner import FakeRunner
    from tests.helpers import create_body

    with server.client() as c:
        sid = c.post("/v1/strategies", json=create_body(name="loop", start=True)).json()["strategy_id"]
        runner = FakeRunner(server)
        try:
            runner.exit(runner.claim_one(), code=1)  # crash; restarted after a 1 s backoff
            runner.exit(runner.claim_one(), code=1)  # crash again: now a 2 s backoff is pending
            st = c.get(f"/v1/strategies/{sid}").json()
            assert st["restart_count"] >= 1 and st["status"] == "failed" and st["next_restart_at"], st
            st = c.post("/v1/strategies", json=create_body(name="loop", files={"main.py": "print(2)\n"})).json()
            assert st["restart_count"] == 0 and st["status"] == "queued", st
            assert runner.claim_one()["strategy_id"] == sid  # the new code runs now, not after the backoff
        finally:
            runner.close()
