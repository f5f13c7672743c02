"""Order entry (through the batching gateway), order queries, amend, cancel, fills."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Query, Response
from psycopg.rows import dict_row
from pydantic import BaseModel, Field, StrictBool, StringConstraints
from starlette.concurrency import run_in_threadpool

from app.api.problems import Problem, for_code
from app.api.ratelimit import retry_after_header
from app.api.schemas import (
    ID_MAX,
    Body,
    Cursor,
    DecimalString,
    IdPath,
    Limit,
    Page,
    Symbol,
    decimal_text,
    page,
)
from app.api.security import require
from app.api.state import ExchangeState, OrderKey, exchange, json_response
from app.tenancy.keys import Principal
from app.trading.commands import (
    Amend,
    Cancel,
    CancelAll,
    Command,
    Instrument,
    Order,
    Place,
    Result,
    Trade,
)

router = APIRouter(tags=["orders"])
Reader = Annotated[Principal, Depends(require("read"))]
Trader = Annotated[Principal, Depends(require("trade"))]
State = Annotated[ExchangeState, Depends(exchange)]
AccountId = Annotated[int, Query(ge=1, le=ID_MAX)]


class NewOrder(Body):
    account_id: Annotated[int, Field(ge=1, le=ID_MAX)]
    symbol: Symbol
    side: Literal["buy", "sell"]
    type: Literal["limit", "market"]
    price: DecimalString | None = None
    quantity: DecimalString
    time_in_force: Literal["GTC", "IOC", "FOK"] | None = None
    post_only: StrictBool = False
    self_trade_prevention: Literal["cancel_newest", "cancel_oldest", "cancel_both", "decrement"] = (
        "cancel_newest"
    )
    client_order_id: Annotated[str, StringConstraints(pattern=r"^[\x20-\x7e]{1,64}$")]


class OrderChange(Body):
    quantity: DecimalString | None = None
    price: DecimalString | None = None


class FillOut(BaseModel):
    trade_id: int
    price: str
    quantity: str
    fee: str
    fee_asset: str
    liquidity: Literal["maker", "taker"]


class OrderOut(BaseModel):
    id: int
    client_order_id: str
    account_id: int
    symbol: str
    side: Literal["buy", "sell"]
    type: Literal["limit", "market"]
    price: str | None
    quantity: str
    filled_quantity: str
    remaining_quantity: str
    status: Literal["new", "partially_filled", "filled", "canceled", "expired", "rejected"]
    reason: str | None
    time_in_force: Literal["GTC", "IOC", "FOK"]
    post_only: bool
    self_trade_prevention: str
    created_at: datetime
    fills: list[FillOut]


class AccountFillOut(BaseModel):
    id: str  # unique per fill (a trade between two accounts of one broker is two fills)
    trade_id: int
    order_id: int
    client_order_id: str
    account_id: int
    symbol: str
    side: Literal["buy", "sell"]
    price: str
    quantity: str
    fee: str
    fee_asset: str
    liquidity: Literal["maker", "taker"]
    created_at: datetime


def _fee_asset(instrument: Instrument, side: str) -> str:
    # The buyer receives the base and pays its fee in it; the seller, in the quote.
    return instrument.base if side == "buy" else instrument.quote


def order_json(order: Order, instrument: Instrument, trades: tuple[Trade, ...]) -> dict[str, Any]:
    """An order from an engine result, with the fills among `trades` that are its own."""
    fills = []
    for trade in trades:
        if (trade.taker_account, trade.taker_client_order_id) == (
            order.account,
            order.client_order_id,
        ):
            liquidity, fee = "taker", trade.taker_fee
        elif (trade.maker_account, trade.maker_client_order_id) == (
            order.account,
            order.client_order_id,
        ):
            liquidity, fee = "maker", trade.maker_fee
        else:
            continue
        fills.append(
            {
                "trade_id": trade.id,
                "price": decimal_text(trade.price),
                "quantity": decimal_text(trade.quantity),
                "fee": decimal_text(fee),
                "fee_asset": _fee_asset(instrument, order.side),
                "liquidity": liquidity,
            }
        )
    return {
        "id": order.id,
        "client_order_id": order.client_order_id,
        "account_id": order.account,
        "symbol": instrument.symbol,
        "side": order.side,
        "type": order.type,
        "price": None if order.price is None else decimal_text(order.price),
        "quantity": decimal_text(order.quantity),
        "filled_quantity": decimal_text(order.filled_quantity),
        "remaining_quantity": decimal_text(order.remaining_quantity),
        "status": order.status,
        "reason": order.reason,
        "time_in_force": order.time_in_force,
        "post_only": order.post_only,
        "self_trade_prevention": order.self_trade_prevention,
        # PostgreSQL's JSON trims trailing zeros of the fraction; parsed, it reads as GET's.
        "created_at": datetime.fromisoformat(order.created_at) if order.created_at else None,
        "fills": fills,
    }


_ORDERS = """
    SELECT o.id, o.client_order_id, o.customer_id AS account_id, i.symbol, o.side, o.type,
           o.price::text AS price, o.quantity::text AS quantity,
           o.filled_quantity::text AS filled_quantity,
           (o.quantity - o.filled_quantity)::text AS remaining_quantity,
           o.status, o.reason, o.time_in_force, o.post_only, o.self_trade_prevention,
           o.created_at,
           coalesce((SELECT jsonb_agg(jsonb_build_object(
                         'trade_id', t.id, 'price', t.price::text,
                         'quantity', t.quantity::text,
                         'fee', (CASE WHEN t.taker_order_id = o.id THEN t.taker_fee
                                      ELSE t.maker_fee END)::text,
                         'fee_asset', CASE WHEN o.side = 'buy' THEN i.base ELSE i.quote END,
                         'liquidity', CASE WHEN t.taker_order_id = o.id THEN 'taker'
                                           ELSE 'maker' END)
                         ORDER BY t.seq, t.match_number)
                       FROM trading.trade t
                      WHERE t.maker_order_id = o.id OR t.taker_order_id = o.id), '[]') AS fills
      FROM trading.orders o JOIN trading.instrument i ON i.id = o.instrument_id
