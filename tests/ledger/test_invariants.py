"""Each ledger invariant, attacked through raw SQL, holds and leaves nothing behind.

Attacks run as the application role (what a buggy or compromised API process could do), which
privileges stop before any row is touched, and then as the schema owner, which holds every table
privilege and may call the internal ledger.post_journal with raw legs: the triggers and
constraints must hold even for it.
"""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from psycopg import errors

from app.ledger import service
from tests.ledger.helpers import (
    account_id,
    assert_invariants_hold,
    create_asset,
    funded_customer,
    ledger_state,
    refused,
)


@pytest.fixture
def usd(admin: psycopg.Connection) -> str:
    return create_asset(admin, "USD", 2)


@pytest.fixture
def btc(admin: psycopg.Connection) -> str:
    return create_asset(admin, "BTC", 8)


@pytest.fixture
def alice(app_conn: psycopg.Connection, usd: str) -> int:
    return funded_customer(app_conn, usd, Decimal("100.00"), "alice")


@pytest.fixture
def bob(app_conn: psycopg.Connection, usd: str) -> int:
    return service.create_customer(app_conn, "bob")


@pytest.fixture
def owner(admin: psycopg.Connection) -> psycopg.Connection:
    """The superuser connection acting as exchange_owner: every privilege on the ledger."""
    admin.execute("SET ROLE exchange_owner")
    return admin


def available(conn: psycopg.Connection, customer_id: int, asset: str = "USD") -> int:
    return account_id(conn, customer_id, asset, "available")


def custody(conn: psycopg.Connection, customer_id: int, asset: str = "USD") -> int:
    return account_id(conn, None, asset, "custody", f"customer/{customer_id}")


POST = "SELECT ledger.post_journal(%s, %s, %s, %s, %s, %s)"


def post(conn: psycopg.Connection, legs: list[tuple[int, str, str]], key: str | None = None):
    return conn.execute(
        POST,
        (
            "transfer",
            None,
            key,
            [leg[0] for leg in legs],
            [leg[1] for leg in legs],
            [Decimal(leg[2]) for leg in legs],
        ),
    ).fetchone()


def insert_legs_directly(
    conn: psycopg.Connection, journal_id: int, legs: list[tuple[int, str, str]]
) -> None:
    """Writes entries as ledger.insert_entries does (each continuing its account's history),
    bypassing the checks of ledger.post_journal: so that a trigger is what refuses them."""
    conn.execute(
        "SELECT ledger.insert_entries(%s, %s, %s, %s::numeric[])",
        (
            [journal_id] * len(legs),
            [leg[0] for leg in legs],
            [leg[1] for leg in legs],
            [leg[2] for leg in legs],
        ),
    )


def open_journal(conn: psycopg.Connection) -> int:
    """A journal row without entries (they must follow in the same transaction)."""
    row = conn.execute(
        "INSERT INTO ledger.journal (kind) VALUES ('transfer') RETURNING id"
    ).fetchone()
    assert row is not None
    return int(row[0])


def insert_journal_directly(conn: psycopg.Connection, legs: list[tuple[int, str, str]]) -> None:
    """Writes a journal and its entries with plain INSERTs, bypassing ledger.post_journal."""
    with conn.transaction():
        insert_legs_directly(conn, open_journal(conn), legs)


# 1. Every journal sums to zero per asset ---------------------------------------------------


