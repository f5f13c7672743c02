"""Concurrent trading as the application role: many threads, four instruments, shared accounts.

Each thread has its own connection and drives the engine (app.trading.engine.execute) for
SECONDS with random commands: limit orders priced around a mid (so about half cross), IOC, FOK,
market and post-only orders under every self-trade prevention mode, cancels and amends of its own
earlier orders, cancel_all, alone or in batches. The instruments share assets, so every account's
balances are touched by several instruments at once: the per-instrument lock serializes an
instrument's commands, but settlements of different instruments race on the same ledger rows
and queue on their row locks (deadlocks between instruments are retried). Afterwards every
invariant of `exchange verify` holds, money is conserved per asset, no book is crossed, and every
order, trade and event the threads were told of is in the database and nothing else is.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg

from app.db import ATTEMPTS_MAX
from app.trading import engine
from app.trading.commands import (
    SELF_TRADE_PREVENTIONS,
    Amend,
    Cancel,
    CancelAll,
    Command,
    Place,
    Result,
)
from tests.conftest import APP_ROLE, ScratchDatabase
from tests.ledger.helpers import assert_invariants_hold, observer
from tests.trading.helpers import book, create_market, funded_account

D = Decimal

SECONDS = 20
THREADS = 8
ACCOUNTS = 10
PLACED_MIN = 500
BARRIER_TIMEOUT_SECONDS = 30
JOIN_TIMEOUT_SECONDS = SECONDS + 60
OWN_ORDERS_KEPT = 40  # the most recent orders a thread remembers, to cancel or amend
FUNDING = {"USD": D("2000000"), "BTC": D("40"), "ETH": D("600"), "SOL": D("12000")}


@dataclass(frozen=True)
class Market:
    symbol: str
    base: str
    quote: str
    parameters: dict[str, Decimal]
    mid: Decimal
    step: Decimal  # prices are mid + k * step, |k| <= PRICE_STEPS
    lots_max: int  # quantities are 1 to lots_max lots

    @property
    def lot(self) -> Decimal:
        return self.parameters["lot_size"]


PRICE_STEPS = 10
MARKETS = (
    # tick x lot: 0.01 x 0.001, 0.01 x 0.01, 0.01 x 0.1 fit USD's scale 6; 0.00001 x 0.001 fits
    # BTC's scale 8.
    Market(
        "BTC-USD",
        "BTC",
        "USD",
        {
            "tick_size": D("0.01"),
            "lot_size": D("0.001"),
            "min_quantity": D("0.001"),
            "min_notional": D("1"),
            "maker_fee_rate": D("0.001"),
            "taker_fee_rate": D("0.002"),
        },
        mid=D("30000.00"),
        step=D("1.00"),
        lots_max=200,
    ),
    Market(
        "ETH-USD",
        "ETH",
        "USD",
        {
            "tick_size": D("0.01"),
            "lot_size": D("0.01"),
            "min_quantity": D("0.01"),
            "min_notional": D("0"),
            "maker_fee_rate": D("0"),
            "taker_fee_rate": D("0.001"),
        },
        mid=D("2000.00"),
        step=D("0.25"),
        lots_max=200,
    ),
    Market(
        "SOL-USD",
        "SOL",
        "USD",
        {
            "tick_size": D("0.01"),
            "lot_size": D("0.1"),
            "min_quantity": D("0.1"),
            "min_notional": D("0"),
            "maker_fee_rate": D("0.0005"),
            "taker_fee_rate": D("0.0015"),
        },
        mid=D("100.00"),
        step=D("0.03"),
        lots_max=400,
    ),
    Market(
        "ETH-BTC",
        "ETH",
        "BTC",
        {
            "tick_size": D("0.00001"),
            "lot_size": D("0.001"),
            "min_quantity": D("0.001"),
            "min_notional": D("0"),
            "maker_fee_rate": D("0.001"),
            "taker_fee_rate": D("0.0025"),
        },
        mid=D("0.06000"),
        step=D("0.00002"),
        lots_max=2000,
    ),
)

# Refusals the traffic is expected to meet, per command kind. Anything else is a failure: the
# commands are well formed, and a thread only cancels or amends orders it placed successfully.
EXPECTED_CODES: dict[str, frozenset[str]] = {
    "place": frozenset({"insufficient_funds"}),
    "cancel": frozenset({"order_not_open"}),
    # The new quantity may be at or below what other threads' orders have filled meanwhile.
    "amend": frozenset(
        {"order_not_open", "insufficient_funds", "post_only_would_take", "invalid_quantity"}
    ),
    "cancel_all": frozenset(),
}
PLACE_STATUSES = {
    "GTC": {"new", "partially_filled", "filled", "canceled"},
    "IOC": {"filled", "expired", "canceled"},
    "FOK": {"filled", "expired"},
}
# Weights of the kinds of command a thread sends.
KINDS = {
    "gtc": 30,
    "ioc": 8,
    "fok": 6,
    "market": 7,
    "post_only": 8,
    "cancel": 20,
    "amend": 12,
    "cancel_all": 2,
}


@dataclass(frozen=True)
class OwnOrder:
    symbol: str
    account: int
    client_order_id: str


@dataclass
class Record:
    """One thread's count of what it sent and what the engine answered."""

    codes: Counter[str] = field(default_factory=Counter)  # "<kind>:<code or ok>"
    statuses: Counter[str] = field(default_factory=Counter)  # "<place kind>:<status>"
    placed: int = 0
    batches: int = 0
    commands: int = 0
    trades: int = 0
    retries: int = 0
    retry_errors: Counter[str] = field(default_factory=Counter)  # SQLSTATE -> retries
    attempts_max: int = 1  # the most attempts one batch took
    seqs: set[tuple[str, int]] = field(default_factory=set)  # (symbol, seq) of changes
    order_ids: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


