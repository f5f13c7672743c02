"""`exchange verify` names each way row-level security or a tenancy rule could be switched off."""

from __future__ import annotations

import psycopg
import pytest

from app import verify


def broken(conn: psycopg.Connection) -> dict[str, list[str]]:
    conn.execute("RESET ROLE")
    return {v.invariant.name: v.details for v in verify.violations(conn)}


@pytest.fixture
def owner(admin: psycopg.Connection) -> psycopg.Connection:
    admin.execute("SET ROLE exchange_owner")
    return admin


def test_a_fresh_database_has_no_tenancy_violation(admin: psycopg.Connection) -> None:
    assert broken(admin) == {}


@pytest.mark.parametrize(
    ("statement", "detail"),
    [
        (
            "ALTER TABLE trading.orders NO FORCE ROW LEVEL SECURITY",
            "row-level security on trading.orders is not forced",
        ),
        (
            "ALTER TABLE ledger.entry DISABLE ROW LEVEL SECURITY",
            "row-level security on ledger.entry is disabled",
        ),
        (
            "DROP POLICY tenant_rows ON ledger.customer",
            "policy tenant_rows on ledger.customer is missing or not r for exchange_app",
        ),
        (
            "CREATE POLICY everyone ON ledger.account FOR SELECT TO exchange_app USING (true)",
            "unexpected policy everyone on ledger.account",
        ),
    ],
)
def test_weakened_row_security_is_reported(
    owner: psycopg.Connection, statement: str, detail: str
) -> None:
    owner.execute(statement)

    assert broken(owner) == {"row_security_forced": [detail]}


def test_a_replaced_application_policy_is_reported(owner: psycopg.Connection) -> None:
    owner.execute("DROP POLICY tenant_rows ON trading.trade")
    owner.execute("CREATE POLICY tenant_rows ON trading.trade TO exchange_app USING (true)")

    assert broken(owner) == {
        "row_security_forced": [
            "policy tenant_rows on trading.trade is missing or not r for exchange_app"
        ]
    }


def test_disabled_tenancy_trigger_is_reported(owner: psycopg.Connection) -> None:
    owner.execute("ALTER TABLE ledger.customer DISABLE TRIGGER customer_tenant_immutable")

    assert broken(owner) == {
        "tenancy_triggers_enabled": [
            "trigger customer_tenant_immutable on ledger.customer does not fire in every session"
        ],
        # The ledger's own check sees every disabled trigger on its tables.
        "integrity_triggers_enabled": [
            "trigger customer_tenant_immutable on ledger.customer is disabled"
        ],
    }


def test_dropped_tenancy_trigger_is_reported(owner: psycopg.Connection) -> None:
    owner.execute("DROP TRIGGER api_key_check_update ON tenancy.api_key")

    assert broken(owner) == {
        "tenancy_triggers_enabled": ["trigger api_key_check_update on tenancy.api_key is missing"]
    }


def test_application_role_reading_api_keys_is_reported(owner: psycopg.Connection) -> None:
    owner.execute("GRANT SELECT (id, secret_sha256) ON tenancy.api_key TO exchange_app")

    assert broken(owner) == {
        "app_role_cannot_read_secrets": ["exchange_app can SELECT columns of tenancy.api_key"]
    }
