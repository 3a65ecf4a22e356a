"""Credential-key rotation: every sealed secret re-sealed under a new key, in one transaction.

``sequence admin rotate-key`` calls :func:`rotate` on the coordinator's host
(it works on the store directly) and then writes the new key where the
coordinator will find it. What is sealed where is :mod:`sequence.secrets`'
knowledge (a strategy's secrets and its own ``SEQUENCE_API_KEY``, each client's
venue credentials).
"""

from __future__ import annotations

import base64
from typing import Any

from sequence.secrets import Keyring
from sequence.store.store import Store


def rotate(store: Store, keyring: Keyring, new_key: str) -> dict[str, Any]:
    """Re-seal every stored secret under ``new_key`` (base64) in one transaction; what changed.

    Raises :class:`~sequence.secrets.SealingError` — and changes nothing — if any
    stored value cannot be unsealed with ``keyring``. The re-sealing itself is
    :func:`sequence.secrets.reseal_rows`, run by :meth:`Store.reseal_all`.
    """
    new = Keyring(base64.b64decode(new_key), [keyring.primary])
    strategies, creds = store.reseal_all(keyring, new)
    return {"strategies": strategies, "venue_credentials": creds, "new_key_id": new.primary_id,
            "old_key_id": keyring.primary_id}
