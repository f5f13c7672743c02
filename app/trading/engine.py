"""The matching engine's Python side: one database call per batch of commands for an instrument.

`trading.execute` (sql/trading/engine.v2.sql and engine.v3.sql, behind the tenant checks of
execute.v3.sql) does the work under a lock on the instrument's row. Here: the command and result
encoding, the transaction with its retries, and the decoding.

Isolation: READ COMMITTED, not the SERIALIZABLE the design asked for. Every rule the engine relies
on is enforced under a lock, never on a snapshot read: an instrument's book, orders and sequence
change only under the lock on its row (and at READ COMMITTED each statement after the lock sees
the previous holder's commit); a balance moves only under its account's row lock (the engine's
funds checks read it `FOR UPDATE`, and the ledger's statement trigger checks every entry under
the lock); a client_order_id is unique by index. SERIALIZABLE adds
nothing to that but false conflicts: its predicate locks cover index pages, and every posting
reads the newest page of `ledger.entry`'s journal index, so two commands on unrelated instruments
and accounts failed each other with 40001 (measured: about one retry per batch under 8 threads,
and batches that exhausted 12 attempts). A snapshot taken before the lock wait would also make
every waiter fail. Deadlocks (40P01: two instruments' batches each holding an account the other
is about to post to) are retried.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import psycopg

from app.db import run_transaction
from app.trading.commands import (
    BATCH_SIZE_MAX,
    Amend,
    Cancel,
    CancelAll,
    Command,
    Order,
    Place,
    Result,
    Trade,
)
from app.trading.errors import TradingError, translated

ENGINE_ISOLATION = psycopg.IsolationLevel.READ_COMMITTED


def _decimal(value: Decimal) -> str:
    return format(value, "f")


def _text(value: str) -> str:
    """A string PostgreSQL can take as JSON text. A NUL or a lone surrogate would make it refuse
    the whole batch's parameter; U+FFFD instead makes only this command invalid."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "\ufffd"
    return value.replace("\x00", "\ufffd")


def command_json(command: Command) -> dict[str, Any]:
    """The JSON form `trading.execute` takes. Decimals travel as strings, never as floats."""
    if isinstance(command, Place):
        body: dict[str, Any] = {
            "op": "place",
            "account": command.account,
            "client_order_id": _text(command.client_order_id),
            "side": _text(command.side),
            "type": _text(command.type),
            "quantity": _decimal(command.quantity),
            "post_only": command.post_only,
            "self_trade_prevention": _text(command.self_trade_prevention),
        }
        if command.price is not None:
            body["price"] = _decimal(command.price)
        if command.time_in_force is not None:
            body["time_in_force"] = _text(command.time_in_force)
        return body
    if isinstance(command, Cancel):
        return {
            "op": "cancel",
            "account": command.account,
            "client_order_id": _text(command.client_order_id),
        }
    if isinstance(command, Amend):
        body = {
            "op": "amend",
            "account": command.account,
            "client_order_id": _text(command.client_order_id),
        }
        if command.quantity is not None:
            body["quantity"] = _decimal(command.quantity)
        if command.price is not None:
            body["price"] = _decimal(command.price)
        return body
    if isinstance(command, CancelAll):
        return {"op": "cancel_all", "account": command.account}
    raise TypeError(f"not a command: {command!r}")


def _optional_decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def order_from_json(data: dict[str, Any]) -> Order:
    return Order(
        account=data["account"],
        client_order_id=data["client_order_id"],
        side=data["side"],
        type=data["type"],
        price=_optional_decimal(data["price"]),
        quantity=Decimal(data["quantity"]),
        filled_quantity=Decimal(data["filled_quantity"]),
        status=data["status"],
        reason=data["reason"],
        time_in_force=data["time_in_force"],
        post_only=data["post_only"],
        self_trade_prevention=data["self_trade_prevention"],
        priority=data["priority"],
        id=data["id"],
        created_at=data.get("created_at"),
    )


def trade_from_json(data: dict[str, Any]) -> Trade:
    return Trade(
        seq=data["seq"],
        price=Decimal(data["price"]),
        quantity=Decimal(data["quantity"]),
        taker_side=data["taker_side"],
        maker_account=data["maker_account"],
        maker_client_order_id=data["maker_client_order_id"],
        taker_account=data["taker_account"],
        taker_client_order_id=data["taker_client_order_id"],
        maker_fee=_optional_decimal(data["maker_fee"]),
        taker_fee=_optional_decimal(data["taker_fee"]),
        id=data["id"],
    )


def result_from_json(data: dict[str, Any]) -> Result:
    if "code" in data:
        return Result(code=data["code"], message=data["message"])
    return Result(
        order=order_from_json(data["order"]) if data.get("order") else None,
        orders=tuple(order_from_json(o) for o in data["orders"]),
        trades=tuple(trade_from_json(t) for t in data["trades"]),
        seq=data.get("seq"),
        replayed=bool(data.get("replayed", False)),
    )


def execute(
    conn: psycopg.Connection,
    symbol: str,
    commands: Sequence[Command],
    *,
    on_retry: Callable[[int, Exception], None] | None = None,
    tenants: Sequence[int] | None = None,
) -> list[Result]:
    """Apply commands to one instrument, in order, in one durable transaction; one result each.

    A refused command has a `code` and wrote nothing; the others are unaffected. `conn` must not
    be inside a transaction (the transaction is opened here). Each command acts for the tenant
    at its index in `tenants`, else for the session's (`app.tenant_id`): a command naming an
    account of another tenant is refused as `unknown_account`. Raises TradingError for an
    unknown instrument or a malformed batch.
    """
    payload = _payload(commands, tenants)
    results = run_transaction(
        conn,
        lambda c: _call(c, symbol, payload),
        isolation=ENGINE_ISOLATION,
        on_retry=on_retry,
    )
    return [result_from_json(result) for result in results]


def await_turn(conn: psycopg.Connection, symbol: str) -> None:
    """Inside a transaction at READ COMMITTED: wait for the instrument's lock, the one
    `trading.execute` takes, which the transaction then holds until it ends. A caller that
    gathers commands while others hold the instrument gathers them here, before `call`."""
    with translated():
        conn.execute("SELECT trading.await_turn(%s)", (symbol,))


def call(
    conn: psycopg.Connection,
    symbol: str,
    commands: Sequence[Command],
    *,
    tenants: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """`execute`'s engine call inside the caller's transaction (it neither commits nor retries):
    the results as JSON, for `result_from_json` once the transaction has committed."""
    return _call(conn, symbol, _payload(commands, tenants))


def _payload(commands: Sequence[Command], tenants: Sequence[int] | None) -> str:
    if not 1 <= len(commands) <= BATCH_SIZE_MAX:
        raise TradingError("invalid_batch", f"a batch holds 1 to {BATCH_SIZE_MAX} commands")
    encoded = [command_json(command) for command in commands]
    if tenants is not None:
        if len(tenants) != len(commands):
            raise ValueError("one tenant per command")
        for body, tenant in zip(encoded, tenants, strict=True):
            body["tenant"] = tenant
    return json.dumps(encoded)


def _call(conn: psycopg.Connection, symbol: str, payload: str) -> list[dict[str, Any]]:
    with translated():
        row = conn.execute("SELECT trading.execute(%s, %s::jsonb)", (symbol, payload)).fetchone()
    assert row is not None
    return list(row[0])
