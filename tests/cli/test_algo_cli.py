"""``sequence algo`` flags refused before any request: what a user mistypes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sequence.cli.algo import parse_params
from sequence.cli.errors import CliError

SEQ = str(Path(sys.executable).parent / "sequence")


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