"""


def _stored_orders(conn: psycopg.Connection, where: str, args: dict[str, Any]) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_ORDERS + where, args).fetchall()


def _stored_order(conn: psycopg.Connection, order_id: int) -> dict[str, Any]:
    """The order if the acting tenant owns it (row security hides the others): else 404."""
    rows = _stored_orders(conn, " WHERE o.id = %(id)s", {"id": order_id})
    if not rows:
        raise Problem(404, "unknown_order", f"no order {order_id}")
    return rows[0]


def _order_key(conn: psycopg.Connection, order_id: int) -> tuple[int, str, str]:
    """(account, client_order_id, symbol) of the acting tenant's order, else 404: what the
    engine needs to name it (cheaper than reading the whole order with its fills)."""
    row = conn.execute(
        "SELECT o.customer_id, o.client_order_id, i.symbol FROM trading.orders o"
        " JOIN trading.instrument i ON i.id = o.instrument_id WHERE o.id = %s",
        (order_id,),
    ).fetchone()
    if row is None:
        raise Problem(404, "unknown_order", f"no order {order_id}")
    return row[0], row[1], row[2]


async def _cached_order_key(state: ExchangeState, tenant_id: int, order_id: int) -> OrderKey:
    """The key of the tenant's order: remembered from its placement or an earlier look-up, else
    looked up (off the event loop) under row security, so another tenant's order is 404."""
    key = state.order_keys.get(tenant_id, order_id)
    if key is None:
        account, client_order_id, symbol = await run_in_threadpool(
            state.run, tenant_id, lambda c: _order_key(c, order_id)
        )
        key = OrderKey(tenant_id, account, client_order_id, symbol)
        state.order_keys.put(order_id, key)
    return key


def _check_account(conn: psycopg.Connection, account_id: int | None) -> None:
    """A named account must be the acting tenant's (row security hides the others): else 404,
    as on every other route, rather than an empty list."""
    if account_id is None:
        return
    owned = conn.execute("SELECT 1 FROM ledger.customer WHERE id = %s", (account_id,))
    if owned.fetchone() is None:
        raise Problem(404, "unknown_account", f"no account {account_id}")


def _check_rate(state: ExchangeState, principal: Principal) -> None:
    wait = state.limiter.acquire(principal.key_id)
    if wait > 0:
        raise Problem(
            429,
            "rate_limited",
            "too many order requests for this API key",
            {"Retry-After": retry_after_header(wait)},
        )


def _submit(state: ExchangeState, principal: Principal, symbol: str, command: Command) -> Any:
    assert principal.tenant_id is not None
    result = state.gateway.submit(symbol, command, principal.tenant_id)
    if result.code is not None:
        raise for_code(result.code, result.message)
    return result


