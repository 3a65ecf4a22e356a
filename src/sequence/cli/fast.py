"""Standard-library-only answers to the commonest read-only CLI commands.

``strategy list --json`` and ``strategy inspect NAME --json`` are what
scripts call in loops; they need a config file, one or two HTTP GETs and
``json.dumps`` — not Typer, Rich and httpx. :func:`answer` handles exactly
those argument lists and returns False for anything else *and for any
error*, so the full CLI runs the command again and says what went wrong
with its usual messages and hints. Output is byte-identical to the full
CLI's (``emit_json``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import quote

DEFAULT_API_URL = "http://127.0.0.1:8700"


def _config() -> tuple[str, str | None]:
    """(api_url, api_key) as :func:`sequence.cli.config.load` resolves them."""
    env = os.environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", os.path.expanduser("~")), ".config")
    data: dict[str, Any] = {}
    path = os.path.join(base, "sequence", "config.toml")
    if os.path.exists(path):
        import tomllib

        with open(path, "rb") as f:
            data = tomllib.load(f)
    url = (env.get("SEQUENCE_API_URL") or data.get("api_url") or DEFAULT_API_URL).rstrip("/")
    return url, env.get("SEQUENCE_API_KEY") or data.get("api_key")


class _Fallback(Exception):
    """Anything unexpected: let the full CLI do it (and explain it)."""


def _get(conn: Any, base_path: str, key: str, path: str) -> Any:
    conn.request("GET", base_path + path, headers={"Authorization": f"Bearer {key}",
                                                    "User-Agent": "sequence-cli"})
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise _Fallback(r.status)
    return json.loads(body)


def _emit(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def answer(argv: list[str]) -> bool:
    """True when the command was answered here; False: run the full CLI."""
    if argv == ["strategy", "list", "--json"]:
        what = "list"
    elif len(argv) == 4 and argv[:2] == ["strategy", "inspect"] and argv[3] == "--json" and argv[2][:1] != "-":
        what = "inspect"
    else:
        return False
    try:
        url, key = _config()
        if not key:
            return False
        from http.client import HTTPConnection, HTTPSConnection
        from urllib.parse import urlsplit

        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            return False
        cls = HTTPSConnection if u.scheme == "https" else HTTPConnection
        conn = cls(u.hostname, u.port, timeout=30)
        try:
            base = u.path.rstrip("/")
            if what == "inspect":
                out = _get(conn, base, key, "/v1/strategies/" + quote(argv[2], safe=""))
            else:
                res = _get(conn, base, key, "/v1/strategies?limit=500")
                items = res["strategies"]
                while res.get("next_cursor"):
                    res = _get(conn, base, key, "/v1/strategies?limit=500&cursor=" + quote(res["next_cursor"]))
                    items.extend(res["strategies"])
                out = {"strategies": items}
        finally:
            conn.close()
    except Exception:
        return False
    _emit(out)
    return True
