"""Coordinator settings, declared once.

Every setting has a ``SEQUENCE_*`` environment variable (shown in ``--help``
of the commands that take it).  The environment is passed in, never read from
a global, so tests control it.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from sequence.venues import VENUES

#: Where each venue's market data comes from: the simulator (default), the real venue, a
#: recording (``market_replay``; with one, every venue that would be simulated replays), or nowhere.
VENUE_MODES = ("sim", "live", "replay", "off")
#: The real venues' documented endpoints (VENUES.md). Every one is a setting: tests and
#: demo environments point them elsewhere (e.g. Kalshi's demo, local venue servers).
LIVE_URLS: dict[str, str] = {
    "kalshi_api_url": "https://external-api.kalshi.com/trade-api/v2",
    "kalshi_ws_url": "wss://external-api-ws.kalshi.com/trade-api/ws/v2",
    "polymarket_api_url": "https://clob.polymarket.com",
    "polymarket_gamma_url": "https://gamma-api.polymarket.com",
    "polymarket_ws_url": "wss://ws-subscriptions-clob.polymarket.com/ws/market",
    "coinbase_api_url": "https://api.coinbase.com/api/v3/brokerage",
    "coinbase_ws_url": "wss://advanced-trade-ws.coinbase.com",
    # The user channels: our orders and fills (real trading).
    "polymarket_user_ws_url": "wss://ws-subscriptions-clob.polymarket.com/ws/user",
    "coinbase_user_ws_url": "wss://advanced-trade-ws-user.coinbase.com",
}

DEFAULT_REGIONS: dict[str, str] = {
    "coinbase": "us-east-1",
    "kalshi": "eu-west-1",
    "polymarket": "eu-west-1",
}


def redacted_url(url: str) -> str:
    """*url* without its password (``postgresql://user:***@host/db``), for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


#: ``SEQUENCE_*`` names that are not coordinator or runner settings: the CLI's and SDK's, what a
#: run is given (docs/configuration.md "What a run's environment holds").
OTHER_NAMES = frozenset({
    "SEQUENCE_API_URL", "SEQUENCE_API_KEY", "SEQUENCE_DEBUG",
    "SEQUENCE_RUN_ID", "SEQUENCE_STRATEGY_ID", "SEQUENCE_CLIENT_ID", "SEQUENCE_IS_SANDBOX",
    "SEQUENCE_STRATEGY_MANIFEST",
    "SEQUENCE_RUNNER_PARENT_PID",  # set by `sequence up` for its runner (cli/lifeline.py)
})
#: The test suite's own switches (never read by the product).
TEST_PREFIX = "SEQUENCE_TEST_"


def check_names(env: Mapping[str, str]) -> None:
    """A ``SEQUENCE_*`` variable nothing reads is a typo that would silently change nothing:
    refuse it, naming the closest real setting."""
    known = ({"SEQUENCE_" + f.name.upper() for f in fields(Settings)} | OTHER_NAMES
             | {"SEQUENCE_RUNNER_" + f.name.upper() for f in fields(RunnerSettings)})
    unknown = sorted(k for k in env if k.startswith("SEQUENCE_") and k not in known and not k.startswith(TEST_PREFIX))
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise SettingsError(f"unknown setting {unknown[0]}{hint} (every setting: docs/configuration.md)")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".sequence")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8700
    # URL strategies use to reach the coordinator (SEQUENCE_API_URL inside a run).
    public_url: str | None = None
    max_artifact_mb: int = 50
    # Per client: strategies and algo deployments it may have (a 409 past it). Each keeps its
    # artifact or module in the store; without a cap one key could fill the disk.
    max_strategies: int = 1000
    max_algos: int = 100
    # Cap on an artifact's inflated size, enforced while inflating at upload (413 above it).
    max_unpacked_mb: int = 512
    # Dependency layers (docs/configuration.md): caps on one wheel and on one layer's wheels,
    # and how long a layer no strategy uses is kept before it is garbage-collected.
    max_wheel_mb: int = 256
    max_layer_mb: int = 1024
    layer_retention_hours: float = 168.0
    # Per strategy: stored log bytes kept (oldest lines of old runs dropped first); 0 = unlimited.
    log_retention_mb: int = 256
    # Per strategy, enforced by the runner: sustained lines/second (0 = unlimited) and burst.
    log_rate_lines: int = 10_000
    log_burst_lines: int = 100_000
    # A runner SIGKILL is noticed after at most one lease: 12 s keeps failover under 15 s.
    lease_seconds: float = 12.0
    heartbeat_seconds: float = 2.0
    regions: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_REGIONS))
    market_seed: int = 7
    market_replay: Path | None = None
    market_rate_hz: float = 8.0
    # Per venue: sim | live | replay | off (SEQUENCE_VENUES="live" or "kalshi=live,coinbase=off").
    venues: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(VENUES, "sim"))
    kalshi_api_url: str = LIVE_URLS["kalshi_api_url"]
    kalshi_ws_url: str = LIVE_URLS["kalshi_ws_url"]
    # Kalshi's WebSocket needs a key even for public data; without one books are polled over REST.
    kalshi_key_id: str | None = None
    kalshi_private_key_file: Path | None = None
    polymarket_api_url: str = LIVE_URLS["polymarket_api_url"]
    polymarket_gamma_url: str = LIVE_URLS["polymarket_gamma_url"]
    polymarket_ws_url: str = LIVE_URLS["polymarket_ws_url"]
    coinbase_api_url: str = LIVE_URLS["coinbase_api_url"]
    coinbase_ws_url: str = LIVE_URLS["coinbase_ws_url"]
    polymarket_user_ws_url: str = LIVE_URLS["polymarket_user_ws_url"]
    coinbase_user_ws_url: str = LIVE_URLS["coinbase_user_ws_url"]
    # Live catalogues: re-listed this often; capped at this many markets per venue (0 = no cap).
    live_catalogue_seconds: float = 300.0
    live_max_markets: int = 0
    # Per-venue fee overrides, JSON (docs/trading.md), e.g. {"coinbase": {"model": "notional", "taker": 0.004}}.
    trading_fees: Mapping[str, Any] | None = None
    # WASM algos (docs/algos.md): fuel per call (about one unit an instruction), linear memory
    # cap, log lines a second, orders a second.
    algo_fuel: int = 2_000_000
    algo_memory_mb: int = 16
    algo_log_rate: int = 100
    algo_order_rate: int = 100
    # The coordinator runs Python's garbage collection from its event loop, between events,
    # this often (src/sequence/api/gcpace.py); 0 leaves CPython's own collector as it is.
    gc_pacing_ms: float = 10.0
    log_level: str = "info"

    @property
    def max_artifact_bytes(self) -> int:
        return self.max_artifact_mb * 1024 * 1024

    @property
    def max_unpacked_bytes(self) -> int:
        return self.max_unpacked_mb * 1024 * 1024

    @property
    def max_wheel_bytes(self) -> int:
        return self.max_wheel_mb * 1024 * 1024

    @property
    def max_layer_bytes(self) -> int:
        return self.max_layer_mb * 1024 * 1024

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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        check_names(env)
        values: dict[str, Any] = {}
        conv: dict[str, Any] = {
            "data_dir": Path,
            "database_url": str,
            "host": str,
            "port": int,
            "public_url": str,
            "max_artifact_mb": int,
            "max_strategies": int,
            "max_algos": int,
            "max_unpacked_mb": int,
            "max_wheel_mb": int,
            "max_layer_mb": int,
            "layer_retention_hours": float,
            "log_retention_mb": int,
            "log_rate_lines": int,
            "log_burst_lines": int,
            "lease_seconds": float,
            "heartbeat_seconds": float,
            "market_seed": int,
            "market_replay": Path,
            "market_rate_hz": float,
            "log_level": str,
            **dict.fromkeys(LIVE_URLS, str),
            "kalshi_key_id": str,
            "kalshi_private_key_file": Path,
            "live_catalogue_seconds": float,
            "live_max_markets": int,
            "algo_fuel": int,
            "algo_memory_mb": int,
            "algo_log_rate": int,
            "algo_order_rate": int,
            "gc_pacing_ms": float,
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
        if env.get("SEQUENCE_VENUES"):
            values["venues"] = parse_venues(env["SEQUENCE_VENUES"])
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
        for name in ("market_replay", "kalshi_private_key_file"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).expanduser().absolute())

    def validate(self) -> None:
        if self.max_strategies < 1 or self.max_algos < 1:
            raise SettingsError("max_strategies and max_algos must be at least 1")
        if not 1 <= self.max_artifact_mb <= 4096:
            raise SettingsError("max_artifact_mb must be between 1 and 4096")
        if not 1 <= self.max_unpacked_mb <= 65536:
            raise SettingsError("max_unpacked_mb must be between 1 and 65536")
        if not 1 <= self.max_wheel_mb <= self.max_layer_mb <= 65536:
            raise SettingsError("max_wheel_mb must be at least 1 and at most max_layer_mb (at most 65536)")
        if not self.layer_retention_hours > 0:
            raise SettingsError("layer_retention_hours must be more than 0")
        if self.log_retention_mb < 0:
            raise SettingsError("log_retention_mb must be 0 (unlimited) or more")
        if self.log_rate_lines < 0 or self.log_burst_lines < 0:
            raise SettingsError("log_rate_lines and log_burst_lines must be 0 or more")
        if self.heartbeat_seconds * 3 > self.lease_seconds:
            raise SettingsError("lease_seconds must be at least 3x heartbeat_seconds")
        if set(self.venues) != set(VENUES) or any(m not in VENUE_MODES for m in self.venues.values()):
            raise SettingsError(f"venues must give each of {', '.join(VENUES)} one of {', '.join(VENUE_MODES)}")
        if all(m == "off" for m in self.venues.values()):
            raise SettingsError("SEQUENCE_VENUES turns every venue off; leave at least one on (sim or live)")
        replayed = [v for v, m in self.venues.items() if m == "replay"]
        if replayed and self.market_replay is None:
            raise SettingsError(f"{replayed[0]}=replay needs a recording: set SEQUENCE_MARKET_REPLAY or pass --replay")
        for name in LIVE_URLS:
            url = getattr(self, name)
            if not url.startswith(("https://", "http://", "wss://", "ws://")):
                raise SettingsError(f"SEQUENCE_{name.upper()}={url!r} must be an http(s):// or ws(s):// URL")
        if (self.kalshi_key_id is None) != (self.kalshi_private_key_file is None):
            raise SettingsError("set both SEQUENCE_KALSHI_KEY_ID and SEQUENCE_KALSHI_PRIVATE_KEY_FILE, or neither")
        if self.live_catalogue_seconds < 5 or self.live_max_markets < 0:
            raise SettingsError("live_catalogue_seconds must be at least 5 and live_max_markets 0 or more")
        if not (10_000 <= self.algo_fuel <= 10_000_000_000 and 1 <= self.algo_memory_mb <= 4096
                and 1 <= self.algo_log_rate <= 100_000 and 1 <= self.algo_order_rate <= 100_000):
            raise SettingsError("algo_fuel must be 10000-10000000000, algo_memory_mb 1-4096, "
                                "algo_log_rate and algo_order_rate 1-100000")
        if not 0 <= self.gc_pacing_ms <= 1000:
            raise SettingsError("gc_pacing_ms must be between 0 (off) and 1000")
        if self.database_url and not self.database_url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
            raise SettingsError("SEQUENCE_DATABASE_URL must be a sqlite:/// or postgresql:// URL")


