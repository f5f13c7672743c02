"""Concurrent postings as the application role: no overdraft, no lost or phantom money.

Every operation runs in its own transaction through app.db.run_transaction, on its thread's own
connection, so PostgreSQL (not the test) decides which of the racing postings win. Each race runs
at READ COMMITTED, where the ledger's postings run (racing postings queue on the account's row
lock), and at SERIALIZABLE (they fail with 40001 and are retried). An operation ends committed,
refused by the ledger (a LedgerError) or, at SERIALIZABLE only, given up after the retry budget
(RetriesExhausted); only the first may leave anything behind.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg
import pytest

from app import cli
from app.db import RetriesExhausted, run_transaction
from app.ledger import service
from app.ledger.errors import LedgerError
from tests.conftest import APP_ROLE, ScratchDatabase
from tests.ledger.helpers import account_id, assert_invariants_hold, create_asset, observer

THREADS = 8
BARRIER_TIMEOUT_SECONDS = 30
ISOLATION_LEVELS = pytest.mark.parametrize(
    "isolation",
    [psycopg.IsolationLevel.READ_COMMITTED, psycopg.IsolationLevel.SERIALIZABLE],
    ids=["read_committed", "serializable"],
)

Work = Callable[[psycopg.Connection], int]


def run_threads(
    db: ScratchDatabase,
    tenant: int,
    threads: int,
    body: Callable[[psycopg.Connection, int], None],
) -> None:
    """Runs `body(conn, thread)` on `threads` threads, each with its own application-role
    connection acting for `tenant`, all released together by a barrier; re-raises the first
    thread's failure."""
    barrier = threading.Barrier(threads)

    def thread_main(number: int) -> None:
        with db.connect(APP_ROLE, autocommit=False, tenant=tenant) as conn:
            barrier.wait(BARRIER_TIMEOUT_SECONDS)
            body(conn, number)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(thread_main, number) for number in range(threads)]
        for future in futures:
            future.result()


def journal_keys(conn: psycopg.Connection, kind: str | None = None) -> dict[str, int]:
    """Idempotency key -> journal id, of every journal (of one kind, if given)."""
    rows = conn.execute(
        "SELECT idempotency_key, id FROM ledger.journal"
        " WHERE %(kind)s::text IS NULL OR kind = %(kind)s",
        {"kind": kind},
    ).fetchall()
    return dict(rows)


def count(conn: psycopg.Connection, query: str, args: tuple[object, ...] = ()) -> int:
    with observer(conn) as observed:
        row = observed.execute(query, args).fetchone()
    assert row is not None
    return int(row[0])


# The overdraft race --------------------------------------------------------------------------


@dataclass
class Withdrawal:
    key: str
    amount: Decimal
    outcome: str = "not run"  # "committed", "insufficient_funds" or "gave up"
    journal_id: int | None = None


@ISOLATION_LEVELS
def test_concurrent_withdrawals_never_overdraw_and_refusals_leave_nothing(
    db: ScratchDatabase,
    tenant: int,
    admin: psycopg.Connection,
    app_conn: psycopg.Connection,
    isolation: psycopg.IsolationLevel,
) -> None:
    withdrawals_per_thread = 125  # 1,000 in all
    starting_balance = Decimal("100.00")
    create_asset(admin, "USD", 2)
    customer = service.create_customer(app_conn, "racer")
    service.deposit(app_conn, customer, "USD", starting_balance, "fund")
    available_account = account_id(admin, customer, "USD", "available")

    rng = random.Random(1000)
    plans = [
        [
            Withdrawal(f"wd-{thread}-{n}", Decimal(rng.randint(1, 60)).scaleb(-2))
            for n in range(withdrawals_per_thread)
        ]
        for thread in range(THREADS)
    ]
    retries: list[int] = []
    lock = threading.Lock()

    def on_retry(attempt: int, error: Exception) -> None:
        with lock:
            retries.append(attempt)

    def withdraw_all(conn: psycopg.Connection, thread: int) -> None:
        for withdrawal in plans[thread]:
            try:
                withdrawal.journal_id = run_transaction(
                    conn,
                    lambda c, w=withdrawal: service.withdraw(c, customer, "USD", w.amount, w.key),
                    isolation=isolation,
                    on_retry=on_retry,
                )
                withdrawal.outcome = "committed"
            except LedgerError as error:
                assert error.code == "insufficient_funds", error
                withdrawal.outcome = error.code
            except RetriesExhausted:
                withdrawal.outcome = "gave up"

    run_threads(db, tenant, THREADS, withdraw_all)

    everything = [w for plan in plans for w in plan]
    succeeded = [w for w in everything if w.outcome == "committed"]
    refused = [w for w in everything if w.outcome == "insufficient_funds"]
    withdrawn = sum((w.amount for w in succeeded), Decimal(0))
    [balance] = service.balances(app_conn, customer)

    # No money out of thin air: what left is what the customer had, less what is left.
    assert withdrawn <= starting_balance
    assert withdrawn == starting_balance - balance.available
    # The race was real and went both ways.
    assert len(everything) == 1000
    assert all(w.outcome in ("committed", "insufficient_funds", "gave up") for w in everything)
    if isolation == psycopg.IsolationLevel.SERIALIZABLE:
        assert retries, "eight threads on one account should have conflicted"
    else:
        assert not retries, "at READ COMMITTED racing postings wait for the row lock"
        assert all(w.outcome != "gave up" for w in everything)
    assert succeeded and refused
    # Each refusal was right: the balance only falls, so it ends below every refused amount.
    assert balance.available < min(w.amount for w in refused)

    # Never negative, at any point of the account's history, nor in the cached balance.
    history = app_conn.execute(
        "SELECT account_seq, amount, balance_after FROM ledger.entry"
        " WHERE account_id = %s ORDER BY account_seq",
        (available_account,),
    ).fetchall()
    assert all(balance_after >= 0 for _, _, balance_after in history)
    assert [seq for seq, _, _ in history] == list(range(1, len(succeeded) + 2))
    assert sorted(-amount for _, amount, _ in history[1:]) == sorted(w.amount for w in succeeded)
    assert history[-1][2] == balance.available
    cached = app_conn.execute(
        "SELECT balance FROM ledger.account WHERE id = %s", (available_account,)
    ).fetchone()
    assert cached == (balance.available,)
    assert balance.available >= 0

    # One withdrawal journal per success; nothing at all for a refusal or a give-up.
    assert journal_keys(app_conn, "withdrawal") == {
        f"customer/{customer}/{w.key}": w.journal_id for w in succeeded
    }
    assert count(app_conn, "SELECT count(*) FROM ledger.journal") == 1 + len(succeeded)
    assert count(app_conn, "SELECT count(*) FROM ledger.entry") == 2 * (1 + len(succeeded))
    assert_invariants_hold(app_conn)


