"""CLI configuration: ``$XDG_CONFIG_HOME/sequence/config.toml`` (mode 0600),
overridden by ``SEQUENCE_API_URL`` / ``SEQUENCE_API_KEY``."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

DEFAULT_API_URL = "http://127.0.0.1:8700"


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".config")
    return Path(base) / "sequence" / "config.toml"


@dataclass
class CliConfig:
    api_url: str
    api_key: str | None
    test_api_key: str | None = None
    path: Path | None = None


class ConfigError(Exception):
    pass


def read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix it or run `sequence login` again") from exc


def load(environ: Mapping[str, str] | None = None, *, api_url: str | None = None,
         api_key: str | None = None) -> CliConfig:
    env = os.environ if environ is None else environ
    path = config_path(env)
    data = read_file(path)
    return CliConfig(
        api_url=(api_url or env.get("SEQUENCE_API_URL") or data.get("api_url") or DEFAULT_API_URL).rstrip("/"),
        api_key=api_key or env.get("SEQUENCE_API_KEY") or data.get("api_key"),
        test_api_key=data.get("test_api_key"),
        path=path,
    )


def save(values: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Path:
    path = config_path(environ)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = read_file(path)
    data.update({k: v for k, v in values.items() if v is not None})
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        tomli_w.dump(data, fh)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path
