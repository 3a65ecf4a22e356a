"""Sealing and unsealing of secrets under ``CREDENTIAL_ENCRYPTION_KEY``.

AES-256-GCM with a random 96-bit nonce.  Every ciphertext is stored beside the
id of the key that sealed it, so keys can rotate: a :class:`Keyring` holds the
primary key (used to seal) and older keys (still able to unseal).  Associated
data binds each ciphertext to its row and column, so a ciphertext copied into
another row does not open.

This module is also the one place that knows **what is sealed where**: the
label (associated data) of each sealed column — :func:`strategy_secrets_label`,
:func:`strategy_api_key_label`, :func:`venue_credentials_label` — the columns a
sealed value occupies (:data:`STRATEGY_SEALED`, :func:`sealed_in`,
:func:`sealed_columns`), and the re-sealing of stored rows under a new key on
rotation (:func:`reseal_rows`). The store reads and writes the columns; it
never builds a label.

Key sources, in order: the ``CREDENTIAL_ENCRYPTION_KEY`` environment variable
(base64 of 32 bytes; ``CREDENTIAL_ENCRYPTION_KEYS_OLD`` may list older keys,
comma-separated), else ``<data_dir>/credential.key`` (generated with mode 0600
on first start, and its use logged).

Exceptions::

    SealingError
     ├── KeyConfigError      the key material is missing or malformed
     └── UnsealError         a ciphertext does not open (wrong key, tampered)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("sequence.secrets")

KEY_FILE_NAME = "credential.key"
ENV_KEY = "CREDENTIAL_ENCRYPTION_KEY"
ENV_OLD_KEYS = "CREDENTIAL_ENCRYPTION_KEYS_OLD"


class SealingError(Exception):
    pass


class KeyConfigError(SealingError):
    pass


class UnsealError(SealingError):
    pass


@dataclass(frozen=True)
class Sealed:
    ciphertext: bytes
    nonce: bytes
    key_id: str


def key_id_of(key: bytes) -> str:
    return hashlib.sha256(b"sequence-key-id:" + key).hexdigest()[:16]


def decode_key(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyConfigError(f"{source} is not valid base64") from exc
    if len(key) != 32:
        raise KeyConfigError(f"{source} must decode to 32 bytes, got {len(key)}")
    return key


def new_key_text() -> str:
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


class Keyring:
    """A primary sealing key plus older keys that may still unseal."""

    def __init__(self, primary: bytes, older: list[bytes] | None = None, *, source: str = "memory",
                 key_file: Path | None = None) -> None:
        self.primary = primary
        self.primary_id = key_id_of(primary)
        self._keys = {key_id_of(k): k for k in [*(older or []), primary]}
        self.source = source
        self.key_file = key_file
        self._mtime = key_file.stat().st_mtime_ns if key_file is not None and key_file.exists() else None

    @classmethod
    def load(cls, data_dir: Path, environ: Mapping[str, str] | None = None, *, create: bool = True) -> Keyring:
        env = os.environ if environ is None else environ
        older = [decode_key(t, ENV_OLD_KEYS) for t in env.get(ENV_OLD_KEYS, "").split(",") if t.strip()]
        if env.get(ENV_KEY):
            return cls(decode_key(env[ENV_KEY], ENV_KEY), older, source="env")
        path = data_dir / KEY_FILE_NAME
        if not path.exists():
            if not create:
                raise KeyConfigError(f"no {ENV_KEY} set and no key file at {path}")
            data_dir.mkdir(parents=True, exist_ok=True)
            write_key_file(path, new_key_text())
            log.warning("no %s set: generated a new credential key at %s (mode 0600); back it up", ENV_KEY, path)
        else:
            log.info("using credential key file %s", path)
        primary, file_older = read_key_file(path)
        return cls(primary, [*older, *file_older], source="file", key_file=path)

    def has(self, key_id: str) -> bool:
        return key_id in self._keys

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def key_text(self, key_id: str) -> str:
        """A loaded key, base64 (as key files and the environment hold it)."""
        return base64.b64encode(self._keys[key_id]).decode()

    def reload(self) -> None:
        """Pick up a key file rewritten by ``sequence admin rotate-key``."""
        if self.key_file is not None and self.key_file.exists():
            self._mtime = self.key_file.stat().st_mtime_ns
            primary, older = read_key_file(self.key_file)
            for k in [*older, primary]:
                self._keys[key_id_of(k)] = k
            self.primary = primary
            self.primary_id = key_id_of(primary)

    def _maybe_reload(self) -> None:
        if self.key_file is not None:
            try:
                mtime = self.key_file.stat().st_mtime_ns
            except FileNotFoundError:
                return
            if mtime != self._mtime:
                self.reload()

    def seal(self, plaintext: bytes, aad: str) -> Sealed:
        self._maybe_reload()
        nonce = os.urandom(12)
        ct = AESGCM(self.primary).encrypt(nonce, plaintext, aad.encode())
        return Sealed(ct, nonce, self.primary_id)

    def unseal(self, sealed: Sealed, aad: str) -> bytes:
        if sealed.key_id not in self._keys:
            self.reload()
        key = self._keys.get(sealed.key_id)
        if key is None:
            raise UnsealError(f"no credential key with id {sealed.key_id} is loaded")
        try:
            return AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, aad.encode())
        except InvalidTag as exc:
            raise UnsealError("ciphertext failed authentication") from exc

    def seal_json(self, value: Any, aad: str) -> Sealed:
        return self.seal(json.dumps(value, separators=(",", ":")).encode(), aad)

    def unseal_json(self, sealed: Sealed, aad: str) -> Any:
        return json.loads(self.unseal(sealed, aad))


def read_key_file(path: Path) -> tuple[bytes, list[bytes]]:
    """First non-comment line is the primary key; later lines are older keys."""
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise KeyConfigError(f"key file {path} is empty")
    return decode_key(lines[0], str(path)), [decode_key(x, str(path)) for x in lines[1:]]


def write_key_file(path: Path, primary: str, older: list[str] | None = None) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# Sequence credential encryption key (first line: primary). Keep secret; back up.\n")
        for line in [primary, *(older or [])]:
            fh.write(line + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# -- what is sealed where ---------------------------------------------------------------
# Each label names a row and a column, so a ciphertext copied into another row or
# column does not open. Labels are stored implicitly (they are recomputed from the
# row to unseal): changing one makes every stored value under it unreadable.


def strategy_secrets_label(strategy_id: str) -> str:
    """A strategy's secrets (a JSON object of name → value)."""
    return f"strategy:{strategy_id}:secrets"