@ISOLATION_LEVELS
def test_concurrent_repeats_of_one_idempotency_key_post_one_journal(
    db: ScratchDatabase,
    tenant: int,
    admin: psycopg.Connection,
    app_conn: psycopg.Connection,
    isolation: psycopg.IsolationLevel,
) -> None:
    create_asset(admin, "USD", 2)
    customer = service.create_customer(app_conn, "impatient")
    journal_ids: list[int] = []
    lock = threading.Lock()

    def deposit_once(conn: psycopg.Connection, thread: int) -> None:
        journal_id = run_transaction(
            conn,
            lambda c: service.deposit(c, customer, "USD", Decimal("12.34"), "same-key"),
            isolation=isolation,
            attempts_max=100,
        )
        with lock:
            journal_ids.append(journal_id)

    run_threads(db, tenant, THREADS, deposit_once)

    assert len(journal_ids) == THREADS
    assert len(set(journal_ids)) == 1
    assert journal_keys(app_conn) == {f"customer/{customer}/same-key": journal_ids[0]}
    assert [b.available for b in service.balances(app_conn, customer)] == [Decimal("12.34")]
    assert_invariants_hold(app_conn)


# Random traffic ------------------------------------------------------------------------------

ASSETS = {"USD": 2, "BTC": 8}
CUSTOMERS = 4
OPERATIONS_PER_THREAD = 250  # 2,000 in all
# More than all deposits together can ever reach, so moving it is always an overdraft.
OVERDRAFT = {"USD": Decimal("10000000.00"), "BTC": Decimal("100000.00000000")}


@dataclass
class Traffic:
    """One thread's record of what it asked for and what the ledger answered."""

    # (customer, asset) -> net amount this thread moved into the customer's available balance
    flows: defaultdict[tuple[int, str], Decimal] = field(
        default_factory=lambda: defaultdict(Decimal)
    )
    deposited: defaultdict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    withdrawn: defaultdict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    committed: set[str] = field(default_factory=set)  # journal idempotency keys
    refused: set[str] = field(default_factory=set)
    gave_up: set[str] = field(default_factory=set)
    overdrafts_tried: int = 0
    overdrafts_refused: int = 0
    overdrafts_gave_up: int = 0  # at SERIALIZABLE, an attempt may run out of retries first
    retries: int = 0


def random_amount(rng: random.Random, asset: str) -> Decimal:
    scale = ASSETS[asset]
    most = 50 * 10**scale if asset == "USD" else 10**scale  # 50.00 USD, 1 BTC
    return Decimal(rng.randint(1, most)).scaleb(-scale)


def operation(kind: str, customer: int, other: int, asset: str, amount: Decimal, key: str) -> Work:
    if kind == "deposit":
        return lambda c: service.deposit(c, customer, asset, amount, key)
    if kind == "withdraw":
        return lambda c: service.withdraw(c, customer, asset, amount, key)
    assert kind == "transfer", kind
    return lambda c: service.transfer(c, customer, other, asset, amount, key)


def sum_over(records: list[Traffic], attribute: str) -> defaultdict[object, Decimal]:
    total: defaultdict[object, Decimal] = defaultdict(Decimal)
    for record in records:
        for name, amount in getattr(record, attribute).items():
            total[name] += amount
    return total


