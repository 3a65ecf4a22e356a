"""Sealing and unsealing of secrets under ``CREDENTIAL_ENCRYPTION_KEY``.

AES-256-GCM with a random 96-bit nonce.  Every ciphertext is stored beside the
id of the key that sealed it, so keys can rotate: a :class:`Keyring` holds the
primary key (used to seal) and older keys (still able to unseal).  Associated
data binds each ciphertext to its row and column, so a ciphertext copied into
another row does not open.

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
from collections.abc import Mapping
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
