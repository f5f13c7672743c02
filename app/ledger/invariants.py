"""Every ledger invariant as a named query that returns the rows violating it.

The database enforces these rules as rows are written; `exchange verify` re-checks them on a live
database, which also catches what no trigger can see: a disabled trigger, a dropped constraint, a
widened privilege, a restored backup that was edited by hand.

The first invariants check the data (each scans the ledger once); the others check the schema
and the application role's privileges against the expected lists below (catalog lookups only).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import psycopg

from app.tenancy.schema import TENANCY_TRIGGERS

VIOLATIONS_SHOWN_MAX = 5

# pg_trigger.tgtype is a bit mask: FOR EACH ROW = 1 (without it, FOR EACH STATEMENT), BEFORE = 2,
# INSTEAD OF = 64 (neither: AFTER), and one bit per event: INSERT = 4, DELETE = 8, UPDATE = 16,
# TRUNCATE = 32. So BEFORE UPDATE OR DELETE ... FOR EACH ROW is 2 | 16 | 8 | 1 = 27.
TG_ROW, TG_BEFORE, TG_INSERT, TG_DELETE, TG_UPDATE, TG_TRUNCATE, TG_INSTEAD = 1, 2, 4, 8, 16, 32, 64
TG_AFTER = TG_STATEMENT = 0


class ExpectedTrigger(NamedTuple):
    """A guarding trigger as sql/ledger/ (integrity.v1, balances.v1) defines it."""

    table: str  # in schema ledger
    name: str
    function: str  # in schema ledger, without arguments
    tgtype: int  # timing, level and events, exactly
    columns: tuple[str, ...] = ()  # UPDATE OF these columns (pg_trigger.tgattr); () = any column
    # The WHEN condition as pg_get_triggerdef prints it (compared with whitespace removed).
    when: str | None = None
    new_table: str | None = None  # REFERENCING NEW TABLE AS (no trigger has an OLD TABLE)


# The triggers that guard the ledger.
LEDGER_TRIGGERS: tuple[ExpectedTrigger, ...] = (
    ExpectedTrigger("entry", "entry_stamp", "entry_stamp", TG_BEFORE | TG_INSERT | TG_ROW),
    ExpectedTrigger(
        "entry",
        "entry_apply_statement",
        "entry_apply_statement",
        TG_AFTER | TG_INSERT | TG_STATEMENT,
        new_table="new_entries",
    ),
    ExpectedTrigger(
        "entry",
        "entry_check_statement",
        "entry_check_statement",
        TG_AFTER | TG_INSERT | TG_STATEMENT,
        new_table="new_entries",
    ),
    ExpectedTrigger(
        "entry", "entry_immutable", "reject_change", TG_BEFORE | TG_UPDATE | TG_DELETE | TG_ROW
    ),
    ExpectedTrigger(
        "entry", "entry_no_truncate", "reject_change", TG_BEFORE | TG_TRUNCATE | TG_STATEMENT
    ),
    ExpectedTrigger(  # a constraint trigger, DEFERRABLE INITIALLY DEFERRED
        "journal",
        "journal_check_has_entries",
        "journal_check_has_entries",
        TG_AFTER | TG_INSERT | TG_ROW,
    ),
    ExpectedTrigger(
        "journal", "journal_immutable", "reject_change", TG_BEFORE | TG_UPDATE | TG_DELETE | TG_ROW
    ),
    ExpectedTrigger(
        "journal", "journal_no_truncate", "reject_change", TG_BEFORE | TG_TRUNCATE | TG_STATEMENT
    ),
    ExpectedTrigger(
        "account",
        "account_changes_through_entries_only",
        "reject_direct_balance",
        TG_BEFORE | TG_UPDATE | TG_ROW,
        when="(pg_trigger_depth() = 0)",
    ),
    ExpectedTrigger(
        "account",
        "account_balance_starts_at_zero",
        "reject_direct_balance",
        TG_BEFORE | TG_INSERT | TG_ROW,
        when="((new.balance <> (0)::numeric) OR (new.entry_count <> 0))",
    ),
    ExpectedTrigger(
        "account", "account_no_delete", "reject_change", TG_BEFORE | TG_DELETE | TG_ROW
    ),
    ExpectedTrigger(
        "account", "account_no_truncate", "reject_change", TG_BEFORE | TG_TRUNCATE | TG_STATEMENT
    ),
    ExpectedTrigger(
        "asset",
        "asset_scale_immutable",
        "reject_asset_rescale",
        TG_BEFORE | TG_UPDATE | TG_ROW,
        columns=("scale", "code"),
        when="((old.scale <> new.scale) OR (old.code <> new.code))",
    ),
)

# Named constraints of sql/ledger/tables.v1.sql: (table in schema ledger, constraint, kind).
LEDGER_CONSTRAINTS: tuple[tuple[str, str, str], ...] = (
    ("asset", "asset_pkey", "primary key"),
    ("asset", "asset_code_format", "check"),
    ("asset", "asset_scale_range", "check"),
    ("customer", "customer_pkey", "primary key"),
    ("customer", "customer_external_ref_length", "check"),
    ("account", "account_pkey", "primary key"),
    ("account", "account_customer_id_fkey", "foreign key"),
    ("account", "account_asset_fkey", "foreign key"),
    ("account", "account_bucket_valid", "check"),
    ("account", "account_balance_non_negative", "check"),
    ("account", "account_label_length", "check"),
    ("account", "account_owner_asset_bucket_key", "unique"),
    ("account", "account_id_asset_key", "unique"),
    ("journal_kind", "journal_kind_pkey", "primary key"),
    ("journal", "journal_pkey", "primary key"),
    ("journal", "journal_kind_fkey", "foreign key"),
    ("journal", "journal_idempotency_key_key", "unique"),
    ("journal", "journal_idempotency_key_length", "check"),
    ("journal", "journal_reference_length", "check"),
    ("entry", "entry_pkey", "primary key"),
    ("entry", "entry_journal_id_fkey", "foreign key"),
    ("entry", "entry_amount_non_zero", "check"),
    ("entry", "entry_amount_finite", "check"),
    ("entry", "entry_amount_magnitude", "check"),
    ("entry", "entry_account_seq_key", "unique"),
    ("entry", "entry_account_asset_fkey", "foreign key"),
)

# Columns declared NOT NULL (besides primary keys, which cannot lose it): (table, columns).
LEDGER_NOT_NULL_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("asset", ("scale", "created_at")),
    ("customer", ("external_ref", "created_at")),
    ("account", ("asset", "bucket", "label", "balance", "entry_count", "created_at")),
    ("journal_kind", ("description",)),
    ("journal", ("kind", "created_at")),
    ("entry", ("journal_id", "account_id", "account_seq", "asset", "amount", "balance_after")),
)

# The only functions the application role may execute (as regprocedure signatures): every
# function of schema ledger, and every SECURITY DEFINER function of any schema (but pg_catalog and
# information_schema), that exchange_app can execute must be listed here. Schemas added later
# (trading, tenancy, an API layer) add their application functions to this list.
APP_ROLE_FUNCTIONS: tuple[str, ...] = (
    "ledger.create_customer(text)",
    "ledger.deposit(bigint, text, numeric, text, text)",
    "ledger.withdraw(bigint, text, numeric, text, text)",
    "ledger.transfer(bigint, bigint, text, numeric, text, text)",
    "trading.execute(text, jsonb)",
    "trading.await_turn(text)",
    "tenancy.create_tenant(text)",
    "tenancy.create_api_key(bigint, bytea, text[])",
    "tenancy.revoke_api_key(bigint)",
    "tenancy.api_key_for(bigint)",
    "ledger.create_asset(text, smallint)",
    "trading.create_instrument(text, text, numeric, numeric, numeric, numeric, numeric, numeric)",
    "trading.set_instrument_status(text, text)",
    "marketdata.events_after(text, bigint, integer)",
    "marketdata.executions_after(text, bigint, integer)",
)

_CONSTRAINT_TYPES = {"check": "c", "foreign key": "f", "primary key": "p", "unique": "u"}


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql(value: str | int | tuple[str, ...] | None) -> str:
    """A SQL literal: text, integer, text[] (from a tuple) or NULL."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "ARRAY[" + ", ".join(_literal(item) for item in value) + "]::text[]"
    return _literal(value)


