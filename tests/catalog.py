"""A database's schema as plain data, read from pg_catalog, so that two databases compare with ==.

Everything a migration can create in a non-system schema is listed by name, never by OID:
schemas, relations, columns, constraints, indexes, sequences, types, functions, triggers, views,
rules, policies, row-level security flags, privileges (ACLs, sorted), owners and comments; and
the database's own settings that migrations touch (its ACL, default privileges, extensions, the
exchange roles). Rows, sequence positions and Alembic's version table are data, not schema, and
are left out. A column's position counts only as the order of the live columns: a column dropped
and added again leaves a hole in attnum that no query can see.
"""

from __future__ import annotations

from typing import Any

import psycopg

# A schema is a system one if PostgreSQL made it; user objects have OIDs from 16384 up.
USER_SCHEMAS = """
    SELECT oid FROM pg_catalog.pg_namespace
     WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
       AND nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
"""

# Alembic's bookkeeping table stays at base: it records the revision, it is not the schema.
ALEMBIC = """
    SELECT oid FROM pg_catalog.pg_class
     WHERE relnamespace = 'public'::regnamespace
       AND relname IN ('alembic_version', 'alembic_version_pkc')
"""


def sorted_acl(column: str, kind: str | None = None, owner: str | None = None) -> str:
    """An ACL as sorted text: the order of grants is not a difference, and no ACL (NULL) is the
    same as the default one spelt out, as a grant then its revoke leaves it."""
    acl = f"coalesce({column}, acldefault({kind}, {owner}))" if kind else column
    return f"(SELECT array_agg(a ORDER BY a) FROM unnest({acl}::text[]) a)"


RELATION_ACL_KIND = "CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\""