@ISOLATION_LEVELS
def test_random_concurrent_traffic_keeps_every_invariant_and_balances_add_up(
    isolation: psycopg.IsolationLevel,
    db: ScratchDatabase,
    tenant: int,
    admin: psycopg.Connection,
    app_conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for code, scale in ASSETS.items():
        create_asset(admin, code, scale)
    customers = [service.create_customer(app_conn, f"trader-{n}") for n in range(CUSTOMERS)]
    seed = Traffic()
    for customer in customers:
        for asset in ASSETS:
            amount = 10 * random_amount(random.Random(customer), asset)
            service.deposit(app_conn, customer, asset, amount, f"seed-{asset}")
            seed.flows[customer, asset] += amount
            seed.deposited[asset] += amount
            seed.committed.add(f"customer/{customer}/seed-{asset}")
    traffic = [Traffic() for _ in range(THREADS)]

    def trade(conn: psycopg.Connection, thread: int) -> None:
        rng = random.Random(7919 * thread + 1)
        record = traffic[thread]

        def on_retry(attempt: int, error: Exception) -> None:
            record.retries += 1

        for n in range(OPERATIONS_PER_THREAD):
            key = f"op-{thread}-{n}"
            asset = rng.choice(list(ASSETS))
            customer, other = rng.sample(customers, 2)
            kind = rng.choices(["deposit", "withdraw", "transfer", "overdraft"], [3, 3, 4, 1])[0]
            amount = random_amount(rng, asset)
            overdraft = kind == "overdraft"
            if overdraft:
                kind = rng.choice(["withdraw", "transfer"])
                amount = OVERDRAFT[asset]
                record.overdrafts_tried += 1
            journal_key = f"customer/{customer}/{key}"
            work = operation(kind, customer, other, asset, amount, key)
            try:
                run_transaction(conn, work, isolation=isolation, on_retry=on_retry)
            except LedgerError as error:
                assert error.code == "insufficient_funds", error
                record.refused.add(journal_key)
                record.overdrafts_refused += overdraft
                continue
            except RetriesExhausted:
                record.gave_up.add(journal_key)
                record.overdrafts_gave_up += overdraft
                continue
            assert not overdraft, f"{kind} of {amount} {asset} was allowed to overdraw"
            record.committed.add(journal_key)
            if kind == "deposit":
                record.flows[customer, asset] += amount
                record.deposited[asset] += amount
            elif kind == "withdraw":
                record.flows[customer, asset] -= amount
                record.withdrawn[asset] += amount
            else:
                record.flows[customer, asset] -= amount
                record.flows[other, asset] += amount

    run_threads(db, tenant, THREADS, trade)

    records = [seed, *traffic]
    flows = sum_over(records, "flows")
    deposited = sum_over(records, "deposited")
    withdrawn = sum_over(records, "withdrawn")
    committed = set().union(*(r.committed for r in records))
    not_committed = set().union(*(r.refused | r.gave_up for r in records))

    # The traffic did what it was meant to: conflicts, refusals and overdraft attempts.
    assert sum(len(r.committed | r.refused | r.gave_up) for r in traffic) == 2000
    if isolation == psycopg.IsolationLevel.SERIALIZABLE:
        assert sum(r.retries for r in traffic) > 0
    else:
        assert sum(len(r.gave_up) for r in traffic) == 0
    assert sum(r.overdrafts_tried for r in traffic) > 0
    # No overdraft committed: each was refused, or gave up retrying (never at READ COMMITTED).
    assert sum(r.overdrafts_refused for r in traffic) > 0
    assert sum(r.overdrafts_refused + r.overdrafts_gave_up for r in traffic) == sum(
        r.overdrafts_tried for r in traffic
    )

    # Invariants, in the library and through the operator's command.
    assert_invariants_hold(app_conn)
    monkeypatch.setenv("DATABASE_URL", db.url())
    monkeypatch.delenv("ADMIN_DATABASE_URL", raising=False)
    assert cli.main(["verify"]) == 0
    assert "FAIL" not in capsys.readouterr().out

    # Exactly the committed operations are in the ledger; the others left nothing.
    assert set(journal_keys(app_conn)) == committed
    assert not committed & not_committed
    journals = count(app_conn, "SELECT count(*) FROM ledger.journal")
    assert journals == len(committed)
    assert count(app_conn, "SELECT count(*) FROM ledger.entry") == 2 * journals

    # Each customer's balance is what the threads' own records say moved in and out of it.
    for customer in customers:
        balances = service.balances(app_conn, customer)
        assert sorted(b.asset for b in balances) == sorted(ASSETS)
        for balance in balances:
            assert balance.held == 0
            assert balance.available == flows[customer, balance.asset], (customer, balance)
    for asset in ASSETS:
        row = admin.execute(
            "SELECT coalesce(sum(balance) FILTER (WHERE customer_id IS NOT NULL), 0),"
            "       coalesce(sum(balance), 0)"
            "  FROM ledger.account WHERE asset = %s",
            (asset,),
        ).fetchone()
        assert row == (deposited[asset] - withdrawn[asset], 0), asset