def strategy_api_key_label(strategy_id: str) -> str:
    """The strategy's own ``seq_live_``/``seq_test_`` key."""
    return f"strategy:{strategy_id}:sequence_api_key"


def venue_credentials_label(client_id: str, venue: str) -> str:
    """A client's credentials for one venue (a JSON object of the venue's fields)."""
    return f"venue:{client_id}:{venue}"


#: The sealed values of a ``strategies`` row: column prefix -> label of the strategy id.
#: Each is stored in ``<prefix>_ciphertext``, ``<prefix>_nonce``, ``<prefix>_key_id``.
STRATEGY_SEALED: Mapping[str, Callable[[str], str]] = {
    "secrets": strategy_secrets_label,
    "sequence_api_key": strategy_api_key_label,
}


def sealed_columns(prefix: str = "") -> tuple[str, str, str]:
    """The ciphertext, nonce and key id columns of a sealed value (``venue_credentials``
    has no prefix)."""
    p = f"{prefix}_" if prefix else ""
    return f"{p}ciphertext", f"{p}nonce", f"{p}key_id"


#: Every sealed column of a ``strategies`` row (left out of what the API reads).
STRATEGY_SEALED_COLUMNS = frozenset(col for prefix in STRATEGY_SEALED for col in sealed_columns(prefix))


def sealed_in(row: Mapping[str, Any], prefix: str = "") -> Sealed | None:
    """The sealed value stored in ``row``'s columns, or None when there is none."""
    ct, nonce, key_id = sealed_columns(prefix)
    if row.get(ct) is None:
        return None
    return Sealed(row[ct], row[nonce], row[key_id])


def sealed_values(sealed: Sealed, prefix: str = "") -> dict[str, Any]:
    """The column values that store ``sealed``."""
    ct, nonce, key_id = sealed_columns(prefix)
    return {ct: sealed.ciphertext, nonce: sealed.nonce, key_id: sealed.key_id}


# -- re-sealing on key rotation -----------------------------------------------------------


def _reseal(old: Keyring, new: Keyring, sealed: Sealed, label: str) -> Sealed:
    return new.seal(old.unseal(sealed, label), label)


def reseal_strategy(old: Keyring, new: Keyring, row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``strategies`` row's sealed values opened with ``old`` and sealed with ``new``:
    ``{"strategy_id", <the columns that changed>}``. Raises :class:`UnsealError`."""
    sid = row["strategy_id"]
    out: dict[str, Any] = {"strategy_id": sid}
    for prefix, label in STRATEGY_SEALED.items():
        sealed = sealed_in(row, prefix)
        if sealed is not None:
            out.update(sealed_values(_reseal(old, new, sealed, label(sid)), prefix))
    return out


def reseal_venue_credentials(old: Keyring, new: Keyring, row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``venue_credentials`` row re-sealed: ``{"client_id", "venue", "ciphertext", "nonce", "key_id"}``."""
    sealed = sealed_in(row)
    if sealed is None:
        raise UnsealError(f"venue credentials {row['client_id']}/{row['venue']} hold no ciphertext")
    label = venue_credentials_label(row["client_id"], row["venue"])
    return {"client_id": row["client_id"], "venue": row["venue"], **sealed_values(_reseal(old, new, sealed, label))}


def reseal_rows(old: Keyring, new: Keyring, strategies: Iterable[Mapping[str, Any]],
                creds: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every stored sealed value opened with ``old`` and sealed with ``new``: the sealed
    columns of ``strategies`` rows (with ``strategy_id``) and whole ``venue_credentials``
    rows in, the columns to write out (what :meth:`sequence.store.store.Store.reseal_all`
    does in one transaction). All or nothing: the first value that does not open raises
    :class:`UnsealError` before anything is written."""
    return ([reseal_strategy(old, new, r) for r in strategies],
            [reseal_venue_credentials(old, new, r) for r in creds])