def _values(rows: Iterable[tuple[str | int | tuple[str, ...] | None, ...]]) -> str:
    """The rows as the body of a SQL VALUES list."""
    return ",\n                   ".join(
        "(" + ", ".join(_sql(value) for value in row) + ")" for row in rows
    )


def _trigger_definition(tgtype: str, columns: str, when: str, old: str, new: str) -> str:
    """SQL that spells a trigger's definition as CREATE TRIGGER would, from SQL expressions for
    its tgtype, UPDATE OF columns (text[]), WHEN condition and transition table names."""
    return f"""concat_ws(' ',
                  CASE WHEN {tgtype} & {TG_BEFORE} <> 0 THEN 'BEFORE'
                       WHEN {tgtype} & {TG_INSTEAD} <> 0 THEN 'INSTEAD OF' ELSE 'AFTER' END,
                  array_to_string(ARRAY[
                      CASE WHEN {tgtype} & {TG_INSERT} <> 0 THEN 'INSERT' END,
                      CASE WHEN {tgtype} & {TG_DELETE} <> 0 THEN 'DELETE' END,
                      CASE WHEN {tgtype} & {TG_UPDATE} <> 0 THEN 'UPDATE' END
                      || CASE WHEN cardinality({columns}) > 0
                              THEN ' OF ' || array_to_string({columns}, ', ') ELSE '' END,
                      CASE WHEN {tgtype} & {TG_TRUNCATE} <> 0 THEN 'TRUNCATE' END], ' OR '),
                  'REFERENCING OLD TABLE AS ' || quote_ident({old}),
                  'REFERENCING NEW TABLE AS ' || quote_ident({new}),
                  CASE WHEN {tgtype} & {TG_ROW} <> 0 THEN 'FOR EACH ROW'
                       ELSE 'FOR EACH STATEMENT' END,
                  'WHEN (' || {when} || ')')"""


