"""Funds inside one batch (sql/trading/engine.v2.sql): the ledger entries of a batch are written
at its end, so each command's funds check counts what the earlier commands of the batch posted.

BTC-USD as in test_orders.py: tick 0.01, lot 0.001, maker fee 0.1 %, taker fee 0.2 %.
"""

from __future__ import annotations

import psycopg
import pytest

from app.trading.commands import Cancel, Instrument
from tests.ledger.helpers import assert_invariants_hold
from tests.trading.helpers import (
    D,
    balance,
    create_market,
    funded_account,
    limit,
    market,
    run,
)

SYMBOL = "BTC-USD"


@pytest.fixture
def btc_usd(admin: psycopg.Connection) -> Instrument:
    return create_market(admin, min_quantity=D("0.01"))


def test_two_orders_of_one_batch_cannot_hold_the_same_funds(
    app_conn: psycopg.Connection, btc_usd: Instrument
) -> None:
    buyer = funded_account(app_conn, USD="150")

    results = run(
        app_conn,
        SYMBOL,
        limit(buyer, "b1", "buy", "1", "100"),
        limit(buyer, "b2", "buy", "1", "100"),  # 100 more: only 50 are left
        limit(buyer, "b3", "buy", "0.5", "100"),  # exactly what is left
    )

    assert [r.code for r in results] == [None, "insufficient_funds", None]
    assert balance(app_conn, buyer, "USD") == (D("0"), D("150"))
    assert_invariants_hold(app_conn)


def test_funds_released_earlier_in_the_batch_can_be_held_again(
    app_conn: psycopg.Connection, btc_usd: Instrument
) -> None:
    buyer = funded_account(app_conn, USD="100")

    results = run(
        app_conn,
        SYMBOL,
        limit(buyer, "b1", "buy", "1", "100"),
        limit(buyer, "b2", "buy", "1", "100"),  # refused: all 100 are held
        Cancel(buyer, "b1"),
        limit(buyer, "b3", "buy", "1", "100"),  # the released 100
    )

    assert [r.code for r in results] == [None, "insufficient_funds", None, None]
    assert balance(app_conn, buyer, "USD") == (D("0"), D("100"))
    assert_invariants_hold(app_conn)


def test_proceeds_of_a_fill_earlier_in_the_batch_can_be_spent(
    app_conn: psycopg.Connection, btc_usd: Instrument
) -> None:
    seller = funded_account(app_conn, BTC="1")
    buyer = funded_account(app_conn, USD="1000")

    results = run(
        app_conn,
        SYMBOL,
        limit(buyer, "b1", "buy", "1", "100"),
        limit(seller, "s1", "sell", "1", "100"),  # receives 100 - 0.2 % taker fee = 99.80
        limit(seller, "s2", "buy", "0.998", "100"),  # 99.80 exactly
        limit(seller, "s3", "buy", "0.01", "100"),  # nothing left
    )

    assert [r.code for r in results] == [None, None, None, "insufficient_funds"]
    assert balance(app_conn, seller, "USD") == (D("0"), D("99.8"))
    assert_invariants_hold(app_conn)


def test_market_buy_cannot_spend_what_an_earlier_order_of_the_batch_holds(
    app_conn: psycopg.Connection, btc_usd: Instrument
) -> None:
    seller = funded_account(app_conn, BTC="2")
    buyer = funded_account(app_conn, USD="150")

    results = run(
        app_conn,
        SYMBOL,
        limit(seller, "s1", "sell", "2", "100"),
        limit(buyer, "b1", "buy", "1", "90"),  # holds 90 of the 150
        market(buyer, "m1", "buy", "1"),  # costs 100: only 60 are available
        market(buyer, "m2", "buy", "0.5"),  # costs 50
    )

    assert [r.code for r in results] == [None, None, "insufficient_funds", None]
    assert balance(app_conn, buyer, "USD") == (D("10"), D("90"))
    assert_invariants_hold(app_conn)


def test_a_fill_or_kill_order_that_is_undone_leaves_no_funds_moved_in_the_batch(
    app_conn: psycopg.Connection, btc_usd: Instrument
) -> None:
    seller = funded_account(app_conn, BTC="1")
    buyer = funded_account(app_conn, USD="200")

    results = run(
        app_conn,
        SYMBOL,
        limit(seller, "s1", "sell", "1", "100"),
        # Fill-or-kill for more than the book has: its fill of 1 is undone, nothing paid.
        limit(buyer, "f1", "buy", "2", "100", time_in_force="FOK"),
        limit(buyer, "b1", "buy", "1", "100"),
    )

    assert [r.order.status for r in results[1:] if r.order] == ["expired", "filled"]
    assert balance(app_conn, buyer, "USD") == (D("100"), D("0"))
    assert balance(app_conn, buyer, "BTC") == (D("0.998"), D("0"))
    assert_invariants_hold(app_conn)


def test_a_batch_writes_its_entries_in_command_order(
    app_conn: psycopg.Connection, admin: psycopg.Connection, btc_usd: Instrument
) -> None:
    buyer = funded_account(app_conn, USD="1000")

    run(
        app_conn,
        SYMBOL,
        limit(buyer, "b1", "buy", "1", "100"),
        limit(buyer, "b2", "buy", "2", "100"),
        Cancel(buyer, "b1"),
    )

    rows = admin.execute(
        """
        SELECT j.kind, j.reference, e.amount, e.balance_after
          FROM ledger.entry e
          JOIN ledger.journal j ON j.id = e.journal_id
          JOIN ledger.account a ON a.id = e.account_id
         WHERE a.customer_id = %s AND a.asset = 'USD' AND a.bucket = 'available'
         ORDER BY e.account_seq
        """,
        (buyer,),
    ).fetchall()
    assert [(kind, amount, after) for kind, _, amount, after in rows] == [
        ("deposit", D("1000"), D("1000")),
        ("hold", D("-100"), D("900")),
        ("hold", D("-200"), D("700")),
        ("release", D("100"), D("800")),
    ]


def test_a_hold_short_of_its_order_refuses_only_the_command_that_overdraws_it(
    app_conn: psycopg.Connection, admin: psycopg.Connection, btc_usd: Instrument
) -> None:
    seller = funded_account(app_conn, BTC="1")
    buyer = funded_account(app_conn, USD="1000")
    other = funded_account(app_conn, USD="1000")
    run(app_conn, SYMBOL, limit(seller, "s1", "sell", "1", "100"))
    # A hand-made journal moves half of the seller's hold back: held (0.5) no longer covers
    # what the order reserves (1), which only `exchange verify` notices.
    admin.execute(
        "SELECT ledger.post_journal('release', 'by hand', NULL, ARRAY["
        " ledger.account_id(%s, 'BTC', 'held'), ledger.account_id(%s, 'BTC', 'available')],"
        " ARRAY['BTC', 'BTC'], ARRAY[-0.5, 0.5]::numeric[])",
        (seller, seller),
    )

    results = run(
        app_conn,
        SYMBOL,
        limit(other, "o1", "buy", "1", "50"),
        limit(buyer, "b1", "buy", "1", "100"),  # fills s1: its settlement overdraws the hold
        limit(other, "o2", "buy", "1", "60"),
    )

    assert [r.code for r in results] == [None, "insufficient_funds", None]
    assert balance(app_conn, other, "USD") == (D("890"), D("110"))
    assert balance(app_conn, buyer, "USD") == (D("1000"), D("0"))
