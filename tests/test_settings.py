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
