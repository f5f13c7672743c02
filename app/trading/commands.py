"""Commands to the matching engine and their results, shared by the database engine
(`app.trading.engine`) and the reference model (`app.trading.model`), so both are compared on
the same values. The rules are in docs/trading.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact
from typing import Literal

# A decimal of the API has up to 40 digits each side of the point: more than the default
# context's 28 significant digits. Arithmetic on quantities is exact, or an error.
EXACT = Context(prec=100, traps=[Inexact])

SIDES = ("buy", "sell")
ORDER_TYPES = ("limit", "market")
TIMES_IN_FORCE = ("GTC", "IOC", "FOK")
SELF_TRADE_PREVENTIONS = ("cancel_newest", "cancel_oldest", "cancel_both", "decrement")
OPEN_STATUSES = ("new", "partially_filled")

# Prices and quantities stay below this bound, so price x quantity stays below the ledger's 10^24.
PRICE_QUANTITY_LIMIT = Decimal(10) ** 12
CLIENT_ORDER_ID_LENGTH_MAX = 64
# BASE-QUOTE of two asset codes, as trading.instrument's CHECK holds it.
SYMBOL_PATTERN = r"^[A-Z][A-Z0-9]{1,15}-[A-Z][A-Z0-9]{1,15}$"
BATCH_SIZE_MAX = 1000


@dataclass(frozen=True)
class Instrument:
    symbol: str
    base: str
    quote: str
    base_scale: int
    quote_scale: int
    tick_size: Decimal
    lot_size: Decimal
    min_quantity: Decimal
    min_notional: Decimal
    maker_fee_rate: Decimal
    taker_fee_rate: Decimal
    status: Literal["trading", "halted"] = "trading"


@dataclass(frozen=True)
class Place:
    account: int
    client_order_id: str
    side: str
    type: str
    quantity: Decimal
    price: Decimal | None = None
    time_in_force: str | None = None  # None: GTC for a limit order, IOC for a market order
    post_only: bool = False
    self_trade_prevention: str = "cancel_newest"

    @property
    def time_in_force_or_default(self) -> str:
        if self.time_in_force is not None:
            return self.time_in_force
        return "IOC" if self.type == "market" else "GTC"


@dataclass(frozen=True)
class Cancel:
    account: int
    client_order_id: str


@dataclass(frozen=True)
class Amend:
    account: int
    client_order_id: str
    quantity: Decimal | None = None
    price: Decimal | None = None


@dataclass(frozen=True)
class CancelAll:
    account: int


Command = Place | Cancel | Amend | CancelAll


@dataclass(frozen=True)
class Order:
    account: int
    client_order_id: str
    side: str
    type: str
    price: Decimal | None
    quantity: Decimal
    filled_quantity: Decimal
    status: str
    reason: str | None
    time_in_force: str
    post_only: bool
    self_trade_prevention: str
    priority: int  # the seq of the command that placed it or last took its priority away
    id: int | None = field(default=None, compare=False)  # the database's id; the model has none
    created_at: str | None = field(default=None, compare=False)  # ISO 8601, from the database

    @property
    def remaining_quantity(self) -> Decimal:
        return EXACT.subtract(self.quantity, self.filled_quantity)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True)
class Trade:
    seq: int  # the seq of the command that made it
    price: Decimal
    quantity: Decimal
    taker_side: str
    # A side that is not the acting tenant's shows no account, client order id or fee (None).
    maker_account: int | None
    maker_client_order_id: str | None
    taker_account: int | None
    taker_client_order_id: str | None
    maker_fee: Decimal | None  # in the asset the maker receives
    taker_fee: Decimal | None  # in the asset the taker receives
    id: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Result:
    """One command's outcome. A refused command has `code` and nothing else."""

    code: str | None = None
    message: str = ""
    order: Order | None = None  # the order placed, amended or canceled
    # Every order the command changed, sorted by (account, client_order_id).
    orders: tuple[Order, ...] = ()
    trades: tuple[Trade, ...] = ()  # in the order they happened; for a replay, the order's trades
    seq: int | None = None  # None when nothing changed
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.code is None
