"""``sequence admin …`` — operator commands that work on the store directly.

They need the data directory (or ``SEQUENCE_DATABASE_URL``) and the credential
key, like the coordinator itself; run them on the coordinator's host.
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sequence.cli import datadir
from sequence.cli.errors import CliError
from sequence.cli.output import console, emit_json, table
from sequence.secrets import Keyring, SealingError, new_key_text, write_key_file
from sequence.settings import Settings, SettingsError

if TYPE_CHECKING:
    from sequence.store.store import Store

app = typer.Typer(help="Operator commands (run on the coordinator host).", no_args_is_help=True)
runner_token = typer.Typer(help="Tokens runners use to register.", no_args_is_help=True)
client = typer.Typer(help="Tenants (clients) and their first keys.", no_args_is_help=True)
app.add_typer(runner_token, name="runner-token")
app.add_typer(client, name="client")

DataDir = Annotated[Path | None, typer.Option("--data-dir", envvar="SEQUENCE_DATA_DIR",
                                              help="Coordinator data directory.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _when(ts: float | None) -> str:
    """A stored epoch time as ``2026-12-01 18:05:29`` UTC (the tables showed raw floats)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def open_store(data_dir: Path | None) -> tuple[Settings, Store]:
    # Imported here: SQLAlchemy costs ~250 ms, and every other command would pay it.
    from sequence.store.engine import Database
    from sequence.store.store import Store

    datadir.private_umask()  # a store or key file these commands create stays private
    try:
        settings = Settings.from_env(data_dir=data_dir)
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    if settings.database_url is None and not (settings.data_dir / "sequence.db").exists():
        # Never a new, empty store: a token or client made there works nowhere, and a key
        # rotation there re-seals nothing (and said it had succeeded).
        used = datadir.store_marker(settings.data_dir)
        if used is not None and not used.startswith("sqlite"):
            raise CliError(f"the coordinator of {settings.data_dir} keeps its store in {used}",
                           "set SEQUENCE_DATABASE_URL to it (with its password), as for `sequence up`, "
                           "and run this again")
        raise CliError(f"no store in {settings.data_dir} (no sequence.db)",
                       "run this on the coordinator's host with its data dir (--data-dir or SEQUENCE_DATA_DIR; "
                       "`sequence up` creates it) and, if it uses PostgreSQL, SEQUENCE_DATABASE_URL")
    db = Database(settings.effective_database_url)
    db.migrate()
    return settings, Store(db)


@runner_token.command("create")
def runner_token_create(name: Annotated[str, typer.Option("--name")] = "runner", data_dir: DataDir = None,
                        as_json: JsonOpt = False) -> None:
    """Create a runner token (printed once)."""
    _s, store = open_store(data_dir)
    tid, token = store.create_runner_token(name)
    if as_json:
        emit_json({"token_id": tid, "token": token})
    else:
        console.print(token)


@runner_token.command("list")
def runner_token_list(data_dir: DataDir = None, as_json: JsonOpt = False) -> None:
    _s, store = open_store(data_dir)
    rows = store.list_runner_tokens()
    if as_json:
        emit_json(rows)
    else:
        table(["token id", "name", "created", "revoked"],
              [(r["token_id"], r["name"], _when(r["created_at"]), _when(r["revoked_at"])) for r in rows])


@runner_token.command("revoke")
def runner_token_revoke(token_id: str, data_dir: DataDir = None) -> None:
    from sequence.store.store import NotFound

    _s, store = open_store(data_dir)
    try:
        store.revoke_runner_token(token_id)
    except NotFound as exc:
        raise CliError(str(exc)) from None
    console.print(f"revoked {token_id}")


@client.command("create")
def client_create(name: Annotated[str, typer.Argument(help="Display name.")],
                  test: Annotated[bool, typer.Option("--test", help="Make the first key a seq_test_ key.")] = False,
                  data_dir: DataDir = None, as_json: JsonOpt = False) -> None:
    """Create a client (tenant) and its first API key."""
    _s, store = open_store(data_dir)
    cid = store.create_client(name)
    _row, key = store.create_api_key(cid, "test" if test else "live", "first key")
    if as_json:
        emit_json({"client_id": cid, "key": key})
    else:
        console.print(f"client {cid}\n{key}")


