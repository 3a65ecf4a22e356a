"""The strategy's environment, built from nothing.

Layering, later wins (API.md "What a run gets")::

    base       PATH, HOME, LANG, PYTHONUNBUFFERED=1 (and TMPDIR when unsandboxed;
               HTTP_PROXY/HTTPS_PROXY/NO_PROXY, both cases, when the run has
               public egress through the runner's proxy)
    env        [hosted.env] with --env overrides already merged by the coordinator
    secrets    [hosted.secrets] (+ --secrets-file), beating env on collision
    invariants SEQUENCE_API_KEY, SEQUENCE_API_URL, SEQUENCE_STRATEGY_ID,
               SEQUENCE_RUN_ID, SEQUENCE_CLIENT_ID, SEQUENCE_IS_SANDBOX,
               SEQUENCE_STRATEGY_MANIFEST

The invariants are applied last, and ``SEQUENCE_*`` names in ``env`` /
``secrets`` are dropped (the coordinator already rejects them with 400; this
is defence in depth).  Nothing is taken from the runner's own ``os.environ``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sequence.runner.errors import RunEnvironmentError

__all__ = ["RESERVED_PREFIX", "RunIdentity", "build_environment", "reserved_names"]

log = logging.getLogger("sequence.runner")

RESERVED_PREFIX = "SEQUENCE_"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class RunIdentity:
    """What a run is, as the strategy sees it through ``SEQUENCE_*``."""

    api_key: str
    api_url: str
    strategy_id: str
    run_id: str
    client_id: str
    is_sandbox: bool


def reserved_names(*mappings: Mapping[str, str]) -> list[str]:
    """Names in *mappings* that would shadow a ``SEQUENCE_*`` invariant."""
    return sorted({k for m in mappings for k in m if k.startswith(RESERVED_PREFIX)})


def _check(kind: str, items: Mapping[str, str]) -> None:
    for name, value in items.items():
        if not isinstance(name, str) or not name or "=" in name or "\x00" in name:
            raise RunEnvironmentError(
                f"{kind} variable name {name!r} is not a valid environment name"
            )
        if not isinstance(value, str):
            raise RunEnvironmentError(
                f"{kind} variable {name!r} must be a string, got {type(value).__name__}"
            )
        if "\x00" in value:
            raise RunEnvironmentError(f"{kind} variable {name!r} contains a NUL byte")


def build_environment(
    identity: RunIdentity,
    *,
    manifest_path: str,
    home: str,
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    path_prefix: str | None = None,
    tmpdir: str | None = None,
    proxy: str | None = None,
    pythonpath: str | None = None,
) -> dict[str, str]:
    """The complete environment of one strategy process.

    *manifest_path* and *home* are paths as the strategy sees them
    (``/workspace/...`` inside the sandbox, the real path unsandboxed).
    *path_prefix* (the runtime interpreter's bin dir) goes first on PATH so
    ``python3`` is the runtime.  *tmpdir* is set as TMPDIR when given (the
    unsandboxed runner points it at a per-run directory).  *pythonpath* (the
    dependency layer) goes on PYTHONPATH, after any PYTHONPATH the strategy sets.
    """
    user_env = dict(env or {})
    user_secrets = dict(secrets or {})
    _check("env", user_env)
    _check("secret", user_secrets)
    shadowing = reserved_names(user_env, user_secrets)
    if shadowing:
        log.warning(
            "run %s: ignoring reserved names in env/secrets: %s",
            identity.run_id,
            ", ".join(shadowing),
        )

    out: dict[str, str] = {
        "PATH": f"{path_prefix}:{DEFAULT_PATH}" if path_prefix else DEFAULT_PATH,
        "HOME": home,
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }
    if tmpdir:
        out["TMPDIR"] = tmpdir
    if proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            out[name] = proxy
        out["NO_PROXY"] = out["no_proxy"] = "127.0.0.1,localhost,::1"
    for layer in (user_env, user_secrets):
        out.update({k: v for k, v in layer.items() if not k.startswith(RESERVED_PREFIX)})
    if pythonpath:
        out["PYTHONPATH"] = f"{out['PYTHONPATH']}:{pythonpath}" if out.get("PYTHONPATH") else pythonpath
    out.update(
        {
            "SEQUENCE_API_KEY": identity.api_key,
            "SEQUENCE_API_URL": identity.api_url,
            "SEQUENCE_STRATEGY_ID": identity.strategy_id,
            "SEQUENCE_RUN_ID": identity.run_id,
            "SEQUENCE_CLIENT_ID": identity.client_id,
            "SEQUENCE_IS_SANDBOX": "true" if identity.is_sandbox else "false",
            "SEQUENCE_STRATEGY_MANIFEST": manifest_path,
        }
    )
    for name in ("SEQUENCE_API_KEY", "SEQUENCE_API_URL", "SEQUENCE_RUN_ID"):
        if "\x00" in out[name]:
            raise RunEnvironmentError(f"{name} contains a NUL byte")
    return out
