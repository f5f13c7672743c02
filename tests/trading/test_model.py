"""The reference model of the matching engine follows docs/trading.md, rule by rule."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.trading.commands import (
    Amend,
    Cancel,
    CancelAll,
    Command,
    Instrument,
    Order,
    Place,
    Result,
)
from app.trading.model import Exchange

D = Decimal
SYMBOL = "BTC-USD"
OTHER_SYMBOL = "ETH-USD"
ACCOUNTS = (1, 2, 3)
USD = D(10_000)
BTC = D(100)
ETH = D(100)

BTC_USD = Instrument(
    symbol=SYMBOL,
    base="BTC",
    quote="USD",
    base_scale=8,
    quote_scale=2,
    tick_size=D("0.5"),
    lot_size=D("0.1"),
    min_quantity=D("0.2"),
    min_notional=D(1),
    maker_fee_rate=D(0),
    taker_fee_rate=D(0),
)
ETH_USD = replace(BTC_USD, symbol=OTHER_SYMBOL, base="ETH")


def make_exchange(**instrument_changes: object) -> Exchange:
    exchange = Exchange()
    exchange.add_instrument(replace(BTC_USD, **instrument_changes))
    exchange.add_instrument(ETH_USD)
    for account in ACCOUNTS:
        exchange.open_account(account)
        exchange.deposit(account, "USD", USD)
        exchange.deposit(account, "BTC", BTC)
        exchange.deposit(account, "ETH", ETH)
    return exchange


@pytest.fixture
def ex() -> Exchange:
    return make_exchange()


def limit(account: int, coid: str, side: str, quantity: str, price: str, **options) -> Place:
    return Place(account, coid, side, "limit", D(quantity), D(price), **options)


def market(account: int, coid: str, side: str, quantity: str, **options) -> Place:
    return Place(account, coid, side, "market", D(quantity), **options)


def run(ex: Exchange, command: Command, symbol: str = SYMBOL) -> Result:
    return ex.execute(symbol, command)


def ok(ex: Exchange, command: Command, symbol: str = SYMBOL) -> Result:
    result = ex.execute(symbol, command)
    assert result.ok, result
    return result


def snapshot(ex: Exchange) -> tuple:
    return (
        ex.book(SYMBOL),
        ex.book(OTHER_SYMBOL),
        ex.balances(),
        ex.fees(SYMBOL),
        ex.seq(SYMBOL),
        ex.seq(OTHER_SYMBOL),
    )


def refused(ex: Exchange, command: Command, code: str, symbol: str = SYMBOL) -> None:
    """The command is an error that left everything as it was."""
    before = snapshot(ex)
    result = ex.execute(symbol, command)
    assert (result.code, result.order, result.orders, result.trades, result.seq) == (
        code,
        None,
        (),
        (),
        None,
    )
    assert snapshot(ex) == before


def status(ex: Exchange, account: int, coid: str) -> tuple[str, str | None]:
    order = ex.order(account, coid)
    assert order is not None
    return order.status, order.reason


def ids(orders: Iterable[Order]) -> list[str]:
    return [order.client_order_id for order in orders]


# Validation of place, step by step


@pytest.mark.parametrize("coid", ["", "x" * 65, "a b", "é", "tab\t", "\x7f"])
def test_client_order_id_must_be_1_to_64_printable_ascii(ex: Exchange, coid: str) -> None:
    refused(ex, limit(1, coid, "buy", "1", "100"), "invalid_order")


def test_client_order_id_of_64_printable_characters_is_accepted(ex: Exchange) -> None:
    ok(ex, limit(1, "!" + "~" * 63, "buy", "1", "100"))


def test_client_order_id_is_checked_before_the_account(ex: Exchange) -> None:
    refused(ex, limit(99, "", "buy", "1", "100"), "invalid_order")


def test_retried_place_replays_the_order_as_it_is_now_with_its_fills(ex: Exchange) -> None:
    first = ok(ex, limit(1, "a", "sell", "3", "100"))
    trade = ok(ex, limit(2, "b", "buy", "1", "100")).trades[0]
    before = snapshot(ex)

    replay = ok(ex, limit(1, "a", "sell", "3", "100"))

    now = ex.order(1, "a")
    assert now is not None and now.filled_quantity == 1 and now != first.order
    assert replay == Result(order=now, orders=(now,), trades=(trade,), replayed=True)
    assert snapshot(ex) == before


def test_replay_comes_before_every_other_check(ex: Exchange) -> None:
    placed = ok(ex, limit(1, "a", "buy", "1", "100")).order
    ex.set_status(SYMBOL, "halted")

    assert ok(ex, limit(1, "a", "buy", "1", "100")).order == placed


def test_replay_compares_the_requested_quantity_not_the_amended_one(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "2", "100"))
    ok(ex, Amend(1, "a", quantity=D(1)))

    assert ok(ex, limit(1, "a", "buy", "2", "100")).replayed
    refused(ex, limit(1, "a", "buy", "1", "100"), "duplicate_client_order_id")


def test_replay_compares_numbers_by_value_and_the_defaulted_time_in_force(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "1", "100"))

    assert ok(ex, limit(1, "a", "buy", "1.00", "100.0", time_in_force="GTC")).replayed


def test_replay_of_a_maker_lists_its_trades_in_sequence_order(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "sell", "3", "100"))
    first = ok(ex, limit(2, "b", "buy", "1", "100")).trades
    second = ok(ex, limit(3, "c", "buy", "1", "100")).trades

    assert ok(ex, limit(1, "a", "sell", "3", "100")).trades == first + second


@pytest.mark.parametrize(
    "changes",
    [
        {"side": "sell"},
        {"type": "market", "price": None, "time_in_force": "IOC"},
        {"price": D("100.5")},
        {"quantity": D(2)},
        {"time_in_force": "IOC"},
        {"post_only": True},
        {"self_trade_prevention": "decrement"},
    ],
)
def test_same_client_order_id_with_other_parameters_is_a_duplicate(
    ex: Exchange, changes: dict
) -> None:
    original = limit(1, "a", "buy", "1", "100")
    ok(ex, original)

    refused(ex, replace(original, **changes), "duplicate_client_order_id")


def test_client_order_id_is_unique_per_account_across_instruments(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "1", "100"))

    refused(ex, limit(1, "a", "buy", "1", "100"), "duplicate_client_order_id", OTHER_SYMBOL)


def test_another_account_may_use_the_same_client_order_id(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "1", "100"))

    assert not ok(ex, limit(2, "a", "buy", "1", "100")).replayed


def test_unknown_account(ex: Exchange) -> None:
    refused(ex, limit(99, "a", "buy", "1", "100"), "unknown_account")


def test_unknown_account_is_checked_before_the_halt(ex: Exchange) -> None:
    ex.set_status(SYMBOL, "halted")

    refused(ex, limit(99, "a", "buy", "1", "100"), "unknown_account")


def test_halted_instrument_refuses_orders_until_resumed(ex: Exchange) -> None:
    ex.set_status(SYMBOL, "halted")
    refused(ex, limit(1, "a", "buy", "1", "100"), "instrument_halted")

    ex.set_status(SYMBOL, "trading")
    ok(ex, limit(1, "a", "buy", "1", "100"))


def test_halt_is_checked_before_the_shape(ex: Exchange) -> None:
    ex.set_status(SYMBOL, "halted")

    refused(ex, limit(1, "a", "up", "1", "100"), "instrument_halted")


@pytest.mark.parametrize(
    "command",
    [
        limit(1, "a", "up", "1", "100"),
        Place(1, "a", "buy", "stop", D(1), D(100)),
        limit(1, "a", "buy", "1", "100", time_in_force="GTD"),
        limit(1, "a", "buy", "1", "100", self_trade_prevention="allow"),
        Place(1, "a", "buy", "limit", D(1)),
        Place(1, "a", "buy", "market", D(1), D(100)),
        market(1, "a", "buy", "1", time_in_force="GTC"),
        market(1, "a", "buy", "1", post_only=True),
        limit(1, "a", "buy", "1", "100", time_in_force="IOC", post_only=True),
        limit(1, "a", "buy", "1", "100", time_in_force="FOK", post_only=True),
    ],
    ids=[
        "side",
        "type",
        "time_in_force",
        "self_trade_prevention",
        "limit_without_price",
        "market_with_price",
        "market_gtc",
        "market_post_only",
        "post_only_ioc",
        "post_only_fok",
    ],
)
def test_shape_errors_are_invalid_order(ex: Exchange, command: Place) -> None:
    refused(ex, command, "invalid_order")


def test_shape_is_checked_before_the_price(ex: Exchange) -> None:
    refused(ex, Place(1, "a", "buy", "market", D(1), D("0.3")), "invalid_order")


@pytest.mark.parametrize("price", ["0", "-1", "0.3", "1000000000000000", "NaN", "Infinity"])
def test_price_must_be_positive_below_10_15_and_on_tick(ex: Exchange, price: str) -> None:
    refused(ex, limit(1, "a", "buy", "1", price), "invalid_tick_size")


def test_price_is_checked_before_the_quantity(ex: Exchange) -> None:
    refused(ex, limit(1, "a", "buy", "0.05", "0.3"), "invalid_tick_size")


@pytest.mark.parametrize("quantity", ["0", "-1", "0.25", "1000000000000000", "NaN"])
def test_quantity_must_be_positive_below_10_15_and_on_lot(ex: Exchange, quantity: str) -> None:
    refused(ex, limit(1, "a", "buy", quantity, "100"), "invalid_lot_size")


def test_market_order_quantity_is_checked_too(ex: Exchange) -> None:
    refused(ex, market(1, "a", "buy", "0.25"), "invalid_lot_size")


def test_quantity_is_checked_before_the_minimum_quantity(ex: Exchange) -> None:
    refused(ex, limit(1, "a", "buy", "0.05", "100"), "invalid_lot_size")


def test_below_min_quantity(ex: Exchange) -> None:
    refused(ex, limit(1, "a", "buy", "0.1", "100"), "below_min_quantity")


def test_min_quantity_is_checked_before_the_min_notional(ex: Exchange) -> None:
    refused(ex, limit(1, "a", "buy", "0.1", "0.5"), "below_min_quantity")


def test_below_min_notional(ex: Exchange) -> None:
    refused(ex, limit(1, "a", "buy", "1", "0.5"), "below_min_notional")
    ok(ex, limit(1, "b", "buy", "2", "0.5"))


def test_market_order_has_no_min_notional() -> None:
    ex = make_exchange(min_notional=D(10))
    ok(ex, limit(2, "s", "sell", "1", "10"))

    assert ok(ex, market(1, "m", "buy", "0.2")).order.status == "filled"


def test_limit_buy_needs_price_times_quantity_available(ex: Exchange) -> None:
    refused(ex, limit(1, "a", "buy", "101", "100"), "insufficient_funds")
    ok(ex, limit(1, "b", "buy", "100", "100"))


def test_sell_needs_its_quantity_available(ex: Exchange) -> None:
    refused(ex, limit(1, "a", "sell", "100.1", "100"), "insufficient_funds")
    refused(ex, market(1, "m", "sell", "100.1"), "insufficient_funds")


def test_min_notional_is_checked_before_funds() -> None:
    exchange = make_exchange(min_notional=D(10**9))

    refused(exchange, limit(1, "a", "buy", "101", "100"), "below_min_notional")


def test_post_only_with_insufficient_funds_is_an_error_not_a_rejection(ex: Exchange) -> None:
    ok(ex, limit(2, "s", "sell", "1", "100"))

    refused(ex, limit(1, "p", "buy", "101", "100", post_only=True), "insufficient_funds")


def test_funds_held_by_open_orders_are_not_available(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "60", "100"))

    refused(ex, limit(1, "b", "buy", "50", "100"), "insufficient_funds")


# Holds


def test_limit_buy_holds_price_times_quantity_of_quote(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "2", "100"))

    assert ex.balance(1, "USD") == (USD - 200, D(200))


def test_sell_holds_its_quantity_of_base(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "sell", "2", "100"))

    assert ex.balance(1, "BTC") == (BTC - 2, D(2))


def test_balance_of_an_untouched_asset_is_zero(ex: Exchange) -> None:
    assert ex.balance(1, "EUR") == (0, 0)
    assert (1, "EUR") not in ex.balances()


# Book and matching


def test_book_orders_bids_by_price_descending_asks_ascending_then_by_priority(
    ex: Exchange,
) -> None:
    for account, coid, side, price in [
        (1, "b1", "buy", "99"),
        (2, "b2", "buy", "100"),
        (3, "b3", "buy", "99"),
        (1, "a1", "sell", "102"),
        (2, "a2", "sell", "101"),
        (3, "a3", "sell", "102"),
    ]:
        ok(ex, limit(account, coid, side, "1", price))

    bids, asks = ex.book(SYMBOL)

    assert ids(bids) == ["b2", "b1", "b3"]
    assert ids(asks) == ["a2", "a1", "a3"]


def test_non_crossing_order_rests_new_with_its_seq_as_priority(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "1", "99"))

    result = ok(ex, limit(2, "b", "sell", "1", "100"))

    assert result.seq == 2
    assert result.order == Order(
        account=2,
        client_order_id="b",
        side="sell",
        type="limit",
        price=D(100),
        quantity=D(1),
        filled_quantity=D(0),
        status="new",
        reason=None,
        time_in_force="GTC",
        post_only=False,
        self_trade_prevention="cancel_newest",
        priority=2,
    )
    assert result.orders == (result.order,) and result.trades == ()


def test_fill_trades_at_the_resting_price_and_returns_the_price_improvement(
    ex: Exchange,
) -> None:
    ok(ex, limit(2, "s", "sell", "2", "100"))

    result = ok(ex, limit(1, "b", "buy", "2", "105"))

    trade = result.trades[0]
    assert (trade.price, trade.quantity, trade.taker_side, trade.seq) == (D(100), D(2), "buy", 2)
    assert (trade.maker_account, trade.maker_client_order_id) == (2, "s")
    assert (trade.taker_account, trade.taker_client_order_id) == (1, "b")
    assert ex.balance(1, "USD") == (USD - 200, 0)
    assert ex.balance(1, "BTC") == (BTC + 2, 0)
    assert ex.balance(2, "USD") == (USD + 200, 0)
    assert ex.balance(2, "BTC") == (BTC - 2, 0)
    assert [order.status for order in result.orders] == ["filled", "filled"]


def test_taker_sell_trades_at_the_bid_price(ex: Exchange) -> None:
    ok(ex, limit(2, "b", "buy", "1", "101"))

    result = ok(ex, limit(1, "s", "sell", "1", "100"))

    assert result.trades[0].price == 101
    assert ex.balance(1, "USD") == (USD + 101, 0)


def test_taker_walks_the_book_best_price_then_priority_first(ex: Exchange) -> None:
    ok(ex, limit(2, "far", "sell", "1", "102"))
    ok(ex, limit(2, "near-old", "sell", "1", "101"))
    ok(ex, limit(3, "near-new", "sell", "1", "101"))
    ok(ex, limit(3, "too-far", "sell", "1", "104"))

    result = ok(ex, limit(1, "b", "buy", "3", "103"))

    assert [t.maker_client_order_id for t in result.trades] == ["near-old", "near-new", "far"]
    assert ids(ex.book(SYMBOL)[1]) == ["too-far"]
    assert ex.balance(1, "USD") == (USD - 304, 0)


def test_partial_fill_leaves_the_maker_partially_filled_in_the_book(ex: Exchange) -> None:
    ok(ex, limit(2, "s", "sell", "3", "100"))

    ok(ex, limit(1, "b", "buy", "1", "100"))

    maker = ex.book(SYMBOL)[1][0]
    assert (maker.status, maker.filled_quantity, maker.remaining_quantity) == (
        "partially_filled",
        1,
        2,
    )
    assert ex.balance(2, "BTC") == (BTC - 3, D(2))


def test_gtc_remainder_rests_partially_filled_holding_price_times_remaining(
    ex: Exchange,
) -> None:
    ok(ex, limit(2, "s", "sell", "1", "100"))

    result = ok(ex, limit(1, "b", "buy", "3", "101"))

    assert (result.order.status, result.order.filled_quantity) == ("partially_filled", 1)
    assert ex.book(SYMBOL)[0] == [result.order]
    assert ex.balance(1, "USD") == (USD - 100 - 202, D(202))


# Fees


def test_fees_come_out_of_what_each_side_receives_at_maker_and_taker_rates() -> None:
    ex = make_exchange(maker_fee_rate=D("0.01"), taker_fee_rate=D("0.02"))
    ok(ex, limit(2, "s", "sell", "2", "100"))

    trade = ok(ex, limit(1, "b", "buy", "2", "100")).trades[0]

    assert (trade.taker_fee, trade.maker_fee) == (D("0.04"), D(2))  # BTC, USD
    assert ex.balance(1, "BTC") == (BTC + D("1.96"), 0)
    assert ex.balance(2, "USD") == (USD + 198, 0)
    assert ex.fees(SYMBOL) == {"BTC": D("0.04"), "USD": D(2)}


def test_fees_of_a_taker_sell_use_the_taker_rate_for_the_seller() -> None:
    ex = make_exchange(maker_fee_rate=D("0.01"), taker_fee_rate=D("0.02"))
    ok(ex, limit(2, "b", "buy", "2", "100"))

    trade = ok(ex, limit(1, "s", "sell", "2", "100")).trades[0]

    assert (trade.taker_fee, trade.maker_fee) == (D(4), D("0.02"))  # USD, BTC


def test_fees_are_rounded_up_to_the_asset_scale() -> None:
    ex = make_exchange(
        maker_fee_rate=D("0.0001"), taker_fee_rate=D("0.0001"), base_scale=3, min_notional=D(0)
    )
    ok(ex, limit(2, "s", "sell", "0.3", "0.5"))  # notional 0.15 USD

    trade = ok(ex, limit(1, "b", "buy", "0.3", "0.5")).trades[0]

    # 0.3 * 0.0001 = 0.00003 BTC -> 0.001; 0.15 * 0.0001 = 0.000015 USD -> 0.01
    assert (trade.taker_fee, trade.maker_fee) == (D("0.001"), D("0.01"))
    assert ex.balance(1, "BTC") == (BTC + D("0.299"), 0)
    assert ex.balance(2, "USD") == (USD + D("0.14"), 0)


def test_zero_fee_rates_collect_nothing(ex: Exchange) -> None:
    ok(ex, limit(2, "s", "sell", "1", "100"))
    ok(ex, limit(1, "b", "buy", "1", "100"))

    assert ex.fees(SYMBOL) == {}


# Self-trade prevention


def test_self_trade_is_decided_by_account_not_by_order(ex: Exchange) -> None:
    ok(ex, limit(1, "s", "sell", "1", "100"))

    result = ok(ex, limit(2, "b", "buy", "1", "100"))

    assert len(result.trades) == 1


def test_cancel_newest_cancels_the_taker_and_stops(ex: Exchange) -> None:
    ok(ex, limit(1, "own", "sell", "1", "100"))
    ok(ex, limit(2, "other", "sell", "1", "100"))

    result = ok(ex, limit(1, "b", "buy", "2", "100"))

    assert (result.order.status, result.order.reason) == ("canceled", "self_trade_prevention")
    assert result.trades == ()
    assert ids(ex.book(SYMBOL)[1]) == ["own", "other"]
    assert ex.balance(1, "USD") == (USD, 0)


def test_cancel_oldest_cancels_the_resting_order_and_goes_on(ex: Exchange) -> None:
    ok(ex, limit(1, "own", "sell", "1", "100"))
    ok(ex, limit(2, "other", "sell", "1", "100"))

    result = ok(ex, limit(1, "b", "buy", "2", "100", self_trade_prevention="cancel_oldest"))

    assert status(ex, 1, "own") == ("canceled", "self_trade_prevention")
    assert [t.maker_client_order_id for t in result.trades] == ["other"]
    assert (result.order.status, result.order.filled_quantity) == ("partially_filled", 1)
    assert ids(result.orders) == ["b", "own", "other"]
    assert ex.balance(1, "BTC") == (BTC + 1, 0)


def test_cancel_both_cancels_both_and_stops(ex: Exchange) -> None:
    ok(ex, limit(1, "own", "sell", "1", "100"))
    ok(ex, limit(2, "other", "sell", "1", "100"))

    result = ok(ex, limit(1, "b", "buy", "2", "100", self_trade_prevention="cancel_both"))

    assert status(ex, 1, "own") == ("canceled", "self_trade_prevention")
    assert status(ex, 1, "b") == ("canceled", "self_trade_prevention")
    assert result.trades == ()
    assert ids(ex.book(SYMBOL)[1]) == ["other"]
    assert ex.balance(1, "USD") == (USD, 0) and ex.balance(1, "BTC") == (BTC, 0)


def test_decrement_cancels_the_smaller_resting_order_and_reduces_the_taker(ex: Exchange) -> None:
    ok(ex, limit(1, "own", "sell", "1", "100"))
    ok(ex, limit(2, "other", "sell", "5", "100"))

    result = ok(ex, limit(1, "b", "buy", "3", "100", self_trade_prevention="decrement"))

    own = ex.order(1, "own")
    assert own is not None and (own.status, own.reason, own.quantity) == (
        "canceled",
        "self_trade_prevention",
        1,
    )
    assert (result.order.quantity, result.order.filled_quantity) == (2, 2)
    assert result.order.status == "filled"
    assert ex.balance(1, "USD") == (USD - 200, 0)
    assert ex.balance(1, "BTC") == (BTC + 2, 0)


def test_decrement_cancels_the_smaller_taker_and_reduces_the_resting_order(ex: Exchange) -> None:
    ok(ex, limit(1, "own", "sell", "5", "100"))

    result = ok(ex, limit(1, "b", "buy", "2", "100", self_trade_prevention="decrement"))

    assert (result.order.status, result.order.reason, result.order.quantity) == (
        "canceled",
        "self_trade_prevention",
        2,
    )
    own = ex.order(1, "own")
    assert own is not None and (own.status, own.quantity) == ("new", 3)
    assert ex.balance(1, "BTC") == (BTC - 3, D(3))
    assert ex.balance(1, "USD") == (USD, 0)


def test_decrement_of_equal_remainders_cancels_both(ex: Exchange) -> None:
    ok(ex, limit(1, "own", "sell", "2", "100"))

    ok(ex, limit(1, "b", "buy", "2", "100", self_trade_prevention="decrement"))

    assert status(ex, 1, "own") == ("canceled", "self_trade_prevention")
    assert status(ex, 1, "b") == ("canceled", "self_trade_prevention")
    assert ex.balances()[(1, "BTC")] == (BTC, 0)


def test_decrement_releases_the_decrement_at_the_resting_buy_price(ex: Exchange) -> None:
    ok(ex, limit(1, "own", "buy", "5", "100"))

    ok(ex, limit(1, "s", "sell", "2", "99", self_trade_prevention="decrement"))

    assert ex.balance(1, "USD") == (USD - 300, D(300))


def test_the_taker_mode_decides_not_the_resting_orders(ex: Exchange) -> None:
    ok(ex, limit(1, "own", "sell", "1", "100", self_trade_prevention="cancel_oldest"))

    result = ok(ex, limit(1, "b", "buy", "1", "100"))

    assert result.order.status == "canceled"
    assert status(ex, 1, "own") == ("new", None)


# Post-only


def test_crossing_post_only_is_rejected_holding_nothing_and_takes_a_seq(ex: Exchange) -> None:
    ok(ex, limit(2, "s", "sell", "1", "100"))

    result = ok(ex, limit(1, "p", "buy", "1", "100", post_only=True))

    assert (result.order.status, result.order.reason) == ("rejected", "post_only_would_take")
    assert (result.seq, result.order.priority, result.trades) == (2, 2, ())
    assert ex.balance(1, "USD") == (USD, 0)
    assert ids(ex.book(SYMBOL)[0]) == []


def test_post_only_crossing_an_own_order_is_rejected_too(ex: Exchange) -> None:
    ok(ex, limit(1, "s", "sell", "1", "100"))

    result = ok(ex, limit(1, "p", "buy", "1", "100", post_only=True))

    assert result.order.status == "rejected"
    assert status(ex, 1, "s") == ("new", None)


def test_post_only_that_does_not_cross_rests(ex: Exchange) -> None:
    ok(ex, limit(2, "s", "sell", "1", "100"))

    result = ok(ex, limit(1, "p", "buy", "1", "99.5", post_only=True))

    assert result.order.status == "new"


# Fill or kill


def test_fok_that_fills_completely_is_filled(ex: Exchange) -> None:
    ok(ex, limit(2, "s1", "sell", "1", "100"))
    ok(ex, limit(3, "s2", "sell", "1", "101"))

    result = ok(ex, limit(1, "f", "buy", "2", "101", time_in_force="FOK"))

    assert result.order.status == "filled" and len(result.trades) == 2


def test_fok_that_cannot_fill_completely_expires_and_changes_nothing_else(
    ex: Exchange,
) -> None:
    ok(ex, limit(2, "s1", "sell", "1", "100"))
    ok(ex, limit(3, "s2", "sell", "1", "102"))
    book, balances = ex.book(SYMBOL), ex.balances()

    result = ok(ex, limit(1, "f", "buy", "2", "101", time_in_force="FOK"))

    assert (result.order.status, result.order.reason) == ("expired", "fok_not_filled")
    assert (result.order.filled_quantity, result.trades, result.seq) == (0, (), 3)
    assert result.orders == (result.order,)
    assert (ex.book(SYMBOL), ex.balances(), ex.seq(SYMBOL)) == (book, balances, 3)


def test_killed_fok_undoes_the_self_trade_cancels(ex: Exchange) -> None:
    ok(ex, limit(1, "own", "sell", "1", "100"))
    ok(ex, limit(2, "other", "sell", "1", "100"))

    result = ok(
        ex,
        limit(
            1, "f", "buy", "3", "100", time_in_force="FOK", self_trade_prevention="cancel_oldest"
        ),
    )

    assert result.order.status == "expired"
    assert status(ex, 1, "own") == ("new", None)
    assert ids(ex.book(SYMBOL)[1]) == ["own", "other"]


def test_fok_canceled_by_self_trade_prevention_expires(ex: Exchange) -> None:
    ok(ex, limit(1, "own", "sell", "1", "100"))

    result = ok(ex, limit(1, "f", "buy", "1", "100", time_in_force="FOK"))

    assert (result.order.status, result.order.reason) == ("expired", "fok_not_filled")


def test_fok_filling_only_its_decremented_quantity_expires(ex: Exchange) -> None:
    ok(ex, limit(1, "own", "sell", "1", "100"))
    ok(ex, limit(2, "other", "sell", "5", "100"))

    result = ok(
        ex, limit(1, "f", "buy", "3", "100", time_in_force="FOK", self_trade_prevention="decrement")
    )

    assert (result.order.status, result.order.quantity) == ("expired", 3)
    assert status(ex, 1, "own") == ("new", None)


# Immediate or cancel


def test_ioc_remainder_expires_and_its_hold_is_released(ex: Exchange) -> None:
    ok(ex, limit(2, "s", "sell", "1", "100"))

    result = ok(ex, limit(1, "i", "buy", "3", "100", time_in_force="IOC"))

    assert (result.order.status, result.order.reason) == ("expired", "unfilled_remainder")
    assert result.order.filled_quantity == 1
    assert ex.balance(1, "USD") == (USD - 100, 0)
    assert ex.book(SYMBOL) == ([], [])


def test_ioc_that_fills_completely_is_filled(ex: Exchange) -> None:
    ok(ex, limit(2, "s", "sell", "3", "100"))

    result = ok(ex, limit(1, "i", "buy", "3", "100", time_in_force="IOC"))

    assert (result.order.status, result.order.reason) == ("filled", None)


def test_ioc_canceled_by_self_trade_prevention_stays_canceled(ex: Exchange) -> None:
    ok(ex, limit(1, "own", "buy", "1", "100"))

    result = ok(ex, limit(1, "i", "sell", "1", "100", time_in_force="IOC"))

    assert (result.order.status, result.order.reason) == ("canceled", "self_trade_prevention")
    assert ex.balance(1, "BTC") == (BTC, 0)


# Market orders


def test_market_buy_walks_every_price_and_pays_from_available(ex: Exchange) -> None:
    ok(ex, limit(2, "s1", "sell", "1", "100"))
    ok(ex, limit(3, "s2", "sell", "1", "5000"))

    result = ok(ex, market(1, "m", "buy", "2"))

    assert result.order.status == "filled" and result.order.time_in_force == "IOC"
    assert result.order.price is None
    assert ex.balance(1, "USD") == (USD - 5100, 0)


def test_market_buy_that_cannot_pay_every_fill_is_refused_entirely(ex: Exchange) -> None:
    ok(ex, limit(2, "s1", "sell", "1", "100"))
    ok(ex, limit(3, "s2", "sell", "1", "9950"))

    refused(ex, market(1, "m", "buy", "2"), "insufficient_funds")
    assert ex.order(1, "m") is None


def test_market_buy_funds_held_by_own_orders_do_not_pay(ex: Exchange) -> None:
    ok(ex, limit(1, "b", "buy", "99", "100"))
    ok(ex, limit(2, "s", "sell", "1", "101"))

    refused(ex, market(1, "m", "buy", "1"), "insufficient_funds")


def test_market_order_remainder_expires(ex: Exchange) -> None:
    ok(ex, limit(2, "b", "buy", "1", "100"))

    result = ok(ex, market(1, "m", "sell", "3"))

    assert (result.order.status, result.order.reason) == ("expired", "unfilled_remainder")
    assert result.order.filled_quantity == 1
    assert ex.balance(1, "BTC") == (BTC - 1, 0)


def test_market_order_on_an_empty_book_expires_unfilled(ex: Exchange) -> None:
    result = ok(ex, market(1, "m", "buy", "1"))

    assert (result.order.status, result.order.filled_quantity) == ("expired", 0)
    assert result.seq == 1


def test_market_fok_that_cannot_fill_expires(ex: Exchange) -> None:
    ok(ex, limit(2, "s", "sell", "1", "100"))

    result = ok(ex, market(1, "m", "buy", "2", time_in_force="FOK"))

    assert (result.order.status, result.order.reason) == ("expired", "fok_not_filled")
    assert ex.balance(1, "USD") == (USD, 0)


# Amend


def test_amend_lowering_the_quantity_keeps_priority_and_releases(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "3", "100"))
    ok(ex, limit(2, "b", "buy", "1", "100"))

    result = ok(ex, Amend(1, "a", quantity=D(1)))

    assert (result.order.quantity, result.order.priority, result.seq) == (1, 1, 3)
    assert ids(ex.book(SYMBOL)[0]) == ["a", "b"]
    assert ex.balance(1, "USD") == (USD - 100, D(100))


def test_amend_changing_the_price_loses_priority_and_moves_the_hold(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "2", "100"))
    ok(ex, limit(2, "b", "buy", "1", "99"))

    result = ok(ex, Amend(1, "a", price=D(99)))

    assert (result.order.price, result.order.priority) == (99, 3)
    assert ids(ex.book(SYMBOL)[0]) == ["b", "a"]
    assert ex.balance(1, "USD") == (USD - 198, D(198))


def test_amend_raising_the_quantity_loses_priority(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "sell", "1", "100"))
    ok(ex, limit(2, "b", "sell", "1", "100"))

    result = ok(ex, Amend(1, "a", quantity=D(2)))

    assert result.order.priority == 3
    assert ids(ex.book(SYMBOL)[1]) == ["b", "a"]
    assert ex.balance(1, "BTC") == (BTC - 2, D(2))


def test_amend_that_crosses_trades_as_a_taker_keeping_its_filled_quantity(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "3", "100"))
    ok(ex, limit(2, "s1", "sell", "1", "100"))
    ok(ex, limit(2, "s2", "sell", "1", "101"))

    result = ok(ex, Amend(1, "a", price=D(101)))

    assert [(t.maker_client_order_id, t.taker_client_order_id) for t in result.trades] == [
        ("s2", "a")
    ]
    assert (result.order.filled_quantity, result.order.status) == (2, "partially_filled")
    assert ex.balance(1, "USD") == (USD - 100 - 101 - 101, D(101))


def test_amend_to_the_same_price_and_quantity_changes_nothing(ex: Exchange) -> None:
    placed = ok(ex, limit(1, "a", "buy", "1", "100")).order

    result = ok(ex, Amend(1, "a", quantity=D("1.0"), price=D(100)))

    assert result == Result(order=placed)
    assert ex.seq(SYMBOL) == 1


def test_amend_needs_the_increase_of_its_hold_available(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "50", "100"))

    refused(ex, Amend(1, "a", quantity=D("100.1")), "insufficient_funds")
    ok(ex, Amend(1, "a", quantity=D(100)))


def test_post_only_amend_that_would_cross_is_refused(ex: Exchange) -> None:
    ok(ex, limit(1, "p", "buy", "1", "99", post_only=True))
    ok(ex, limit(2, "s", "sell", "1", "100"))

    refused(ex, Amend(1, "p", price=D(100)), "post_only_would_take")


def test_post_only_amend_is_checked_before_funds(ex: Exchange) -> None:
    ok(ex, limit(1, "p", "buy", "1", "99", post_only=True))
    ok(ex, limit(2, "s", "sell", "1", "100"))

    refused(ex, Amend(1, "p", price=D(100), quantity=D(1000)), "post_only_would_take")


def test_amend_of_an_order_on_another_instrument_is_unknown(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "1", "100"), OTHER_SYMBOL)

    refused(ex, Amend(1, "a", quantity=D("0.5")), "unknown_order")
    refused(ex, Amend(2, "a", quantity=D("0.5")), "unknown_order", OTHER_SYMBOL)


def test_amend_of_a_closed_order_is_refused(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "1", "100"))
    ok(ex, Cancel(1, "a"))

    refused(ex, Amend(1, "a", quantity=D("0.5")), "order_not_open")


def test_amend_open_check_comes_before_the_halt(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "1", "100"))
    ok(ex, Cancel(1, "a"))
    ex.set_status(SYMBOL, "halted")

    refused(ex, Amend(1, "a", quantity=D("0.5")), "order_not_open")


def test_amend_is_refused_while_halted(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "1", "100"))
    ex.set_status(SYMBOL, "halted")

    refused(ex, Amend(1, "a", quantity=D("0.5")), "instrument_halted")


@pytest.mark.parametrize(
    ("amend", "code"),
    [
        (Amend(1, "a", price=D("100.3")), "invalid_tick_size"),
        (Amend(1, "a", price=D("100.3"), quantity=D("0.05")), "invalid_tick_size"),
        (Amend(1, "a", quantity=D("1.05")), "invalid_lot_size"),
        (Amend(1, "a", quantity=D(0)), "invalid_lot_size"),
        (Amend(1, "a", quantity=D("0.1")), "below_min_quantity"),
        (Amend(1, "a", price=D("0.5"), quantity=D("0.1")), "below_min_quantity"),
        (Amend(1, "a", price=D("0.5")), "below_min_notional"),
    ],
)
def test_amend_validations_in_order(ex: Exchange, amend: Amend, code: str) -> None:
    ok(ex, limit(1, "a", "buy", "1.2", "100"))

    refused(ex, amend, code)


def test_amend_quantity_must_stay_above_the_filled_quantity(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "3", "100"))
    ok(ex, limit(2, "s", "sell", "1", "100"))

    refused(ex, Amend(1, "a", quantity=D(1)), "invalid_quantity")
    refused(ex, Amend(1, "a", quantity=D("0.1")), "invalid_quantity")
    assert ok(ex, Amend(1, "a", quantity=D("1.2"))).order.remaining_quantity == D("0.2")


# Cancel


def test_cancel_releases_the_reservation(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "2", "100"))

    result = ok(ex, Cancel(1, "a"))

    assert (result.order.status, result.order.reason, result.seq) == (
        "canceled",
        "canceled_by_owner",
        2,
    )
    assert result.orders == (result.order,)
    assert ex.balance(1, "USD") == (USD, 0)


def test_cancel_of_a_partially_filled_order_releases_its_remainder(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "sell", "3", "100"))
    ok(ex, limit(2, "b", "buy", "1", "100"))

    ok(ex, Cancel(1, "a"))

    assert ex.balance(1, "BTC") == (BTC - 1, 0)


def test_cancel_of_a_canceled_order_returns_it_unchanged(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "2", "100"))
    canceled = ok(ex, Cancel(1, "a")).order

    assert ok(ex, Cancel(1, "a")) == Result(order=canceled)
    assert ex.seq(SYMBOL) == 2


def test_cancel_of_a_filled_order_is_refused(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "1", "100"))
    ok(ex, limit(2, "b", "sell", "1", "100"))

    refused(ex, Cancel(1, "a"), "order_not_open")


def test_cancel_of_an_unknown_order_or_one_on_another_instrument(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "1", "100"), OTHER_SYMBOL)

    refused(ex, Cancel(1, "zz"), "unknown_order")
    refused(ex, Cancel(1, "a"), "unknown_order")
    refused(ex, Cancel(2, "a"), "unknown_order", OTHER_SYMBOL)


def test_cancel_works_while_halted(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "1", "100"))
    ok(ex, limit(1, "b", "buy", "1", "100"))
    ex.set_status(SYMBOL, "halted")

    ok(ex, Cancel(1, "a"))
    ok(ex, CancelAll(1))

    assert ex.book(SYMBOL) == ([], [])


def test_cancel_all_cancels_the_accounts_open_orders_on_this_instrument(ex: Exchange) -> None:
    ok(ex, limit(1, "z", "buy", "1", "100"))
    ok(ex, limit(1, "y", "sell", "1", "101"))
    ok(ex, limit(1, "x", "sell", "1", "101"), OTHER_SYMBOL)
    ok(ex, limit(2, "w", "buy", "1", "100"))

    result = ok(ex, CancelAll(1))

    assert result.order is None and result.seq == 4  # the other instrument has its own seq
    assert ids(result.orders) == ["y", "z"]
    assert {order.reason for order in result.orders} == {"canceled_by_cancel_all"}
    assert ids(ex.book(SYMBOL)[0]) == ["w"]
    assert ids(ex.book(OTHER_SYMBOL)[1]) == ["x"]
    assert ex.balance(1, "USD") == (USD, 0)
    assert ex.balance(1, "BTC") == (BTC, 0)


def test_cancel_all_with_nothing_open_changes_nothing(ex: Exchange) -> None:
    ok(ex, limit(1, "a", "buy", "1", "100"))
    ok(ex, Cancel(1, "a"))

    assert ok(ex, CancelAll(1)) == Result()
    assert ex.seq(SYMBOL) == 2


# Sequence numbers and conservation


def test_sequence_is_gap_free_and_only_changes_take_a_number(ex: Exchange) -> None:
    ok(ex, limit(2, "s", "sell", "2", "100"))
    run(ex, limit(1, "bad", "buy", "0.25", "100"))
    ok(ex, limit(2, "s", "sell", "2", "100"))  # replay
    trade = ok(ex, limit(1, "b", "buy", "1", "100")).trades[0]
    ok(ex, Amend(2, "s", quantity=D(2)))  # no-op
    ok(ex, CancelAll(3))  # nothing to cancel
    cancel = ok(ex, Cancel(2, "s"))

    assert (trade.seq, cancel.seq, ex.seq(SYMBOL)) == (2, 3, 3)
    assert ex.seq(OTHER_SYMBOL) == 0


def test_every_asset_is_conserved_across_accounts_and_fee_accounts() -> None:
    ex = make_exchange(maker_fee_rate=D("0.0013"), taker_fee_rate=D("0.0027"))
    ok(ex, limit(2, "s1", "sell", "1.3", "100.5"))
    ok(ex, limit(3, "s2", "sell", "2.1", "101"))
    ok(ex, market(1, "m", "buy", "2.5"))
    ok(ex, limit(1, "b", "buy", "4", "99"))
    ok(ex, limit(3, "s3", "sell", "0.7", "98", time_in_force="IOC"))

    for asset, deposited in (("USD", USD), ("BTC", BTC)):
        total = sum(sum(ex.balance(account, asset)) for account in ACCOUNTS)
        assert total + ex.fees(SYMBOL).get(asset, 0) == 3 * deposited


def test_unknown_instrument_is_a_key_error(ex: Exchange) -> None:
    with pytest.raises(KeyError):
        ex.execute("DOGE-USD", CancelAll(1))


def test_inexact_instrument_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        Exchange().add_instrument(replace(BTC_USD, lot_size=D("1e-9")))
    with pytest.raises(ValueError):
        Exchange().add_instrument(replace(BTC_USD, tick_size=D("0.001")))
    with pytest.raises(ValueError):
        Exchange().add_instrument(replace(BTC_USD, taker_fee_rate=D(1)))


# Random command streams keep every invariant

INSTRUMENTS = {
    SYMBOL: replace(BTC_USD, maker_fee_rate=D("0.0013"), taker_fee_rate=D("0.0027")),
    OTHER_SYMBOL: replace(ETH_USD, maker_fee_rate=D("0.001"), taker_fee_rate=D(0)),
}
STREAM_DEPOSITS = {"USD": D(600), "BTC": D(4), "ETH": D(4)}
COIDS = ("a", "b", "c", "d", "e", "f", "g", "h")

# Repeated values weight the draw: mostly valid orders around one price, so that they trade.
prices = st.sampled_from([D(99), D("99.5"), D(100), D("100.5"), D(101)] * 4 + [D("100.3")])
quantities = st.sampled_from(
    [D("0.2"), D("0.5"), D(1), D("1.5"), D(2), D(3)] * 3 + [D(0), D("0.1"), D("0.25")]
)
places = st.builds(
    Place,
    account=st.sampled_from([*ACCOUNTS] * 5 + [9]),  # 9 has no account
    client_order_id=st.sampled_from(COIDS),
    side=st.sampled_from(("buy", "sell")),
    type=st.sampled_from(["limit"] * 4 + ["market"]),
    quantity=quantities,
    price=prices,
    time_in_force=st.sampled_from([None] * 6 + ["GTC", "IOC", "FOK"]),
    post_only=st.sampled_from([False] * 5 + [True]),
    self_trade_prevention=st.sampled_from(
        ("cancel_newest", "cancel_oldest", "cancel_both", "decrement")
    ),
).map(lambda place: replace(place, price=None) if place.type == "market" else place)
accounts = st.sampled_from(ACCOUNTS)
command_of_kind = {
    "place": places,
    "retry": st.just("retry"),  # the previous place again: a replay, or a duplicate
    "cancel": st.builds(Cancel, accounts, st.sampled_from(COIDS)),
    "amend": st.builds(
        Amend, accounts, st.sampled_from(COIDS), st.none() | quantities, st.none() | prices
    ),
    "cancel_all": st.builds(CancelAll, accounts),
    "halt": st.just("halt"),
    "resume": st.just("resume"),
}
kinds = ["place"] * 8 + ["amend"] * 3 + ["cancel"] * 2 + ["retry", "cancel_all", "halt", "resume"]
commands = st.sampled_from(kinds).flatmap(command_of_kind.__getitem__)
steps = st.lists(
    st.tuples(st.sampled_from(sorted(INSTRUMENTS)), commands), min_size=10, max_size=60
)


def reservation(order: Order) -> Decimal:
    if order.side == "sell":
        return order.remaining_quantity
    return order.price * order.remaining_quantity


def assert_invariants(ex: Exchange) -> None:
    held: dict[tuple[int, str], Decimal] = {}
    for symbol, instrument in INSTRUMENTS.items():
        bids, asks = ex.book(symbol)
        assert all(order.is_open and order.remaining_quantity > 0 for order in bids + asks)
        if bids and asks:
            assert bids[0].price < asks[0].price
        for order in bids + asks:
            asset = instrument.quote if order.side == "buy" else instrument.base
            key = (order.account, asset)
            held[key] = held.get(key, D(0)) + reservation(order)

    for account in ACCOUNTS:
        for asset in STREAM_DEPOSITS:
            available, on_hold = ex.balance(account, asset)
            assert available >= 0
            assert on_hold == held.get((account, asset), 0)

    for asset, deposited in STREAM_DEPOSITS.items():
        fees = sum(ex.fees(symbol).get(asset, D(0)) for symbol in INSTRUMENTS)
        assert fees >= 0
        total = sum(sum(ex.balance(account, asset)) for account in ACCOUNTS)
        assert total + fees == len(ACCOUNTS) * deposited


@settings(max_examples=150, deadline=None)
@given(steps=steps)
def test_random_command_streams_keep_every_invariant(steps: list[tuple[str, object]]) -> None:
    ex = Exchange()
    for instrument in INSTRUMENTS.values():
        ex.add_instrument(instrument)
    for account in ACCOUNTS:
        ex.open_account(account)
        for asset, amount in STREAM_DEPOSITS.items():
            ex.deposit(account, asset, amount)

    last_place = None
    for symbol, step in steps:
        if step in ("halt", "resume"):
            ex.set_status(symbol, "halted" if step == "halt" else "trading")
            continue
        command = last_place if step == "retry" else step
        if command is None:
            continue
        if isinstance(command, Place):
            last_place = command
        before = (ex.book(symbol), ex.balances(), ex.fees(symbol))
        seq = ex.seq(symbol)

        result = ex.execute(symbol, command)

        if result.seq is None:
            assert ex.seq(symbol) == seq
            assert result.trades == () or result.replayed
        else:
            assert result.seq == ex.seq(symbol) == seq + 1
            assert all(trade.seq == result.seq for trade in result.trades)
            assert list(result.orders) == sorted(
                result.orders, key=lambda order: (order.account, order.client_order_id)
            )
        if not result.ok or result.seq is None:
            assert (ex.book(symbol), ex.balances(), ex.fees(symbol)) == before
        for order in (*result.orders, *([result.order] if result.order else [])):
            assert ex.order(order.account, order.client_order_id) == order
        assert_invariants(ex)
