"""Migrations build the schema from nothing and take it away again."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory

from app import migrate, verify
from app.pgcluster import Cluster
from tests.catalog import Snapshot, differences, schema_snapshot
from tests.conftest import ScratchDatabase, act_for, janitor

HEAD = ScriptDirectory.from_config(migrate.alembic_config("unused")).get_current_head()
# Every revision, oldest first, and the one below it (None: base).
_SCRIPTS = list(ScriptDirectory.from_config(migrate.alembic_config("unused")).walk_revisions())
REVISIONS = [script.revision for script in reversed(_SCRIPTS)]
PREVIOUS = {script.revision: script.down_revision for script in _SCRIPTS}  # a linear chain
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
            "SELECT rolname FROM pg_roles"
            " WHERE rolname LIKE 'exchange_%' OR rolname = 'finance_reader' ORDER BY 1"
        ).fetchall()
    assert roles == [("exchange_app",), ("exchange_owner",), ("finance_reader",)]


def manifest() -> dict[str, str]:
    lines = MANIFEST.read_text().splitlines()
    return {path: digest for digest, path in (line.split(maxsplit=1) for line in lines if line)}


def schema_sql_files() -> list[Path]:
    """The SQL files that build the schema. Not sql/reports/: those are queries that finance
    staff run with psql and `exchange report` runs, never applied by a migration and no part of
    any database's state, so they change freely like code (git keeps their history, and "as of"
    reports are reproduced by their as_of, not by freezing the file)."""
    reports = migrate.SQL_DIR / "reports"
    return [path for path in migrate.SQL_DIR.rglob("*.sql") if reports not in path.parents]


def test_every_sql_file_is_recorded_with_its_content_hash() -> None:
    """A landed SQL file never changes: a change is a new file applied by a new migration."""
    files = {
        str(path.relative_to(migrate.ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in schema_sql_files()
    }

    assert files == manifest()


def test_every_sql_file_is_applied_by_a_migration_and_every_applied_file_exists() -> None:
    migration_text = "\n".join(p.read_text() for p in VERSIONS_DIR.glob("*.py"))
    applied = set(re.findall(r'"([\w/.]+\.sql)"', migration_text))
    on_disk = {str(p.relative_to(migrate.SQL_DIR)) for p in schema_sql_files()}

    assert applied == on_disk


def test_downgrade_refuses_to_drop_booked_money_unless_allowed(
    db: ScratchDatabase, tenant: int
) -> None:
    with db.connect() as conn:
        act_for(conn, tenant)
        conn.execute("INSERT INTO ledger.asset (code, scale) VALUES ('USD', 2)")
        customer = conn.execute("SELECT ledger.create_customer('alice')").fetchone()
        assert customer is not None
        conn.execute("SELECT ledger.deposit(%s, 'USD', 1.00, 'd1')", (customer[0],))
    # Tenancy's downgrade refuses too while tenants exist; let it go, to reach the ledger's.
    migrate.downgrade(db.url(), "0003", allow_data_loss=True)

    with pytest.raises(psycopg.Error, match="would destroy them"):
        migrate.downgrade(db.url(), "base")
    # Each migration is its own transaction: the ones above the ledger's went, the ledger stayed.
    assert migrate.current_revision(db.url()) == "0001"
    assert ledger_schema_exists(db)

    migrate.downgrade(db.url(), "base", allow_data_loss=True)
    assert not ledger_schema_exists(db)


def schema_of(db: ScratchDatabase) -> Snapshot:
    with db.connect() as conn:
        return schema_snapshot(conn)


@pytest.fixture(scope="module")
def fresh_schemas(pg_cluster: Cluster, template_database: str) -> dict[str | None, Snapshot]:
    """The schema at base and at each revision, reached from an empty database by upgrades only,
    one revision at a time. (After template_database: the cluster-wide roles exist, as they do
    for every other test database.)"""
    name = "migrations_fresh"
    with janitor(pg_cluster, name):
        fresh = ScratchDatabase(pg_cluster, name)
        schemas: dict[str | None, Snapshot] = {None: schema_of(fresh)}
        for revision in REVISIONS:
            migrate.upgrade(fresh.url(), revision)
            schemas[revision] = schema_of(fresh)
    return schemas


def test_the_schema_snapshot_sees_every_kind_of_object_the_migrations_make(
    fresh_schemas: dict[str | None, Snapshot],
) -> None:
    """Otherwise the comparisons below could pass by comparing nothing."""
    head = fresh_schemas[HEAD]
    kinds = ["schemas", "relations", "columns", "constraints", "indexes", "sequences"]
    kinds += ["functions", "triggers", "views", "policies", "default_privileges", "roles"]

    assert [kind for kind in kinds if not head[kind]] == []
    assert any(row[0] == "ledger.entry" and row[4] for row in head["relations"])  # RLS on
    assert any(row[7] for row in head["functions"])  # SECURITY DEFINER
    assert differences(fresh_schemas[None], head) != {}


# One hand edit per kind of difference the comparisons must notice, and where it shows.
HAND_EDITS = {
    "function body": (
        "functions",
        "CREATE OR REPLACE FUNCTION ledger.reject_asset_rescale() RETURNS trigger"
        " LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
    ),
    "function privilege": (
        "functions",
        "GRANT EXECUTE ON FUNCTION ledger.post_journal"
        "(text, text, text, bigint[], text[], numeric[]) TO PUBLIC",
    ),
    "function setting": ("functions", "ALTER FUNCTION ledger.reject_change() SET work_mem = '1MB'"),
    "disabled trigger": ("triggers", "ALTER TABLE ledger.entry DISABLE TRIGGER entry_immutable"),
    "table privilege": ("relations", "GRANT INSERT ON ledger.entry TO exchange_app"),
    "row security": ("relations", "ALTER TABLE ledger.entry NO FORCE ROW LEVEL SECURITY"),
    "comment": ("relations", "COMMENT ON TABLE ledger.entry IS 'edited by hand'"),
    "schema privilege": ("schemas", "GRANT CREATE ON SCHEMA ledger TO exchange_app"),
    "column default": ("columns", "ALTER TABLE ledger.journal ALTER reference SET DEFAULT 'x'"),
    "constraint": ("constraints", "ALTER TABLE ledger.entry DROP CONSTRAINT entry_amount_non_zero"),
    "index": ("indexes", "CREATE INDEX entry_asset_idx ON ledger.entry (asset)"),
    "policy": ("policies", "ALTER POLICY owner_all ON ledger.entry USING (false)"),
    "view": ("views", "CREATE VIEW ledger.hand_made AS SELECT 1 AS one"),
}


@pytest.mark.parametrize("edit", HAND_EDITS)
def test_the_schema_comparison_notices_a_hand_edit(
    edit: str, db: ScratchDatabase, fresh_schemas: dict[str | None, Snapshot]
) -> None:
    kind, statement = HAND_EDITS[edit]
    assert differences(fresh_schemas[HEAD], schema_of(db)) == {}

    with db.connect() as conn:
        conn.execute(statement)  # type: ignore[arg-type]

    assert kind in differences(fresh_schemas[HEAD], schema_of(db))


def test_a_round_trip_through_base_rebuilds_exactly_the_schema_of_a_fresh_upgrade(
    empty_db: ScratchDatabase, fresh_schemas: dict[str | None, Snapshot]
) -> None:
    migrate.upgrade(empty_db.url())
    migrate.downgrade(empty_db.url(), "base")
    migrate.upgrade(empty_db.url())

    assert differences(fresh_schemas[HEAD], schema_of(empty_db)) == {}


@pytest.mark.parametrize("revision", REVISIONS)
def test_each_downgrade_restores_the_schema_below_it_and_upgrading_again_restores_head(
    revision: str, empty_db: ScratchDatabase, fresh_schemas: dict[str | None, Snapshot]
) -> None:
    below = PREVIOUS[revision]
    migrate.upgrade(empty_db.url(), revision)

    migrate.downgrade(empty_db.url(), below or "base")
    assert migrate.current_revision(empty_db.url()) == below
    assert differences(fresh_schemas[below], schema_of(empty_db)) == {}

    migrate.upgrade(empty_db.url())
    assert differences(fresh_schemas[HEAD], schema_of(empty_db)) == {}


def test_alembic_upgrade_head_works_directly_with_alembic_ini_and_database_url(
    empty_db: ScratchDatabase,
) -> None:
    alembic = Path(sys.executable).parent / "alembic"
    environment = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ADMIN_DATABASE_URL")
    }
    environment["DATABASE_URL"] = empty_db.url()

    result = subprocess.run(
        [str(alembic), "upgrade", "head"],
        cwd=migrate.ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert migrate.current_revision(empty_db.url()) == HEAD


# Data written before tenancy existed (customers without a tenant), then upgraded to head.
SEEDED_AT = "0003"
# (customer, client_order_id, side, quantity, price): b1 fills half of s1, b2 rests below it.
SEED_ORDERS = [
    ("bob", "s1", "sell", "2", "30000"),
    ("alice", "b1", "buy", "1", "30000"),
    ("alice", "b2", "buy", "0.5", "29000"),
]
QUERIES = {
    "customers": "SELECT id, external_ref FROM ledger.customer",
    "accounts": "SELECT id, customer_id, asset, bucket, label, balance, entry_count"
    " FROM ledger.account",
    "journals": "SELECT id, kind, reference, idempotency_key FROM ledger.journal",
    "entries": "SELECT id, journal_id, account_id, account_seq, asset, amount, balance_after"
    " FROM ledger.entry",
    "orders": "SELECT id, customer_id, client_order_id, side, price, quantity, filled_quantity,"
    " status FROM trading.orders",
    "trades": "SELECT id, maker_order_id, taker_order_id, price, quantity FROM trading.trade",
}


def holdings(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every customer, account, journal, entry, order and trade (superuser: no row security)."""
    return {name: conn.execute(query + " ORDER BY 1").fetchall() for name, query in QUERIES.items()}


