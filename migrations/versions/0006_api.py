"""Broker API: operator functions for the admin endpoints, stream reads of market events and
their NOTIFY doorbell.

Revision ID: 0006
Revises: 0005
"""

from app.migrate import run_sql_files

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files(
        "tenancy/operators.v1.sql",
        "marketdata/streams.v1.sql",
        "marketdata/book.v1.sql",
        as_owner=True,
    )


def downgrade() -> None:
    run_sql_files(
        "marketdata/book.v1.down.sql",
        "marketdata/streams.v1.down.sql",
        "tenancy/operators.v1.down.sql",
        as_owner=True,
    )
