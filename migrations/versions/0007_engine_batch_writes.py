"""Engine writes per batch: entries carry their place in the account's history and one statement
trigger moves the balances; the engine writes a batch's ledger entries and events once, at its end;
the rules of an order row in one CHECK constraint.

Revision ID: 0007
Revises: 0006
"""

from app.migrate import run_sql_files

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_files(
        "ledger/balances.v1.sql",
        "ledger/posting.v3.sql",
        "trading/orders_check.v1.sql",
        "trading/engine.v2.sql",
        "trading/execute.v3.sql",
        as_owner=True,
    )


def downgrade() -> None:
    run_sql_files(
        "trading/execute.v3.down.sql",
        "trading/engine.v2.down.sql",
        "trading/orders_check.v1.down.sql",
        "ledger/posting.v3.down.sql",
        "ledger/balances.v1.down.sql",
        as_owner=True,
    )