async def _submit_async(
    state: ExchangeState, principal: Principal, symbol: str, command: Command
) -> Result:
    """`_submit` for the event loop."""
    assert principal.tenant_id is not None
    result = await state.gateway.submit_async(symbol, command, principal.tenant_id)
    if result.code is not None:
        raise for_code(result.code, result.message)
    return result


@router.post(
    "/v1/orders",
    status_code=201,
    response_model=OrderOut,
    responses={200: {"model": OrderOut, "description": "A retry: the stored order."}},
)
async def place_order(body: NewOrder, principal: Trader, state: State) -> Response:
    """Place an order. Book-dependent outcomes (FOK not fillable, post-only would take, IOC
    remainder, self-trade prevention) are 201 orders with their status and reason; refusals
    (validation, insufficient funds) are 4xx problems and write nothing."""
    # On the event loop, waiting for the gateway without holding a thread (the hot path: a
    # thread hop per request costs more CPU than the rest of the request's Python).
    _check_rate(state, principal)
    instrument = state.instruments.cached(body.symbol)
    if instrument is None:  # looked up once per process: blocking I/O, off the event loop
        instrument = await run_in_threadpool(state.instruments.get, body.symbol)
    command = Place(
        account=body.account_id,
        client_order_id=body.client_order_id,
        side=body.side,
        type=body.type,
        quantity=body.quantity,
        price=body.price,
        time_in_force=body.time_in_force,
        post_only=body.post_only,
        self_trade_prevention=body.self_trade_prevention,
    )
    result = await _submit_async(state, principal, body.symbol, command)
    assert principal.tenant_id is not None
    assert result.order is not None and result.order.id is not None
    state.order_keys.put(
        result.order.id,
        OrderKey(principal.tenant_id, body.account_id, body.client_order_id, body.symbol),
    )
    return json_response(
        order_json(result.order, instrument, result.trades), 200 if result.replayed else 201
    )


@router.get("/v1/orders/{order_id}", response_model=OrderOut)
def get_order(order_id: IdPath, principal: Reader, state: State) -> Response:
    return json_response(state.run(principal.tenant_id, lambda c: _stored_order(c, order_id)))


