"""``sequence keys …`` — your client's API keys.

Each command: its options → a function that calls the API and returns the data
(:func:`create_key`, :func:`list_keys`, :func:`revoke_key`) → rendering.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sequence.cli import config as cfgmod
from sequence.cli.http import Api
from sequence.cli.output import console, emit_json, err_console, table, when

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def create_key(api: Api, *, test: bool, name: str) -> dict[str, Any]:
    """A new key (``key`` is its only copy)."""
    res: dict[str, Any] = api.request("POST", "/v1/keys", json={"mode": "test" if test else "live", "name": name})
    return res


def list_keys(api: Api) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = api.request("GET", "/v1/keys")["keys"]
    return keys


def revoke_key(api: Api, key_id: str) -> dict[str, Any]:
    res: dict[str, Any] = api.request("DELETE", f"/v1/keys/{key_id}")
    return res


@app.command()
def create(
    test: Annotated[bool, typer.Option("--test", help="A seq_test_ key: every order it places is sandboxed.")] = False,
    name: Annotated[str, typer.Option("--name", help="A label for the key.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a key; it is printed once and cannot be shown again."""
    with Api(cfgmod.load()) as api:
        res = create_key(api, test=test, name=name)
    if as_json:
        emit_json({"key": res["key"], "key_id": res["key_id"], "mode": res["mode"]})
        return
    console.print(res["key"])
    err_console.print(f"[dim]{res['key_id']} ({res['mode']}); store it now — it is not shown again[/]")
    what = ("a test key: every order a strategy deployed with it places is paper-filled"
            if res["mode"] == "test" else "a live key")
    err_console.print(f"{what}. Use it for one command with SEQUENCE_API_KEY=<key> sequence strategy deploy . "
                      "--start, or make it the CLI's key with sequence login --api-url URL --api-key <key>.",
                      markup=False)


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List keys (prefixes only; secrets are never shown again)."""
    with Api(cfgmod.load()) as api:
        keys = list_keys(api)
    if as_json:
        emit_json({"keys": keys})
        return
    table(["key id", "prefix", "mode", "name", "created", "revoked"],
          [(k["key_id"], k["prefix"] + "…", k["mode"], k["name"], when(k["created_at"]), when(k["revoked_at"]))
           for k in keys], keep=("key id",))


@app.command()
def revoke(key_id: Annotated[str, typer.Argument(help="The key id (key_…) from `sequence keys list`.")],
           as_json: JsonOpt = False) -> None:
    """Revoke a key: it stops working at once."""
    with Api(cfgmod.load()) as api:
        res = revoke_key(api, key_id)
    if as_json:
        emit_json(res)
    else:
        console.print(f"revoked {res['key_id']}")
