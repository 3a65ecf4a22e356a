"""The real ``sequence`` binary, driven as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import LiveServer

SEQ = str(Path(sys.executable).parent / "sequence")


def run(args: list[str], env: dict[str, str], cwd: Path | None = None, check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([SEQ, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"sequence {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    assert "Traceback" not in p.stderr, p.stderr
    return p


def make_folder(root: Path, toml: str | None = None, main: str = "print('hi', flush=True)\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.py").write_text(main)
    if toml is not None:
        (root / "Sequence.toml").write_text(toml)
    return root


TOML = """
[strategy]
name = "e2e-pred-test"
runtime = "python"

[hosted]
entrypoint = "main.py"
memory_mb = 256

[hosted.env]
LOG_LEVEL = "info"
THRESHOLD = 5
PRED_ARB_PAIRS_JSON = [["KX-A", "PM-B"]]

[hosted.secrets]
SLACK_WEBHOOK = "https://hooks.example/SECRET-IN-TOML"

[hosted.placement]
latency_target = ["coinbase"]
"""


def test_version_is_0_4(env: dict[str, str]) -> None:
    out = run(["--version"], env).stdout
    assert out.startswith("sequence 0.4.")


def test_full_lifecycle_with_only_the_cli(env: dict[str, str], tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "strat", TOML)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "junk.pyc").write_bytes(b"x")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref")
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"GCP_CALLBACK_TOKEN": "tok-SECRET-FILE"}))
    dep = json.loads(run(["strategy", "deploy", str(folder), "--env", "EXTRA=1", "--secrets-file", str(secrets),
                          "--json"], env).stdout)
    assert dep["name"] == "e2e-pred-test" and dep["status"] == "stopped"
    assert dep["env"] == {"LOG_LEVEL": "info", "THRESHOLD": "5", "EXTRA": "1"}
    assert dep["manifest"] == {"PRED_ARB_PAIRS_JSON": [["KX-A", "PM-B"]]}
    assert dep["secret_names"] == ["GCP_CALLBACK_TOKEN", "SLACK_WEBHOOK"]
    assert dep["memory_mb"] == 256 and dep["placement"] == {"latency_target": ["coinbase"]}

    listed = json.loads(run(["strategy", "list", "--json"], env).stdout)
    assert [s["name"] for s in listed["strategies"]] == ["e2e-pred-test"]
    human = run(["strategy", "inspect", "e2e-pred-test"], env).stdout
    assert "LOG_LEVEL" in human and "SLACK_WEBHOOK" in human and "SECRET" not in human
    by_id = json.loads(run(["strategy", "inspect", dep["strategy_id"], "--json"], env).stdout)
    assert by_id["strategy_id"] == dep["strategy_id"]

    (folder / "main.py").write_text("print('v2')\n")
    dep2 = json.loads(run(["strategy", "deploy", str(folder), "--memory-mb", "1024", "--json"], env).stdout)
    assert dep2["strategy_id"] == dep["strategy_id"] and dep2["artifact_sha256"] != dep["artifact_sha256"]
    assert dep2["memory_mb"] == 1024

    assert json.loads(run(["strategy", "start", "e2e-pred-test", "--json"], env).stdout)["status"] == "queued"
    assert json.loads(run(["strategy", "stop", "e2e-pred-test", "--json"], env).stdout)["status"] == "stopped"
    assert json.loads(run(["strategy", "runs", "e2e-pred-test", "--json"], env).stdout)["runs"] == []
    assert run(["strategy", "logs", "e2e-pred-test"], env).stdout == ""
    run(["strategy", "delete", "e2e-pred-test", "--yes"], env)
    assert json.loads(run(["strategy", "list", "--json"], env).stdout)["strategies"] == []


def test_disk_quota_and_egress_from_sequence_toml_and_flags(env: dict[str, str], tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "q", '[strategy]\nname = "q"\n[hosted]\ndisk_mb = 64\negress = "none"\n')
    dep = json.loads(run(["strategy", "deploy", str(folder), "--json"], env).stdout)
    assert dep["disk_mb"] == 64 and dep["egress"] == "none"
    dep = json.loads(run(["strategy", "deploy", str(folder), "--disk-mb", "128", "--egress", "public", "--json"],
                         env).stdout)
    assert dep["disk_mb"] == 128 and dep["egress"] == "public"
    human = run(["strategy", "inspect", "q"], env).stdout
    assert "128 MB" in human and "public" in human
    bad = run(["strategy", "deploy", str(folder), "--egress", "everywhere"], env, check=False)
    assert bad.returncode != 0 and "--egress must be one of: public, none" in bad.stderr


def test_deploy_start_uses_the_config_key(env: dict[str, str], tmp_path: Path, server: LiveServer) -> None:
    folder = make_folder(tmp_path / "s", '[strategy]\nname = "t"\n')
    env = {**env, "SEQUENCE_API_KEY": server.test_key}
    dep = json.loads(run(["strategy", "deploy", str(folder), "--start", "--json"], env).stdout)
    assert dep["status"] == "queued" and dep["is_sandbox"] is True


def test_manifest_flag_replaces_the_synthesized_manifest(env: dict[str, str], tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "s", TOML)
    man = tmp_path / "m.json"
    man.write_text(json.dumps({"markets": ["A", "B"], "nested": {"x": 1}}))
    dep = json.loads(run(["strategy", "deploy", str(folder), "--manifest", str(man), "--json"], env).stdout)
    assert dep["manifest"] == {"markets": ["A", "B"], "nested": {"x": 1}}


def test_secrets_file_inside_the_folder_is_not_bundled(env: dict[str, str], tmp_path: Path, server: LiveServer) -> None:
    folder = make_folder(tmp_path / "s", '[strategy]\nname = "t"\n')
    (folder / "secrets.json").write_text(json.dumps({"TOKEN": "in-folder-SECRET"}))
    dep = json.loads(run(["strategy", "deploy", str(folder), "--secrets-file", str(folder / "secrets.json"),
                          "--json"], env).stdout)
    row = server.core.store.get_strategy(None, dep["strategy_id"])
    assert row is not None
    got = server.core.store.artifact(row["artifact_id"])
    assert got is not None
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(got[1])) as tar:
        names = tar.getnames()
    assert "secrets.json" not in names and "main.py" in names
    assert "sequence_markets/__init__.py" in names  # the SDK was vendored
    assert not any("__pycache__" in n for n in names)


BAD_TOMLS = [
    ('[strategy]\nname = "x"\n[hosted]\nmemory_mb = "lots"\n', "Sequence.toml:4", "memory_mb"),
    ('[strategy]\nname = "x"\ncolour = "red"\n', "Sequence.toml:3", "unknown key 'colour'"),
    ('[strategy\nname = "x"\n', "invalid TOML", "line 1"),
    ('[strategy]\nname = "x"\n[hosted.env]\nA = 2025-01-01\n', "Sequence.toml:4", "must be a string"),
    ('[strategy]\nname = "x"\n[bogus]\n', "Sequence.toml:3", "unknown section"),
    ('[strategy]\nname = "x"\nruntime = "rust"\n', "runtime must be 'python'", ""),
    ('[strategy]\nname = "../x"\n', "name must be", ""),
    ('[strategy]\nname = "x"\n[hosted.env]\nSEQUENCE_API_KEY = "x"\n', "reserved names: SEQUENCE_API_KEY", ""),
]


@pytest.mark.parametrize(("toml", "expect", "also"), BAD_TOMLS)
def test_bad_sequence_toml_says_what_and_where(env: dict[str, str], tmp_path: Path, toml: str, expect: str,
                                               also: str) -> None:
    folder = make_folder(tmp_path / "s", toml)
    p = run(["strategy", "deploy", str(folder)], env, check=False)
    assert p.returncode != 0
    assert expect in p.stderr and also in p.stderr, p.stderr
    assert json.loads(run(["strategy", "list", "--json"], env).stdout)["strategies"] == []


@pytest.mark.parametrize(("content", "expect"), [
    ("[1, 2]", "must contain a JSON object"),
    ("{not json", "is not valid JSON"),
    ('{"A": 1}', "values must be strings"),
])
def test_secrets_file_that_is_not_a_json_object(env: dict[str, str], tmp_path: Path, content: str, expect: str) -> None:
    folder = make_folder(tmp_path / "s", '[strategy]\nname = "t"\n')
    sf = tmp_path / "s.json"
    sf.write_text(content)
    p = run(["strategy", "deploy", str(folder), "--secrets-file", str(sf)], env, check=False)
    assert p.returncode == 1 and expect in p.stderr


def test_missing_entrypoint_and_missing_name(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    p = run(["strategy", "deploy", str(folder), "--name", "x"], env, check=False)
    assert p.returncode == 1 and "entrypoint main.py not found" in p.stderr
    folder2 = make_folder(tmp_path / "notoml")
    p = run(["strategy", "deploy", str(folder2)], env, check=False)
    assert p.returncode == 1 and f"no Sequence.toml in {folder2}" in p.stderr and "--name" in p.stderr
    folder3 = make_folder(tmp_path / "noname", "[hosted]\nentrypoint = \"main.py\"\n")
    p = run(["strategy", "deploy", str(folder3)], env, check=False)
    assert p.returncode == 1 and "the strategy has no name" in p.stderr


def test_an_entrypoint_that_does_not_compile_is_refused_with_its_line(env: dict[str, str], tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "syn", '[strategy]\nname = "syn"\n', main='import time\nprint("hi", flush=True\n')
    p = run(["strategy", "deploy", str(folder), "--start"], env, check=False)
    assert p.returncode == 1, p.stdout
    assert "main.py:2: SyntaxError: '(' was never closed" in p.stderr and "Traceback" not in p.stderr
    assert "syn" not in run(["strategy", "list"], env).stdout  # nothing was deployed
    (folder / "main.py").write_bytes(b"print('a')\x00\n")
    p = run(["strategy", "deploy", str(folder)], env, check=False)
    assert p.returncode == 1 and "main.py:" in p.stderr and "null bytes" in p.stderr


def test_unknown_ids_and_names(env: dict[str, str]) -> None:
    for cmd in (["inspect"], ["start"], ["stop"], ["logs"], ["runs"], ["delete", "--yes"]):
        p = run(["strategy", *cmd, "nope"], env, check=False)
        assert p.returncode == 1 and "strategy not found" in p.stderr


def test_unknown_command_and_bad_flag_are_click_errors(env: dict[str, str]) -> None:
    p = run(["frobnicate"], env, check=False)
    assert p.returncode == 2 and "No such command" in p.stderr
    p = run(["strategy", "list", "--bogus"], env, check=False)
    assert p.returncode == 2 and "No such option" in p.stderr


def test_old_style_strategy_misuse_gets_a_helpful_message(env: dict[str, str], tmp_path: Path) -> None:
    p = run(["strategy", str(tmp_path)], env, check=False)
    assert p.returncode == 2 and "sequence strategy deploy" in p.stderr
    p = run(["strategy", "create"], env, check=False)
    assert p.returncode == 2 and "did you mean `sequence strategy deploy`" in p.stderr


def test_invalid_or_missing_key_says_what_to_do(env: dict[str, str], tmp_path: Path) -> None:
    p = run(["strategy", "list"], {**env, "SEQUENCE_API_KEY": "seq_live_bogus"}, check=False)
    assert p.returncode == 1 and "invalid or revoked" in p.stderr and "sequence login" in p.stderr
    bare = {k: v for k, v in env.items() if k != "SEQUENCE_API_KEY"}
    p = run(["strategy", "list"], bare, check=False)
    assert p.returncode == 1 and "no API key configured" in p.stderr


def test_unreachable_api_says_to_start_it(env: dict[str, str]) -> None:
    p = run(["strategy", "list"], {**env, "SEQUENCE_API_URL": "http://127.0.0.1:9"}, check=False)
    assert p.returncode == 1 and "cannot reach" in p.stderr and "sequence up" in p.stderr


def test_keys_create_list_revoke(env: dict[str, str]) -> None:
    made = json.loads(run(["keys", "create", "--test", "--json"], env).stdout)
    assert set(made) == {"key", "key_id", "mode"} and made["key"].startswith("seq_test_")
    plain = run(["keys", "create"], env).stdout.strip()
    assert plain.startswith("seq_live_")
    listed = json.loads(run(["keys", "list", "--json"], env).stdout)["keys"]
    assert made["key_id"] in [k["key_id"] for k in listed]
    assert made["key"] not in json.dumps(listed)
    run(["keys", "revoke", made["key_id"]], env)
    p = run(["strategy", "list"], {**env, "SEQUENCE_API_KEY": made["key"]}, check=False)
    assert p.returncode == 1


def test_login_writes_a_private_config(env: dict[str, str], server: LiveServer, tmp_path: Path) -> None:
    bare = {k: v for k, v in env.items() if k not in ("SEQUENCE_API_KEY", "SEQUENCE_API_URL")}
    run(["login", "--api-url", server.url, "--api-key", server.live_key], bare)
    cfg = tmp_path / "cfg" / "sequence" / "config.toml"
    assert cfg.stat().st_mode & 0o777 == 0o600
    assert json.loads(run(["strategy", "list", "--json"], bare).stdout) == {"strategies": []}
    p = run(["login", "--api-url", server.url, "--api-key", "seq_live_wrong"], bare, check=False)
    assert p.returncode == 1
