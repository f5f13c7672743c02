"""Booking stamps (sql/ledger/posted_at.v1.sql): every entry gets posted_at under its account's row
lock, and every journal its transaction's xact_id. Along an account's history a transaction's
stamps come after every stamp of the transactions before it on that account, whatever the
order in which the transactions started; that is what lets the "as of" reports cut by booking
(docs/reporting.md, "As of")."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from decimal import Decimal

import psycopg
import pytest

from app.db import RetriesExhausted, run_transaction
from app.ledger import service
from app.ledger.errors import LedgerError
from tests.conftest import APP_ROLE, ScratchDatabase
from tests.ledger.helpers import assert_invariants_hold, create_asset
from tests.ledger.test_concurrency import ISOLATION_LEVELS, THREADS, run_threads

D = Decimal


def test_every_new_entry_is_stamped_and_every_journal_names_its_transaction(
    admin: psycopg.Connection, app_conn: psycopg.Connection
) -> None:
    create_asset(admin, "USD", 2)
    alice = service.create_customer(app_conn, "alice")
    bob = service.create_customer(app_conn, "bob")
    service.deposit(app_conn, alice, "USD", D("10"), "d1")
    service.transfer(app_conn, alice, bob, "USD", D("4"), "t1")

    stamps = admin.execute(
        "SELECT e.posted_at, j.xact_id, j.created_at, clock_timestamp()"
        "  FROM ledger.entry e JOIN ledger.journal j ON j.id = e.journal_id"
    ).fetchall()
    assert len(stamps) == 4
    for posted_at, xact_id, created_at, now in stamps:
        assert xact_id is not None
        assert created_at <= posted_at <= now
    # One transaction per posting here (autocommit), so two transaction ids.
    assert len({xact_id for _, xact_id, _, _ in stamps}) == 2


def test_one_transaction_gives_all_its_journals_its_id(
    db: ScratchDatabase, tenant: int, admin: psycopg.Connection
) -> None:
    create_asset(admin, "USD", 2)
    with db.connect(APP_ROLE, autocommit=False, tenant=tenant) as conn:
        alice = service.create_customer(conn, "alice")
        first = service.deposit(conn, alice, "USD", D("10"), "d1")
        second = service.withdraw(conn, alice, "USD", D("3"), "w1")
        xact_id = conn.execute("SELECT pg_current_xact_id()").fetchone()[0]  # type: ignore[index]
        conn.commit()

    rows = admin.execute("SELECT id, xact_id::text FROM ledger.journal ORDER BY id").fetchall()
    assert rows == [(first, str(xact_id)), (second, str(xact_id))]


def test_a_stamp_cannot_be_given_nor_changed(
    admin: psycopg.Connection, app_conn: psycopg.Connection
) -> None:
    create_asset(admin, "USD", 2)
    alice = service.create_customer(app_conn, "alice")
    journal = service.deposit(app_conn, alice, "USD", D("10"), "d1")

    with pytest.raises(psycopg.Error) as raised:
        admin.execute(
            "UPDATE ledger.entry SET posted_at = '2000-01-01' WHERE journal_id = %s", (journal,)
        )
    assert raised.value.sqlstate == "EX008"  # entries are immutable, their stamps too
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute("UPDATE ledger.journal SET xact_id = '1' WHERE id = %s", (journal,))


def posting(
    a: int, b: int, amount: Decimal, key: str, transfer: bool
) -> Callable[[psycopg.Connection], None]:
    """A transfer from a to b (two accounts' locks), or a deposit to a and a withdrawal from a in
    one transaction (two journals). Both lock accounts in one order, so they never deadlock."""

    def work(conn: psycopg.Connection) -> None:
        if transfer:
            with contextlib.suppress(LedgerError):  # a could not pay: nothing was written
                service.transfer(conn, a, b, "USD", amount, f"t-{key}")
        else:
            service.deposit(conn, a, "USD", amount, f"d-{key}")
            service.withdraw(conn, a, "USD", amount, f"w-{key}")

    return work


@ISOLATION_LEVELS
def test_concurrent_postings_stamp_each_account_in_its_history_order(
    db: ScratchDatabase,
    tenant: int,
    admin: psycopg.Connection,
    app_conn: psycopg.Connection,
    isolation: psycopg.IsolationLevel,
) -> None:
    """8 threads post transfers among 3 customers, and deposits and withdrawals, so that
    transactions wait on each other's row locks, whatever order they started in."""
    postings_per_thread = 25
    create_asset(admin, "USD", 2)
    customers = [service.create_customer(app_conn, f"c{n}") for n in range(3)]
    for customer in customers:
        service.deposit(app_conn, customer, "USD", D("50"), f"fund-{customer}")

    def post(conn: psycopg.Connection, thread: int) -> None:
        rng = random.Random(thread)
        for n in range(postings_per_thread):
            a, b = rng.sample(customers, 2)
            amount = Decimal(rng.randint(1, 500)).scaleb(-2)
            with contextlib.suppress(RetriesExhausted):  # SERIALIZABLE only: it left nothing
                work = posting(a, b, amount, f"{thread}-{n}", rng.random() < 0.7)
                run_transaction(conn, work, isolation=isolation)

    run_threads(db, tenant, THREADS, post)

    unstamped = admin.execute(
        "SELECT count(*) FROM ledger.entry e JOIN ledger.journal j ON j.id = e.journal_id"
        " WHERE e.posted_at IS NULL OR j.xact_id IS NULL"
    ).fetchone()
    assert unstamped == (0,)
    # Along each account's history: stamps never go back; and an entry of one transaction comes
    # after every stamp of the transaction of the entry before it (on any account).
    out_of_order = admin.execute(
        """
        WITH tx AS (
            SELECT j.id AS journal_id, j.xact_id,
                   max(e.posted_at) OVER (PARTITION BY j.xact_id, j.created_at) AS last_stamp
              FROM ledger.journal j JOIN ledger.entry e ON e.journal_id = j.id
        ), history AS (
            SELECT e.account_id, e.account_seq, e.posted_at, t.xact_id,
                   lag(e.posted_at) OVER w AS previous_posted_at,
                   lag(t.xact_id) OVER w AS previous_xact_id,
                   lag(t.last_stamp) OVER w AS previous_last_stamp
              FROM ledger.entry e
              JOIN (SELECT DISTINCT journal_id, xact_id, last_stamp FROM tx) t
                ON t.journal_id = e.journal_id
            WINDOW w AS (PARTITION BY e.account_id ORDER BY e.account_seq)
        )
        SELECT account_id, account_seq FROM history
         WHERE posted_at < previous_posted_at
            OR (xact_id <> previous_xact_id AND posted_at <= previous_last_stamp)
        """
    ).fetchall()
    assert out_of_order == []
    transactions = admin.execute("SELECT count(DISTINCT xact_id) FROM ledger.journal").fetchone()
    assert transactions is not None and transactions[0] > THREADS * postings_per_thread // 2
    assert_invariants_hold(admin)