@dataclass(frozen=True)
class RunnerSettings:
    """A runner's settings (``sequence runner``): each has a ``SEQUENCE_RUNNER_*`` variable,
    and the command's flags override them. Read once, here, like the coordinator's."""

    api_url: str = "http://127.0.0.1:8700"
    token: str | None = field(default=None, repr=False)
    region: str = "us-east-1"  # region(s) served, comma-separated
    capacity: int = 50  # concurrent strategies
    data_dir: Path = Path(".sequence/runner")  # run directories and log spools
    runtime: str | None = None  # the strategies' Python (default: a CPython 3.12 if found)
    no_egress: bool = False  # no strategy reaches the internet, whatever its Sequence.toml says
    egress_allow: str | None = None  # extra networks (CIDRs) the egress proxy may reach
    bwrap: str = "bwrap"  # the bubblewrap binary
    layer_retention_hours: float = 168.0  # cached dependency layers unused this long are removed
    max_starting: int = 8  # runs being started at once; the runner claims no more than that
    # Where dependency layers are unpacked (None: /var/lib/sequence/layers for a root runner,
    # <data_dir>/layers otherwise); every sandbox uid must be able to reach it.
    layer_cache: Path | None = None

    #: field -> how its variable's text is read
    _CONV: ClassVar[dict[str, Any]] = {
        "api_url": str, "token": str, "region": str, "capacity": int, "data_dir": Path, "runtime": str,
        "no_egress": lambda v: v.strip().lower() in ("1", "true", "yes", "on"), "egress_allow": str, "bwrap": str,
        "layer_retention_hours": float, "layer_cache": Path, "max_starting": int,
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> RunnerSettings:
        env = os.environ if environ is None else environ
        check_names(env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = "SEQUENCE_RUNNER_" + f.name.upper()
            if env.get(name):
                try:
                    values[f.name] = cls._CONV[f.name](env[name])
                except ValueError as exc:
                    raise SettingsError(f"{name}={env[name]!r} is not a valid {f.name}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if settings.capacity < 1:
            raise SettingsError("the runner's capacity must be at least 1 (SEQUENCE_RUNNER_CAPACITY, --capacity)")
        if settings.max_starting < 1:
            raise SettingsError("SEQUENCE_RUNNER_MAX_STARTING must be at least 1")
        if not settings.layer_retention_hours > 0:
            raise SettingsError("SEQUENCE_RUNNER_LAYER_RETENTION_HOURS must be more than 0")
        if not settings.region.strip():
            raise SettingsError("the runner needs a region (SEQUENCE_RUNNER_REGION, --region)")
        if not settings.api_url.startswith(("http://", "https://")):
            raise SettingsError(f"SEQUENCE_RUNNER_API_URL={settings.api_url!r} must be an http(s):// URL")
        return settings

    def __post_init__(self) -> None:
        # Absolute before anything changes directory (the runner does).
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().absolute())


def parse_venues(text: str) -> dict[str, str]:
    """``live`` (every venue), ``sim``, or ``kalshi=live,coinbase=off`` (the others stay ``sim``)."""
    text = text.strip()
    if text in VENUE_MODES:
        return dict.fromkeys(VENUES, text)
    out = dict.fromkeys(VENUES, "sim")
    for part in text.split(","):
        if not part.strip():
            continue
        venue, sep, mode = (x.strip() for x in part.partition("="))
        if not sep or venue not in VENUES or mode not in VENUE_MODES:
            raise SettingsError(
                f"SEQUENCE_VENUES entry {part.strip()!r} must be venue=mode with venue one of "
                f"{', '.join(VENUES)} and mode one of {', '.join(VENUE_MODES)} (or just 'live' / 'sim')")
        out[venue] = mode
    return out


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
