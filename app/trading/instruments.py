"""Instruments: created and halted by operators (owner or administrator connections)."""

from __future__ import annotations

from decimal import Decimal

import psycopg
from psycopg.rows import dict_row

from app.trading.commands import Instrument
from app.trading.errors import TradingError, translated

_COLUMNS = """symbol, base, quote, base_scale, quote_scale, tick_size, lot_size, min_quantity,
              min_notional, maker_fee_rate, taker_fee_rate, status"""


def create_instrument(
    conn: psycopg.Connection,
    base: str,
    quote: str,
    *,
    tick_size: Decimal,
    lot_size: Decimal,
    min_quantity: Decimal = Decimal(0),
    min_notional: Decimal = Decimal(0),
    maker_fee_rate: Decimal = Decimal(0),
    taker_fee_rate: Decimal = Decimal(0),
) -> Instrument:
    with translated():
        conn.execute(
            "SELECT trading.create_instrument(%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                base,
                quote,
                tick_size,
                lot_size,
                min_quantity,
                min_notional,
                maker_fee_rate,
                taker_fee_rate,
            ),
        )
    return get_instrument(conn, f"{base}-{quote}")


def set_status(conn: psycopg.Connection, symbol: str, status: str) -> Instrument:
    """`halted` stops new orders and amends (cancels go on); `trading` resumes."""
    with translated():
        conn.execute("SELECT trading.set_instrument_status(%s, %s)", (symbol, status))
    return get_instrument(conn, symbol)


def list_instruments(conn: psycopg.Connection) -> list[Instrument]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_COLUMNS} FROM trading.instrument ORDER BY symbol").fetchall()
    return [Instrument(**row) for row in rows]


def get_instrument(conn: psycopg.Connection, symbol: str) -> Instrument:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_COLUMNS} FROM trading.instrument WHERE symbol = %s", (symbol,)
        ).fetchone()
    if row is None:
        raise TradingError("unknown_instrument", f"unknown instrument {symbol}")
    return Instrument(**row)