@router.get("/v1/orders", response_model=Page[OrderOut])
def list_orders(
    principal: Reader,
    state: State,
    account_id: AccountId | None = None,
    symbol: Annotated[Symbol | None, Query()] = None,
    status: Literal["open", "closed"] | None = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Response:
    """The broker's orders, newest first."""
    open_statuses = "o.status IN ('new', 'partially_filled')"
    where = f"""
     WHERE (%(account)s::bigint IS NULL OR o.customer_id = %(account)s)
       AND (%(symbol)s::text IS NULL OR i.symbol = %(symbol)s)
       AND (%(status)s::text IS NULL
            OR (%(status)s = 'open') = ({open_statuses}))
       AND (%(cursor)s::bigint IS NULL OR o.id < %(cursor)s)
     ORDER BY o.id DESC LIMIT %(limit)s
    """
    args = {
        "account": account_id,
        "symbol": symbol,
        "status": status,
        "cursor": int(cursor) if cursor else None,
        "limit": limit + 1,
    }

    def query(conn: psycopg.Connection) -> list[dict[str, Any]]:
        _check_account(conn, account_id)
        return _stored_orders(conn, where, args)

    return json_response(page(state.run(principal.tenant_id, query), limit))


@router.patch("/v1/orders/{order_id}", response_model=OrderOut)
def amend_order(order_id: IdPath, body: OrderChange, principal: Trader, state: State) -> Response:
    """Reduce the quantity (keeps priority) or change the price or increase the quantity (loses
    priority, and may trade at once)."""
    if body.quantity is None and body.price is None:
        raise Problem(400, "invalid_request", "give a new quantity, a new price, or both")
    _check_rate(state, principal)
    account, client_order_id, symbol = state.run(
        principal.tenant_id, lambda c: _order_key(c, order_id)
    )
    _submit(state, principal, symbol, Amend(account, client_order_id, body.quantity, body.price))
    return json_response(state.run(principal.tenant_id, lambda c: _stored_order(c, order_id)))


@router.delete("/v1/orders/{order_id}", response_model=OrderOut)
async def cancel_order(order_id: IdPath, principal: Trader, state: State) -> Response:
    """Cancel an open order and release its hold. Canceling a canceled order changes nothing."""
    # On the event loop, as placements: most cancels need no I/O of their own.
    _check_rate(state, principal)
    assert principal.tenant_id is not None
    key = await _cached_order_key(state, principal.tenant_id, order_id)
    result = await _submit_async(
        state, principal, key.symbol, Cancel(key.account, key.client_order_id)
    )
    order = result.order
    if order is not None and order.id == order_id and order.filled_quantity == 0:
        # Nothing filled, so no fills to read: the engine's answer is the whole order.
        instrument = state.instruments.cached(key.symbol)
        if instrument is None:
            instrument = await run_in_threadpool(state.instruments.get, key.symbol)
        return json_response(order_json(order, instrument, ()))
    stored = await run_in_threadpool(
        state.run, principal.tenant_id, lambda c: _stored_order(c, order_id)
    )
    return json_response(stored)


@router.delete("/v1/orders", response_model=list[OrderOut])
def cancel_all_orders(
    account_id: AccountId,
    principal: Trader,
    state: State,
    symbol: Annotated[Symbol | None, Query()] = None,
) -> Response:
    """Cancel every open order of the account (on one instrument, or on all); returns them."""
    _check_rate(state, principal)

    def markets(conn: psycopg.Connection) -> list[str]:
        _check_account(conn, account_id)
        rows = conn.execute(
            "SELECT DISTINCT i.symbol FROM trading.orders o"
            " JOIN trading.instrument i ON i.id = o.instrument_id"
            " WHERE o.customer_id = %s AND o.status IN ('new', 'partially_filled')"
            " ORDER BY 1",
            (account_id,),
        ).fetchall()
        return [row[0] for row in rows]

    if symbol is not None:
        state.instruments.get(symbol)
        symbols = [symbol]
    else:
        symbols = state.run(principal.tenant_id, markets)
    canceled: list[int] = []
    for market in symbols:
        result = _submit(state, principal, market, CancelAll(account_id))
        canceled.extend(o.id for o in result.orders if o.id is not None)
    rows = state.run(
        principal.tenant_id,
        lambda c: _stored_orders(c, " WHERE o.id = ANY(%(ids)s) ORDER BY o.id", {"ids": canceled}),
    )
    return json_response(rows)


@router.get("/v1/fills", response_model=Page[AccountFillOut])
def list_fills(
    principal: Reader,
    state: State,
    account_id: AccountId | None = None,
    symbol: Annotated[Symbol | None, Query()] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Response:
    """The broker's fills, newest first. A fill's id is twice its trade's id, plus 1 for the
    taker's side."""

    def query(conn: psycopg.Connection) -> list[dict[str, Any]]:
        _check_account(conn, account_id)
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                """
                SELECT f.fill_id::text AS id, f.trade_id, f.order_id, f.client_order_id,
                       f.account_id, f.symbol, f.side, f.price, f.quantity, f.fee,
                       f.fee_asset, f.liquidity, f.created_at
                  FROM (SELECT t.id * 2 + (t.taker_order_id = o.id)::int AS fill_id,
                               t.id AS trade_id, o.id AS order_id, o.client_order_id,
                               o.customer_id AS account_id, i.symbol, o.side,
                               t.price::text AS price, t.quantity::text AS quantity,
                               (CASE WHEN t.taker_order_id = o.id THEN t.taker_fee
                                     ELSE t.maker_fee END)::text AS fee,
                               CASE WHEN o.side = 'buy' THEN i.base ELSE i.quote END
                                   AS fee_asset,
                               CASE WHEN t.taker_order_id = o.id THEN 'taker'
                                    ELSE 'maker' END AS liquidity,
                               t.created_at
                          FROM trading.orders o
                          JOIN trading.trade t
                            ON t.maker_order_id = o.id OR t.taker_order_id = o.id
                          JOIN trading.instrument i ON i.id = o.instrument_id
                         WHERE (%(account)s::bigint IS NULL OR o.customer_id = %(account)s)
                           AND (%(symbol)s::text IS NULL OR i.symbol = %(symbol)s)) AS f
                 WHERE %(cursor)s::bigint IS NULL OR f.fill_id < %(cursor)s
                 ORDER BY f.fill_id DESC LIMIT %(limit)s
                """,
                {
                    "account": account_id,
                    "symbol": symbol,
                    "cursor": int(cursor) if cursor else None,
                    "limit": limit + 1,
                },
            ).fetchall()

    return json_response(page(state.run(principal.tenant_id, query), limit))
