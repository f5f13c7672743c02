"""Trading: instruments, orders, trades, events and the matching engine.

Revision ID: 0002
Revises: 0001
"""

from app.migrate import run_sql_files

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files(
        "trading/tables.v1.sql",
        "trading/integrity.v1.sql",
        "trading/instruments.v1.sql",
        "trading/engine.v1.sql",
        "trading/grants.v1.sql",
        as_owner=True,
    )


def downgrade() -> None:
    run_sql_files("trading/drop.v1.sql", as_owner=True)
