"""Finance reporting: the finance_reader role and the views of schema reporting, and the
ledger's booking times (entry.posted_at, journal.xact_id) that its "as of" reports cut by.

Revision ID: 0005
Revises: 0004
"""

from app.migrate import run_sql_files

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A cluster-wide role: created by the migrating user, like sql/roles.v1.sql.
    run_sql_files("reporting/roles.v1.sql")
    # The views read the booking columns: they come first.
    run_sql_files(
        "ledger/posted_at.v1.sql",
        "reporting/views.v1.sql",
        "reporting/grants.v1.sql",
        as_owner=True,
    )


def downgrade() -> None:
    run_sql_files("reporting/drop.v1.sql", "ledger/posted_at.v1.down.sql", as_owner=True)
    run_sql_files("reporting/roles.v1.down.sql")
