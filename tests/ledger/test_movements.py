"""Deposits, withdrawals and transfers: journals against custody, with idempotency keys."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from app.ledger import service
from app.ledger.errors import LedgerError
from tests.ledger.helpers import (
    assert_invariants_hold,
    create_asset,
    ledger_state,
    observer,
    refused,
)


@pytest.fixture
def usd(admin: psycopg.Connection) -> str:
    return create_asset(admin, "USD", 2)


@pytest.fixture
def alice(app_conn: psycopg.Connection, usd: str) -> int:
    return service.create_customer(app_conn, "alice")


@pytest.fixture
def bob(app_conn: psycopg.Connection, usd: str) -> int:
    return service.create_customer(app_conn, "bob")


def journal_legs(conn: psycopg.Connection, journal_id: int) -> list[tuple[str, str, Decimal]]:
    """Every leg, the exchange's custody side included (which brokers do not see)."""
    with observer(conn) as observed:
        rows = observed.execute(
        """
            SELECT coalesce(a.customer_id::text, 'exchange'), a.bucket, e.amount
              FROM ledger.entry e JOIN ledger.account a ON a.id = e.account_id
             WHERE e.journal_id = %s
             ORDER BY e.amount
            """,
            (journal_id,),
        ).fetchall()
    return [(owner, bucket, amount) for owner, bucket, amount in rows]


def test_deposit_moves_funds_from_custody_to_available(
    app_conn: psycopg.Connection, alice: int
) -> None:
    journal_id = service.deposit(app_conn, alice, "USD", Decimal("250.00"), "dep-1", "wire 77")

    assert journal_legs(app_conn, journal_id) == [
        ("exchange", "custody", Decimal("-250.00")),
        (str(alice), "available", Decimal("250.00")),
    ]
    journal = app_conn.execute(
        "SELECT kind, reference FROM ledger.journal WHERE id = %s", (journal_id,)
    ).fetchone()
    assert journal == ("deposit", "wire 77")


def test_withdrawal_moves_funds_from_available_to_custody(
    app_conn: psycopg.Connection, alice: int
) -> None:
    service.deposit(app_conn, alice, "USD", Decimal("250.00"), "dep-1")

    journal_id = service.withdraw(app_conn, alice, "USD", Decimal("40.50"), "wd-1")

    assert journal_legs(app_conn, journal_id) == [
        (str(alice), "available", Decimal("-40.50")),
        ("exchange", "custody", Decimal("40.50")),
    ]
    assert service.balances(app_conn, alice) == [
        service.Balance("USD", Decimal("209.50"), Decimal("0"), Decimal("209.50"))
    ]


