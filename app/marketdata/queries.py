"""Reads of public market data, for the REST endpoints and the stream server.

Everything here runs inside a transaction the caller opened (`ExchangeState.run`). A read that
returns a `seq` with data (the book, a snapshot) must run at REPEATABLE READ: the engine commits
an instrument's seq and its orders together, so one snapshot sees both at the same event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from typing import Any

import psycopg

from app.trading.commands import Instrument

EXACT = Context(prec=100)  # quantize's result may have more digits than the default 28
EVENTS_PAGE_MAX = 1000  # what marketdata.events_after / executions_after return at most


def _unit(step: Decimal) -> Decimal:
    """The smallest decimal place of `step` (0.01 → 0.01, 0.25 → 0.01, 5 → 1)."""
    exponent = step.as_tuple().exponent
    assert isinstance(exponent, int)
    return Decimal(1).scaleb(min(exponent, 0))


@dataclass(frozen=True)
class Format:
    """How an instrument's amounts are written: prices at the tick's decimal places, quantities
    at the lot's, notionals at both. Every price is a multiple of the tick and every quantity of
    the lot, so this never rounds; it makes "100", "100.0" and "100.00" one spelling, so the
    same level always has the same key in snapshots, deltas and REST answers."""

    price_unit: Decimal
    quantity_unit: Decimal

    @classmethod
    def of(cls, instrument: Instrument) -> Format:
        return cls(_unit(instrument.tick_size), _unit(instrument.lot_size))

    @staticmethod
    def _write(value: Decimal, unit: Decimal) -> str:
        # Sums reach 10^24 with many places: beyond the default 28 digits of precision.
        exact = value.quantize(unit, context=EXACT)
        return format(exact if exact == value else value, "f")

    def price(self, value: Decimal) -> str:
        return self._write(value, self.price_unit)

    def quantity(self, value: Decimal) -> str:
        return self._write(value, self.quantity_unit)

    def notional(self, value: Decimal) -> str:
        return self._write(value, self.price_unit * self.quantity_unit)

    def price_or_none(self, value: Decimal | None) -> str | None:
        return None if value is None else self.price(value)


# -- REST ------------------------------------------------------------------------------------


def instrument_seq(conn: psycopg.Connection, symbol: str) -> int:
    row = conn.execute("SELECT seq FROM trading.instrument WHERE symbol = %s", (symbol,)).fetchone()
    if row is None:  # the caller checked the symbol; it cannot disappear (never deleted)
        raise LookupError(symbol)
    return int(row[0])


def book(conn: psycopg.Connection, symbol: str, depth: int, fmt: Format) -> dict[str, Any]:
    """The aggregated book (best `depth` levels a side) and the seq it is at. REPEATABLE READ."""
    seq = instrument_seq(conn, symbol)
    sides = {}
    for side, order in (("buy", "DESC"), ("sell", "ASC")):
        rows = conn.execute(
            f"""SELECT price, quantity FROM marketdata.book_level
                 WHERE symbol = %s AND side = %s ORDER BY price {order} LIMIT %s""",
            (symbol, side, depth),
        ).fetchall()
        sides[side] = [[fmt.price(price), fmt.quantity(quantity)] for price, quantity in rows]
    return {"symbol": symbol, "seq": seq, "bids": sides["buy"], "asks": sides["sell"]}


def trades(conn: psycopg.Connection, symbol: str, limit: int, fmt: Format) -> dict[str, Any]:
    """The latest `limit` trades, newest first (in the order they happened: seq, match)."""
    rows = conn.execute(
        """SELECT id, seq, price, quantity, taker_side, created_at
             FROM marketdata.public_trade WHERE symbol = %s
            ORDER BY seq DESC, match_number DESC LIMIT %s""",
        (symbol, limit),
    ).fetchall()
    items = [
        {
            "id": id_,
            "seq": seq,
            "price": fmt.price(price),
            "quantity": fmt.quantity(quantity),
            "taker_side": taker_side,
            "time": created_at,
        }
        for id_, seq, price, quantity, taker_side, created_at in rows
    ]
    return {"symbol": symbol, "items": items}


def ticker(conn: psycopg.Connection, symbol: str, fmt: Format) -> dict[str, Any]:
    """Last price, best bid and ask, and the last 24 hours' volume, high and low, at one seq.
    REPEATABLE READ."""
    seq = instrument_seq(conn, symbol)
    last = conn.execute(
        """SELECT price FROM marketdata.public_trade WHERE symbol = %s
            ORDER BY seq DESC, match_number DESC LIMIT 1""",
        (symbol,),
    ).fetchone()
    best: dict[str, Decimal | None] = {}
    for side, order in (("buy", "DESC"), ("sell", "ASC")):
        row = conn.execute(
            f"""SELECT price FROM marketdata.book_level WHERE symbol = %s AND side = %s
                 ORDER BY price {order} LIMIT 1""",
            (symbol, side),
        ).fetchone()
        best[side] = None if row is None else row[0]
    day = conn.execute(
        """SELECT coalesce(sum(quantity), 0), coalesce(sum(price * quantity), 0),
                  max(price), min(price), count(*), now()
             FROM marketdata.public_trade
            WHERE symbol = %s AND created_at > now() - interval '24 hours'""",
        (symbol,),
    ).fetchone()
    assert day is not None
    volume, quote_volume, high, low, count, now = day
    return {
        "symbol": symbol,
        "seq": seq,
        "last": None if last is None else fmt.price(last[0]),
        "best_bid": fmt.price_or_none(best["buy"]),
        "best_ask": fmt.price_or_none(best["sell"]),
        "volume_24h": fmt.quantity(volume),
        "quote_volume_24h": fmt.notional(quote_volume),
        "high_24h": fmt.price_or_none(high),
        "low_24h": fmt.price_or_none(low),
        "trades_24h": count,
        "time": now,
    }


# Buckets are aligned on this origin (a UTC midnight), so a 1d candle is a UTC day.
CANDLE_ORIGIN = "2000-01-01T00:00:00Z"


def candles(
    conn: psycopg.Connection,
    symbol: str,
    step: timedelta,
    start: datetime,
    end: datetime,
    fmt: Format,
) -> list[dict[str, Any]]:
    """OHLCV of the trades in [start, end), one candle per `step` bucket that has trades;
    open and close by the order the trades happened in (seq, match)."""
    rows = conn.execute(
        """SELECT date_bin(%(step)s, created_at, %(origin)s::timestamptz) AS bucket,
                  (array_agg(price ORDER BY seq, match_number))[1],
                  max(price), min(price),
                  (array_agg(price ORDER BY seq DESC, match_number DESC))[1],
                  sum(quantity), sum(price * quantity), count(*)
             FROM marketdata.public_trade
            WHERE symbol = %(symbol)s AND created_at >= %(start)s AND created_at < %(end)s
            GROUP BY bucket ORDER BY bucket""",
        {"step": step, "origin": CANDLE_ORIGIN, "symbol": symbol, "start": start, "end": end},
    ).fetchall()
    return [
        {
            "start": bucket,
            "open": fmt.price(open_),
            "high": fmt.price(high),
            "low": fmt.price(low),
            "close": fmt.price(close),
            "volume": fmt.quantity(volume),
            "quote_volume": fmt.notional(quote_volume),
            "trades": count,
        }
        for bucket, open_, high, low, close, volume, quote_volume, count in rows
    ]


# -- streams ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BookSnapshot:
    seq: int
    orders: list[tuple[int, str, Decimal, Decimal]]  # id, side, price, remaining


def book_snapshot(conn: psycopg.Connection, symbol: str) -> BookSnapshot:
    """Every open order of the instrument and the seq they are at. REPEATABLE READ."""
    seq = instrument_seq(conn, symbol)
    rows = conn.execute(
        "SELECT id, side, price, remaining FROM marketdata.book_order WHERE symbol = %s",
        (symbol,),
    ).fetchall()
    return BookSnapshot(seq, [(int(i), s, p, r) for i, s, p, r in rows])


@dataclass(frozen=True)
class Event:
    """One row of marketdata.events_after or executions_after."""

    seq: int
    kind: str
    time: datetime
    orders: list[dict[str, Any]]
    trades: list[dict[str, Any]]


def events_after(conn: psycopg.Connection, symbol: str, after: int) -> list[Event]:
    """The public projection of the next events (at most EVENTS_PAGE_MAX) after seq `after`."""
    rows = conn.execute(
        "SELECT seq, kind, created_at, orders, trades FROM marketdata.events_after(%s, %s, %s)",
        (symbol, after, EVENTS_PAGE_MAX),
    ).fetchall()
    return [Event(*row) for row in rows]


def executions_after(
    conn: psycopg.Connection, symbol: str, after: int
) -> tuple[list[Event], int]:
    """The acting tenant's next events after `after` (at most EVENTS_PAGE_MAX), and the seq up
    to which they are complete: the last one's when the page is full, else the instrument's
    seq of the same snapshot (REPEATABLE READ), so the next read starts there."""
    seq = instrument_seq(conn, symbol)
    rows = conn.execute(
        "SELECT seq, kind, created_at, orders, trades FROM marketdata.executions_after(%s, %s, %s)",
        (symbol, after, EVENTS_PAGE_MAX),
    ).fetchall()
    events = [Event(*row) for row in rows]
    complete_to = events[-1].seq if len(events) == EVENTS_PAGE_MAX else max(seq, after)
    return events, complete_to



# -- candle windows ----------------------------------------------------------------------------

INTERVALS = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
CANDLES_MAX = 1000
CANDLE_WINDOW_DEFAULT = timedelta(hours=24)
_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)


def candle_window(
    interval: str, start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """[first bucket's start, end): `start` rounded down to its bucket; without `end`, now;
    without `start`, 24 hours before `end` (at most CANDLES_MAX buckets). Times without a zone
    are UTC. ValueError: start not before end, too many buckets, or out of range."""
    step = INTERVALS[interval]
    try:
        end = now if end is None else _utc(end)
        if start is None:
            start = end - min(CANDLE_WINDOW_DEFAULT, step * (CANDLES_MAX - 1))
        start = _utc(start)
        first = _ORIGIN + ((start - _ORIGIN) // step) * step
    except OverflowError:
        raise ValueError("start and end must be between the years 1 and 9999") from None
    if start >= end:
        raise ValueError("start must be before end")
    buckets = -((first - end) // step)  # ceiling of (end - first) / step
    if buckets > CANDLES_MAX:
        raise ValueError(f"at most {CANDLES_MAX} candles: narrow start..end or widen interval")
    return first, end


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
