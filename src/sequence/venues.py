"""The venues Sequence knows, listed once.

Everything keyed by venue — the simulators (:mod:`sequence.market.venues`), the
order rules and fees (:mod:`sequence.trading`), venue credentials
(``/v1/credentials``), regions and ``latency_target`` — covers these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

VENUES: Final[tuple[str, ...]] = ("kalshi", "polymarket", "coinbase")


@dataclass(frozen=True)
class CredentialField:
    """One field of a venue's API credentials (``sequence connect`` / ``PUT /v1/venues/{venue}/credentials``)."""

    name: str
    secret: bool  # prompted without echo
    required: bool
    help: str


#: The fields each venue's credentials are made of — one set of names for the CLI, the
#: API (unknown fields are refused) and the docs.
CREDENTIAL_FIELDS: Final[dict[str, tuple[CredentialField, ...]]] = {
    "kalshi": (
        CredentialField("api_key_id", False, True, "the API key id (KALSHI-ACCESS-KEY)"),
        CredentialField("private_key_pem", True, True, "the key's RSA private key, PEM"),
    ),
    "polymarket": (
        CredentialField("private_key", True, True, "the wallet's private key (hex) that signs orders"),
        CredentialField("api_key", False, False, "CLOB L2 API key (derived from the private key when absent)"),
        CredentialField("api_secret", True, False, "CLOB L2 API secret"),
        CredentialField("api_passphrase", True, False, "CLOB L2 API passphrase"),
        CredentialField("funder", False, False, "the proxy wallet that holds the funds, if not the signer"),
        CredentialField("signature_type", False, False, "0 EOA, 1 Polymarket proxy, 2 Gnosis safe"),
    ),
    "coinbase": (
        CredentialField("api_key_name", False, True, "organizations/{org}/apiKeys/{key}"),
        CredentialField("private_key_pem", True, True, "the key's EC private key, PEM"),
    ),
}


def credential_problem(venue: str, fields: dict[str, str]) -> str | None:
    """Why *fields* are not *venue*'s credentials (unknown or missing fields), or None."""
    spec = CREDENTIAL_FIELDS[venue]
    allowed = [f.name for f in spec]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        return f"unknown {venue} credential field(s): {', '.join(unknown)}; the fields are: {', '.join(allowed)}"
    missing = [f.name for f in spec if f.required and not fields.get(f.name)]
    if missing:
        return f"missing {venue} credential field(s): {', '.join(missing)}"
    return None