def seed(conn: psycopg.Connection) -> None:
    """At SEEDED_AT, by SQL as the superuser: two customers, deposits, a withdrawal, a trade
    and resting orders on both sides."""
    conn.execute("INSERT INTO ledger.asset (code, scale) VALUES ('BTC', 8), ('USD', 6)")
    conn.execute("SELECT trading.create_instrument('BTC', 'USD', 0.01, 0.001, 0, 1, 0.001, 0.002)")
    ids = {}
    for name in ("alice", "bob"):
        row = conn.execute("SELECT ledger.create_customer(%s)", (name,)).fetchone()
        assert row is not None
        ids[name] = row[0]
    conn.execute("SELECT ledger.deposit(%s, 'USD', 100000, 'fund-alice')", (ids["alice"],))
    conn.execute("SELECT ledger.deposit(%s, 'BTC', 10, 'fund-bob')", (ids["bob"],))
    conn.execute("SELECT ledger.withdraw(%s, 'USD', 100, 'wd-alice')", (ids["alice"],))
    commands = [
        {
            "op": "place",
            "account": ids[customer],
            "client_order_id": client_order_id,
            "side": side,
            "type": "limit",
            "quantity": quantity,
            "price": price,
            "post_only": False,
            "self_trade_prevention": "cancel_newest",
        }
        for customer, client_order_id, side, quantity, price in SEED_ORDERS
    ]
    row = conn.execute(
        "SELECT trading.execute('BTC-USD', %s::jsonb)", (json.dumps(commands),)
    ).fetchone()
    assert row is not None
    assert [result.get("code") for result in row[0]] == [None, None, None], row[0]


