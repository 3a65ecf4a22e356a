"""Settings read from the environment: unknown ``SEQUENCE_*`` names are refused by name."""

from __future__ import annotations

import pytest

from sequence.settings import OTHER_NAMES, Settings, SettingsError


def test_a_misspelt_setting_is_refused_naming_the_closest_real_one() -> None:
    with pytest.raises(SettingsError, match="unknown setting SEQUENCE_VENUE; did you mean SEQUENCE_VENUES"):
        Settings.from_env({"SEQUENCE_VENUE": "live"})
    with pytest.raises(SettingsError, match="SEQUENCE_CLAIM_WAIT_SECONDS"):  # removed: it never did anything
        Settings.from_env({"SEQUENCE_CLAIM_WAIT_SECONDS": "5"})
    with pytest.raises(SettingsError, match=r"unknown setting SEQUENCE_WHATEVER.*docs/configuration\.md"):
        Settings.from_env({"SEQUENCE_WHATEVER": "1"})


def test_the_names_the_cli_the_runner_and_runs_use_are_known() -> None:
    env = dict.fromkeys(OTHER_NAMES, "x") | {"SEQUENCE_TEST_SKIP_PG": "1", "SEQUENCE_PORT": "9000", "PATH": "/bin"}
    assert Settings.from_env(env).port == 9000


def test_the_runners_settings_come_from_its_variables_and_flags_override_them(tmp_path: object) -> None:
    from pathlib import Path

    from sequence.settings import RunnerSettings

    env = {"SEQUENCE_RUNNER_REGION": "eu-west-1", "SEQUENCE_RUNNER_CAPACITY": "7",
           "SEQUENCE_RUNNER_NO_EGRESS": "1", "SEQUENCE_RUNNER_DATA_DIR": "rel/runner", "SEQUENCE_RUNNER_TOKEN": "t"}
    rs = RunnerSettings.from_env(env)
    assert (rs.region, rs.capacity, rs.no_egress, rs.token) == ("eu-west-1", 7, True, "t")
    assert rs.data_dir.is_absolute() and rs.data_dir == Path("rel/runner").absolute()
    assert "t" not in repr(rs).split("token")[-1][:5]  # the token is not in the repr
    assert RunnerSettings.from_env(env, capacity=3, region=None).capacity == 3  # a flag wins; None: not given
    assert RunnerSettings.from_env({}).api_url == "http://127.0.0.1:8700"
    for bad, needle in [({"SEQUENCE_RUNNER_CAPACITY": "many"}, "SEQUENCE_RUNNER_CAPACITY"),
                        ({"SEQUENCE_RUNNER_CAPACITY": "0"}, "capacity must be at least 1"),
                        ({"SEQUENCE_RUNNER_API_URL": "coordinator:8700"}, "http(s)://"),
                        ({"SEQUENCE_RUNNER_REGOIN": "x"}, "did you mean SEQUENCE_RUNNER_REGION")]:
        with pytest.raises(SettingsError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            RunnerSettings.from_env(bad)
