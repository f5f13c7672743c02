"""Migrations build the schema from nothing and take it away again."""

from __future__ import annotations

import hashlib
import re

import psycopg
import pytest
from alembic.script import ScriptDirectory

from app import migrate
from tests.conftest import ScratchDatabase

HEAD = ScriptDirectory.from_config(migrate.alembic_config("unused")).get_current_head()
VERSIONS_DIR = migrate.ROOT / "migrations" / "versions"
MANIFEST = migrate.ROOT / "migrations" / "landed-sql.sha256"


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
    assert migrate.current_revision(url) == HEAD
    assert ledger_schema_exists(empty_db)

    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None
    assert not ledger_schema_exists(empty_db)

    migrate.upgrade(url)
    assert migrate.current_revision(url) == HEAD
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


def manifest() -> dict[str, str]:
    lines = MANIFEST.read_text().splitlines()
    return {path: digest for digest, path in (line.split(maxsplit=1) for line in lines if line)}


def test_every_sql_file_is_recorded_with_its_content_hash() -> None:
    """A landed SQL file never changes: a change is a new file applied by a new migration."""
    files = {
        str(path.relative_to(migrate.ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in migrate.SQL_DIR.rglob("*.sql")
    }

    assert files == manifest()


def test_every_sql_file_is_applied_by_a_migration_and_every_applied_file_exists() -> None:
    migration_text = "\n".join(p.read_text() for p in VERSIONS_DIR.glob("*.py"))
    applied = set(re.findall(r'"([\w/.]+\.sql)"', migration_text))
    on_disk = {str(p.relative_to(migrate.SQL_DIR)) for p in migrate.SQL_DIR.rglob("*.sql")}

    assert applied == on_disk


def test_downgrade_refuses_to_drop_booked_money_unless_allowed(db: ScratchDatabase) -> None:
    with db.connect() as conn:
        conn.execute("INSERT INTO ledger.asset (code, scale) VALUES ('USD', 2)")
        customer = conn.execute("SELECT ledger.create_customer('alice')").fetchone()
        assert customer is not None
        conn.execute("SELECT ledger.deposit(%s, 'USD', 1.00, 'd1')", (customer[0],))

    with pytest.raises(psycopg.Error, match="would destroy them"):
        migrate.downgrade(db.url(), "base")
    # Each migration is its own transaction: the ones above the ledger's went, the ledger stayed.
    assert migrate.current_revision(db.url()) == "0001"
    assert ledger_schema_exists(db)

    migrate.downgrade(db.url(), "base", allow_data_loss=True)
    assert not ledger_schema_exists(db)
