"""Roles and the double-entry ledger.

Revision ID: 0001
Revises:
"""

from app.migrate import run_sql_files

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files("roles.v1.sql")
    run_sql_files(
        "ledger/tables.v1.sql",
        "ledger/integrity.v1.sql",
        "ledger/posting.v1.sql",
        "ledger/grants.v1.sql",
        as_owner=True,
    )


def downgrade() -> None:
    run_sql_files("ledger/drop.v1.sql", as_owner=True)
    run_sql_files("roles.v1.down.sql")
