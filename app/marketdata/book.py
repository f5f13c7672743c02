"""An order book followed event by event, from public data only.

It starts from the open orders at a seq (marketdata.book_order) and applies each later event's
orders, which are their states after the event. The levels an event touched are its delta. An
order is on the book iff its status is open, with remaining = quantity - filled_quantity; an
amend can move an order to another price, so each order's previous level is remembered.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Context, Decimal
from typing import Any

from app.trading.commands import OPEN_STATUSES

SIDES = ("buy", "sell")
# Exact sums: a base asset at scale 18 with quantities up to 10^12 needs 30 digits, more than
# the default context's 28 (which would round silently).
EXACT = Context(prec=100)
Levels = dict[str, dict[Decimal, Decimal]]  # side -> price -> quantity


class BookState:
    def __init__(self, open_orders: Iterable[tuple[int, str, Decimal, Decimal]] = ()) -> None:
        self._orders: dict[int, tuple[str, Decimal, Decimal]] = {}  # id -> side, price, remaining
        self._levels: Levels = {side: {} for side in SIDES}
        for order_id, side, price, remaining in open_orders:
            self._add(order_id, side, price, remaining)

    def _add(self, order_id: int, side: str, price: Decimal, remaining: Decimal) -> None:
        self._orders[order_id] = (side, price, remaining)
        level = self._levels[side]
        level[price] = EXACT.add(level.get(price, Decimal(0)), remaining)

    def _remove(self, order_id: int) -> tuple[str, Decimal] | None:
        found = self._orders.pop(order_id, None)
        if found is None:
            return None
        side, price, remaining = found
        level = self._levels[side]
        left = EXACT.subtract(level[price], remaining)
        if left:
            level[price] = left
        else:
            del level[price]
        return side, price

    def apply(self, orders: Iterable[dict[str, Any]]) -> Levels:
        """Apply one event's orders; the new quantity of every level they touched (0: gone)."""
        touched: set[tuple[str, Decimal]] = set()
        for order in orders:
            previous = self._remove(int(order["id"]))
            if previous is not None:
                touched.add(previous)
            if order["status"] in OPEN_STATUSES and order.get("price") is not None:
                price = Decimal(order["price"])
                remaining = EXACT.subtract(
                    Decimal(order["quantity"]), Decimal(order["filled_quantity"])
                )
                if remaining > 0:
                    self._add(int(order["id"]), order["side"], price, remaining)
                    touched.add((order["side"], price))
        delta: Levels = {side: {} for side in SIDES}
        for side, price in touched:
            delta[side][price] = self._levels[side].get(price, Decimal(0))
        return delta

    def levels(self) -> Levels:
        return {side: dict(level) for side, level in self._levels.items()}


def sorted_levels(levels: Levels) -> tuple[list[tuple[Decimal, Decimal]], ...]:
    """Bids best (highest) first, asks best (lowest) first."""
    bids = sorted(levels["buy"].items(), key=lambda item: item[0], reverse=True)
    asks = sorted(levels["sell"].items(), key=lambda item: item[0])
    return bids, asks
