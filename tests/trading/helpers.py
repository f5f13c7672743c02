"""Shared set-up for trading tests: assets, instruments, funded accounts and state snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import psycopg

from app.ledger import service
from app.trading import engine, instruments
from app.trading.commands import Command, Instrument, Place, Result
from tests.ledger.helpers import LedgerState, ledger_state, observer

D = Decimal

# BTC-USD: prices on a 0.01 tick, quantities on a 0.001 lot; 0.01 x 0.001 fits USD's scale 6.
BTC_USD = {
    "tick_size": D("0.01"),
    "lot_size": D("0.001"),
    "min_quantity": D("0.001"),
    "min_notional": D("1"),
    "maker_fee_rate": D("0.001"),
    "taker_fee_rate": D("0.002"),
}
ETH_USD = {
    "tick_size": D("0.01"),
    "lot_size": D("0.01"),
    "min_quantity": D("0.01"),
    "min_notional": D("0"),
    "maker_fee_rate": D("0"),
    "taker_fee_rate": D("0.001"),
}


def create_market(
    admin: psycopg.Connection, base: str = "BTC", quote: str = "USD", **parameters: Decimal
) -> Instrument:
    """The instrument base-quote (creating its assets if needed: base scale 8, quote scale 6)."""
    for code, scale in ((base, 8), (quote, 6)):
        admin.execute(
            "INSERT INTO ledger.asset (code, scale) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (code, scale),
        )
    defaults = BTC_USD if base == "BTC" else ETH_USD
    return instruments.create_instrument(admin, base, quote, **{**defaults, **parameters})


def funded_account(conn: psycopg.Connection, **amounts: Decimal | str | int) -> int:
    """A new account with these available balances (asset=amount)."""
    account = service.create_customer(conn, "trader")
    for asset, amount in amounts.items():
        service.deposit(conn, account, asset, D(str(amount)), f"fund-{account}-{asset}")
    return account


def run(conn: psycopg.Connection, symbol: str, *commands: Command) -> list[Result]:
    return engine.execute(conn, symbol, list(commands))


def run_one(conn: psycopg.Connection, symbol: str, command: Command) -> Result:
    (result,) = engine.execute(conn, symbol, [command])
    return result


def limit(
    account: int,
    client_order_id: str,
    side: str,
    quantity: str,
    price: str,
    **options: object,
) -> Place:
    return Place(account, client_order_id, side, "limit", D(quantity), D(price), **options)  # type: ignore[arg-type]


def market(
    account: int, client_order_id: str, side: str, quantity: str, **options: object
) -> Place:
    return Place(account, client_order_id, side, "market", D(quantity), **options)  # type: ignore[arg-type]


def balance(conn: psycopg.Connection, account: int, asset: str) -> tuple[Decimal, Decimal]:
    """(available, held) of an account in an asset, zeros when it never had any."""
    row = conn.execute(
        """
        SELECT coalesce(sum(balance) FILTER (WHERE bucket = 'available'), 0),
               coalesce(sum(balance) FILTER (WHERE bucket = 'held'), 0)
          FROM ledger.account WHERE customer_id = %s AND asset = %s
        """,
        (account, asset),
    ).fetchone()
    assert row is not None
    return (row[0], row[1])


def fee_balance(conn: psycopg.Connection, symbol: str, asset: str) -> Decimal:
    with observer(conn) as observed:
        row = observed.execute(
            "SELECT coalesce(sum(balance), 0) FROM ledger.account"
            " WHERE bucket = 'fee' AND label = %s AND asset = %s",
            (symbol, asset),
        ).fetchone()
    assert row is not None
    return Decimal(row[0])


def book(conn: psycopg.Connection, symbol: str) -> tuple[list[tuple], list[tuple]]:
    """(bids, asks) as (account, client_order_id, price, remaining) in matching order."""
    sides = []
    for side, order in (("buy", "price DESC"), ("sell", "price")):
        rows = conn.execute(
            f"""
            SELECT o.customer_id, o.client_order_id, o.price, o.quantity - o.filled_quantity
              FROM trading.orders o JOIN trading.instrument i ON i.id = o.instrument_id
             WHERE i.symbol = %s AND o.side = %s AND o.status IN ('new', 'partially_filled')
             ORDER BY o.{order}, o.priority
            """,
            (symbol, side),
        ).fetchall()
        sides.append([tuple(row) for row in rows])
    return sides[0], sides[1]


@dataclass(frozen=True)
class TradingState:
    """Everything a refused command must leave untouched."""

    ledger: LedgerState
    orders: tuple[tuple, ...]
    trades: int
    events: int
    seqs: tuple[tuple, ...]


def trading_state(conn: psycopg.Connection) -> TradingState:
    with observer(conn) as observed:
        return _trading_state(observed)


def _trading_state(conn: psycopg.Connection) -> TradingState:
    orders = conn.execute(
        "SELECT id, status, quantity, filled_quantity, price, priority FROM trading.orders"
        " ORDER BY id"
    ).fetchall()
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM trading.trade), (SELECT count(*) FROM trading.event)"
    ).fetchone()
    assert counts is not None
    seqs = conn.execute("SELECT symbol, seq FROM trading.instrument ORDER BY symbol").fetchall()
    return TradingState(
        ledger_state(conn),
        tuple(tuple(row) for row in orders),
        counts[0],
        counts[1],
        tuple(tuple(row) for row in seqs),
    )


def assert_refused(conn: psycopg.Connection, symbol: str, command: Command, code: str) -> Result:
    """The command is refused with `code` and writes nothing at all."""
    before = trading_state(conn)
    result = run_one(conn, symbol, command)
    assert result.code == code, result
    assert trading_state(conn) == before
    return result


def statuses(results: Sequence[Result]) -> list[str | None]:
    return [r.order.status if r.order else r.code for r in results]
