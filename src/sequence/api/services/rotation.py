"""Credential-key rotation: every sealed secret re-sealed under a new key, in one transaction.

``sequence admin rotate-key`` calls :func:`rotate` on the coordinator's host
(it works on the store directly) and then writes the new key where the
coordinator will find it. Sealed columns: a strategy's secrets and its own
``SEQUENCE_API_KEY``, and each client's venue credentials; each is bound to its
row by its associated data (``strategy:<id>:secrets`` …), which re-sealing keeps.
"""

from __future__ import annotations

import base64
from typing import Any

from sequence.secrets import Keyring, Sealed
from sequence.store.store import Store


def rotate(store: Store, keyring: Keyring, new_key: str) -> dict[str, Any]:
    """Re-seal every ciphertext under ``new_key`` (base64) in one transaction; what changed.

    Raises :class:`~sequence.secrets.SealingError` — and changes nothing — if any
    ciphertext cannot be unsealed with ``keyring``.
    """
    new = Keyring(base64.b64decode(new_key), [keyring.primary])
    strategies, creds = store.all_sealed_rows()
    out_s, out_c = [], []
    for r in strategies:
        sid = r["strategy_id"]
        upd: dict[str, Any] = {"strategy_id": sid}
        if r["secrets_ciphertext"] is not None:
            aad = f"strategy:{sid}:secrets"
            plain = keyring.unseal(Sealed(r["secrets_ciphertext"], r["secrets_nonce"], r["secrets_key_id"]), aad)
            s = new.seal(plain, aad)
            upd.update(secrets_ciphertext=s.ciphertext, secrets_nonce=s.nonce, secrets_key_id=s.key_id)
        if r["sequence_api_key_ciphertext"] is not None:
            aad = f"strategy:{sid}:sequence_api_key"
            plain = keyring.unseal(Sealed(r["sequence_api_key_ciphertext"], r["sequence_api_key_nonce"],
                                          r["sequence_api_key_key_id"]), aad)
            s = new.seal(plain, aad)
            upd.update(sequence_api_key_ciphertext=s.ciphertext, sequence_api_key_nonce=s.nonce,
                       sequence_api_key_key_id=s.key_id)
        out_s.append(upd)
    for r in creds:
        aad = f"venue:{r['client_id']}:{r['venue']}"
        plain = keyring.unseal(Sealed(r["ciphertext"], r["nonce"], r["key_id"]), aad)
        s = new.seal(plain, aad)
        out_c.append({"client_id": r["client_id"], "venue": r["venue"], "ciphertext": s.ciphertext,
                      "nonce": s.nonce, "key_id": s.key_id})
    store.reseal(out_s, out_c)
    return {"strategies": len(out_s), "venue_credentials": len(out_c), "new_key_id": new.primary_id,
            "old_key_id": keyring.primary_id}
