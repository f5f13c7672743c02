"""finance_reader may SELECT the reporting views and nothing else; the application role may not
read them at all."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from app import verify
from tests.conftest import APP_ROLE
from tests.reporting.conftest import Seeded
from tests.reporting.test_views import VIEWS

EXCHANGE_SCHEMAS = ("ledger", "trading", "tenancy", "marketdata", "reporting", "public")


def test_a_finance_member_can_read_every_reporting_view(finance: psycopg.Connection) -> None:
    for view in VIEWS:
        finance.execute(f"SELECT * FROM reporting.{view} LIMIT 1").fetchall()


def test_a_finance_member_gets_the_same_figures_as_an_operator(
    finance: psycopg.Connection, reader: psycopg.Connection
) -> None:
    query = "SELECT * FROM reporting.trial_balance ORDER BY asset"

    assert finance.execute(query).fetchall() == reader.execute(query).fetchall()


def test_a_login_role_without_the_grant_reads_no_reporting_view(
    seeded: Seeded, finance_login: str
) -> None:
    with seeded.db.connect(finance_login) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM reporting.trial_balance")


@pytest.mark.parametrize(
    "table",
    [
        "ledger.entry", "ledger.journal", "ledger.account", "ledger.customer", "ledger.asset",
        "trading.orders", "trading.trade", "trading.event", "trading.instrument",
        "tenancy.tenant", "marketdata.public_trade",
    ],
)  # fmt: skip
def test_finance_reader_cannot_read_a_base_table(finance: psycopg.Connection, table: str) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        finance.execute(f"SELECT * FROM {table} LIMIT 1")


def test_finance_reader_cannot_read_api_keys(finance: psycopg.Connection) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        finance.execute("SELECT * FROM tenancy.api_key")


def test_finance_reader_cannot_look_keys_up_through_the_authentication_function(
    finance: psycopg.Connection,
) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        finance.execute("SELECT * FROM tenancy.api_key_for(1)")


def test_no_reporting_view_reads_the_api_keys(reader: psycopg.Connection) -> None:
    readers = reader.execute(
        """
        SELECT DISTINCT r.ev_class::regclass::text
          FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass
                                             AND d.objid = r.oid
         WHERE d.refobjid = 'tenancy.api_key'::regclass
           AND r.ev_class IN (SELECT oid FROM pg_class
                               WHERE relnamespace = 'reporting'::regnamespace)
        """
    ).fetchall()

    assert readers == []


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO reporting.asset (code, scale) VALUES ('EUR', 2)",
        "UPDATE reporting.asset SET scale = 0",
        "DELETE FROM reporting.asset",
        "CREATE VIEW reporting.mine AS SELECT 1",
        "SELECT ledger.deposit(1, 'USD', 1, 'finance-1', NULL)",
        "SELECT trading.execute('BTC-USD', '[]')",
    ],
)
def test_finance_reader_cannot_write(finance: psycopg.Connection, statement: str) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        finance.execute(statement)


def test_finance_reader_holds_select_on_the_reporting_views_and_no_other_privilege(
    reader: psycopg.Connection,
) -> None:
    """Every privilege finance_reader has (itself or through PUBLIC) on the exchange's schemas,
    their relations, columns, sequences and functions."""
    privileges = reader.execute(
        """
        WITH schemas AS (
            SELECT oid, nspname FROM pg_namespace WHERE nspname = ANY (%(schemas)s)
        )
        SELECT format('%%s on schema %%s', p, s.nspname)
          FROM schemas s CROSS JOIN unnest(ARRAY['USAGE', 'CREATE']) p
         WHERE has_schema_privilege('finance_reader', s.oid, p)
        UNION ALL
        SELECT format('%%s on %%s', p, c.oid::regclass)
          FROM pg_class c JOIN schemas s ON s.oid = c.relnamespace
         CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                 'REFERENCES', 'TRIGGER']) p
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND (has_table_privilege('finance_reader', c.oid, p)
                OR (p IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
                    AND has_any_column_privilege('finance_reader', c.oid, p)))
        UNION ALL
        SELECT format('%%s on sequence %%s', p, c.oid::regclass)
          FROM pg_class c JOIN schemas s ON s.oid = c.relnamespace
         CROSS JOIN unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p
         WHERE c.relkind = 'S' AND has_sequence_privilege('finance_reader', c.oid, p)
        UNION ALL
        SELECT format('EXECUTE on %%s', f.oid::regprocedure)
          FROM pg_proc f JOIN schemas s ON s.oid = f.pronamespace
         WHERE has_function_privilege('finance_reader', f.oid, 'EXECUTE')
        """,
        {"schemas": list(EXCHANGE_SCHEMAS)},
    ).fetchall()

    # Every role may look into schema public (PUBLIC's default), where nothing is granted.
    expected = ["USAGE on schema public", "USAGE on schema reporting"]
    expected += [f"SELECT on reporting.{view}" for view in VIEWS]
    assert sorted(row[0] for row in privileges) == sorted(expected)


def test_finance_reader_cannot_log_in_and_has_no_special_attribute(
    reader: psycopg.Connection,
) -> None:
    row = reader.execute(
        "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls,"
        "       (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid)"
        "  FROM pg_roles r WHERE rolname = 'finance_reader'"
    ).fetchone()

    assert row == (False, False, False, False, False, False, 0)


def test_the_application_role_cannot_read_the_reporting_views(seeded: Seeded) -> None:
    with seeded.db.connect(APP_ROLE) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM reporting.trial_balance")


def test_exchange_verify_finds_no_violation_with_reporting_in_place(
    reader: psycopg.Connection,
) -> None:
    assert list(verify.violations(reader)) == []
