"""docs/markets.md must keep up with the code it describes."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from sequence.market import ManualClock, MarketService, SimConfig
from sequence.market.service import MAX_DEPTH, MAX_LIMIT
from sequence.stream.protocol import MAX_SUBSCRIPTIONS

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "markets.md").read_text()
# The stream's protocol and its WebSocket endpoint, where every stream error code is raised.
STREAM = "".join((ROOT / "src" / "sequence" / p).read_text() for p in ("stream/protocol.py", "api/routes/stream.py"))


def test_endpoints_and_channels_are_documented() -> None:
    for path in ("/v1/markets", "/v1/quotes", "/v1/stream"):
        assert path in DOC
    service = MarketService.simulated(seed=1, clock=ManualClock(), venues=["coinbase"])
    for kind in service.hub.kinds:
        assert f"`{kind}:" in DOC or f"`{kind}`" in DOC


def test_stream_error_codes_are_documented() -> None:
    codes = set(re.findall(r'\berror\(\s*"([a-z_]+)"', STREAM)) | {"unknown_channel", "unknown_symbol"}
    assert codes >= {"bad_json", "binary_frame", "subscription_limit"}
    for code in codes:
        assert f"`{code}`" in DOC, code


def test_limits_and_settings_are_documented() -> None:
    assert f"**{MAX_SUBSCRIPTIONS}**" in DOC
    assert f"1–{MAX_LIMIT}" in DOC and f"0–{MAX_DEPTH}" in DOC
    for f in dataclasses.fields(SimConfig):
        assert f"`{f.name}`" in DOC or f.name in DOC, f.name