def test_transfer_moves_available_funds_between_customers(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    service.deposit(app_conn, alice, "USD", Decimal("10.00"), "dep-1")

    service.transfer(app_conn, alice, bob, "USD", Decimal("2.50"), "t-1")

    assert service.balances(app_conn, alice)[0].available == Decimal("7.50")
    assert service.balances(app_conn, bob)[0].available == Decimal("2.50")
    assert_invariants_hold(app_conn)


def test_balance_after_records_the_running_balance(
    app_conn: psycopg.Connection, alice: int
) -> None:
    for number, amount in enumerate(["1.00", "2.00", "3.00"]):
        service.deposit(app_conn, alice, "USD", Decimal(amount), f"dep-{number}")
    service.withdraw(app_conn, alice, "USD", Decimal("0.50"), "wd-1")

    rows = app_conn.execute(
        """
        SELECT e.account_seq, e.amount, e.balance_after
          FROM ledger.entry e JOIN ledger.account a ON a.id = e.account_id
         WHERE a.customer_id = %s ORDER BY e.account_seq
        """,
        (alice,),
    ).fetchall()
    assert rows == [
        (1, Decimal("1.00"), Decimal("1.00")),
        (2, Decimal("2.00"), Decimal("3.00")),
        (3, Decimal("3.00"), Decimal("6.00")),
        (4, Decimal("-0.50"), Decimal("5.50")),
    ]


@pytest.mark.parametrize("amount", [Decimal("0"), Decimal("-1.00"), Decimal("NaN")])
def test_non_positive_or_non_finite_amount_is_refused_before_the_database(
    app_conn: psycopg.Connection, alice: int, amount: Decimal
) -> None:
    with pytest.raises(LedgerError) as caught:
        service.deposit(app_conn, alice, "USD", amount, "dep-bad")

    assert caught.value.code == "invalid_amount"


@pytest.mark.parametrize("amount", ["0", "-1.00", None])
def test_database_refuses_non_positive_amounts(
    app_conn: psycopg.Connection, alice: int, amount: str | None
) -> None:
    with refused(app_conn, sqlstate="EX010"):
        app_conn.execute("SELECT ledger.deposit(%s, 'USD', %s, 'dep-bad')", (alice, amount))


def test_deposit_without_idempotency_key_is_refused(
    app_conn: psycopg.Connection, alice: int
) -> None:
    with refused(app_conn, sqlstate="EX010"):
        app_conn.execute("SELECT ledger.deposit(%s, 'USD', 1.00, NULL)", (alice,))


def test_deposit_of_an_unknown_asset_is_refused_and_creates_no_account(
    app_conn: psycopg.Connection, alice: int
) -> None:
    before = ledger_state(app_conn)

    with pytest.raises(LedgerError) as caught:
        service.deposit(app_conn, alice, "XYZ", Decimal("1"), "dep-xyz")

    assert caught.value.code == "invalid_request"
    assert "unknown asset XYZ" in caught.value.message
    assert ledger_state(app_conn) == before


def test_deposit_to_an_unknown_customer_is_refused(app_conn: psycopg.Connection, usd: str) -> None:
    with refused(app_conn, code="unknown_account"):
        service.deposit(app_conn, 999, "USD", Decimal("1"), "dep-ghost")


def test_withdrawal_by_a_customer_without_funds_leaves_no_empty_account_behind(
    app_conn: psycopg.Connection, alice: int
) -> None:
    with refused(app_conn, code="insufficient_funds"):
        service.withdraw(app_conn, alice, "USD", Decimal("1.00"), "wd-1")


def test_transfer_to_oneself_is_refused(app_conn: psycopg.Connection, alice: int) -> None:
    service.deposit(app_conn, alice, "USD", Decimal("1.00"), "dep-1")
    with refused(app_conn, code="invalid_request"):
        service.transfer(app_conn, alice, alice, "USD", Decimal("1.00"), "t-self")


def test_customer_operations_translate_refusals_into_stable_codes(
    app_conn: psycopg.Connection, alice: int
) -> None:
    service.deposit(app_conn, alice, "USD", Decimal("1.00"), "dep-1")

    with pytest.raises(LedgerError) as caught:
        service.deposit(app_conn, alice, "USD", Decimal("2.00"), "dep-1")

    assert caught.value.code == "idempotency_key_reused"


def test_asset_creation_rejects_a_bad_code_and_scale(admin: psycopg.Connection) -> None:
    with pytest.raises(LedgerError) as bad_code:
        service.create_asset(admin, "usd", 2)
    with pytest.raises(LedgerError) as bad_scale:
        service.create_asset(admin, "USD", 19)

    assert bad_code.value.code == "invalid_asset_code"
    assert bad_scale.value.code == "invalid_asset_scale"


def test_asset_creation_twice_is_refused(admin: psycopg.Connection, usd: str) -> None:
    with pytest.raises(LedgerError) as caught:
        service.create_asset(admin, "USD", 2)

    assert caught.value.code == "asset_exists"


def test_app_role_cannot_write_assets_directly(app_conn: psycopg.Connection) -> None:
    # Operators create assets through ledger.create_asset (the admin API's path), never by
    # writing the table: no UPDATE could change a scale under booked amounts.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute("INSERT INTO ledger.asset (code, scale) VALUES ('EUR', 2)")


def test_amount_of_10_to_the_24_or_more_is_refused(
    app_conn: psycopg.Connection, alice: int
) -> None:
    with refused(app_conn, code="invalid_request"):
        service.deposit(app_conn, alice, "USD", Decimal("1e24"), "dep-huge")


@pytest.mark.parametrize("reference", ["", "x" * 501])
def test_reference_of_a_customer_operation_has_1_to_500_characters(
    app_conn: psycopg.Connection, alice: int, reference: str
) -> None:
    with refused(app_conn, code="invalid_request"):
        service.deposit(app_conn, alice, "USD", Decimal("1.00"), "dep-ref", reference)


def test_total_is_exact_beyond_28_significant_digits(admin: psycopg.Connection) -> None:
    create_asset(admin, "ETH", 18)
    customer = service.create_customer(admin, "whale")
    service.deposit(admin, customer, "ETH", Decimal("12345678901.123456789012345678"), "d1")

    [balance] = service.balances(admin, customer)

    assert balance.total == Decimal("12345678901.123456789012345678")
