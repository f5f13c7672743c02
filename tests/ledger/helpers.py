"""Shared set-up and checks for ledger tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

import psycopg
import pytest

from app import verify
from app.ledger import service
from app.ledger.errors import LedgerError
from app.pgcluster import SUPERUSER


@dataclass(frozen=True)
class LedgerState:
    """Everything a refused operation must leave untouched."""

    journals: int
    entries: int
    accounts: int
    customers: int
    balances: tuple[tuple[int, Decimal], ...]


@contextmanager
def observer(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """A superuser connection to `conn`'s database, which row-level security does not filter:
    a test observes the whole database, whichever role and tenant act in it."""
    if conn.info.parameter_status("is_superuser") == "on":
        yield conn
        return
    parameters = conn.info.get_parameters()
    parameters["user"] = SUPERUSER
    with psycopg.connect(**parameters, autocommit=True) as superuser:
        yield superuser


def ledger_state(conn: psycopg.Connection) -> LedgerState:
    with observer(conn) as observed:
        return _ledger_state(observed)


def _ledger_state(conn: psycopg.Connection) -> LedgerState:
    counts = conn.execute(
        """
        SELECT (SELECT count(*) FROM ledger.journal), (SELECT count(*) FROM ledger.entry),
               (SELECT count(*) FROM ledger.account), (SELECT count(*) FROM ledger.customer)
        """
    ).fetchone()
    assert counts is not None
    balances = conn.execute("SELECT id, balance FROM ledger.account ORDER BY id").fetchall()
    return LedgerState(*counts, balances=tuple((row[0], row[1]) for row in balances))


def assert_invariants_hold(conn: psycopg.Connection) -> None:
    with observer(conn) as observed:
        found = [(v.invariant.name, v.details) for v in verify.violations(observed)]
    assert found == []


def create_asset(admin: psycopg.Connection, code: str = "USD", scale: int = 2) -> str:
    service.create_asset(admin, code, scale)
    return code


def funded_customer(
    conn: psycopg.Connection, asset: str, amount: Decimal, external_ref: str = "alice"
) -> int:
    customer_id = service.create_customer(conn, external_ref)
    service.deposit(conn, customer_id, asset, amount, f"fund-{customer_id}")
    return customer_id


def account_id(
    conn: psycopg.Connection, customer_id: int | None, asset: str, bucket: str, label: str = ""
) -> int:
    """The ledger account of (owner, asset, bucket), created on first use (owner or superuser:
    the application role may not name accounts itself)."""
    row = conn.execute(
        "SELECT ledger.account_id(%s, %s, %s, %s)", (customer_id, asset, bucket, label)
    ).fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def refused(
    conn: psycopg.Connection,
    *,
    sqlstate: str | None = None,
    code: str | None = None,
    constraint: str | None = None,
) -> Iterator[None]:
    """The block must be refused (by SQLSTATE, LedgerError code or constraint name) and leave
    the ledger exactly as it was."""
    before = ledger_state(conn)
    with pytest.raises((psycopg.Error, LedgerError)) as caught:
        yield
    error = caught.value
    if sqlstate is not None:
        assert isinstance(error, psycopg.Error) and error.sqlstate == sqlstate, error
    if code is not None:
        assert isinstance(error, LedgerError) and error.code == code, error
    if constraint is not None:
        assert isinstance(error, psycopg.Error), error
        assert error.diag.constraint_name == constraint, error
    assert ledger_state(conn) == before
