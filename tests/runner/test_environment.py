"""The strategy environment: built from nothing, layered, invariants reserved."""

from __future__ import annotations

import pytest

from sequence.runner import RunEnvironmentError
from sequence.runner.environment import RunIdentity, build_environment, reserved_names

IDENTITY = RunIdentity(
    api_key="seq_live_k",
    api_url="http://127.0.0.1:8700",
    strategy_id="sid",
    run_id="rid",
    client_id="acme",
    is_sandbox=False,
)
INVARIANTS = {
    "SEQUENCE_API_KEY": "seq_live_k",
    "SEQUENCE_API_URL": "http://127.0.0.1:8700",
    "SEQUENCE_STRATEGY_ID": "sid",
    "SEQUENCE_RUN_ID": "rid",
    "SEQUENCE_CLIENT_ID": "acme",
    "SEQUENCE_IS_SANDBOX": "false",
    "SEQUENCE_STRATEGY_MANIFEST": "/workspace/.sequence/manifest.json",
}


def _env(**kw: object) -> dict[str, str]:
    return build_environment(
        IDENTITY,
        manifest_path="/workspace/.sequence/manifest.json",
        home="/workspace",
        **kw,  # type: ignore[arg-type]
    )


def test_environment_is_exactly_the_documented_variables() -> None:
    assert _env(path_prefix="/opt/py/bin") == {
        **INVARIANTS,
        "PATH": "/opt/py/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/workspace",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }


def test_runner_environment_never_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQUENCE_TEST_RUNNER_CANARY", "leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leak")
    env = _env()
    assert "leak" not in env.values()


def test_is_sandbox_is_a_true_false_string() -> None:
    sandbox_identity = RunIdentity(**{**IDENTITY.__dict__, "is_sandbox": True})
    env = build_environment(sandbox_identity, manifest_path="/m", home="/h")
    assert env["SEQUENCE_IS_SANDBOX"] == "true"
    assert _env()["SEQUENCE_IS_SANDBOX"] == "false"


def test_secrets_beat_env_and_both_beat_the_base() -> None:
    env = _env(
        env={"LOG_LEVEL": "info", "SHARED": "from-env", "LANG": "en_US.UTF-8"},
        secrets={"SHARED": "from-secret", "TOKEN": "t"},
    )
    assert env["LOG_LEVEL"] == "info"
    assert env["SHARED"] == "from-secret"
    assert env["TOKEN"] == "t"
    assert env["LANG"] == "en_US.UTF-8", "user env may tune the base (not the invariants)"


def test_reserved_names_never_override_the_invariants() -> None:
    env = _env(
        env={"SEQUENCE_API_KEY": "forged", "SEQUENCE_RUN_ID": "forged", "SEQUENCE_NEW": "x"},
        secrets={"SEQUENCE_API_URL": "http://evil", "SEQUENCE_STRATEGY_MANIFEST": "/etc/passwd"},
    )
    for name, value in INVARIANTS.items():
        assert env[name] == value
    assert "SEQUENCE_NEW" not in env
    assert reserved_names({"SEQUENCE_X": "1", "OK": "1"}, {"SEQUENCE_Y": "2"}) == [
        "SEQUENCE_X",
        "SEQUENCE_Y",
    ]


def test_unsandboxed_runs_get_a_private_tmpdir() -> None:
    assert _env(tmpdir="/data/runs/r/tmp")["TMPDIR"] == "/data/runs/r/tmp"
    assert "TMPDIR" not in _env()


@pytest.mark.parametrize(
    ("env", "secrets", "match"),
    [
        ({"A=B": "x"}, {}, "not a valid environment name"),
        ({"": "x"}, {}, "not a valid environment name"),
        ({"A": "x\x00y"}, {}, "NUL"),
        ({}, {"S": 5}, "must be a string"),
    ],
)
def test_unusable_names_or_values_are_rejected(env: dict, secrets: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(RunEnvironmentError, match=match):
        _env(env=env, secrets=secrets)
