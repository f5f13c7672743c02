"""Public market data: instruments, books, trades, tickers and candles (any valid key)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, Field

from app.api.problems import Problem
from app.api.routers.admin import InstrumentOut, instrument_json
from app.api.schemas import SYMBOL_PATTERN
from app.api.security import any_key
from app.api.state import ExchangeState, exchange, json_response
from app.marketdata import queries
from app.marketdata.queries import Format
from app.tenancy.keys import Principal
from app.trading import instruments
from app.trading.commands import Instrument

router = APIRouter(prefix="/v1", tags=["market data"])
Reader = Annotated[Principal, Depends(any_key)]
State = Annotated[ExchangeState, Depends(exchange)]
Symbol = Annotated[
    str,
    Path(
        pattern=SYMBOL_PATTERN,
        description="BASE-QUOTE, e.g. BTC-USD",
        examples=["BTC-USD"],
    ),
]
# A seq and its data must come from one snapshot (see app.marketdata.queries).
SNAPSHOT = psycopg.IsolationLevel.REPEATABLE_READ
DecimalText = Annotated[str, Field(examples=["12.50"], description="a decimal, as a string")]
# [price, quantity] (a list, not a tuple: OpenAPI 3.1 tools disagree on tuple schemas)
Level = Annotated[list[DecimalText], Field(min_length=2, max_length=2)]


class InstrumentList(BaseModel):
    items: list[InstrumentOut]


class BookOut(BaseModel):
    symbol: str
    seq: int = Field(description="the instrument's last event: the book is exactly as after it")
    bids: list[Level] = Field(description="[price, quantity], best (highest) price first")
    asks: list[Level] = Field(description="[price, quantity], best (lowest) price first")


class TradeOut(BaseModel):
    id: int
    seq: int = Field(description="the event (command) that made the trade")
    price: DecimalText
    quantity: DecimalText
    taker_side: Literal["buy", "sell"]
    time: datetime


class TradeList(BaseModel):
    symbol: str
    items: list[TradeOut] = Field(description="newest first")


class TickerOut(BaseModel):
    symbol: str
    seq: int
    last: DecimalText | None = Field(description="the last trade's price; null before any")
    best_bid: DecimalText | None
    best_ask: DecimalText | None
    volume_24h: DecimalText = Field(description="base quantity traded in the last 24 hours")
    quote_volume_24h: DecimalText = Field(description="quote amount (price x quantity), 24 h")
    high_24h: DecimalText | None
    low_24h: DecimalText | None
    trades_24h: int
    time: datetime = Field(description="the end of the 24 hour window")


class CandleOut(BaseModel):
    start: datetime = Field(description="the bucket's start (UTC, aligned on the interval)")
    open: DecimalText
    high: DecimalText
    low: DecimalText
    close: DecimalText
    volume: DecimalText
    quote_volume: DecimalText
    trades: int


class CandleList(BaseModel):
    symbol: str
    interval: Literal["1m", "5m", "1h", "1d"]
    start: datetime
    end: datetime
    items: list[CandleOut] = Field(description="oldest first; buckets without trades omitted")


def _market(state: ExchangeState, symbol: str) -> tuple[Instrument, Format]:
    instrument = state.instruments.get(symbol)  # 404 unknown_instrument
    return instrument, Format.of(instrument)


@router.get("/instruments", response_model=InstrumentList)
def list_instruments(reader: Reader, state: State) -> Response:
    found = state.run(None, instruments.list_instruments)
    return json_response({"items": [instrument_json(i) for i in found]})


@router.get("/markets/{symbol}/book", response_model=BookOut)
def get_book(
    symbol: Symbol,
    reader: Reader,
    state: State,
    depth: Annotated[int, Query(ge=1, le=1000, description="levels per side")] = 100,
) -> Response:
    """The order book aggregated by price level, at the seq it shows."""
    _, fmt = _market(state, symbol)
    found = state.run(None, lambda c: queries.book(c, symbol, depth, fmt), isolation=SNAPSHOT)
    return json_response(found)


@router.get("/markets/{symbol}/trades", response_model=TradeList)
def get_trades(
    symbol: Symbol,
    reader: Reader,
    state: State,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """The latest trades, newest first."""
    _, fmt = _market(state, symbol)
    return json_response(state.run(None, lambda c: queries.trades(c, symbol, limit, fmt)))


@router.get("/markets/{symbol}/ticker", response_model=TickerOut)
def get_ticker(symbol: Symbol, reader: Reader, state: State) -> Response:
    """Last price, best bid and ask, and the last 24 hours' volume, high and low."""
    _, fmt = _market(state, symbol)
    found = state.run(None, lambda c: queries.ticker(c, symbol, fmt), isolation=SNAPSHOT)
    return json_response(found)


@router.get("/markets/{symbol}/candles", response_model=CandleList)
def get_candles(
    symbol: Symbol,
    reader: Reader,
    state: State,
    interval: Literal["1m", "5m", "1h", "1d"] = "1h",
    start: Annotated[
        datetime | None, Query(description="ISO 8601; default: 24 hours before end")
    ] = None,
    end: Annotated[datetime | None, Query(description="ISO 8601, excluded; default: now")] = None,
) -> Response:
    """OHLCV candles from the trades (at most 1000: CANDLES_MAX), oldest first."""
    _, fmt = _market(state, symbol)
    try:
        first, last = queries.candle_window(interval, start, end, datetime.now(UTC))
    except ValueError as error:
        raise Problem(400, "invalid_request", str(error)) from None
    step = queries.INTERVALS[interval]
    items = state.run(None, lambda c: queries.candles(c, symbol, step, first, last, fmt))
    return json_response(
        {"symbol": symbol, "interval": interval, "start": first, "end": last, "items": items}
    )
