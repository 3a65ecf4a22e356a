"""Coordinator settings, declared once.

Every setting has a ``SEQUENCE_*`` environment variable (shown in ``--help``
of the commands that take it).  The environment is passed in, never read from
a global, so tests control it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_REGIONS: dict[str, str] = {
    "coinbase": "us-east-1",
    "kalshi": "eu-west-1",
    "polymarket": "eu-west-1",
}


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".sequence")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8700
    # URL strategies use to reach the coordinator (SEQUENCE_API_URL inside a run).
    public_url: str | None = None
    max_artifact_mb: int = 50
    # Cap on an artifact's inflated size, enforced while inflating at upload (413 above it).
    max_unpacked_mb: int = 512
    # Per strategy: stored log bytes kept (oldest lines of old runs dropped first); 0 = unlimited.
    log_retention_mb: int = 256
    # Per strategy, enforced by the runner: sustained lines/second (0 = unlimited) and burst.
    log_rate_lines: int = 10_000
    log_burst_lines: int = 100_000
    # A runner SIGKILL is noticed after at most one lease: 12 s keeps failover under 15 s.
    lease_seconds: float = 12.0
    heartbeat_seconds: float = 2.0
    claim_wait_seconds: float = 20.0
    regions: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_REGIONS))
    market_seed: int = 7
    market_replay: Path | None = None
    market_rate_hz: float = 8.0
    # Per-venue fee overrides, JSON (docs/trading.md), e.g. {"coinbase": {"model": "notional", "taker": 0.004}}.
    trading_fees: Mapping[str, Any] | None = None
    log_level: str = "info"

    @property
    def max_artifact_bytes(self) -> int:
        return self.max_artifact_mb * 1024 * 1024

    @property
    def max_unpacked_bytes(self) -> int:
        return self.max_unpacked_mb * 1024 * 1024

    @property
    def log_retention_bytes(self) -> int:
        return self.log_retention_mb * 1024 * 1024

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'sequence.db').resolve()}"

    @property
    def api_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        conv: dict[str, Any] = {
            "data_dir": Path,
            "database_url": str,
            "host": str,
            "port": int,
            "public_url": str,
            "max_artifact_mb": int,
            "max_unpacked_mb": int,
            "log_retention_mb": int,
            "log_rate_lines": int,
            "log_burst_lines": int,
            "lease_seconds": float,
            "heartbeat_seconds": float,
            "claim_wait_seconds": float,
            "market_seed": int,
            "market_replay": Path,
            "market_rate_hz": float,
            "log_level": str,
        }
        for f in fields(cls):
            name = "SEQUENCE_" + f.name.upper()
            if f.name in conv and env.get(name):
                try:
                    values[f.name] = conv[f.name](env[name])
                except ValueError as exc:
                    raise SettingsError(f"{name}={env[name]!r} is not a valid {conv[f.name].__name__}") from exc
        if env.get("SEQUENCE_TRADING_FEES"):
            try:
                fees = json.loads(env["SEQUENCE_TRADING_FEES"])
            except json.JSONDecodeError as exc:
                raise SettingsError("SEQUENCE_TRADING_FEES must be a JSON object") from exc
            if not isinstance(fees, dict):
                raise SettingsError("SEQUENCE_TRADING_FEES must be a JSON object")
            values["trading_fees"] = fees
        if env.get("SEQUENCE_REGIONS"):
            values["regions"] = parse_regions(env["SEQUENCE_REGIONS"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def __post_init__(self) -> None:
        # Absolute from the moment settings exist: a relative data dir would be
        # resolved again by whoever changes directory later (the runner does).
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().absolute())
        if self.market_replay is not None:
            object.__setattr__(self, "market_replay", Path(self.market_replay).expanduser().absolute())

    def validate(self) -> None:
        if not 1 <= self.max_artifact_mb <= 4096:
            raise SettingsError("max_artifact_mb must be between 1 and 4096")
        if not 1 <= self.max_unpacked_mb <= 65536:
            raise SettingsError("max_unpacked_mb must be between 1 and 65536")
        if self.log_retention_mb < 0:
            raise SettingsError("log_retention_mb must be 0 (unlimited) or more")
        if self.log_rate_lines < 0 or self.log_burst_lines < 0:
            raise SettingsError("log_rate_lines and log_burst_lines must be 0 or more")
        if self.heartbeat_seconds * 3 > self.lease_seconds:
            raise SettingsError("lease_seconds must be at least 3x heartbeat_seconds")
        if self.database_url and not self.database_url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
            raise SettingsError("SEQUENCE_DATABASE_URL must be a sqlite:/// or postgresql:// URL")


def parse_regions(text: str) -> dict[str, str]:
    """``coinbase=us-east-1,kalshi=eu-west-1`` → mapping."""
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        target, sep, region = part.partition("=")
        if not sep or not target.strip() or not region.strip():
            raise SettingsError(f"SEQUENCE_REGIONS entry {part!r} must look like target=region")
        out[target.strip()] = region.strip()
    return out
