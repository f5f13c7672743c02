"""The stream's messages (docs/api.md, streams section), serialized once and sent as text.

Decimals are strings, times ISO 8601 (RFC 3339), seqs and ids integers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from app.marketdata.book import EXACT, Levels, sorted_levels
from app.marketdata.queries import Event, Format
from app.trading.commands import Instrument


def dump(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def _levels(levels: Levels, fmt: Format) -> dict[str, list[list[str]]]:
    bids, asks = sorted_levels(levels)
    return {
        "bids": [[fmt.price(p), fmt.quantity(q)] for p, q in bids],
        "asks": [[fmt.price(p), fmt.quantity(q)] for p, q in asks],
    }


def book(symbol: str, kind: str, seq: int, levels: Levels, fmt: Format) -> str:
    """`kind` snapshot: the whole book at seq. delta: the new quantity of every level the
    event `seq` touched, "0" for a level that is gone (possibly none: one delta per event)."""
    return dump({"channel": f"book:{symbol}", "type": kind, "seq": seq, **_levels(levels, fmt)})


def trades(symbol: str, event: Event, fmt: Format) -> str | None:
    """The event's trades in the order they happened, or None if it made none."""
    if not event.trades:
        return None
    return dump({
        "channel": f"trades:{symbol}",
        "type": "trades",
        "seq": event.seq,
        "time": event.time,
        "trades": [
            {
                "id": t["id"],
                "price": fmt.price(Decimal(t["price"])),
                "quantity": fmt.quantity(Decimal(t["quantity"])),
                "taker_side": t["taker_side"],
            }
            for t in event.trades
        ],
    })


def _order(order: dict[str, Any], symbol: str) -> dict[str, Any]:
    """The order as GET /v1/orders/{id} shows it (amounts as the engine wrote them)."""
    quantity, filled = Decimal(order["quantity"]), Decimal(order["filled_quantity"])
    return {
        "id": order["id"],
        "client_order_id": order["client_order_id"],
        "account_id": order["account"],
        "symbol": symbol,
        "side": order["side"],
        "type": order["type"],
        "price": order["price"],
        "quantity": order["quantity"],
        "filled_quantity": order["filled_quantity"],
        "remaining_quantity": format(EXACT.subtract(quantity, filled), "f"),
        "status": order["status"],
        "reason": order["reason"],
        "time_in_force": order["time_in_force"],
        "post_only": order["post_only"],
        "self_trade_prevention": order["self_trade_prevention"],
        "created_at": order["created_at"],
        "updated_at": order["updated_at"],
    }


def _fills(event: Event, instrument: Instrument) -> list[dict[str, Any]]:
    """The tenant's side(s) of each trade. A party is the tenant's iff its order is among the
    event's orders (executions_after keeps only the tenant's; a fill changes both orders), so
    the other party's account and client order id are never passed on. Two accounts of one
    tenant can trade with each other: that trade is two fills."""
    mine = {(o["account"], o["client_order_id"]): o for o in event.orders}
    fills = []
    for trade in event.trades:
        for liquidity in ("maker", "taker"):
            order = mine.get(
                (trade[f"{liquidity}_account"], trade[f"{liquidity}_client_order_id"])
            )
            if order is None:
                continue
            side = order["side"]
            fills.append({
                "trade_id": trade["id"],
                "order_id": order["id"],
                "client_order_id": order["client_order_id"],
                "account_id": order["account"],
                "side": side,
                "price": trade["price"],
                "quantity": trade["quantity"],
                "fee": trade[f"{liquidity}_fee"],
                # a fee comes out of what the side receives: the buyer base, the seller quote
                "fee_asset": instrument.base if side == "buy" else instrument.quote,
                "liquidity": liquidity,
            })
    return fills


def execution(instrument: Instrument, event: Event) -> str:
    """One event of the tenant's: its orders as they are after it and its fills."""
    return dump({
        "channel": "executions",
        "type": "execution",
        "symbol": instrument.symbol,
        "seq": event.seq,
        "kind": event.kind,
        "time": event.time,
        "orders": [_order(o, instrument.symbol) for o in event.orders],
        "fills": _fills(event, instrument),
    })


def control(kind: str, **fields: Any) -> str:
    """subscribed, unsubscribed, reset, error, pong."""
    return dump({"type": kind, **fields})