@client.command("list")
def client_list(data_dir: DataDir = None, as_json: JsonOpt = False) -> None:
    _s, store = open_store(data_dir)
    rows = store.list_clients()
    if as_json:
        emit_json(rows)
    else:
        table(["client id", "name", "created"], [(r["client_id"], r["name"], _when(r["created_at"])) for r in rows])


@client.command("key")
def client_key(client_id: str, test: Annotated[bool, typer.Option("--test")] = False, data_dir: DataDir = None,
               as_json: JsonOpt = False) -> None:
    """Mint a key for a client (e.g. after losing the CLI config)."""
    from sequence.store.store import NotFound

    _s, store = open_store(data_dir)
    try:
        _row, key = store.create_api_key(client_id, "test" if test else "live", "admin")
    except NotFound as exc:
        raise CliError(str(exc)) from None
    if as_json:
        emit_json({"client_id": client_id, "key": key})
    else:
        console.print(key)


@app.command("rotate-key")
def rotate_key(data_dir: DataDir = None, as_json: JsonOpt = False,
               new_key_file: Annotated[Path | None, typer.Option(
                   "--new-key-file", help="Where to write the new key when the current one comes from "
                                          "CREDENTIAL_ENCRYPTION_KEY (default: <data-dir>/credential.key.new).")] = None,
               reseal: Annotated[bool, typer.Option(
                   "--reseal", help="Make no new key: re-seal everything under the current one (after every "
                                    "coordinator restarted with a new CREDENTIAL_ENCRYPTION_KEY, before the old "
                                    "one is dropped).")] = False,
               ) -> None:
    """Generate a new credential key and re-seal every secret under it."""
    from sequence.api.services.rotation import rotate

    settings, store = open_store(data_dir)
    try:
        keyring = Keyring.load(settings.data_dir, create=False)
    except SealingError as exc:
        raise CliError(str(exc)) from None
    if reseal:
        try:
            res = rotate(store, keyring, keyring.key_text(keyring.primary_id))
        except SealingError as exc:
            raise CliError(f"re-sealing aborted, nothing changed: {exc}") from None
        if as_json:
            emit_json(res)
        else:
            console.print(f"re-sealed {res['strategies']} strategies and {res['venue_credentials']} venue "
                          f"credentials under the current key {res['new_key_id']}; no older key is needed now")
        return
    new_key = new_key_text()
    try:
        res = rotate(store, keyring, new_key)
    except SealingError as exc:
        raise CliError(f"rotation aborted, nothing changed: {exc}") from None
    old_text = base64.b64encode(keyring.primary).decode()
    if keyring.source == "file" and keyring.key_file is not None:
        # Keep the old key as a decrypt-only line: a coordinator still running
        # with it in memory reloads the file when it meets the new key id. Older keys go,
        # unless something is still sealed under one (sealed meanwhile by such a coordinator).
        in_use = [keyring.key_text(k) for k in sorted(store.sealed_key_ids())
                  if keyring.has(k) and k != keyring.primary_id]
        write_key_file(keyring.key_file, new_key, [old_text, *in_use])
        res["key_file"] = str(keyring.key_file)
    else:
        target = new_key_file or settings.data_dir / "credential.key.new"
        write_key_file(target, new_key)
        res["key_file"] = str(target)
        res["action"] = ("set CREDENTIAL_ENCRYPTION_KEY to the key in this file (and the old one in "
                         "CREDENTIAL_ENCRYPTION_KEYS_OLD until every coordinator restarted), then restart")
    if as_json:
        emit_json(res)
        return
    console.print(f"re-sealed {res['strategies']} strategies and {res['venue_credentials']} venue credentials "
                  f"under key {res['new_key_id']} (was {res['old_key_id']})")
    console.print(f"new key written to {res['key_file']} (mode 0600)")
    if "action" in res:
        console.print(f"[yellow]{res['action']}[/]")
    os.sync()
