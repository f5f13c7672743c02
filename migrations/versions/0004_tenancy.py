"""Tenancy: tenants, API keys, row-level security, tenant-aware money and engine functions,
public market data views.

Revision ID: 0004
Revises: 0003
"""

from app.migrate import run_sql_files

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files(
        "tenancy/tables.v1.sql",
        "tenancy/integrity.v1.sql",
        "tenancy/functions.v1.sql",
        "ledger/posting.v2.sql",
        "ledger/journal_check.v3.sql",
        "trading/execute.v2.sql",
        "tenancy/security.v1.sql",
        "marketdata/views.v1.sql",
        "tenancy/grants.v1.sql",
        as_owner=True,
    )


def downgrade() -> None:
    run_sql_files(
        "trading/execute.v2.down.sql",
        "ledger/posting.v2.down.sql",
        "ledger/journal_check.v3.down.sql",
        "tenancy/drop.v1.sql",
        as_owner=True,
    )
