"""API keys: random, shown once, stored as the SHA-256 of their secret, checked in constant time.

A key reads `xk_<id>_<secret>`: the id finds the stored hash without scanning, the secret is 256
random bits. A fast hash is enough for such a secret (there is no dictionary to try), and the
comparison of hashes takes the same time wherever they differ.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import psycopg

from app.tenancy.errors import TenancyError, translated

KEY_PREFIX = "xk"
SECRET_BYTES = 32
SCOPES = ("read", "trade", "transfer")
KEY_ID = re.compile(r"[0-9]{1,18}")
ADMIN_SCOPE = "admin"


@dataclass(frozen=True)
class NewKey:
    id: int
    key: str  # the only time the secret exists outside the caller's hands
    tenant_id: int | None
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: an operator (tenant_id None, scope admin) or a broker's key."""

    key_id: int | None  # None for the EXCHANGE_ADMIN_TOKEN
    tenant_id: int | None
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_tenant(conn: psycopg.Connection, name: str) -> int:
    with translated():
        row = conn.execute("SELECT tenancy.create_tenant(%s)", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def create_key(conn: psycopg.Connection, tenant_id: int | None, scopes: list[str]) -> NewKey:
    """A broker key (tenant_id and some of SCOPES) or, with tenant_id None, an operator key."""
    wanted = tuple(dict.fromkeys(scopes))  # de-duplicated, in the caller's order
    if tenant_id is None:
        if wanted not in ((), (ADMIN_SCOPE,)):
            raise TenancyError("invalid_scopes", "an operator key has the scope 'admin' only")
        wanted = (ADMIN_SCOPE,)
    elif not wanted or not set(wanted) <= set(SCOPES):
        raise TenancyError(
            "invalid_scopes", f"a broker key has one or more of {', '.join(SCOPES)}"
        )
    secret = secrets.token_urlsafe(SECRET_BYTES)
    with translated():
        row = conn.execute(
            "SELECT tenancy.create_api_key(%s, %s, %s)",
            (tenant_id, _digest(secret), list(wanted)),
        ).fetchone()
    assert row is not None
    key_id = int(row[0])
    return NewKey(key_id, f"{KEY_PREFIX}_{key_id}_{secret}", tenant_id, wanted)


def revoke_key(conn: psycopg.Connection, key_id: int) -> None:
    """Revoking a revoked key changes nothing; an unknown key is an error."""
    with translated():
        row = conn.execute("SELECT tenancy.revoke_api_key(%s)", (key_id,)).fetchone()
    if row is None or not row[0]:
        raise TenancyError("unknown_api_key", f"no API key {key_id}")


def authenticate(conn: psycopg.Connection, key: str) -> Principal | None:
    """The key's principal, or None for a malformed, unknown or revoked key."""
    prefix, _, rest = key.partition("_")
    key_id_text, _, secret = rest.partition("_")
    # ASCII digits only: str.isdigit() also admits '²', on which int() fails.
    if prefix != KEY_PREFIX or not KEY_ID.fullmatch(key_id_text) or not secret:
        return None
    row = conn.execute(
        "SELECT tenant_id, secret_sha256, scopes, revoked FROM tenancy.api_key_for(%s)",
        (int(key_id_text),),
    ).fetchone()
    if row is None:
        # Hash anyway, so an unknown id costs what a wrong secret costs.
        hmac.compare_digest(_digest(secret), bytes(32))
        return None
    tenant_id, stored, scopes, revoked = row
    if not hmac.compare_digest(_digest(secret), bytes(stored)) or revoked:
        return None
    return Principal(int(key_id_text), tenant_id, frozenset(scopes))


def admin_token_matches(token: str, configured: str | None) -> bool:
    """Whether `token` is the configured EXCHANGE_ADMIN_TOKEN, compared in constant time."""
    if not configured:
        return False
    return hmac.compare_digest(_digest(token), _digest(configured))
