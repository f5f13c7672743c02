"""The matching engine in plain Python: no I/O, no clock, no randomness.

It is the readable reference for docs/trading.md: property tests run the same commands through
it and through the database and demand the same results, orders, trades, books and balances.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from decimal import ROUND_CEILING, Decimal, localcontext

from app.trading.commands import (
    CLIENT_ORDER_ID_LENGTH_MAX,
    ORDER_TYPES,
    PRICE_QUANTITY_LIMIT,
    SELF_TRADE_PREVENTIONS,
    SIDES,
    TIMES_IN_FORCE,
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

OrderKey = tuple[int, str]  # (account, client_order_id): unique across all instruments

# Amounts stay below 10^24 with at most 18 decimals: at this precision no sum or product of
# them is ever rounded, so only the fees' explicit rounding up is inexact.
PRECISION = 200
ZERO = Decimal(0)
SELF_TRADE = "self_trade_prevention"


class _Refused(Exception):
    """An error result: the command is undone entirely."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


@dataclass
class _State:
    """Everything a command can change. Its values are immutable, so a copy of the tables is a
    snapshot: a command that is refused (or a FOK that is killed) puts the snapshot back."""

    seqs: dict[str, int]
    balances: dict[tuple[int, str], tuple[Decimal, Decimal]]  # (available, held)
    fees: dict[tuple[str, str], Decimal]  # (symbol, asset): the instrument's fee account
    orders: dict[OrderKey, Order]
    placed: dict[OrderKey, tuple[str, Place]]  # the instrument and the command that placed it
    trades: dict[OrderKey, tuple[Trade, ...]]  # every trade of the order, maker or taker
    resting: dict[OrderKey, str]  # the open orders, with their instrument

    def copy(self) -> _State:
        return _State(**{field.name: dict(getattr(self, field.name)) for field in fields(self)})