@pytest.fixture(scope="module")
def upgraded_with_data(
    pg_cluster: Cluster, template_database: str
) -> Iterator[tuple[ScratchDatabase, dict[str, list[tuple[Any, ...]]]]]:
    """A database seeded at SEEDED_AT and then upgraded to head, with its holdings before."""
    name = "migrations_seeded"
    with janitor(pg_cluster, name):
        seeded = ScratchDatabase(pg_cluster, name)
        migrate.upgrade(seeded.url(), SEEDED_AT)
        with seeded.connect() as conn:
            seed(conn)
            before = holdings(conn)
        migrate.upgrade(seeded.url())
        yield seeded, before


def test_the_seeded_database_holds_money_orders_and_a_trade(
    upgraded_with_data: tuple[ScratchDatabase, dict[str, list[tuple[Any, ...]]]],
) -> None:
    """Otherwise the upgrade tests below would prove nothing."""
    _, before = upgraded_with_data

    assert [name for name, rows in before.items() if not rows] == []
    assert len(before["customers"]) == 2
    assert len(before["trades"]) == 1
    assert sorted(row[7] for row in before["orders"]) == ["filled", "new", "partially_filled"]


def test_upgrading_a_database_with_data_keeps_every_balance_entry_order_and_trade(
    upgraded_with_data: tuple[ScratchDatabase, dict[str, list[tuple[Any, ...]]]],
) -> None:
    seeded, before = upgraded_with_data

    assert migrate.current_revision(seeded.url()) == HEAD
    with seeded.connect() as conn:
        assert holdings(conn) == before


def test_every_invariant_holds_after_upgrading_a_database_with_data(
    upgraded_with_data: tuple[ScratchDatabase, dict[str, list[tuple[Any, ...]]]],
) -> None:
    seeded, _ = upgraded_with_data

    with seeded.connect() as conn:
        assert list(verify.violations(conn)) == []


def test_upgrading_gives_the_customers_made_before_tenancy_to_a_tenant_named_default(
    upgraded_with_data: tuple[ScratchDatabase, dict[str, list[tuple[Any, ...]]]],
) -> None:
    seeded, _ = upgraded_with_data

    with seeded.connect() as conn:
        owners = conn.execute(
            "SELECT c.external_ref, t.name FROM ledger.customer c"
            " JOIN tenancy.tenant t ON t.id = c.tenant_id ORDER BY c.id"
        ).fetchall()
        tenants = conn.execute("SELECT name FROM tenancy.tenant").fetchall()

    assert owners == [("alice", "default"), ("bob", "default")]
    assert tenants == [("default",)]
