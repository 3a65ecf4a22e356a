"""Fixtures for driving the real `sequence` binary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import LiveServer


@pytest.fixture
def env(server: LiveServer, tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCE_")}
    e.update(XDG_CONFIG_HOME=str(tmp_path / "cfg"), HOME=str(tmp_path), SEQUENCE_API_URL=server.url,
             SEQUENCE_API_KEY=server.live_key, COLUMNS="200")
    return e