def test_unbalanced_journal_is_rejected_and_writes_nothing(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    legs = [
        (available(owner, alice), "USD", "-10.00"),
        (available(owner, bob), "USD", "9.99"),
    ]
    with refused(app_conn, sqlstate="EX001"):
        post(owner, legs)


def test_journal_balanced_in_total_but_not_per_asset_is_rejected(
    owner: psycopg.Connection,
    app_conn: psycopg.Connection,
    admin: psycopg.Connection,
    alice: int,
    bob: int,
    btc: str,
) -> None:
    service.deposit(app_conn, bob, "BTC", Decimal("1"), "fund-btc")
    legs = [  # sums to zero over both assets together, not per asset
        (available(owner, alice), "USD", "-5.00"),
        (available(owner, bob), "USD", "4.00"),
        (available(owner, bob, "BTC"), "BTC", "-1"),
        (available(owner, alice, "BTC"), "BTC", "2"),
    ]
    with refused(app_conn, sqlstate="EX001"):
        post(owner, legs)


def test_owner_inserting_unbalanced_entries_directly_is_rejected(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int
) -> None:
    account = available(owner, alice)
    with refused(app_conn, sqlstate="EX001"):
        insert_journal_directly(owner, [(account, "USD", "5")])


def test_owner_cannot_append_legs_to_a_posted_journal(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    journal_id = service.transfer(app_conn, alice, bob, "USD", Decimal("1.00"), "t1")
    with refused(app_conn, sqlstate="EX009"):
        insert_legs_directly(
            owner,
            journal_id,
            [(available(owner, alice), "USD", "-2"), (available(owner, bob), "USD", "2")],
        )


def test_owner_cannot_commit_a_journal_without_entries(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int
) -> None:
    with refused(app_conn, sqlstate="EX009"):
        owner.execute("INSERT INTO ledger.journal (kind) VALUES ('deposit')")


def test_app_role_cannot_insert_journals_or_entries(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int
) -> None:
    before = ledger_state(app_conn)

    with pytest.raises(errors.InsufficientPrivilege):
        app_conn.execute("INSERT INTO ledger.journal (kind) VALUES ('deposit')")
    with pytest.raises(errors.InsufficientPrivilege):
        app_conn.execute(
            "INSERT INTO ledger.entry (journal_id, account_id, asset, amount)"
            " VALUES (1, %s, 'USD', 5)",
            (available(owner, alice),),
        )

    assert ledger_state(app_conn) == before


@pytest.mark.parametrize(
    "call",
    [
        "SELECT ledger.post_journal('deposit', NULL, NULL, ARRAY[1, 2], ARRAY['USD', 'USD'],"
        " ARRAY[-1, 1]::numeric[])",
        "SELECT ledger.account_id(NULL, 'USD', 'custody', 'free-money')",
    ],
)
def test_app_role_cannot_post_raw_legs_or_create_accounts(
    app_conn: psycopg.Connection, alice: int, call: str
) -> None:
    """With raw legs the application could mint money from a custody account."""
    with refused(app_conn, sqlstate="42501"):  # insufficient_privilege
        app_conn.execute(call)


def test_an_account_appears_in_one_leg_of_a_journal(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    """Otherwise (+50, -50) on an empty account would pass in one order and fail in the other."""
    bob_account = available(owner, bob)
    legs = [
        (bob_account, "USD", "50.00"),
        (bob_account, "USD", "-50.00"),
        (available(owner, alice), "USD", "1.00"),
        (custody(owner, alice), "USD", "-1.00"),
    ]
    with refused(app_conn, sqlstate="EX010"):
        post(owner, legs)


def test_a_journal_has_at_most_64_legs(
    owner: psycopg.Connection, app_conn: psycopg.Connection, usd: str
) -> None:
    customers = [service.create_customer(app_conn, f"c{n}") for n in range(65)]
    legs = [(available(owner, c), "USD", "1.00") for c in customers[:64]]
    legs.append((available(owner, customers[64]), "USD", "-64.00"))
    with refused(app_conn, sqlstate="EX010"):
        post(owner, legs)


# 2. No customer balance below zero -------------------------------------------------------------


def test_withdrawal_of_more_than_available_fails_and_writes_nothing(
    app_conn: psycopg.Connection, alice: int
) -> None:
    with refused(app_conn, sqlstate="EX002"):
        app_conn.execute("SELECT ledger.withdraw(%s, 'USD', 100.01, 'w-too-much')", (alice,))


def test_journal_overdrawing_a_customer_account_fails(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    legs = [(available(owner, bob), "USD", "-0.01"), (available(owner, alice), "USD", "0.01")]
    with refused(app_conn, sqlstate="EX002"):
        post(owner, legs)


def test_fee_account_cannot_go_negative(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int
) -> None:
    fee = account_id(owner, None, "USD", "fee", "BTC-USD")
    with refused(app_conn, sqlstate="EX002"):
        post(owner, [(fee, "USD", "-1.00"), (available(owner, alice), "USD", "1.00")])


def test_custody_account_may_go_negative(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int
) -> None:
    row = owner.execute(
        "SELECT balance FROM ledger.account WHERE id = %s", (custody(owner, alice),)
    ).fetchone()

    assert row == (Decimal("-100.00"),)


def test_owner_inserting_entries_that_overdraw_is_refused_as_insufficient_funds(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    legs = [(available(owner, alice), "USD", "-100.01"), (available(owner, bob), "USD", "100.01")]
    with refused(app_conn, sqlstate="EX002"):
        insert_journal_directly(owner, legs)


def test_overdraft_inside_a_statement_is_refused_even_when_the_account_ends_positive(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    # alice holds 100.00: -150 then +60 ends at 10.00, but her balance after the first leg is -50.
    with refused(app_conn, sqlstate="EX002"), owner.transaction():
        first, second = open_journal(owner), open_journal(owner)
        owner.execute(
            "SELECT ledger.insert_entries(%s, %s, ARRAY['USD','USD','USD','USD'],"
            " ARRAY[-150, 150, 60, -60]::numeric[])",
            (
                [first, first, second, second],
                [available(owner, alice), available(owner, bob)] * 2,
            ),
        )


@pytest.mark.parametrize(
    ("account_seq", "balance_after"),
    [
        ("a.entry_count + 2", "a.balance + l.amount"),  # skips a number
        ("a.entry_count + 1", "a.balance + l.amount + 1"),  # a running balance that is not
    ],
)
def test_owner_inserting_an_entry_that_does_not_continue_its_account_is_refused(
    owner: psycopg.Connection,
    app_conn: psycopg.Connection,
    alice: int,
    bob: int,
    account_seq: str,
    balance_after: str,
) -> None:
    with refused(app_conn, sqlstate="EX011"), owner.transaction():
        journal = open_journal(owner)
        owner.execute(
            "INSERT INTO ledger.entry"
            " (journal_id, account_id, account_seq, asset, amount, balance_after)"
            f" SELECT %s, a.id, {account_seq}, 'USD', l.amount, {balance_after}"
            " FROM unnest(%s::bigint[], %s::numeric[]) AS l(account_id, amount)"
            " JOIN ledger.account a ON a.id = l.account_id",
            (journal, [available(owner, alice), available(owner, bob)], ["-1.00", "1.00"]),
        )


def test_entries_of_several_journals_on_one_account_continue_each_other(
    owner: psycopg.Connection, alice: int, bob: int
) -> None:
    with owner.transaction():
        first, second = open_journal(owner), open_journal(owner)
        owner.execute(
            "SELECT ledger.insert_entries(%s, %s, ARRAY['USD','USD','USD','USD'],"
            " ARRAY[-30, 30, 10, -10]::numeric[])",
            ([first, first, second, second], [available(owner, alice), available(owner, bob)] * 2),
        )

    rows = owner.execute(
        "SELECT journal_id, account_seq, amount, balance_after FROM ledger.entry"
        " WHERE account_id = %s ORDER BY account_seq",
        (available(owner, alice),),
    ).fetchall()
    assert [tuple(row) for row in rows][-2:] == [
        (first, 2, Decimal("-30"), Decimal("70.00")),
        (second, 3, Decimal("10"), Decimal("80.00")),
    ]
    account = owner.execute(
        "SELECT balance, entry_count FROM ledger.account WHERE id = %s", (available(owner, alice),)
    ).fetchone()
    assert account == (Decimal("80.00"), 3)


def test_check_constraint_stops_a_negative_balance_even_with_triggers_disabled(
    admin: psycopg.Connection, alice: int
) -> None:
    account = account_id(admin, alice, "USD", "available")
    admin.execute("SET session_replication_role = replica")  # disables ordinary triggers

    with pytest.raises(errors.CheckViolation) as caught:
        admin.execute("UPDATE ledger.account SET balance = -1 WHERE id = %s", (account,))

    assert caught.value.diag.constraint_name == "account_balance_non_negative"


# 3. Entries are immutable; balances are not writable -------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger.entry SET amount = amount * 2",
        "DELETE FROM ledger.entry",
        "TRUNCATE ledger.entry CASCADE",
        "UPDATE ledger.journal SET kind = 'deposit'",
        "DELETE FROM ledger.journal",
        "UPDATE ledger.account SET balance = balance + 1000",
        "DELETE FROM ledger.account",
    ],
)
def test_app_role_cannot_rewrite_history_or_balances(
    app_conn: psycopg.Connection, alice: int, statement: str
) -> None:
    with refused(app_conn, sqlstate="42501"):  # insufficient_privilege
        app_conn.execute(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger.entry SET amount = amount * 2",
        "UPDATE ledger.entry SET balance_after = 0",
        "DELETE FROM ledger.entry",
        "TRUNCATE ledger.entry CASCADE",
        "UPDATE ledger.journal SET kind = 'deposit'",
        "DELETE FROM ledger.journal",
        "TRUNCATE ledger.journal CASCADE",
        "UPDATE ledger.account SET balance = balance + 1000",
        "UPDATE ledger.account SET bucket = 'custody', customer_id = NULL",
        "DELETE FROM ledger.account",
    ],
)
def test_owner_cannot_rewrite_history_or_balances(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, statement: str
) -> None:
    with refused(app_conn, sqlstate="EX008"):
        owner.execute(statement)


def test_owner_cannot_create_an_account_with_a_balance(
    owner: psycopg.Connection, app_conn: psycopg.Connection, bob: int
) -> None:
    with refused(app_conn, sqlstate="EX008"):
        owner.execute(
            "INSERT INTO ledger.account (customer_id, asset, bucket, balance)"
            " VALUES (%s, 'USD', 'held', 1000)",
            (bob,),
        )


def test_owner_cannot_rescale_an_asset(owner: psycopg.Connection, usd: str) -> None:
    with pytest.raises(psycopg.Error) as caught:
        owner.execute("UPDATE ledger.asset SET scale = 4 WHERE code = 'USD'")

    assert caught.value.sqlstate == "EX008"


# 4. Asset match, exact amounts, no zero amounts ---------------------------------------------


def test_leg_in_another_asset_than_its_account_is_rejected(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int, btc: str
) -> None:
    legs = [(available(owner, alice), "BTC", "-1"), (available(owner, bob), "BTC", "1")]
    with refused(app_conn, sqlstate="EX003"):
        post(owner, legs)


def test_owner_inserting_an_entry_in_another_asset_than_its_account_is_rejected(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, btc: str
) -> None:
    usd_account = available(owner, alice)
    btc_custody = custody(owner, alice, "BTC")
    with refused(app_conn, constraint="entry_account_asset_fkey"):
        insert_journal_directly(owner, [(usd_account, "BTC", "1"), (btc_custody, "BTC", "-1")])


def test_amount_finer_than_the_asset_scale_is_rejected_not_rounded(
    app_conn: psycopg.Connection, alice: int
) -> None:
    with refused(app_conn, sqlstate="EX004"):
        app_conn.execute("SELECT ledger.deposit(%s, 'USD', 10.001, 'd-fine')", (alice,))


def test_trailing_zeros_beyond_the_scale_are_exact_and_accepted(
    app_conn: psycopg.Connection, alice: int
) -> None:
    service.deposit(app_conn, alice, "USD", Decimal("10.0000"), "d-zeros")

    assert service.balances(app_conn, alice)[0].available == Decimal("110.00")


def test_amounts_are_stored_at_the_asset_scale(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int
) -> None:
    journal_id = service.deposit(app_conn, alice, "USD", Decimal("5.000000"), "d-long")

    rows = owner.execute(
        "SELECT amount::text FROM ledger.entry WHERE journal_id = %s ORDER BY amount", (journal_id,)
    ).fetchall()
    assert rows == [("-5.00",), ("5.00",)]


def test_owner_inserting_an_amount_finer_than_the_scale_is_rejected(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    alice_account, bob_account = available(owner, alice), available(owner, bob)
    with refused(app_conn, sqlstate="EX004"):
        insert_journal_directly(
            owner, [(alice_account, "USD", "-0.005"), (bob_account, "USD", "0.005")]
        )


def test_zero_amount_leg_is_rejected(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    legs = [
        (available(owner, alice), "USD", "-1.00"),
        (available(owner, bob), "USD", "1.00"),
        (custody(owner, alice), "USD", "0"),
    ]
    with refused(app_conn, sqlstate="EX005"):
        post(owner, legs)


def test_owner_inserting_a_zero_amount_entry_is_rejected(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int
) -> None:
    account = available(owner, alice)
    with refused(app_conn, constraint="entry_amount_non_zero"):
        insert_journal_directly(owner, [(account, "USD", "0")])


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_leg_is_rejected(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int, amount: str
) -> None:
    legs = [(available(owner, alice), "USD", amount), (available(owner, bob), "USD", amount)]
    with refused(app_conn, sqlstate="EX010"):
        post(owner, legs)


@pytest.mark.parametrize("amount", ["NaN", "Infinity"])
def test_non_finite_deposit_is_rejected(
    app_conn: psycopg.Connection, alice: int, amount: str
) -> None:
    with refused(app_conn, sqlstate="EX010"):
        app_conn.execute("SELECT ledger.deposit(%s, 'USD', %s::numeric, 'd-inf')", (alice, amount))


@pytest.mark.parametrize("amount", ["NaN", "Infinity"])
def test_owner_inserting_a_non_finite_entry_is_rejected(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, amount: str
) -> None:
    account = available(owner, alice)
    with refused(app_conn, constraint="entry_amount_finite"):
        insert_journal_directly(owner, [(account, "USD", amount)])


def test_owner_inserting_an_amount_of_10_to_the_24_is_rejected(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    legs = [(custody(owner, alice), "USD", "-1e24"), (available(owner, bob), "USD", "1e24")]
    with refused(app_conn, constraint="entry_amount_magnitude"):
        insert_journal_directly(owner, legs)


# 5. An idempotency key posts once ------------------------------------------------------------


def test_retry_with_the_same_key_returns_the_first_journal_and_posts_nothing(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    legs = [(available(owner, alice), "USD", "-7.00"), (available(owner, bob), "USD", "7.00")]
    first = post(owner, legs, key="once")
    after_first = ledger_state(app_conn)

    retry = post(owner, list(reversed(legs)), key="once")

    assert retry == first
    assert ledger_state(app_conn) == after_first


def test_retry_with_the_same_key_and_other_legs_is_an_error(
    owner: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    alice_account, bob_account = available(owner, alice), available(owner, bob)
    post(owner, [(alice_account, "USD", "-7.00"), (bob_account, "USD", "7.00")], key="once")
    after_first = ledger_state(app_conn)

    with pytest.raises(psycopg.Error) as caught:
        post(owner, [(alice_account, "USD", "-8.00"), (bob_account, "USD", "8.00")], key="once")

    assert caught.value.sqlstate == "EX006"
    assert ledger_state(app_conn) == after_first


def test_deposit_retry_with_the_same_key_credits_once(
    app_conn: psycopg.Connection, alice: int
) -> None:
    first = service.deposit(app_conn, alice, "USD", Decimal("5.00"), "dep-1")
    retry = service.deposit(app_conn, alice, "USD", Decimal("5.00"), "dep-1")

    assert retry == first
    assert service.balances(app_conn, alice)[0].available == Decimal("105.00")


def test_same_key_reused_for_a_withdrawal_is_an_error(
    app_conn: psycopg.Connection, alice: int
) -> None:
    service.deposit(app_conn, alice, "USD", Decimal("5.00"), "op-1")
    with refused(app_conn, sqlstate="EX006"):
        app_conn.execute("SELECT ledger.withdraw(%s, 'USD', 5.00, 'op-1')", (alice,))


def test_idempotency_keys_of_different_customers_do_not_collide(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    first = service.deposit(app_conn, alice, "USD", Decimal("1.00"), "shared-key")
    second = service.deposit(app_conn, bob, "USD", Decimal("2.00"), "shared-key")

    assert first != second
    assert service.balances(app_conn, bob)[0].available == Decimal("2.00")


# Every test above left a ledger whose invariants hold -------------------------------------


def test_invariants_hold_after_ordinary_activity(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    service.transfer(app_conn, alice, bob, "USD", Decimal("30.00"), "t-1")
    service.withdraw(app_conn, bob, "USD", Decimal("10.00"), "w-1")

    assert_invariants_hold(app_conn)