class Exchange:
    def __init__(self) -> None:
        self._instruments: dict[str, Instrument] = {}
        self._accounts: set[int] = set()
        self._state = _State({}, {}, {}, {}, {}, {}, {})

    # Setup: what the ledger and `exchange instrument` provide, outside the commands.

    def add_instrument(self, instrument: Instrument) -> None:
        if instrument.symbol in self._instruments:
            raise ValueError(f"instrument {instrument.symbol} exists")
        with localcontext(prec=PRECISION):
            _check_instrument(instrument)
        self._instruments[instrument.symbol] = instrument
        self._state.seqs[instrument.symbol] = 0

    def set_status(self, symbol: str, status: str) -> None:
        if status not in ("trading", "halted"):
            raise ValueError(f"unknown instrument status {status!r}")
        self._instruments[symbol] = replace(self._instruments[symbol], status=status)

    def open_account(self, account: int) -> None:
        self._accounts.add(account)

    def deposit(self, account: int, asset: str, amount: Decimal) -> None:
        if account not in self._accounts:
            raise ValueError(f"unknown account {account}")
        if not amount > 0:
            raise ValueError("a deposit is positive")
        with localcontext(prec=PRECISION):
            self._add(account, asset, available=amount)

    # Commands

    def execute(self, symbol: str, command: Command) -> Result:
        instrument = self._instruments[symbol]
        before = self._state.copy()
        try:
            with localcontext(prec=PRECISION):
                result = self._run(instrument, command)
        except _Refused as refusal:
            self._state = before
            return Result(code=refusal.code, message=refusal.message)
        if result.seq is None:
            return result
        return replace(result, orders=self._changed_since(before))

    def _run(self, instrument: Instrument, command: Command) -> Result:
        match command:
            case Place():
                return self._place(instrument, command)
            case Amend():
                return self._amend(instrument, command)
            case Cancel():
                return self._cancel_one(instrument, command)
            case CancelAll():
                return self._cancel_all(instrument, command)
        raise TypeError(f"not a command: {command!r}")

    # Queries

    def book(self, symbol: str) -> tuple[list[Order], list[Order]]:
        """(bids, asks), each best first."""
        resting = self._resting(symbol)
        bids = sorted((order for order in resting if order.side == "buy"), key=_book_position)
        asks = sorted((order for order in resting if order.side == "sell"), key=_book_position)
        return bids, asks

    def balance(self, account: int, asset: str) -> tuple[Decimal, Decimal]:
        """(available, held)."""
        return self._state.balances.get((account, asset), (ZERO, ZERO))

    def balances(self) -> dict[tuple[int, str], tuple[Decimal, Decimal]]:
        """Every (account, asset) whose available or held is not zero."""
        return {key: value for key, value in self._state.balances.items() if value != (0, 0)}

    def fees(self, symbol: str) -> dict[str, Decimal]:
        """The instrument's fee revenue per asset (assets with none are left out)."""
        return {
            asset: amount
            for (fee_symbol, asset), amount in self._state.fees.items()
            if fee_symbol == symbol and amount != 0
        }

    def order(self, account: int, client_order_id: str) -> Order | None:
        return self._state.orders.get((account, client_order_id))

    def seq(self, symbol: str) -> int:
        return self._state.seqs[symbol]

    # place

    def _place(self, instrument: Instrument, command: Place) -> Result:
        _check_client_order_id(command.client_order_id)
        key = (command.account, command.client_order_id)
        if key in self._state.placed:
            return self._replay(instrument, command)
        if command.account not in self._accounts:
            raise _Refused("unknown_account", f"no account {command.account}")
        _check_trading(instrument)
        _check_shape(command)
        if command.type == "limit":
            _check_price(instrument, command.price)
        _check_quantity(instrument, command.quantity)
        _check_minimums(instrument, command.price, command.quantity)

        seq = self._next_seq(instrument.symbol)
        order = _new_order(command, seq)
        asset = _reserved_asset(instrument, order.side)
        self._require_available(order.account, asset, _reservation(order))
        if order.post_only and self._would_take(instrument.symbol, order):
            rejected = replace(order, status="rejected", reason="post_only_would_take")
            self._create(instrument, command, rejected)
            return Result(order=rejected, seq=seq)

        before_walk = self._state.copy()  # a FOK that does not fill leaves only itself behind
        self._create(instrument, command, order)
        trades = self._walk(instrument, key, seq)
        self._expire_remainder(instrument, key)
        taker = self._state.orders[key]
        if order.time_in_force == "FOK" and not _filled_as_requested(taker, order.quantity):
            self._state = before_walk
            killed = replace(order, status="expired", reason="fok_not_filled")
            self._create(instrument, command, killed)
            return Result(order=killed, seq=seq)
        return Result(order=taker, trades=tuple(trades), seq=seq)

    def _replay(self, instrument: Instrument, command: Place) -> Result:
        """A retried place gets the order as it is now, if it asks for exactly the same."""
        key = (command.account, command.client_order_id)
        symbol, original = self._state.placed[key]
        if (symbol, _request(original)) != (instrument.symbol, _request(command)):
            raise _Refused(
                "duplicate_client_order_id",
                f"client_order_id {command.client_order_id!r} names another order",
            )
        order = self._state.orders[key]
        return Result(order=order, orders=(order,), trades=self._state.trades[key], replayed=True)

    def _create(self, instrument: Instrument, command: Place, order: Order) -> None:
        key = _key(order)
        self._state.placed[key] = (instrument.symbol, command)
        self._state.trades[key] = ()
        self._apply(instrument, order)

    def _expire_remainder(self, instrument: Instrument, key: OrderKey) -> None:
        """Only a GTC order rests: what an IOC, FOK or market order did not fill expires."""
        taker = self._state.orders[key]
        if taker.is_open and taker.time_in_force != "GTC":
            self._apply(instrument, replace(taker, status="expired", reason="unfilled_remainder"))

    # amend

    def _amend(self, instrument: Instrument, command: Amend) -> Result:
        order = self._own_order(instrument, command.account, command.client_order_id)
        if not order.is_open:
            raise _Refused("order_not_open", f"the order is {order.status}")
        _check_trading(instrument)
        price = order.price if command.price is None else command.price
        quantity = order.quantity if command.quantity is None else command.quantity
        _check_price(instrument, price)
        _check_quantity(instrument, quantity)
        if quantity <= order.filled_quantity:
            raise _Refused("invalid_quantity", "the quantity must stay above the filled quantity")
        _check_minimums(instrument, price, quantity)
        if price == order.price and quantity == order.quantity:
            return Result(order=order)

        seq = self._next_seq(instrument.symbol)
        key = _key(order)
        if price == order.price and quantity < order.quantity:
            self._apply(instrument, replace(order, quantity=quantity))
            return Result(order=self._state.orders[key], seq=seq)

        amended = replace(order, price=price, quantity=quantity, priority=seq)
        # Checked before funds: a post-only amend that would trade is refused whatever it holds.
        if amended.post_only and self._would_take(instrument.symbol, amended):
            raise _Refused("post_only_would_take", "the amended post-only order would trade")
        self._apply(instrument, amended)
        trades = self._walk(instrument, key, seq)
        return Result(order=self._state.orders[key], trades=tuple(trades), seq=seq)

    # cancel, cancel_all

    def _cancel_one(self, instrument: Instrument, command: Cancel) -> Result:
        order = self._own_order(instrument, command.account, command.client_order_id)
        if order.status == "canceled":
            return Result(order=order)  # a retried cancel gets its first answer
        if not order.is_open:
            raise _Refused("order_not_open", f"the order is {order.status}")
        seq = self._next_seq(instrument.symbol)
        self._cancel(instrument, order, "canceled_by_owner")
        return Result(order=self._state.orders[_key(order)], seq=seq)

    def _cancel_all(self, instrument: Instrument, command: CancelAll) -> Result:
        mine = [
            order for order in self._resting(instrument.symbol) if order.account == command.account
        ]
        if not mine:
            return Result()
        seq = self._next_seq(instrument.symbol)
        for order in sorted(mine, key=lambda order: order.priority):
            self._cancel(instrument, order, "canceled_by_cancel_all")
        return Result(seq=seq)

    def _own_order(self, instrument: Instrument, account: int, client_order_id: str) -> Order:
        key = (account, client_order_id)
        placed = self._state.placed.get(key)
        if placed is None or placed[0] != instrument.symbol:
            raise _Refused("unknown_order", f"account {account} has no order {client_order_id!r}")
        return self._state.orders[key]

    # Matching

    def _walk(self, instrument: Instrument, key: OrderKey, seq: int) -> list[Trade]:
        """Matches the order `key` as the taker against the opposite side, best order first."""
        trades = []
        while (taker := self._state.orders[key]).is_open:
            maker = self._best(instrument.symbol, _opposite(taker.side))
            if maker is None or not _crosses(taker, maker.price):
                break
            if maker.account == taker.account:
                self._prevent_self_trade(instrument, taker, maker)
            else:
                trades.append(self._trade(instrument, taker, maker, seq))
        return trades

    def _would_take(self, symbol: str, order: Order) -> bool:
        best = self._best(symbol, _opposite(order.side))
        return best is not None and _crosses(order, best.price)

    def _prevent_self_trade(self, instrument: Instrument, taker: Order, maker: Order) -> None:
        """Matching stops once the taker is canceled: the walk only goes on with an open taker."""
        mode = taker.self_trade_prevention
        if mode == "decrement":
            decrement = min(taker.remaining_quantity, maker.remaining_quantity)
            for order in (taker, maker):
                if order.remaining_quantity == decrement:
                    self._cancel(instrument, order, SELF_TRADE)
                else:
                    self._apply(instrument, replace(order, quantity=order.quantity - decrement))
            return
        if mode in ("cancel_oldest", "cancel_both"):
            self._cancel(instrument, maker, SELF_TRADE)
        if mode in ("cancel_newest", "cancel_both"):
            self._cancel(instrument, taker, SELF_TRADE)

    def _trade(self, instrument: Instrument, taker: Order, maker: Order, seq: int) -> Trade:
        quantity = min(taker.remaining_quantity, maker.remaining_quantity)
        price = maker.price
        taker_buys = taker.side == "buy"
        buyer, seller = (taker, maker) if taker_buys else (maker, taker)
        buyer_rate, seller_rate = (
            (instrument.taker_fee_rate, instrument.maker_fee_rate)
            if taker_buys
            else (instrument.maker_fee_rate, instrument.taker_fee_rate)
        )
        buyer_fee = _round_up(quantity * buyer_rate, instrument.base_scale)
        seller_fee = _round_up(price * quantity * seller_rate, instrument.quote_scale)
        self._settle(instrument, buyer, seller, price, quantity, buyer_fee, seller_fee)

        self._save(instrument, _after_fill(taker, quantity))
        self._save(instrument, _after_fill(maker, quantity))
        trade = Trade(
            seq=seq,
            price=price,
            quantity=quantity,
            taker_side=taker.side,
            maker_account=maker.account,
            maker_client_order_id=maker.client_order_id,
            taker_account=taker.account,
            taker_client_order_id=taker.client_order_id,
            maker_fee=seller_fee if taker_buys else buyer_fee,
            taker_fee=buyer_fee if taker_buys else seller_fee,
        )
        for order in (maker, taker):
            self._state.trades[_key(order)] += (trade,)
        return trade

    def _settle(
        self,
        instrument: Instrument,
        buyer: Order,
        seller: Order,
        price: Decimal,
        quantity: Decimal,
        buyer_fee: Decimal,
        seller_fee: Decimal,
    ) -> None:
        cost = price * quantity
        if buyer.type == "market":
            # A market buy holds nothing: each fill is paid from available, or the whole
            # command is refused.
            self._require_available(buyer.account, instrument.quote, cost)
            self._add(buyer.account, instrument.quote, available=-cost)
        else:
            # limit * quantity leaves held; the price improvement goes back to available.
            self._add(
                buyer.account,
                instrument.quote,
                available=(buyer.price - price) * quantity,
                held=-buyer.price * quantity,
            )
        self._add(seller.account, instrument.base, held=-quantity)
        self._add(buyer.account, instrument.base, available=quantity - buyer_fee)
        self._add(seller.account, instrument.quote, available=cost - seller_fee)
        self._collect_fee(instrument.symbol, instrument.base, buyer_fee)
        self._collect_fee(instrument.symbol, instrument.quote, seller_fee)

    # Orders and their reservations

    def _cancel(self, instrument: Instrument, order: Order, reason: str) -> None:
        self._apply(instrument, replace(order, status="canceled", reason=reason))

    def _apply(self, instrument: Instrument, order: Order) -> None:
        """Saves the order, moving its account's held by the change of the order's reservation
        (an increase must be available)."""
        previous = self._state.orders.get(_key(order))
        increase = _reservation(order) - (ZERO if previous is None else _reservation(previous))
        asset = _reserved_asset(instrument, order.side)
        self._require_available(order.account, asset, increase)
        self._add(order.account, asset, available=-increase, held=increase)
        self._save(instrument, order)

    def _save(self, instrument: Instrument, order: Order) -> None:
        key = _key(order)
        self._state.orders[key] = order
        if order.is_open:
            self._state.resting[key] = instrument.symbol
        else:
            self._state.resting.pop(key, None)

    def _resting(self, symbol: str) -> list[Order]:
        return [
            self._state.orders[key]
            for key, resting_symbol in self._state.resting.items()
            if resting_symbol == symbol
        ]

    def _best(self, symbol: str, side: str) -> Order | None:
        return min(
            (order for order in self._resting(symbol) if order.side == side),
            key=_book_position,
            default=None,
        )

    def _changed_since(self, before: _State) -> tuple[Order, ...]:
        # Orders are immutable and replaced only when they change.
        changed = [
            order
            for key, order in self._state.orders.items()
            if before.orders.get(key) is not order
        ]
        return tuple(sorted(changed, key=_key))

    def _next_seq(self, symbol: str) -> int:
        self._state.seqs[symbol] += 1
        return self._state.seqs[symbol]

    # Balances

    def _require_available(self, account: int, asset: str, amount: Decimal) -> None:
        if self.balance(account, asset)[0] < amount:
            raise _Refused("insufficient_funds", f"account {account} lacks {amount} {asset}")

    def _add(
        self, account: int, asset: str, available: Decimal = ZERO, held: Decimal = ZERO
    ) -> None:
        current_available, current_held = self.balance(account, asset)
        self._state.balances[(account, asset)] = (
            current_available + available,
            current_held + held,
        )

    def _collect_fee(self, symbol: str, asset: str, amount: Decimal) -> None:
        self._state.fees[(symbol, asset)] = self._state.fees.get((symbol, asset), ZERO) + amount


