"""Ledger: the deferred journal check reads the entries through their index.

Revision ID: 0003
Revises: 0002
"""

from app.migrate import run_sql_files

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files("ledger/journal_check.v2.sql", as_owner=True)


def downgrade() -> None:
    run_sql_files("ledger/journal_check.v2.down.sql", as_owner=True)
