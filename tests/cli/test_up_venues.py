"""`sequence up --venues …`: a bad venue setting stops start-up with what to do, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.acceptance.harness import SEQUENCE, clean_env, free_port


@pytest.mark.parametrize(("args", "extra", "needle"), [
    (["--venues", "real"], {}, "SEQUENCE_VENUES entry 'real'"),
    (["--venues", "kalshi=replay"], {}, "kalshi=replay needs a recording"),
    (["--venues", "kalshi=live"], {"SEQUENCE_KALSHI_KEY_ID": "id", "SEQUENCE_KALSHI_PRIVATE_KEY_FILE": "nope.pem"},
     "SEQUENCE_KALSHI_PRIVATE_KEY_FILE: cannot read"),
    ([], {"SEQUENCE_VENUES": "kalshi=off,polymarket=off,coinbase=off"}, "leave at least one on"),
    ([], {"SEQUENCE_VENUE": "live"}, "unknown setting SEQUENCE_VENUE; did you mean SEQUENCE_VENUES?"),
])
def test_bad_venue_settings_stop_sequence_up_with_a_clear_message(
        tmp_path: Path, args: list[str], extra: dict[str, str], needle: str) -> None:
    r = subprocess.run([str(SEQUENCE), "up", "--no-runner", "--data-dir", "data", "--port", str(free_port()), *args],
                       cwd=tmp_path, env=clean_env(tmp_path / "home", extra), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert needle in r.stderr + r.stdout, r.stderr + r.stdout
    assert "Traceback" not in r.stderr + r.stdout
