"""API keys: parsing, hashing, constant-time checks and revocation."""

from __future__ import annotations

import psycopg
import pytest

from app.tenancy import keys


@pytest.fixture
def broker_key(app_conn: psycopg.Connection, tenant: int) -> keys.NewKey:
    return keys.create_key(app_conn, tenant, ["read", "trade"])


def test_a_new_key_authenticates_as_its_tenant_with_its_scopes(
    app_conn: psycopg.Connection, tenant: int, broker_key: keys.NewKey
) -> None:
    principal = keys.authenticate(app_conn, broker_key.key)

    assert principal == keys.Principal(broker_key.id, tenant, frozenset({"read", "trade"}))


def test_only_the_hash_of_the_secret_is_stored(
    admin: psycopg.Connection, broker_key: keys.NewKey
) -> None:
    stored = admin.execute("SELECT k::text FROM tenancy.api_key k").fetchall()

    secret = broker_key.key.split("_", 2)[2]
    assert secret not in str(stored)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # wrong secret
        lambda key: key.replace("xk_", "xx_", 1),  # wrong prefix
        lambda key: "xk_999999_" + key.split("_", 2)[2],  # unknown id
        lambda key: "xk_1\u00b9_" + key.split("_", 2)[2],  # superscript digit: not an id
        lambda key: "xk__secret",
        lambda key: "",
    ],
)
def test_a_malformed_or_wrong_key_authenticates_as_nobody(
    app_conn: psycopg.Connection, broker_key: keys.NewKey, mangle: object
) -> None:
    assert keys.authenticate(app_conn, mangle(broker_key.key)) is None  # type: ignore[operator]


def test_a_revoked_key_authenticates_as_nobody(
    app_conn: psycopg.Connection, broker_key: keys.NewKey
) -> None:
    keys.revoke_key(app_conn, broker_key.id)

    assert keys.authenticate(app_conn, broker_key.key) is None
