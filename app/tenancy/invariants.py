"""Tenancy invariants (`exchange verify`): row security is on and forced with exactly the
policies sql/tenancy/security.v1.sql defines, and its triggers exist and fire."""

from __future__ import annotations

from app.ledger.invariants import Invariant
from app.tenancy.schema import POLICIES, ROW_SECURITY_TABLES, TENANCY_TRIGGERS


def _values(rows: tuple[tuple[str | None, ...], ...]) -> str:
    return ", ".join(
        "(" + ", ".join("NULL" if v is None else "'" + v + "'" for v in row) + ")" for row in rows
    )


_TABLES = f"(VALUES {_values(ROW_SECURITY_TABLES)}) AS expected(tbl, app_policy)"
_POLICIES = f"(VALUES {_values(POLICIES)}) AS expected(tbl, name, role, cmd)"
_TRIGGERS = f"(VALUES {_values(TENANCY_TRIGGERS)}) AS expected(tbl, name, function)"

INVARIANTS: tuple[Invariant, ...] = (
    Invariant(
        "row_security_forced",
        "every tenant-owned table has row-level security enabled and forced, with exactly the"
        " policies POLICIES lists (owner: all rows; exchange_app: SELECT of its tenant's rows),"
        " none permissive to anyone else",
        f"""
        SELECT format('row-level security on %s is %s', expected.tbl,
                      CASE WHEN NOT c.relrowsecurity THEN 'disabled' ELSE 'not forced' END)
          FROM {_TABLES}
          JOIN pg_class c ON c.oid = to_regclass(expected.tbl)
         WHERE NOT (c.relrowsecurity AND c.relforcerowsecurity)
        UNION ALL
        SELECT format('policy %s on %s is missing or not %s for %s', expected.name, expected.tbl,
                      expected.cmd, expected.role)
          FROM {_POLICIES}
         WHERE NOT EXISTS (
               SELECT FROM pg_policy p
                WHERE p.polrelid = to_regclass(expected.tbl) AND p.polname = expected.name
                  AND p.polcmd = expected.cmd AND p.polpermissive
                  AND p.polroles = ARRAY[expected.role::regrole::oid])
        UNION ALL
        SELECT format('unexpected policy %s on %s', p.polname, p.polrelid::regclass)
          FROM pg_policy p
         WHERE NOT EXISTS (SELECT FROM {_POLICIES}
                            WHERE to_regclass(expected.tbl) = p.polrelid
                              AND expected.name = p.polname)
        """,
    ),
    Invariant(
        "tenancy_triggers_enabled",
        "the tenancy triggers (a customer's tenant never changes; keys, tenants and customers are"
        " never deleted; a key changes only by being revoked) exist, call their functions and fire"
        " in every session",
        f"""
        SELECT format('trigger %s on %s %s', expected.name, expected.tbl,
                      CASE WHEN t.oid IS NULL THEN 'is missing'
                           WHEN t.tgfoid <> to_regprocedure(expected.function || '()')
                           THEN format('calls %s', t.tgfoid::regprocedure)
                           ELSE 'does not fire in every session' END)
          FROM {_TRIGGERS}
          LEFT JOIN pg_trigger t
            ON t.tgrelid = to_regclass(expected.tbl) AND t.tgname = expected.name
         WHERE t.oid IS NULL
            OR t.tgfoid IS DISTINCT FROM to_regprocedure(expected.function || '()')
            OR t.tgenabled NOT IN ('O', 'A')
        UNION ALL
        SELECT format('unexpected trigger %s on %s', t.tgname, t.tgrelid::regclass)
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = 'tenancy'::regnamespace AND NOT t.tgisinternal
           AND NOT EXISTS (SELECT FROM {_TRIGGERS}
                            WHERE to_regclass(expected.tbl) = t.tgrelid
                              AND expected.name = t.tgname)
        """,
    ),
    Invariant(
        "app_role_cannot_read_secrets",
        "exchange_app cannot read API keys or market events directly, nor write any tenancy"
        " table",
        """
        SELECT format('exchange_app can %s %s', p.privilege, t.name)
          FROM (VALUES ('tenancy.api_key'), ('tenancy.tenant'), ('trading.event')) AS t(name)
         CROSS JOIN (VALUES ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE'),
                            ('REFERENCES'), ('TRIGGER')) AS p(privilege)
         WHERE has_table_privilege('exchange_app', t.name, p.privilege)
           AND NOT (t.name = 'tenancy.tenant' AND p.privilege = 'SELECT')
        UNION ALL
        SELECT format('exchange_app can %s columns of %s', p.privilege, t.name)
          FROM (VALUES ('tenancy.api_key'), ('trading.event')) AS t(name)
         CROSS JOIN (VALUES ('SELECT'), ('INSERT'), ('UPDATE')) AS p(privilege)
         WHERE has_any_column_privilege('exchange_app', t.name, p.privilege)
        """,
    ),
)