QUERIES: dict[str, str] = {
    "schemas": f"""
        SELECT n.nspname, pg_get_userbyid(n.nspowner),
               {sorted_acl("n.nspacl", "'n'", "n.nspowner")}, obj_description(n.oid, 'pg_namespace')
          FROM pg_namespace n WHERE n.oid IN ({USER_SCHEMAS})
    """,
    "relations": f"""
        SELECT c.oid::regclass::text, c.relkind, pg_get_userbyid(c.relowner),
               c.relpersistence, c.relrowsecurity, c.relforcerowsecurity, c.reloptions,
               c.relreplident, {sorted_acl("c.relacl", RELATION_ACL_KIND, "c.relowner")},
               obj_description(c.oid, 'pg_class'),
               pg_get_partkeydef(c.oid), pg_get_expr(c.relpartbound, c.oid)
          FROM pg_class c
         WHERE c.relnamespace IN ({USER_SCHEMAS}) AND c.oid NOT IN ({ALEMBIC})
    """,
    "columns": f"""
        SELECT c.oid::regclass::text,
               row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
               a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
               a.attcollation::regcollation::text, a.attstorage, {sorted_acl("a.attacl")},
               col_description(c.oid, a.attnum)
          FROM pg_class c
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
         WHERE c.relnamespace IN ({USER_SCHEMAS}) AND c.relkind <> 'i'
           AND c.oid NOT IN ({ALEMBIC})
    """,
    "constraints": f"""
        SELECT n.nspname, coalesce(r.oid::regclass::text, t.oid::regtype::text), c.conname,
               c.contype, pg_get_constraintdef(c.oid), c.condeferrable, c.condeferred,
               c.convalidated, c.connoinherit, obj_description(c.oid, 'pg_constraint')
          FROM pg_constraint c
          JOIN pg_namespace n ON n.oid = c.connamespace
          LEFT JOIN pg_class r ON r.oid = c.conrelid
          LEFT JOIN pg_type t ON t.oid = c.contypid
         WHERE c.connamespace IN ({USER_SCHEMAS}) AND c.conrelid NOT IN ({ALEMBIC})
    """,
    "indexes": f"""
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indisunique,
               i.indisprimary, i.indisvalid, i.indisready, i.indisclustered,
               obj_description(i.indexrelid, 'pg_class')
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relnamespace IN ({USER_SCHEMAS}) AND c.oid NOT IN ({ALEMBIC})
    """,
    "sequences": f"""
        SELECT s.seqrelid::regclass::text, format_type(s.seqtypid, NULL), s.seqstart,
               s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle,
               (SELECT d.refobjid::regclass::text || '.' || a.attname || ':' || d.deptype::text
                  FROM pg_depend d
                  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                   AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
          FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
         WHERE c.relnamespace IN ({USER_SCHEMAS})
    """,
    "types": f"""
        SELECT t.oid::regtype::text, t.typtype, pg_get_userbyid(t.typowner),
               format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)
                  FROM pg_enum e WHERE e.enumtypid = t.oid),
               {sorted_acl("t.typacl", "'T'", "t.typowner")}, obj_description(t.oid, 'pg_type')
          FROM pg_type t
         WHERE t.typnamespace IN ({USER_SCHEMAS})
           -- row types of tables and array types come with their relation or element type
           AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
           AND NOT (t.typcategory = 'A' AND t.typelem <> 0)
    """,
    "functions": f"""
        SELECT p.oid::regprocedure::text, p.prokind, pg_get_function_result(p.oid),
               pg_get_function_arguments(p.oid), l.lanname, md5(p.prosrc), p.probin,
               p.prosecdef, p.proconfig, p.provolatile, p.proisstrict, p.proleakproof,
               p.proparallel, p.procost, p.prorows, pg_get_userbyid(p.proowner),
               {sorted_acl("p.proacl", "'f'", "p.proowner")}, obj_description(p.oid, 'pg_proc')
          FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
         WHERE p.pronamespace IN ({USER_SCHEMAS})
    """,
    "triggers": f"""
        SELECT t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled,
               obj_description(t.oid, 'pg_trigger')
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE NOT t.tgisinternal AND c.relnamespace IN ({USER_SCHEMAS})
    """,
    "views": f"""
        SELECT c.oid::regclass::text, pg_get_viewdef(c.oid)
          FROM pg_class c
         WHERE c.relkind IN ('v', 'm') AND c.relnamespace IN ({USER_SCHEMAS})
    """,
    "rules": f"""
        SELECT r.ev_class::regclass::text, r.rulename, pg_get_ruledef(r.oid), r.ev_enabled
          FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
         WHERE r.rulename <> '_RETURN' AND c.relnamespace IN ({USER_SCHEMAS})
    """,
    "policies": """
        SELECT schemaname, tablename, policyname, permissive,
               (SELECT array_agg(r ORDER BY r) FROM unnest(roles::text[]) r), cmd, qual,
               with_check
          FROM pg_policies
    """,
    "default_privileges": """
        SELECT pg_get_userbyid(d.defaclrole), d.defaclnamespace::regnamespace::text,
               d.defaclobjtype, (SELECT array_agg(a ORDER BY a) FROM unnest(d.defaclacl::text[]) a)
          FROM pg_default_acl d
    """,
    "database": """
        SELECT pg_get_userbyid(d.datdba),
               (SELECT array_agg(a ORDER BY a)
                  FROM unnest(coalesce(d.datacl, acldefault('d', d.datdba))::text[]) a),
               (SELECT array_agg(s ORDER BY s) FROM pg_db_role_setting r, unnest(r.setconfig) s
                 WHERE r.setdatabase = d.oid)
          FROM pg_database d WHERE d.datname = current_database()
    """,
    "extensions": """
        SELECT e.extname, e.extversion, e.extnamespace::regnamespace::text FROM pg_extension e
    """,
    # Roles are cluster-wide, but migrations create and change them.
    "roles": """
        SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb,
               r.rolcanlogin, r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.rolconfig,
               (SELECT array_agg(g.rolname ORDER BY g.rolname)
                  FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                 WHERE m.member = r.oid)
          FROM pg_roles r WHERE r.rolname LIKE 'exchange\\_%'
    """,
}

Snapshot = dict[str, list[tuple[Any, ...]]]


def schema_snapshot(conn: psycopg.Connection) -> Snapshot:
    """Every kind of object in QUERIES, each as a sorted list of rows."""
    snapshot: Snapshot = {}
    with conn.transaction():
        # Names in definitions are qualified the same way whatever the caller's search_path.
        conn.execute("SET LOCAL search_path = pg_catalog")
        for kind, query in QUERIES.items():
            rows = conn.execute(query).fetchall()  # type: ignore[call-overload]
            snapshot[kind] = sorted(rows, key=repr)
    return snapshot


def differences(expected: Snapshot, actual: Snapshot) -> dict[str, dict[str, list[Any]]]:
    """Per kind of object, the rows only in `expected` and only in `actual`; {} when equal.
    Easier to read in a failed assertion than two whole snapshots."""
    found = {}
    for kind in sorted(expected.keys() | actual.keys()):
        before, after = expected.get(kind, []), actual.get(kind, [])
        missing = [row for row in before if row not in after]
        extra = [row for row in after if row not in before]
        if missing or extra:
            found[kind] = {"missing": missing, "extra": extra}
    return found