# The expected triggers as a relation expected(tbl, name, function, tgtype, columns, when_clause,
# new_table); columns sorted, as the query sorts a trigger's tgattr.
_EXPECTED_TRIGGER_ROWS = _values(
    (t.table, t.name, t.function, t.tgtype, tuple(sorted(t.columns)), t.when, t.new_table)
    for t in LEDGER_TRIGGERS
)
_EXPECTED_TRIGGERS = f"""(VALUES {_EXPECTED_TRIGGER_ROWS})
               AS expected(tbl, name, function, tgtype, columns, when_clause, new_table)"""
_ACTUAL_DEFINITION = _trigger_definition(
    "t.tgtype", "actual.columns", "actual.when_clause", "t.tgoldtable", "t.tgnewtable"
)
_EXPECTED_DEFINITION = _trigger_definition(
    "expected.tgtype", "expected.columns", "expected.when_clause", "NULL", "expected.new_table"
)
# pg_get_expr cannot print a trigger's WHEN condition (tgqual) when it refers to OLD or NEW
# ("expression contains variables of more than one relation"); pg_get_triggerdef can, as
# `... FOR EACH ROW WHEN (<condition>) EXECUTE FUNCTION f(<arguments>)`. The greedy match runs to
# the last `) EXECUTE FUNCTION `, which only the arguments' literals could repeat: a condition
# cut there would contain `EXECUTE FUNCTION` and match no expected condition.
_WHEN_CONDITION = r"' FOR EACH (?:ROW|STATEMENT) WHEN \((.*)\) EXECUTE (?:FUNCTION|PROCEDURE) '"
# PostgreSQL versions may print a condition with other spacing: compare it without whitespace.
_ACTUAL_WHEN = r"regexp_replace(actual.when_clause, '\s', '', 'g')"
_EXPECTED_WHEN = r"regexp_replace(expected.when_clause, '\s', '', 'g')"
_EXPECTED_CONSTRAINTS = _values(
    (table, name, _CONSTRAINT_TYPES[kind], kind) for table, name, kind in LEDGER_CONSTRAINTS
)
_EXPECTED_NOT_NULL = _values(
    (table, column) for table, columns in LEDGER_NOT_NULL_COLUMNS for column in columns
)
_TENANCY_TRIGGERS = (
    "(VALUES "
    + ", ".join(f"({_literal(table)}, {_literal(name)})" for table, name, _ in TENANCY_TRIGGERS)
    + ") AS tenancy(tbl, name)"
)
_APP_ROLE_FUNCTIONS = "ARRAY[" + ", ".join(_literal(f) for f in APP_ROLE_FUNCTIONS) + "]"


