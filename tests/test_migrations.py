"""Migrations build the schema from nothing and take it away again."""

from __future__ import annotations

from app import migrate
from tests.conftest import ScratchDatabase


def ledger_schema_exists(db: ScratchDatabase) -> bool:
    with db.connect() as conn:
        row = conn.execute("SELECT to_regnamespace('ledger') IS NOT NULL").fetchone()
    assert row is not None
    return bool(row[0])


def test_empty_database_upgrades_to_head_downgrades_to_base_and_upgrades_again(
    empty_db: ScratchDatabase,
) -> None:
    url = empty_db.url()

    migrate.upgrade(url)
    assert migrate.current_revision(url) == "0001"
    assert ledger_schema_exists(empty_db)

    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None
    assert not ledger_schema_exists(empty_db)

    migrate.upgrade(url)
    assert migrate.current_revision(url) == "0001"
    assert ledger_schema_exists(empty_db)


def test_downgrade_keeps_roles_that_other_databases_still_use(
    empty_db: ScratchDatabase, db: ScratchDatabase
) -> None:
    migrate.upgrade(empty_db.url())
    migrate.downgrade(empty_db.url(), "base")

    with db.connect() as conn:
        roles = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'exchange_%' ORDER BY 1"
        ).fetchall()
    assert roles == [("exchange_app",), ("exchange_owner",)]