# Validation


def _check_instrument(instrument: Instrument) -> None:
    """What `exchange instrument create` refuses: parameters that would make an amount inexact."""
    exact = (
        instrument.tick_size > 0
        and instrument.lot_size > 0
        and instrument.min_quantity >= 0
        and instrument.min_notional >= 0
        and _fits_scale(instrument.lot_size, instrument.base_scale)
        and _fits_scale(instrument.tick_size * instrument.lot_size, instrument.quote_scale)
        and 0 <= instrument.maker_fee_rate < 1
        and 0 <= instrument.taker_fee_rate < 1
    )
    if not exact:
        raise ValueError(f"instrument {instrument.symbol}: inexact parameters")


def _check_client_order_id(client_order_id: str) -> None:
    if not (
        1 <= len(client_order_id) <= CLIENT_ORDER_ID_LENGTH_MAX
        and all("\x21" <= char <= "\x7e" for char in client_order_id)
    ):
        raise _Refused("invalid_order", "client_order_id: 1 to 64 printable ASCII characters")


def _check_trading(instrument: Instrument) -> None:
    if instrument.status == "halted":
        raise _Refused("instrument_halted", f"{instrument.symbol} is halted")


def _check_shape(command: Place) -> None:
    time_in_force = command.time_in_force_or_default
    valid = (
        command.side in SIDES
        and command.type in ORDER_TYPES
        and time_in_force in TIMES_IN_FORCE
        and command.self_trade_prevention in SELF_TRADE_PREVENTIONS
        and (command.price is None) == (command.type == "market")
        and not (command.type == "market" and time_in_force == "GTC")
        and not (command.post_only and (command.type, time_in_force) != ("limit", "GTC"))
    )
    if not valid:
        raise _Refused("invalid_order", "invalid combination of side, type, price and options")


