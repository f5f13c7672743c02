"""Ledger operations. Each takes an open connection and never commits: the caller's unit of
work (`app.db.run_transaction`) does, so an operation composes with others atomically."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import psycopg

from app.ledger.errors import LedgerError, translated

# Postings are correct at any isolation level: every rule they rely on is checked under the
# account's row lock or by a constraint, never on a snapshot read. At READ COMMITTED concurrent
# postings on one account wait for each other; at SERIALIZABLE all but one fail with 40001 and
# are retried. So a transaction that only posts uses READ COMMITTED.
POSTING_ISOLATION = psycopg.IsolationLevel.READ_COMMITTED


@dataclass(frozen=True)
class Balance:
    """Amounts at the asset's scale (exact: every amount is), so a zero reads 0.000000 in USD."""

    asset: str
    available: Decimal
    held: Decimal
    total: Decimal  # summed by PostgreSQL: exact at any scale, unlike Decimal's 28 digits


def _positive_amount(amount: Decimal) -> Decimal:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
        raise LedgerError("invalid_amount", f"amount must be a positive decimal, got {amount!r}")
    return amount


def create_asset(conn: psycopg.Connection, code: str, scale: int) -> None:
    """Operators only (the CLI's administrator connection, or the API for an operator)."""
    with translated():
        conn.execute("SELECT ledger.create_asset(%s, %s::smallint)", (code, scale))


def _scalar_id(conn: psycopg.Connection, query: str, args: tuple[object, ...]) -> int:
    with translated():
        row = conn.execute(query, args).fetchone()
    assert row is not None, query
    return int(row[0])


def create_customer(conn: psycopg.Connection, external_ref: str) -> int:
    return _scalar_id(conn, "SELECT ledger.create_customer(%s)", (external_ref,))


def deposit(
    conn: psycopg.Connection,
    customer_id: int,
    asset: str,
    amount: Decimal,
    idempotency_key: str,
    reference: str | None = None,
) -> int:
    """Custody → the customer's available balance. Returns the journal id."""
    args = (customer_id, asset, _positive_amount(amount), idempotency_key, reference)
    return _scalar_id(conn, "SELECT ledger.deposit(%s, %s, %s, %s, %s)", args)


def withdraw(
    conn: psycopg.Connection,
    customer_id: int,
    asset: str,
    amount: Decimal,
    idempotency_key: str,
    reference: str | None = None,
) -> int:
    """The customer's available balance → custody. Returns the journal id."""
    args = (customer_id, asset, _positive_amount(amount), idempotency_key, reference)
    return _scalar_id(conn, "SELECT ledger.withdraw(%s, %s, %s, %s, %s)", args)


def transfer(
    conn: psycopg.Connection,
    from_customer_id: int,
    to_customer_id: int,
    asset: str,
    amount: Decimal,
    idempotency_key: str,
    reference: str | None = None,
) -> int:
    """Available funds from one customer to another. Returns the journal id."""
    args = (
        from_customer_id,
        to_customer_id,
        asset,
        _positive_amount(amount),
        idempotency_key,
        reference,
    )
    return _scalar_id(conn, "SELECT ledger.transfer(%s, %s, %s, %s, %s, %s)", args)


def balances(conn: psycopg.Connection, customer_id: int) -> list[Balance]:
    rows = conn.execute(
        """
        SELECT a.asset,
               round(coalesce(sum(a.balance) FILTER (WHERE a.bucket = 'available'), 0), s.scale),
               round(coalesce(sum(a.balance) FILTER (WHERE a.bucket = 'held'), 0), s.scale),
               round(sum(a.balance), s.scale)
          FROM ledger.account a
          JOIN ledger.asset s ON s.code = a.asset
         WHERE a.customer_id = %s
         GROUP BY a.asset, s.scale
         ORDER BY a.asset
        """,
        (customer_id,),
    ).fetchall()
    return [Balance(*row) for row in rows]
