"""Finance staff's access: membership of finance_reader, which may read the reporting views only
(sql/reporting/grants.v1.sql)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from app.reporting.reports import ReportError

FINANCE_ROLE = "finance_reader"
# The exchange's own roles never read reports: the application must not see every tenant's data
# (`exchange verify` demands it be a member of no role), and the others own or are the views.
NOT_GRANTABLE = ("exchange_app", "exchange_owner", FINANCE_ROLE)


def grant_finance(conn: psycopg.Connection, role: str) -> bool:
    """Makes the existing role `role` a member of finance_reader (again: no change). Returns
    whether the role inherits its memberships' privileges (if not, it must SET ROLE)."""
    if role in NOT_GRANTABLE:
        raise ReportError(
            f"{role} is one of the exchange's own roles; grant finance access to a"
            " login role of a person or a reporting tool"
        )
    row = conn.execute("SELECT rolinherit FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if row is None:
        raise ReportError(
            f"no role named {role!r} on this cluster; create the login role first"
            f" (CREATE ROLE {sql.Identifier(role).as_string(conn)} LOGIN PASSWORD '...')"
        )
    conn.execute(
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(FINANCE_ROLE), sql.Identifier(role))
    )
    return bool(row[0])
