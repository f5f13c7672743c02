"""`exchange verify` names every widening of finance's or the application's access to reports."""

from __future__ import annotations

import psycopg
import pytest

from app import verify


def broken(conn: psycopg.Connection) -> dict[str, list[str]]:
    conn.execute("RESET ROLE")
    return {v.invariant.name: v.details for v in verify.violations(conn)}


@pytest.mark.parametrize(
    ("grant", "detail"),
    [
        (
            "GRANT SELECT ON ledger.entry TO finance_reader",
            "finance_reader can SELECT ledger.entry",
        ),
        (
            "GRANT SELECT (secret_sha256) ON tenancy.api_key TO finance_reader",
            "finance_reader can SELECT tenancy.api_key",
        ),
        (
            "GRANT EXECUTE ON FUNCTION tenancy.api_key_for(bigint) TO finance_reader",
            "finance_reader can execute tenancy.api_key_for(bigint)",
        ),
        (
            "GRANT SELECT ON reporting.trial_balance TO exchange_app",
            "exchange_app can SELECT reporting.trial_balance",
        ),
    ],
)
def test_widened_reporting_access_is_reported(
    admin: psycopg.Connection, grant: str, detail: str
) -> None:
    admin.execute("SET ROLE exchange_owner")
    admin.execute(grant)

    assert broken(admin) == {"finance_reader_reads_only_reporting": [detail]}