def _check_price(instrument: Instrument, price: Decimal) -> None:
    if not _in_steps(price, instrument.tick_size):
        raise _Refused(
            "invalid_tick_size", f"price must be a positive multiple of {instrument.tick_size}"
        )


def _check_quantity(instrument: Instrument, quantity: Decimal) -> None:
    if not _in_steps(quantity, instrument.lot_size):
        raise _Refused(
            "invalid_lot_size", f"quantity must be a positive multiple of {instrument.lot_size}"
        )


def _check_minimums(instrument: Instrument, price: Decimal | None, quantity: Decimal) -> None:
    if quantity < instrument.min_quantity:
        raise _Refused("below_min_quantity", f"quantity below {instrument.min_quantity}")
    if price is not None and price * quantity < instrument.min_notional:
        raise _Refused("below_min_notional", f"price * quantity below {instrument.min_notional}")


def _in_steps(amount: Decimal, step: Decimal) -> bool:
    return amount.is_finite() and 0 < amount < PRICE_QUANTITY_LIMIT and amount % step == 0


def _fits_scale(amount: Decimal, scale: int) -> bool:
    return amount % Decimal(1).scaleb(-scale) == 0


def _request(command: Place) -> tuple:
    """What a retried place must repeat exactly (numbers compared by value)."""
    return (
        command.side,
        command.type,
        command.price,
        command.quantity,
        command.time_in_force_or_default,
        command.post_only,
        command.self_trade_prevention,
    )


