"""Reporting invariants (`exchange verify`): finance reads the reporting views and nothing else,
and the application role does not read them."""

from __future__ import annotations

from app.ledger.invariants import Invariant

_SCHEMAS = "('ledger', 'trading', 'tenancy', 'marketdata', 'reporting')"

INVARIANTS: tuple[Invariant, ...] = (
    Invariant(
        "finance_reader_reads_only_reporting",
        "finance_reader holds no privilege on any table, view or sequence of the exchange's"
        " schemas but SELECT on the reporting views, executes none of their functions, cannot log"
        " in and has no special attribute; exchange_app cannot read the reporting views",
        f"""
        SELECT format('finance_reader can %s %s', p.privilege, c.oid::regclass)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                 'REFERENCES', 'TRIGGER']) AS p(privilege)
         WHERE n.nspname IN {_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND NOT (n.nspname = 'reporting' AND c.relkind = 'v' AND p.privilege = 'SELECT')
           AND (has_table_privilege('finance_reader', c.oid, p.privilege)
                OR (p.privilege IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
                    AND has_any_column_privilege('finance_reader', c.oid, p.privilege)))
        UNION ALL
        SELECT format('finance_reader can execute %s', f.oid::regprocedure)
          FROM pg_proc f JOIN pg_namespace n ON n.oid = f.pronamespace
         WHERE n.nspname IN {_SCHEMAS}
           AND has_function_privilege('finance_reader', f.oid, 'EXECUTE')
        UNION ALL
        SELECT format('finance_reader has %s', attribute.name)
          FROM pg_roles r
         CROSS JOIN LATERAL (VALUES ('LOGIN', r.rolcanlogin), ('SUPERUSER', r.rolsuper),
                                    ('BYPASSRLS', r.rolbypassrls), ('CREATEROLE', r.rolcreaterole),
                                    ('CREATEDB', r.rolcreatedb)) AS attribute(name, held)
         WHERE r.rolname = 'finance_reader' AND attribute.held
        UNION ALL
        SELECT format('finance_reader is a member of %s', m.roleid::regrole)
          FROM pg_auth_members m
         WHERE m.member = 'finance_reader'::regrole
        UNION ALL
        SELECT format('exchange_app can SELECT %s', c.oid::regclass)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'reporting'
           AND has_table_privilege('exchange_app', c.oid, 'SELECT')
        """,
    ),
)