def kind_of(command: Command) -> str:
    if isinstance(command, Place):
        return "place"
    if isinstance(command, Cancel):
        return "cancel"
    if isinstance(command, Amend):
        return "amend"
    return "cancel_all"


def place_kind(command: Place) -> str:
    if command.type == "market":
        return "market"
    if command.post_only:
        return "post_only"
    return command.time_in_force_or_default


class Trader:
    """A thread's random command generator: its own Random, client order ids and orders."""

    def __init__(self, thread: int, accounts: list[int]) -> None:
        self.thread = thread
        self.rng = random.Random(7919 * thread + 17)
        self.accounts = accounts
        self.numbers = 0
        self.own: list[OwnOrder] = []

    def client_order_id(self) -> str:
        self.numbers += 1
        return f"t{self.thread}-{self.numbers}"

    def price(self, market: Market) -> Decimal:
        return market.mid + market.step * self.rng.randint(-PRICE_STEPS, PRICE_STEPS)

    def quantity(self, market: Market, lots_max: int | None = None) -> Decimal:
        return market.lot * self.rng.randint(1, lots_max or market.lots_max)

    def command(self, market: Market) -> Command:
        rng = self.rng
        kind = rng.choices(list(KINDS), list(KINDS.values()))[0]
        own = [o for o in self.own if o.symbol == market.symbol]
        if kind in ("cancel", "amend") and not own:
            kind = "gtc"
        if kind == "cancel":
            order = rng.choice(own)
            self.own.remove(order)
            return Cancel(order.account, order.client_order_id)
        if kind == "amend":
            order = rng.choice(own)
            change = rng.choice(["price", "quantity", "both"])
            return Amend(
                order.account,
                order.client_order_id,
                quantity=self.quantity(market) if change != "price" else None,
                price=self.price(market) if change != "quantity" else None,
            )
        account = rng.choice(self.accounts)
        if kind == "cancel_all":
            return CancelAll(account)
        side = rng.choice(["buy", "sell"])
        stp = rng.choice(SELF_TRADE_PREVENTIONS)
        coid = self.client_order_id()
        if kind == "market":
            return Place(
                account,
                coid,
                side,
                "market",
                self.quantity(market, market.lots_max // 4),
                time_in_force=rng.choice([None, "IOC", "FOK"]),
                self_trade_prevention=stp,
            )
        time_in_force = {"ioc": "IOC", "fok": "FOK"}.get(kind, rng.choice([None, "GTC"]))
        return Place(
            account,
            coid,
            side,
            "limit",
            self.quantity(market),
            self.price(market),
            time_in_force=time_in_force,
            post_only=kind == "post_only",
            self_trade_prevention=stp,
        )

    def remember(self, symbol: str, command: Place, result: Result) -> None:
        assert result.order is not None
        if result.order.is_open:
            self.own.append(OwnOrder(symbol, command.account, command.client_order_id))
            del self.own[:-OWN_ORDERS_KEPT]


def check_result(symbol: str, command: Command, result: Result, record: Record) -> None:
    """What a single result must look like, whatever the other threads did."""
    kind = kind_of(command)
    record.codes[f"{kind}:{result.code or 'ok'}"] += 1
    if result.code is not None:
        assert result.code in EXPECTED_CODES[kind], (symbol, command, result)
        assert not result.orders and not result.trades and result.seq is None, result
        return
    assert not result.replayed, (symbol, command, result)
    record.trades += len(result.trades)
    assert all(t.seq == result.seq for t in result.trades), result
    if result.seq is not None:
        assert (symbol, result.seq) not in record.seqs, (symbol, result)
        record.seqs.add((symbol, result.seq))
    if result.trades:
        assert result.seq is not None, result
    for order in result.orders:
        assert D(0) <= order.filled_quantity <= order.quantity, order
    if not isinstance(command, Place):
        if isinstance(command, (Cancel, Amend)):
            assert result.order is not None, result
            assert result.order.account == command.account, result
            assert result.order.client_order_id == command.client_order_id, result
        return
    order = result.order
    assert order is not None, result
    assert order.id is not None
    assert (order.account, order.client_order_id) == (command.account, command.client_order_id)
    record.placed += 1
    record.order_ids.add(order.id)
    record.statuses[f"{place_kind(command)}:{order.status}"] += 1
    taken = sum(
        (
            t.quantity
            for t in result.trades
            if t.taker_client_order_id == command.client_order_id
            and t.taker_account == command.account
        ),
        D(0),
    )
    assert taken == order.filled_quantity, (command, result)
    if command.post_only:
        assert order.status in ("new", "rejected"), result
        assert not result.trades, result
        return
    assert order.status in PLACE_STATUSES[command.time_in_force_or_default], (command, result)
    if order.status == "expired" and command.time_in_force_or_default == "FOK":
        assert order.filled_quantity == 0 and not result.trades, result
        assert order.reason == "fok_not_filled", result


def count(conn: psycopg.Connection, query: str, args: tuple[object, ...] = ()) -> int:
    with observer(conn) as observed:
        row = observed.execute(query, args).fetchone()
    assert row is not None
    return int(row[0])


def test_random_concurrent_trading_on_shared_accounts_keeps_every_invariant(
    db: ScratchDatabase, admin: psycopg.Connection, app_conn: psycopg.Connection, tenant: int
) -> None:
    for m in MARKETS:
        create_market(admin, m.base, m.quote, **m.parameters)
    accounts = [funded_account(app_conn, **FUNDING) for _ in range(ACCOUNTS)]
    records = [Record() for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS)

    def trade(thread: int) -> None:
        record = records[thread]
        trader = Trader(thread, accounts)

        def on_retry(attempt: int, error: Exception) -> None:
            record.retries += 1
            record.retry_errors[getattr(error, "sqlstate", None) or type(error).__name__] += 1
            record.attempts_max = max(record.attempts_max, attempt + 1)

        try:
            with db.connect(APP_ROLE, tenant=tenant) as conn:
                barrier.wait(BARRIER_TIMEOUT_SECONDS)
                deadline = time.monotonic() + SECONDS
                while time.monotonic() < deadline:
                    market = trader.rng.choice(MARKETS)
                    size = 1 if trader.rng.random() < 0.6 else trader.rng.randint(2, 6)
                    commands = [trader.command(market) for _ in range(size)]
                    results = engine.execute(conn, market.symbol, commands, on_retry=on_retry)
                    assert len(results) == len(commands)
                    record.batches += 1
                    record.commands += len(commands)
                    for command, result in zip(commands, results, strict=True):
                        check_result(market.symbol, command, result, record)
                        if isinstance(command, Place) and result.ok:
                            trader.remember(market.symbol, command, result)
        except BaseException:
            record.errors.append(traceback.format_exc())

    threads = [threading.Thread(target=trade, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"

    codes = sum((r.codes for r in records), Counter())
    statuses = sum((r.statuses for r in records), Counter())
    placed = sum(r.placed for r in records)
    trades = sum(r.trades for r in records)
    retries = sum(r.retries for r in records)
    print(
        f"\nconcurrent trading: {THREADS} threads x {SECONDS}s,"
        f" {sum(r.batches for r in records)} batches, {sum(r.commands for r in records)} commands,"
        f" {placed} orders placed, {trades} trades, {retries} retries"
    )
    print(f"results: {dict(sorted(codes.items()))}")
    print(f"placed orders: {dict(sorted(statuses.items()))}")
    retry_errors = sum((r.retry_errors for r in records), Counter())
    print(
        f"retries by SQLSTATE: {dict(sorted(retry_errors.items()))},"
        f" most attempts of one batch: {max(r.attempts_max for r in records)}"
        f" (of {ATTEMPTS_MAX})"
    )

    # Whatever happened in the threads, the state is sound: every ledger and trading invariant
    # of `exchange verify` holds.
    assert_invariants_hold(app_conn)

    # Money is conserved per asset: customers' available + held and the fee accounts hold
    # exactly what was deposited, and custody owes exactly that.
    for asset, amount in FUNDING.items():
        row = admin.execute(
            "SELECT coalesce(sum(balance) FILTER (WHERE bucket IN ('available', 'held')), 0),"
            "       coalesce(sum(balance) FILTER (WHERE bucket = 'fee'), 0),"
            "       coalesce(sum(balance) FILTER (WHERE bucket = 'custody'), 0)"
            "  FROM ledger.account WHERE asset = %s",
            (asset,),
        ).fetchone()
        assert row is not None
        customers, fees, custody = row
        assert customers + fees == ACCOUNTS * amount, (asset, customers, fees)
        assert custody == -ACCOUNTS * amount, (asset, custody)
        assert customers >= 0 and fees >= 0, (asset, customers, fees)

    # No book is crossed.
    for m in MARKETS:
        bids, asks = book(app_conn, m.symbol)
        if bids and asks:
            assert bids[0][2] < asks[0][2], (m.symbol, bids[0], asks[0])

    # No thread failed: no unexpected code, no RetriesExhausted, no broken result.
    errors = [error for r in records for error in r.errors]
    assert not errors, "\n".join(errors)
    # The engine was really exercised, and both ways.
    assert placed > PLACED_MIN
    assert trades > 0
    assert codes["place:insufficient_funds"] < placed

    # What the threads were told is exactly what the database holds.
    assert count(app_conn, "SELECT count(*) FROM trading.orders") == placed
    assert {
        row[0] for row in app_conn.execute("SELECT id FROM trading.orders").fetchall()
    } == set().union(*(r.order_ids for r in records))
    assert count(app_conn, "SELECT count(*) FROM trading.trade") == trades
    events = {
        (symbol, seq)
        for symbol, seq in admin.execute(
            "SELECT i.symbol, e.seq FROM trading.event e"
            " JOIN trading.instrument i ON i.id = e.instrument_id"
        ).fetchall()
    }
    assert events == set().union(*(r.seqs for r in records))