# Orders


def _new_order(command: Place, seq: int) -> Order:
    return Order(
        account=command.account,
        client_order_id=command.client_order_id,
        side=command.side,
        type=command.type,
        price=command.price,
        quantity=command.quantity,
        filled_quantity=ZERO,
        status="new",
        reason=None,
        time_in_force=command.time_in_force_or_default,
        post_only=command.post_only,
        self_trade_prevention=command.self_trade_prevention,
        priority=seq,
    )


def _key(order: Order) -> OrderKey:
    return (order.account, order.client_order_id)


def _opposite(side: str) -> str:
    return "sell" if side == "buy" else "buy"


def _book_position(order: Order) -> tuple[Decimal, int]:
    """Best first: bids by price descending, asks ascending, then by priority."""
    return (-order.price if order.side == "buy" else order.price, order.priority)


def _crosses(taker: Order, price: Decimal) -> bool:
    if taker.type == "market":
        return True
    return price <= taker.price if taker.side == "buy" else price >= taker.price


def _after_fill(order: Order, quantity: Decimal) -> Order:
    filled = order.filled_quantity + quantity
    return replace(
        order,
        filled_quantity=filled,
        status="filled" if filled == order.quantity else "partially_filled",
    )


def _filled_as_requested(order: Order, requested: Decimal) -> bool:
    # A decrement can lower the quantity: filling the lowered quantity does not fill a FOK.
    return order.status == "filled" and order.filled_quantity == requested


def _reservation(order: Order) -> Decimal:
    """What an order holds: buy price * remaining (a market buy: nothing), sell remaining."""
    if not order.is_open:
        return ZERO
    if order.side == "sell":
        return order.remaining_quantity
    if order.type == "market":
        return ZERO
    return order.price * order.remaining_quantity


def _reserved_asset(instrument: Instrument, side: str) -> str:
    return instrument.quote if side == "buy" else instrument.base


def _round_up(amount: Decimal, scale: int) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_CEILING)