def _relations(schema: str) -> str:
    """Every relation of the schema whose contents matter (tables, views, ...)."""
    return f"""
        SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name, c.relkind
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = {_literal(schema)} AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""


def app_role_write_privileges(schema: str) -> str:
    """A query naming each way exchange_app could write the schema: INSERT or UPDATE on a table
    or any of its columns, DELETE, TRUNCATE, TRIGGER, its sequences, CREATE in the schema."""
    relations = _relations(schema)
    return f"""
        SELECT format('exchange_app can %s %s', p.privilege,
                      CASE WHEN has_table_privilege('exchange_app', r.oid, p.privilege)
                           THEN r.name
                           ELSE format('columns (%s) of %s',
                                       (SELECT string_agg(quote_ident(a.attname), ', '
                                                          ORDER BY a.attnum)
                                          FROM pg_attribute a
                                         WHERE a.attrelid = r.oid AND a.attnum > 0
                                           AND NOT a.attisdropped
                                           AND has_column_privilege('exchange_app', r.oid,
                                                                    a.attnum, p.privilege)),
                                       r.name) END)
          FROM ({relations}) r
         CROSS JOIN (VALUES ('INSERT'), ('UPDATE')) AS p(privilege)
         WHERE has_any_column_privilege('exchange_app', r.oid, p.privilege)
        UNION ALL
        SELECT format('exchange_app can %s %s', p.privilege, r.name)
          FROM ({relations}) r
         CROSS JOIN (VALUES ('DELETE'), ('TRUNCATE'), ('TRIGGER')) AS p(privilege)
         WHERE has_table_privilege('exchange_app', r.oid, p.privilege)
        UNION ALL
        SELECT format('exchange_app can %s sequence %I.%I', p.privilege, n.nspname, c.relname)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         CROSS JOIN (VALUES ('USAGE'), ('UPDATE')) AS p(privilege)
         WHERE n.nspname = {_literal(schema)} AND c.relkind = 'S'
           AND has_sequence_privilege('exchange_app', c.oid, p.privilege)
        UNION ALL
        SELECT format('exchange_app can CREATE in schema %s', n.nspname)
          FROM pg_namespace n
         WHERE n.nspname = {_literal(schema)}
           AND has_schema_privilege('exchange_app', n.oid, 'CREATE')
        """


# Every relation of schema ledger whose contents the ledger is made of.
_LEDGER_RELATIONS = _relations("ledger")


@dataclass(frozen=True)
class Invariant:
    name: str
    description: str
    query: str  # selects one text column describing each violation


@dataclass(frozen=True)
class Violation:
    invariant: Invariant
    details: list[str]


INVARIANTS: tuple[Invariant, ...] = (
    # The data -------------------------------------------------------------------------------
    Invariant(
        "journal_balanced",
        "every journal sums to zero per asset",
        """
        SELECT format('journal %s: %s legs sum to %s', journal_id, asset, sum(amount))
          FROM ledger.entry GROUP BY journal_id, asset HAVING sum(amount) <> 0
        """,
    ),
    Invariant(
        "journal_has_legs",
        "every journal has at least two entries",
        """
        SELECT format('journal %s has %s entries', j.id, count(e.id))
          FROM ledger.journal j LEFT JOIN ledger.entry e ON e.journal_id = j.id
         GROUP BY j.id HAVING count(e.id) < 2
        """,
    ),
    Invariant(
        "balance_non_negative",
        "no balance below zero outside custody",
        """
        SELECT format('account %s (%s %s) balance %s', id, asset, bucket, balance)
          FROM ledger.account WHERE bucket <> 'custody' AND balance < 0
        """,
    ),
    Invariant(
        "cached_balance_matches_entries",
        "each account's cached balance and entry count equal its entries",
        """
        SELECT format('account %s caches %s over %s entries; its entries sum to %s over %s',
                      a.id, a.balance, a.entry_count, coalesce(e.total, 0), coalesce(e.n, 0))
          FROM ledger.account a
          LEFT JOIN (SELECT account_id, sum(amount) AS total, count(*) AS n
                       FROM ledger.entry GROUP BY account_id) e ON e.account_id = a.id
         WHERE a.balance <> coalesce(e.total, 0) OR a.entry_count <> coalesce(e.n, 0)
        """,
    ),
    Invariant(
        "running_balance",
        "each entry's balance_after is its account's running sum, in account_seq order 1, 2, ...",
        """
        SELECT format('entry %s (account %s, seq %s): balance_after %s, running sum %s',
                      id, account_id, account_seq, balance_after, running)
          FROM (SELECT id, account_id, account_seq, balance_after,
                       sum(amount) OVER w AS running, row_number() OVER w AS position
                  FROM ledger.entry
                WINDOW w AS (PARTITION BY account_id ORDER BY account_seq)) e
         WHERE balance_after <> running OR account_seq <> position
        """,
    ),
    Invariant(
        "entry_asset_matches_account",
        "every entry's account exists and holds the entry's asset",
        """
        SELECT CASE WHEN a.id IS NULL
                    THEN format('entry %s is in account %s, which does not exist',
                                e.id, e.account_id)
                    ELSE format('entry %s is in %s, account %s holds %s',
                                e.id, e.asset, a.id, a.asset) END
          FROM ledger.entry e LEFT JOIN ledger.account a ON a.id = e.account_id
         WHERE a.id IS NULL OR e.asset <> a.asset
        """,
    ),
    Invariant(
        "amount_exact",
        "every amount is non-zero, finite and representable at its asset's scale",
        """
        SELECT format('entry %s: amount %s in %s (scale %s)', e.id, e.amount, e.asset, s.scale)
          FROM ledger.entry e JOIN ledger.asset s ON s.code = e.asset
         WHERE e.amount = 0 OR NOT (e.amount > '-Infinity' AND e.amount < 'Infinity')
            OR e.amount <> round(e.amount, s.scale)
        """,
    ),
    Invariant(
        "trial_balance_zero",
        "all accounts of an asset sum to zero",
        """
        SELECT format('%s accounts sum to %s', asset, sum(balance))
          FROM ledger.account GROUP BY asset HAVING sum(balance) <> 0
        """,
    ),
    # The schema that enforces the rules -----------------------------------------------------
    Invariant(
        "integrity_triggers_enabled",
        "the triggers that guard the ledger exist, call their functions and are defined as"
        " LEDGER_TRIGGERS says: the same timing, level and events (pg_trigger.tgtype), UPDATE OF"
        " columns (tgattr), WHEN condition (as pg_get_triggerdef prints it, whitespace ignored)"
        " and transition tables; every trigger on a ledger table, foreign-key ones included,"
        " fires in every session (tgenabled O or A); and no ALTER DATABASE or ALTER ROLE setting,"
        " nor the sessions' default, makes session_replication_role other than origin",
        f"""
        SELECT format('trigger %s on ledger.%s is missing', expected.name, expected.tbl)
          FROM {_EXPECTED_TRIGGERS}
          LEFT JOIN pg_trigger t
            ON t.tgrelid = to_regclass(format('ledger.%I', expected.tbl))
           AND t.tgname = expected.name
         WHERE t.oid IS NULL
        UNION ALL
        SELECT format('trigger %s on ledger.%s calls %s, not ledger.%s()',
                      expected.name, expected.tbl, t.tgfoid::regprocedure, expected.function)
          FROM {_EXPECTED_TRIGGERS}
          JOIN pg_trigger t
            ON t.tgrelid = to_regclass(format('ledger.%I', expected.tbl))
           AND t.tgname = expected.name
         WHERE t.tgfoid IS DISTINCT FROM to_regprocedure(format('ledger.%I()', expected.function))
        UNION ALL
        SELECT format('trigger %s on ledger.%s is %s, expected %s', expected.name, expected.tbl,
                      {_ACTUAL_DEFINITION},
                      {_EXPECTED_DEFINITION})
          FROM {_EXPECTED_TRIGGERS}
          JOIN pg_trigger t
            ON t.tgrelid = to_regclass(format('ledger.%I', expected.tbl))
           AND t.tgname = expected.name
         CROSS JOIN LATERAL (
               SELECT ARRAY(SELECT a.attname::text FROM pg_attribute a
                             WHERE a.attrelid = t.tgrelid AND a.attnum = ANY (t.tgattr::int2[])
                             ORDER BY a.attname::text COLLATE "C") AS columns,
                      CASE WHEN t.tgqual IS NOT NULL
                           THEN substring(pg_get_triggerdef(t.oid) FROM {_WHEN_CONDITION})
                      END AS when_clause) AS actual
         WHERE t.tgtype <> expected.tgtype
            OR actual.columns <> expected.columns
            OR {_ACTUAL_WHEN} IS DISTINCT FROM {_EXPECTED_WHEN}
            OR t.tgoldtable IS NOT NULL
            OR t.tgnewtable::text IS DISTINCT FROM expected.new_table
        UNION ALL
        SELECT format('trigger %s%s on %s %s', t.tgname,
                      CASE WHEN con.conname IS NOT NULL
                           THEN format(' (enforcing %s)', con.conname) ELSE '' END,
                      r.name,
                      CASE t.tgenabled WHEN 'D' THEN 'is disabled'
                                       WHEN 'R' THEN 'fires only in replica sessions'
                                       ELSE format('has tgenabled %s', t.tgenabled) END)
          FROM pg_trigger t
          JOIN ({_LEDGER_RELATIONS}) r ON r.oid = t.tgrelid
          LEFT JOIN pg_constraint con ON con.oid = t.tgconstraint
         WHERE t.tgenabled NOT IN ('O', 'A')
        UNION ALL
        SELECT format('%s sets %s: no ordinary trigger or foreign key fires in those sessions',
                      CASE WHEN s.setrole = 0 AND s.setdatabase = 0 THEN 'ALTER ROLE ALL'
                           WHEN s.setrole = 0 THEN 'ALTER DATABASE'
                           ELSE format('ALTER ROLE %s', s.setrole::regrole) END,
                      config)
          FROM pg_db_role_setting s CROSS JOIN LATERAL unnest(s.setconfig) AS config
         WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database
                                      WHERE datname = current_database()))
           AND lower(config) LIKE 'session_replication_role=%'
           AND lower(config) <> 'session_replication_role=origin'
        UNION ALL
        SELECT format('sessions start with session_replication_role = %s (from %s)',
                      reset_val, coalesce(sourcefile, source))
          FROM pg_settings
         WHERE name = 'session_replication_role' AND reset_val <> 'origin'
        """,
    ),
    Invariant(
        "integrity_constraints_present",
        "the ledger's named constraints exist, validated, and its NOT NULL columns are still"
        " NOT NULL",
        f"""
        SELECT format('%s constraint %s on ledger.%s %s', expected.kind, expected.name,
                      expected.tbl,
                      CASE WHEN c.oid IS NULL THEN 'is missing'
                           WHEN c.contype <> expected.contype
                           THEN format('has type %s', c.contype)
                           ELSE 'is not validated (NOT VALID)' END)
          FROM (VALUES {_EXPECTED_CONSTRAINTS}) AS expected(tbl, name, contype, kind)
          LEFT JOIN pg_constraint c
            ON c.conrelid = to_regclass(format('ledger.%I', expected.tbl))
           AND c.conname = expected.name
         WHERE c.oid IS NULL OR c.contype <> expected.contype OR NOT c.convalidated
        UNION ALL
        SELECT format('column ledger.%s.%s %s', expected.tbl, expected.col,
                      CASE WHEN a.attnum IS NULL THEN 'is missing' ELSE 'allows NULL' END)
          FROM (VALUES {_EXPECTED_NOT_NULL}) AS expected(tbl, col)
          LEFT JOIN pg_attribute a
            ON a.attrelid = to_regclass(format('ledger.%I', expected.tbl))
           AND a.attname = expected.col AND NOT a.attisdropped
         WHERE a.attnum IS NULL OR NOT a.attnotnull
        """,
    ),
    Invariant(
        "ledger_tables_have_only_expected_triggers",
        "no trigger on a ledger table besides the integrity triggers (and foreign-key internals)",
        f"""
        SELECT format('unexpected trigger %s on %s calls %s',
                      t.tgname, r.name, t.tgfoid::regprocedure)
          FROM pg_trigger t
          JOIN ({_LEDGER_RELATIONS}) r ON r.oid = t.tgrelid
         WHERE NOT t.tgisinternal
           AND NOT EXISTS (SELECT FROM {_EXPECTED_TRIGGERS}
                            WHERE to_regclass(format('ledger.%I', expected.tbl)) = t.tgrelid
                              AND expected.name = t.tgname)
           AND NOT EXISTS (SELECT FROM {_TENANCY_TRIGGERS}
                            WHERE to_regclass(tenancy.tbl) = t.tgrelid
                              AND tenancy.name = t.tgname)
        """,
    ),
    Invariant(
        "ledger_tables_have_no_rules_or_children",
        "no rewrite rule or inheritance child on a ledger table (policies: row_security_forced)",
        f"""
        SELECT format('rule %s on %s', w.rulename, r.name)
          FROM pg_rewrite w JOIN ({_LEDGER_RELATIONS}) r ON r.oid = w.ev_class
         WHERE w.rulename <> '_RETURN'

        UNION ALL
        SELECT format('%s inherits from %s', i.inhrelid::regclass, i.inhparent::regclass)
          FROM pg_inherits i
         WHERE EXISTS (SELECT FROM ({_LEDGER_RELATIONS}) r
                        WHERE r.oid IN (i.inhrelid, i.inhparent))
        """,
    ),
    # The application role -------------------------------------------------------------------
    Invariant(
        "app_role_attributes",
        "exchange_app is NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB NOREPLICATION NOINHERIT",
        """
        SELECT format('exchange_app has %s', attribute.name)
          FROM pg_roles r
         CROSS JOIN LATERAL (VALUES ('SUPERUSER', r.rolsuper), ('BYPASSRLS', r.rolbypassrls),
                                    ('CREATEROLE', r.rolcreaterole), ('CREATEDB', r.rolcreatedb),
                                    ('REPLICATION', r.rolreplication), ('INHERIT', r.rolinherit))
               AS attribute(name, held)
         WHERE r.rolname = 'exchange_app' AND attribute.held
        """,
    ),
    Invariant(
        "app_role_no_memberships",
        "exchange_app is a member of no role (it could SET ROLE to it)",
        """
        SELECT format('exchange_app is a member of %s%s', m.roleid::regrole,
                      CASE WHEN m.admin_option THEN ' (with admin option)' ELSE '' END)
          FROM pg_auth_members m
         WHERE m.member = 'exchange_app'::regrole
        """,
    ),
    Invariant(
        "app_role_owns_nothing",
        "exchange_app owns no object in this database and no database",
        """
        SELECT format('exchange_app owns %s', pg_describe_object(d.classid, d.objid, d.objsubid))
          FROM pg_shdepend d
         WHERE d.refclassid = 'pg_authid'::regclass
           AND d.refobjid = 'exchange_app'::regrole
           AND d.deptype = 'o'
           AND d.dbid IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
        """,
    ),
    Invariant(
        "app_role_cannot_write_ledger",
        "exchange_app cannot write any ledger table or column, add triggers, use its sequences"
        " or create objects in schema ledger",
        app_role_write_privileges("ledger"),
    ),
    Invariant(
        "app_role_executes_only_whitelisted_functions",
        "exchange_app can execute no function of schema ledger, and no SECURITY DEFINER function"
        " of any schema but pg_catalog and information_schema, that APP_ROLE_FUNCTIONS does not"
        " list (the business functions the API calls)",
        f"""
        SELECT format('exchange_app can execute %s%s', p.oid::regprocedure,
                      CASE WHEN p.prosecdef THEN ' (SECURITY DEFINER)' ELSE '' END)
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE (n.nspname = 'ledger'
                OR (p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')))
           AND has_function_privilege('exchange_app', p.oid, 'EXECUTE')
           AND NOT EXISTS (SELECT FROM unnest({_APP_ROLE_FUNCTIONS}) AS allowed(signature)
                            WHERE to_regprocedure(allowed.signature) = p.oid)
        """,
    ),
    Invariant(
        "app_role_no_parameter_privileges",
        "exchange_app holds no SET or ALTER SYSTEM privilege (GRANT ... ON PARAMETER, directly,"
        " through PUBLIC or as a superuser) on session_replication_role, nor on any parameter"
        " listed in pg_parameter_acl",
        """
        SELECT format('exchange_app can %s parameter %s', p.privilege, s.name)
          FROM (SELECT 'session_replication_role' UNION SELECT parname FROM pg_parameter_acl)
               AS s(name)
         CROSS JOIN (VALUES ('SET'), ('ALTER SYSTEM')) AS p(privilege)
         WHERE has_parameter_privilege('exchange_app', s.name, p.privilege)
         ORDER BY s.name, p.privilege DESC
        """,
    ),
)


def violations(
    conn: psycopg.Connection, invariants: Iterable[Invariant] = INVARIANTS
) -> Iterator[Violation]:
    """Yields each broken invariant, in the given order, with a few example rows."""
    for invariant in invariants:
        rows = conn.execute(f"{invariant.query} LIMIT {VIOLATIONS_SHOWN_MAX}").fetchall()
        if rows:
            yield Violation(invariant, [row[0] for row in rows])
