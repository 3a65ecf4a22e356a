"""sequence.bundle: the Sequence.toml keys the API validates too, and the env checks shared with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sequence import bundle


def _toml(tmp_path: Path, hosted: str) -> Path:
    p = tmp_path / "Sequence.toml"
    p.write_text(f'[strategy]\nname = "s"\n\n[hosted]\nentrypoint = "main.py"\n{hosted}\n')
    return p


def test_disk_quota_and_egress_are_read_from_hosted(tmp_path: Path) -> None:
    cfg = bundle.parse_config(_toml(tmp_path, 'disk_mb = 64\negress = "none"'))
    assert (cfg.disk_mb, cfg.egress) == (64, "none")
    cfg = bundle.parse_config(_toml(tmp_path, ""))
    assert (cfg.disk_mb, cfg.egress) == (None, None)  # the API's defaults apply: 1024, "public"


@pytest.mark.parametrize(("line", "needle"), [
    ("disk_mb = 8", "disk_mb must be a whole number of MiB from 16 to 65536"),
    ("disk_mb = 99999", "disk_mb must be"),
    ('disk_mb = "1G"', "disk_mb must be"),
    ("disk_mb = true", "disk_mb must be"),
    ('egress = "all"', "egress must be one of: 'public', 'none'"),
    ("egress = false", "egress must be one of"),
])
def test_bad_quota_or_egress_names_the_file_and_line(tmp_path: Path, line: str, needle: str) -> None:
    with pytest.raises(bundle.BundleError) as info:
        bundle.parse_config(_toml(tmp_path, line))
    assert needle in str(info.value) and "Sequence.toml:6" in str(info.value)


def test_env_values_that_cannot_be_execd_are_named() -> None:
    assert bundle.env_value_problem({"env": {"A": "x" * 32768}, "secrets": {"B": "ok"}}) is None
    slot, name, msg = bundle.env_value_problem({"env": {"A": "ok"}, "secrets": {"B": "a\0b"}}) or ("", "", "")
    assert (slot, name) == ("secrets", "B") and "NUL" in msg and "a\0b" not in msg
    slot, name, msg = bundle.env_value_problem({"env": {"BIG": "é" * 16385}}) or ("", "", "")
    assert (slot, name) == ("env", "BIG") and "32770 bytes" in msg  # counted in UTF-8 bytes
    slot, name, msg = bundle.env_value_problem({"env": {f"V{i}": "x" * 30000 for i in range(5)}}) or ("", "", "")
    assert (slot, name) == ("env", "") and "128 KiB" in msg
