"""The tenant a transaction acts for: `app.tenant_id`, read by row-level security policies and
by the owner's functions (sql/tenancy/functions.v1.sql)."""

from __future__ import annotations

import psycopg


def act_for(conn: psycopg.Connection, tenant_id: int, *, transaction_only: bool = True) -> None:
    """Make `conn` act for `tenant_id`: for the current transaction only (SET LOCAL, what a
    pooled connection must use, so the next borrower starts with no tenant), or, with
    `transaction_only=False`, for the rest of the session (dedicated connections only)."""
    conn.execute(
        "SELECT set_config('app.tenant_id', %s, %s)", (str(int(tenant_id)), transaction_only)
    )
