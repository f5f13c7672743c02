""" "As of" cuts by booking order, not by transaction start (docs/reporting.md, "As of").

A transaction's journals have created_at = now(), its start; the order of an account's entries
(account_seq, balance_after) is the order of the account's row lock, that is of commits. A
transaction that starts first, waits, and then spends money deposited meanwhile must not appear
in a report as of a moment between its start and its booking: the reports would show a
negative balance, running balances that do not add up, and a withdrawal without the deposit it
spent. Each test interleaves two connections deterministically, then checks the reports at
every moment that matters (each stamp, and each side of it).
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg

from app.ledger import service
from app.reporting import reports
from app.trading.engine import command_json
from tests.conftest import APP_ROLE, ScratchDatabase
from tests.trading.helpers import create_market, limit

D = Decimal
SYMBOL = "BTC-USD"
MICROSECOND = timedelta(microseconds=1)


def report(conn: psycopg.Connection, name: str, **given: object) -> list[dict[str, object]]:
    result = reports.run(conn, reports.load(name), {k: str(v) for k, v in given.items()})
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def moments(conn: psycopg.Connection) -> list[datetime]:
    """Every time a cut could fall on or next to: each journal's start and booking, each
    entry's stamp, each market event's start and booking, one microsecond either side."""
    rows = conn.execute(
        """
        SELECT created_at FROM reporting.journals UNION SELECT booked_at FROM reporting.journals
        UNION SELECT posted_at FROM ledger.entry WHERE posted_at IS NOT NULL
        UNION SELECT created_at FROM reporting.order_history
        UNION SELECT booked_at FROM reporting.order_history
        """
    ).fetchall()
    return sorted({t + d for (t,) in rows for d in (-MICROSECOND, timedelta(0), MICROSECOND)})


def assert_consistent_as_of(
    conn: psycopg.Connection, as_of: datetime, customers: list[int]
) -> None:
    """The reports as of `as_of` describe a state the ledger was really in."""
    cut = as_of.isoformat()
    for row in report(conn, "balances", as_of=cut):
        if row["customer_id"] is not None:
            assert row["balance"] >= 0, (cut, row)
    for row in report(conn, "trial_balance", as_of=cut):
        assert row["total"] == 0, (cut, row)
    differences = [
        row for row in report(conn, "reconciliation", as_of=cut) if row["status"] != "ok"
    ]
    assert differences == [], cut
    for customer in customers:
        history: dict[tuple[object, object], list[dict[str, object]]] = defaultdict(list)
        for row in report(conn, "statement", customer=customer, as_of=cut):
            history[row["asset"], row["bucket"]].append(row)
        for rows in history.values():
            # Each account's history from its first entry, without a gap, adding up.
            assert [row["account_seq"] for row in rows] == list(range(1, len(rows) + 1)), cut
            total = D(0)
            for row in rows:
                total += row["amount"]  # type: ignore[operator]
                assert row["running_balance"] == total, (cut, row)
            assert all(row["booked_at"] <= as_of for row in rows)  # type: ignore[operator]


def journal_times(conn: psycopg.Connection, journal_id: int) -> tuple[datetime, datetime]:
    row = conn.execute(
        "SELECT created_at, booked_at FROM reporting.journals WHERE journal_id = %s", (journal_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def usd_available(conn: psycopg.Connection, customer: int, as_of: datetime) -> list[tuple]:
    return [
        (row["balance"], row["entries"])
        for row in report(conn, "balances", as_of=as_of.isoformat())
        if row["customer_id"] == customer and row["asset"] == "USD" and row["bucket"] == "available"
    ]


def test_a_withdrawal_that_started_before_the_deposit_it_spends_is_booked_after_it(
    db: ScratchDatabase, tenant: int, admin: psycopg.Connection
) -> None:
    admin.execute("INSERT INTO ledger.asset (code, scale) VALUES ('USD', 2)")
    with db.connect(APP_ROLE, tenant=tenant) as other:
        customer = service.create_customer(other, "c")
        with db.connect(APP_ROLE, autocommit=False, tenant=tenant) as first:
            started = first.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
            # Meanwhile a deposit commits; then the first transaction spends it and commits.
            deposit = service.deposit(other, customer, "USD", D("100"), "d1")
            withdrawal = service.withdraw(first, customer, "USD", D("100"), "w1")
            first.commit()

    deposit_created, deposit_booked = journal_times(admin, deposit)
    withdrawal_created, withdrawal_booked = journal_times(admin, withdrawal)
    # The interleaving happened: the withdrawal started first and comes second on the account.
    assert withdrawal_created == started < deposit_created < deposit_booked < withdrawal_booked
    assert admin.execute(
        "SELECT account_seq, balance_after FROM ledger.entry e JOIN ledger.account a"
        " ON a.id = e.account_id WHERE e.journal_id = %s AND a.customer_id = %s",
        (withdrawal, customer),
    ).fetchone() == (2, D("0"))

    # As of the withdrawal's start (its created_at) nothing of it is booked, nor the deposit.
    assert usd_available(admin, customer, started) == []
    assert usd_available(admin, customer, deposit_booked - MICROSECOND) == []
    assert usd_available(admin, customer, deposit_booked) == [(D("100"), 1)]
    assert usd_available(admin, customer, withdrawal_booked - MICROSECOND) == [(D("100"), 1)]
    assert usd_available(admin, customer, withdrawal_booked) == [(D("0"), 2)]
    statement = report(admin, "statement", customer=customer, as_of=deposit_booked.isoformat())
    assert [(r["kind"], r["amount"], r["running_balance"]) for r in statement] == [
        ("deposit", D("100"), D("100")),
    ]
    since = report(admin, "statement", customer=customer, since=deposit_booked.isoformat())
    assert [(r["kind"], r["account_seq"], r["running_balance"]) for r in since] == [
        ("withdrawal", 2, D("0")),
    ]
    for as_of in moments(admin):
        assert_consistent_as_of(admin, as_of, [customer])


def execute(conn: psycopg.Connection, *commands: object) -> list[dict[str, object]]:
    payload = json.dumps([command_json(command) for command in commands])  # type: ignore[arg-type]
    row = conn.execute("SELECT trading.execute(%s, %s::jsonb)", (SYMBOL, payload)).fetchone()
    assert row is not None
    results = list(row[0])
    assert all("seq" in result for result in results), results
    return results


def test_market_events_are_booked_with_the_holds_and_trades_of_their_transaction(
    db: ScratchDatabase, tenant: int, admin: psycopg.Connection
) -> None:
    """The held_reservation check compares held balances (entries) with what the orders then
    open reserved (market events): both sides of one engine transaction are booked together,
    even when the transaction started long before and posted its journals at different times."""
    create_market(admin)
    with db.connect(APP_ROLE, tenant=tenant) as other:
        alice = service.create_customer(other, "alice")
        bob = service.create_customer(other, "bob")
        service.deposit(other, bob, "BTC", D("2"), "bob-btc")
        with db.connect(APP_ROLE, autocommit=False, tenant=tenant) as engine:
            started = engine.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
            # Bob offers 1 BTC (a hold); alice's deposit commits on another connection; in the
            # same transaction alice bids 1 BTC with that money (a hold), and bob sells her half
            # of it (a trade).
            execute(engine, limit(bob, "s1", "sell", "1", "30000"))
            service.deposit(other, alice, "USD", D("30000"), "alice-usd")
            execute(engine, limit(alice, "b1", "buy", "1", "29000"))
            execute(engine, limit(bob, "s2", "sell", "0.5", "29000"))
            engine.commit()
        # A later transaction on the market.
        with db.connect(APP_ROLE, autocommit=False, tenant=tenant) as engine:
            execute(engine, limit(alice, "b2", "buy", "0.01", "28000"))
            engine.commit()

    events = admin.execute(
        "SELECT DISTINCT seq, created_at, booked_at FROM reporting.order_history ORDER BY seq"
    ).fetchall()
    assert [seq for seq, _, _ in events] == [1, 2, 3, 4]
    # The first three events started with their transaction and are booked when it was.
    assert {created for _, created, _ in events[:3]} == {started}
    (transaction_booked,) = {booked for _, _, booked in events[:3]}
    journals = admin.execute(
        "SELECT kind, booked_at FROM reporting.journals WHERE created_at = %s", (started,)
    ).fetchall()
    assert sorted(kind for kind, _ in journals) == ["hold", "hold", "trade"]
    assert {booked for _, booked in journals} == {transaction_booked}
    # Its journals were stamped one by one, the last after alice's deposit was booked.
    deposit_booked = admin.execute(
        "SELECT booked_at FROM reporting.journals WHERE kind = 'deposit' AND created_at > %s",
        (started,),
    ).fetchone()[0]  # type: ignore[index]
    assert started < deposit_booked < transaction_booked
    first_stamp = admin.execute(
        "SELECT min(e.posted_at) FROM ledger.entry e JOIN ledger.journal j ON j.id = e.journal_id"
        " WHERE j.created_at = %s",
        (started,),
    ).fetchone()[0]  # type: ignore[index]
    assert first_stamp < deposit_booked

    reconciliation = report(admin, "reconciliation", as_of=(transaction_booked - MICROSECOND))
    assert [r for r in reconciliation if r["check_name"] == "held_reservation"] == []
    held = [
        (r["customer_id"], r["asset"], r["expected"])
        for r in report(admin, "reconciliation", as_of=transaction_booked)
        if r["check_name"] == "held_reservation"
    ]
    assert held == [(bob, "BTC", D("1")), (alice, "USD", D("14500"))]
    for as_of in moments(admin):
        assert_consistent_as_of(admin, as_of, [alice, bob])
