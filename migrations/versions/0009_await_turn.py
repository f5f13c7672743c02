"""trading.await_turn: an order gateway takes its turn on an instrument before it gathers its
batch.

Revision ID: 0009
Revises: 0008
"""

from app.migrate import run_sql_files

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files("trading/await_turn.v1.sql", as_owner=True)


def downgrade() -> None:
    run_sql_files("trading/await_turn.v1.down.sql", as_owner=True)
