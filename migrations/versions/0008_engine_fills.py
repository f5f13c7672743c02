"""Engine version 3: trading.fee inlined again, and trading.take settles each fill without the
layers of function calls of version 2.

Revision ID: 0008
Revises: 0007
"""

from app.migrate import run_sql_files

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files("trading/engine.v3.sql", as_owner=True)


def downgrade() -> None:
    run_sql_files("trading/engine.v3.down.sql", as_owner=True)
