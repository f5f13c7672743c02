"""Orders against the real database: every rule of docs/trading.md, one behaviour per test.

The market is BTC-USD (BTC scale 8, USD scale 6): tick 0.01, lot 0.001, minimum quantity 0.01,
minimum notional 1, maker fee 0.1 %, taker fee 0.2 %. Every trader starts with 10 BTC and
100 000 USD available. Engine commands run as the application role, like production.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from app.pgcluster import Cluster
from app.trading.commands import Amend, Cancel, CancelAll, Command, Instrument, Place, Result
from app.trading.instruments import set_status
from tests.conftest import APP_ROLE, OWNER_ROLE, ScratchDatabase, create_tenant, janitor
from tests.ledger.helpers import assert_invariants_hold, observer
from tests.trading.helpers import (
    D,
    assert_refused,
    balance,
    book,
    create_market,
    fee_balance,
    funded_account,
    limit,
    market,
    run,
    run_one,
    trading_state,
)

SYMBOL = "BTC-USD"
START = {"BTC": "10", "USD": "100000"}
UNKNOWN_ACCOUNT = 999_999


@pytest.fixture
def btc_usd(admin: psycopg.Connection) -> Instrument:
    return create_market(admin, min_quantity=D("0.01"))


@pytest.fixture
def alice(app_conn: psycopg.Connection, btc_usd: Instrument) -> int:
    return funded_account(app_conn, **START)


@pytest.fixture
def bob(app_conn: psycopg.Connection, btc_usd: Instrument) -> int:
    return funded_account(app_conn, **START)


@pytest.fixture
def carol(app_conn: psycopg.Connection, btc_usd: Instrument) -> int:
    return funded_account(app_conn, **START)


def ok(conn: psycopg.Connection, command: Command, symbol: str = SYMBOL) -> Result:
    result = run_one(conn, symbol, command)
    assert result.ok, result
    return result


def placed(conn: psycopg.Connection, command: Command, symbol: str = SYMBOL) -> Any:
    """Run a command that must succeed and return the order it placed, amended or canceled."""
    result = ok(conn, command, symbol)
    assert result.order is not None, result
    return result.order


def order_row(conn: psycopg.Connection, account: int, client_order_id: str) -> tuple:
    """(status, reason, quantity, filled_quantity, price, priority) as stored."""
    row = conn.execute(
        """
        SELECT status, reason, quantity, filled_quantity, price, priority FROM trading.orders
         WHERE customer_id = %s AND client_order_id = %s
        """,
        (account, client_order_id),
    ).fetchone()
    assert row is not None, (account, client_order_id)
    return tuple(row)


def status_of(conn: psycopg.Connection, account: int, client_order_id: str) -> tuple:
    return order_row(conn, account, client_order_id)[:2]


def trade_rows(conn: psycopg.Connection) -> list[tuple]:
    """Every trade as (seq, price, quantity, maker client id, taker client id, maker fee,
    taker fee), in the order they happened."""
    rows = conn.execute(
        """
        SELECT t.seq, t.price, t.quantity, m.client_order_id, k.client_order_id,
               t.maker_fee, t.taker_fee
          FROM trading.trade t
          JOIN trading.orders m ON m.id = t.maker_order_id
          JOIN trading.orders k ON k.id = t.taker_order_id
         ORDER BY t.seq, t.match_number
        """
    ).fetchall()
    return [tuple(row) for row in rows]


def trade_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM trading.trade").fetchone()
    assert row is not None
    return int(row[0])


def event_seqs(conn: psycopg.Connection) -> list[int]:
    with observer(conn) as observed:
        rows = observed.execute("SELECT seq FROM trading.event ORDER BY seq").fetchall()
    return [row[0] for row in rows]


def instrument_seq(conn: psycopg.Connection, symbol: str = SYMBOL) -> int:
    row = conn.execute("SELECT seq FROM trading.instrument WHERE symbol = %s", (symbol,)).fetchone()
    assert row is not None
    return int(row[0])


def journal_kinds(conn: psycopg.Connection, account: int, asset: str) -> list[str]:
    """The kinds of the journals that touched an account's asset, oldest first."""
    rows = conn.execute(
        """
        SELECT j.kind FROM ledger.journal j
         WHERE EXISTS (SELECT FROM ledger.entry e JOIN ledger.account a ON a.id = e.account_id
                        WHERE e.journal_id = j.id AND a.customer_id = %s AND a.asset = %s)
         ORDER BY j.id
        """,
        (account, asset),
    ).fetchall()
    return [row[0] for row in rows]


def halt(admin: psycopg.Connection, symbol: str = SYMBOL) -> None:
    set_status(admin, symbol, "halted")


# --- validation of place: each failure has its code and writes nothing --------------------------


def test_order_from_an_unknown_account_is_refused(
    app_conn: psycopg.Connection, btc_usd: Instrument
) -> None:
    assert_refused(
        app_conn, SYMBOL, limit(UNKNOWN_ACCOUNT, "o1", "buy", "1", "100"), "unknown_account"
    )


def test_order_on_a_halted_instrument_is_refused(
    app_conn: psycopg.Connection, admin: psycopg.Connection, alice: int
) -> None:
    halt(admin)

    assert_refused(app_conn, SYMBOL, limit(alice, "o1", "buy", "1", "100"), "instrument_halted")


def test_resumed_instrument_accepts_orders_again(
    app_conn: psycopg.Connection, admin: psycopg.Connection, alice: int
) -> None:
    halt(admin)
    set_status(admin, SYMBOL, "trading")

    assert placed(app_conn, limit(alice, "o1", "buy", "1", "100")).status == "new"


@pytest.mark.parametrize(
    "price",
    [
        "100.005",
        "0",
        "-100",
        "1000000000000",
        "1" + "0" * 30,
        "100." + "0" * 30 + "1",
        "100." + "0" * 50 + "1",
        "NaN",
    ],
    ids=["off_tick", "zero", "negative", "10^12", "10^30", "31_decimals", "51_decimals", "nan"],
)
def test_price_that_is_not_a_positive_multiple_of_the_tick_is_refused(
    app_conn: psycopg.Connection, alice: int, price: str
) -> None:
    assert_refused(app_conn, SYMBOL, limit(alice, "o1", "buy", "1", price), "invalid_tick_size")


@pytest.mark.parametrize(
    "quantity",
    [
        "1.0005",
        "0",
        "-1",
        "1000000000000",
        "1" + "0" * 30,
        "1." + "0" * 30 + "1",
        "1." + "0" * 50 + "1",
        "Infinity",
    ],
    ids=["off_lot", "zero", "negative", "10^12", "10^30", "31_decimals", "51_decimals", "inf"],
)
def test_quantity_that_is_not_a_positive_multiple_of_the_lot_is_refused(
    app_conn: psycopg.Connection, alice: int, quantity: str
) -> None:
    assert_refused(
        app_conn, SYMBOL, limit(alice, "o1", "sell", quantity, "100"), "invalid_lot_size"
    )


def test_market_order_quantity_off_the_lot_is_refused(
    app_conn: psycopg.Connection, alice: int
) -> None:
    assert_refused(app_conn, SYMBOL, market(alice, "o1", "sell", "0.0015"), "invalid_lot_size")


def test_quantity_below_the_minimum_is_refused(app_conn: psycopg.Connection, alice: int) -> None:
    assert_refused(
        app_conn, SYMBOL, limit(alice, "o1", "buy", "0.009", "1000"), "below_min_quantity"
    )


def test_limit_order_below_the_minimum_notional_is_refused(
    app_conn: psycopg.Connection, alice: int
) -> None:
    # 0.99 x 1 = 0.99 USD, below the minimum notional of 1 USD.
    assert_refused(app_conn, SYMBOL, limit(alice, "o1", "buy", "1", "0.99"), "below_min_notional")


def test_limit_order_exactly_at_the_minimum_notional_is_accepted(
    app_conn: psycopg.Connection, alice: int
) -> None:
    assert placed(app_conn, limit(alice, "o1", "buy", "1", "1")).status == "new"


def test_limit_buy_without_the_quote_for_price_times_quantity_is_refused(
    app_conn: psycopg.Connection, btc_usd: Instrument
) -> None:
    trader = funded_account(app_conn, USD="99.99")

    assert_refused(app_conn, SYMBOL, limit(trader, "o1", "buy", "1", "100"), "insufficient_funds")


def test_limit_buy_with_exactly_price_times_quantity_available_is_accepted(
    app_conn: psycopg.Connection, btc_usd: Instrument
) -> None:
    trader = funded_account(app_conn, USD="100")

    placed(app_conn, limit(trader, "o1", "buy", "1", "100"))

    assert balance(app_conn, trader, "USD") == (D("0"), D("100"))


@pytest.mark.parametrize("type_", ["limit", "market"])
def test_sell_without_the_base_quantity_is_refused(
    app_conn: psycopg.Connection, btc_usd: Instrument, type_: str
) -> None:
    trader = funded_account(app_conn, BTC="0.999")
    command = (
        limit(trader, "o1", "sell", "1", "100")
        if type_ == "limit"
        else market(trader, "o1", "sell", "1")
    )

    assert_refused(app_conn, SYMBOL, command, "insufficient_funds")


def test_funds_held_by_open_orders_are_not_available_to_new_ones(
    app_conn: psycopg.Connection, btc_usd: Instrument
) -> None:
    trader = funded_account(app_conn, USD="150")
    placed(app_conn, limit(trader, "o1", "buy", "1", "100"))

    assert_refused(app_conn, SYMBOL, limit(trader, "o2", "buy", "1", "60"), "insufficient_funds")


def test_market_buy_that_cannot_pay_for_all_its_fills_is_refused_whole(
    app_conn: psycopg.Connection, bob: int, carol: int
) -> None:
    placed(app_conn, limit(bob, "b1", "sell", "1", "100"))
    placed(app_conn, limit(carol, "c1", "sell", "1", "101"))
    # 1.5 costs 100 + 0.5 x 101 = 150.50: the first fill alone would be affordable.
    buyer = funded_account(app_conn, USD="150.49")

    assert_refused(app_conn, SYMBOL, market(buyer, "m1", "buy", "1.5"), "insufficient_funds")

    assert book(app_conn, SYMBOL)[1] == [
        (bob, "b1", D("100"), D("1")),
        (carol, "c1", D("101"), D("1")),
    ]
    assert_invariants_hold(app_conn)


def test_market_buy_with_exactly_the_cost_of_its_fills_is_accepted(
    app_conn: psycopg.Connection, bob: int, carol: int
) -> None:
    placed(app_conn, limit(bob, "b1", "sell", "1", "100"))
    placed(app_conn, limit(carol, "c1", "sell", "1", "101"))
    buyer = funded_account(app_conn, USD="150.5")

    order = placed(app_conn, market(buyer, "m1", "buy", "1.5"))

    assert order.status == "filled"
    assert balance(app_conn, buyer, "USD") == (D("0"), D("0"))
    assert_invariants_hold(app_conn)


SHAPES: dict[str, Callable[[int], Place]] = {
    "market_with_price": lambda a: Place(a, "o1", "buy", "market", D("1"), D("100")),
    "market_gtc": lambda a: market(a, "o1", "buy", "1", time_in_force="GTC"),
    "market_post_only": lambda a: market(a, "o1", "buy", "1", post_only=True),
    "limit_without_price": lambda a: Place(a, "o1", "buy", "limit", D("1")),
    "post_only_ioc": lambda a: limit(
        a, "o1", "buy", "1", "100", time_in_force="IOC", post_only=True
    ),
    "post_only_fok": lambda a: limit(
        a, "o1", "buy", "1", "100", time_in_force="FOK", post_only=True
    ),
    "unknown_side": lambda a: limit(a, "o1", "bid", "1", "100"),
    "unknown_type": lambda a: Place(a, "o1", "buy", "stop", D("1"), D("100")),
    "unknown_time_in_force": lambda a: limit(a, "o1", "buy", "1", "100", time_in_force="GTD"),
    "unknown_self_trade_prevention": lambda a: limit(
        a, "o1", "buy", "1", "100", self_trade_prevention="allow"
    ),
    "empty_client_order_id": lambda a: limit(a, "", "buy", "1", "100"),
    "client_order_id_of_65_characters": lambda a: limit(a, "x" * 65, "buy", "1", "100"),
    "client_order_id_with_a_space": lambda a: limit(a, "o 1", "buy", "1", "100"),
    "client_order_id_not_ascii": lambda a: limit(a, "ordré", "buy", "1", "100"),
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_order_of_an_invalid_shape_is_refused(
    app_conn: psycopg.Connection, alice: int, shape: Callable[[int], Place]
) -> None:
    assert_refused(app_conn, SYMBOL, shape(alice), "invalid_order")


def test_client_order_id_of_64_printable_characters_is_accepted(
    app_conn: psycopg.Connection, alice: int
) -> None:
    client_order_id = "!~" + "x" * 62

    assert placed(app_conn, limit(alice, client_order_id, "buy", "1", "100")).status == "new"


# Each case breaks two consecutive rules of the validation list; the earlier one wins.
VALIDATION_ORDER: dict[str, tuple[Callable[[int, int], Place], bool, str]] = {
    "account_of_another_tenant_before_client_order_id": (
        lambda a, poor: limit(UNKNOWN_ACCOUNT, "", "buy", "1", "100"),
        False,
        "unknown_account",
    ),
    "unknown_account_before_halted": (
        lambda a, poor: limit(UNKNOWN_ACCOUNT, "o1", "buy", "1", "100"),
        True,
        "unknown_account",
    ),
    "halted_before_shape": (
        lambda a, poor: Place(a, "o1", "buy", "market", D("1"), D("100")),
        True,
        "instrument_halted",
    ),
    "shape_before_tick": (
        lambda a, poor: Place(a, "o1", "buy", "market", D("1"), D("100.005")),
        False,
        "invalid_order",
    ),
    "tick_before_lot": (
        lambda a, poor: limit(a, "o1", "buy", "1.0005", "100.005"),
        False,
        "invalid_tick_size",
    ),
    "lot_before_min_quantity": (
        lambda a, poor: limit(a, "o1", "buy", "0.0005", "100"),
        False,
        "invalid_lot_size",
    ),
    "min_quantity_before_min_notional": (
        lambda a, poor: limit(a, "o1", "buy", "0.005", "100"),
        False,
        "below_min_quantity",
    ),
    "min_notional_before_funds": (
        lambda a, poor: limit(poor, "o1", "buy", "0.01", "50"),
        False,
        "below_min_notional",
    ),
}


@pytest.mark.parametrize("case", VALIDATION_ORDER.values(), ids=VALIDATION_ORDER.keys())
def test_the_first_failing_validation_rule_gives_the_error(
    app_conn: psycopg.Connection,
    admin: psycopg.Connection,
    alice: int,
    case: tuple[Callable[[int, int], Place], bool, str],
) -> None:
    build, halted, code = case
    poor = funded_account(app_conn)
    if halted:
        halt(admin)

    assert_refused(app_conn, SYMBOL, build(alice, poor), code)


# --- client_order_id: replays and duplicates -------------------------------------------------


def test_resubmitting_the_same_order_returns_it_without_writing_anything(
    app_conn: psycopg.Connection, alice: int
) -> None:
    first = ok(app_conn, limit(alice, "o1", "buy", "1", "100"))
    before = trading_state(app_conn)

    again = ok(app_conn, limit(alice, "o1", "buy", "1", "100"))

    assert again.replayed
    assert again.seq is None
    assert again.order == first.order
    assert again.order is not None and again.order.id == first.order.id  # type: ignore[union-attr]
    assert trading_state(app_conn) == before


def test_replay_returns_the_order_as_it_is_now_with_its_fills(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "o1", "buy", "1", "100"))
    fill = ok(app_conn, limit(bob, "b1", "sell", "0.4", "100"))

    again = ok(app_conn, limit(alice, "o1", "buy", "1", "100"))

    assert again.replayed
    assert again.order is not None
    assert (again.order.status, again.order.filled_quantity) == ("partially_filled", D("0.4"))
    assert again.trades == fill.trades


def test_replay_after_an_amend_matches_the_placement_as_requested(
    app_conn: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "o1", "buy", "1", "100"))
    ok(app_conn, Amend(alice, "o1", quantity=D("0.5")))

    again = ok(app_conn, limit(alice, "o1", "buy", "1", "100"))

    assert again.replayed
    assert again.order is not None and again.order.quantity == D("0.5")


def test_replay_with_the_default_time_in_force_spelled_out_is_the_same_order(
    app_conn: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "o1", "buy", "1", "100"))

    assert ok(app_conn, limit(alice, "o1", "buy", "1", "100", time_in_force="GTC")).replayed


def test_replay_is_answered_even_while_the_instrument_is_halted(
    app_conn: psycopg.Connection, admin: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "o1", "buy", "1", "100"))
    halt(admin)
    before = trading_state(app_conn)

    assert ok(app_conn, limit(alice, "o1", "buy", "1", "100")).replayed
    assert trading_state(app_conn) == before


DIFFERENT_PARAMETERS: dict[str, Callable[[int], Place]] = {
    "side": lambda a: limit(a, "o1", "sell", "1", "100"),
    "type": lambda a: market(a, "o1", "buy", "1"),
    "price": lambda a: limit(a, "o1", "buy", "1", "100.01"),
    "quantity": lambda a: limit(a, "o1", "buy", "2", "100"),
    "time_in_force": lambda a: limit(a, "o1", "buy", "1", "100", time_in_force="IOC"),
    "post_only": lambda a: limit(a, "o1", "buy", "1", "100", post_only=True),
    "self_trade_prevention": lambda a: limit(
        a, "o1", "buy", "1", "100", self_trade_prevention="decrement"
    ),
}


@pytest.mark.parametrize("other", DIFFERENT_PARAMETERS.values(), ids=DIFFERENT_PARAMETERS.keys())
def test_reusing_a_client_order_id_with_other_parameters_is_refused(
    app_conn: psycopg.Connection, alice: int, other: Callable[[int], Place]
) -> None:
    ok(app_conn, limit(alice, "o1", "buy", "1", "100"))

    assert_refused(app_conn, SYMBOL, other(alice), "duplicate_client_order_id")


def test_reusing_a_client_order_id_on_another_instrument_is_refused(
    app_conn: psycopg.Connection, admin: psycopg.Connection, alice: int
) -> None:
    create_market(admin, "ETH", "USD")
    ok(app_conn, limit(alice, "o1", "buy", "1", "100"))

    assert_refused(
        app_conn, "ETH-USD", limit(alice, "o1", "buy", "1", "100"), "duplicate_client_order_id"
    )


def test_duplicate_client_order_id_is_reported_before_the_halt(
    app_conn: psycopg.Connection, admin: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "o1", "buy", "1", "100"))
    halt(admin)

    assert_refused(
        app_conn, SYMBOL, limit(alice, "o1", "buy", "2", "100"), "duplicate_client_order_id"
    )


def test_two_accounts_may_use_the_same_client_order_id(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "o1", "buy", "1", "100"))

    result = ok(app_conn, limit(bob, "o1", "buy", "1", "100"))

    assert not result.replayed
    assert result.seq == 2


# --- holds ------------------------------------------------------------------------------------


def test_limit_buy_holds_price_times_quantity_of_the_quote(
    app_conn: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "o1", "buy", "2.5", "100.01"))

    assert balance(app_conn, alice, "USD") == (D("99749.975"), D("250.025"))
    assert balance(app_conn, alice, "BTC") == (D("10"), D("0"))
    assert journal_kinds(app_conn, alice, "USD") == ["deposit", "hold"]
    assert_invariants_hold(app_conn)


def test_limit_sell_holds_its_quantity_of_the_base(
    app_conn: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "o1", "sell", "2.5", "100"))

    assert balance(app_conn, alice, "BTC") == (D("7.5"), D("2.5"))
    assert balance(app_conn, alice, "USD") == (D("100000"), D("0"))
    assert journal_kinds(app_conn, alice, "BTC") == ["deposit", "hold"]
    assert_invariants_hold(app_conn)


def test_hold_journal_names_the_order_and_moves_available_to_held(
    app_conn: psycopg.Connection, alice: int
) -> None:
    order = placed(app_conn, limit(alice, "o1", "sell", "2.5", "100"))

    rows = app_conn.execute(
        """
        SELECT j.reference, a.bucket, e.amount FROM ledger.journal j
          JOIN ledger.entry e ON e.journal_id = j.id JOIN ledger.account a ON a.id = e.account_id
         WHERE j.kind = 'hold' ORDER BY e.amount
        """
    ).fetchall()
    assert [tuple(row) for row in rows] == [
        (f"order/{order.id}", "available", D("-2.5")),
        (f"order/{order.id}", "held", D("2.5")),
    ]


def test_taker_that_fills_at_once_writes_one_journal_per_fill_and_no_hold(
    app_conn: psycopg.Connection, alice: int, bob: int, carol: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))
    ok(app_conn, limit(carol, "c1", "sell", "1", "101"))

    ok(app_conn, limit(alice, "a1", "buy", "2", "105"))

    assert journal_kinds(app_conn, alice, "USD") == ["deposit", "trade", "trade"]
    assert balance(app_conn, alice, "USD") == (D("99799"), D("0"))


def test_taker_holds_only_what_is_left_to_rest_after_its_fills(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "buy", "1", "100"))

    ok(app_conn, limit(alice, "a1", "sell", "3", "100"))

    assert journal_kinds(app_conn, alice, "BTC") == ["deposit", "trade", "hold"]
    assert balance(app_conn, alice, "BTC") == (D("7"), D("2"))
    assert_invariants_hold(app_conn)


# --- matching: priority, prices, fills --------------------------------------------------------


def test_better_priced_orders_match_first(
    app_conn: psycopg.Connection, alice: int, bob: int, carol: int
) -> None:
    ok(app_conn, limit(bob, "expensive", "sell", "1", "101"))
    ok(app_conn, limit(carol, "cheap", "sell", "1", "100"))

    result = ok(app_conn, limit(alice, "a1", "buy", "2", "101"))

    assert [(t.maker_client_order_id, t.price) for t in result.trades] == [
        ("cheap", D("100")),
        ("expensive", D("101")),
    ]


def test_at_one_price_the_earlier_order_matches_first(
    app_conn: psycopg.Connection, alice: int, bob: int, carol: int
) -> None:
    ok(app_conn, limit(carol, "first", "buy", "1", "100"))
    ok(app_conn, limit(bob, "second", "buy", "1", "100"))
    ok(app_conn, limit(carol, "third", "buy", "1", "100"))

    result = ok(app_conn, limit(alice, "a1", "sell", "2", "100"))

    assert [t.maker_client_order_id for t in result.trades] == ["first", "second"]
    assert book(app_conn, SYMBOL)[0] == [(carol, "third", D("100"), D("1"))]


def test_book_lists_bids_by_price_descending_and_asks_ascending(
    app_conn: psycopg.Connection, alice: int
) -> None:
    for client_order_id, side, price in [
        ("b99", "buy", "99"),
        ("b98", "buy", "98"),
        ("b99.5", "buy", "99.5"),
        ("s102", "sell", "102"),
        ("s101", "sell", "101"),
    ]:
        ok(app_conn, limit(alice, client_order_id, side, "1", price))

    bids, asks = book(app_conn, SYMBOL)

    assert [row[1] for row in bids] == ["b99.5", "b99", "b98"]
    assert [row[1] for row in asks] == ["s101", "s102"]


def test_limit_order_that_does_not_cross_rests_as_new(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100.01"))

    order = placed(app_conn, limit(alice, "a1", "buy", "1", "100"))

    assert (order.status, order.filled_quantity) == ("new", D("0"))
    assert trade_count(app_conn) == 0


def test_buy_taker_trades_at_the_makers_lower_price(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))

    result = ok(app_conn, limit(alice, "a1", "buy", "1", "105"))

    assert [(t.price, t.quantity) for t in result.trades] == [(D("100"), D("1"))]


def test_sell_taker_trades_at_the_makers_higher_price(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "buy", "1", "105"))

    result = ok(app_conn, limit(alice, "a1", "sell", "1", "100"))

    assert [(t.price, t.quantity) for t in result.trades] == [(D("105"), D("1"))]


def test_price_improvement_of_a_buy_taker_returns_to_available_at_once(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))

    # Holds 2 x 105 = 210; fills 1 at 100, so 5 comes back; 1 x 105 stays held for the rest.
    order = placed(app_conn, limit(alice, "a1", "buy", "2", "105"))

    assert order.status == "partially_filled"
    assert balance(app_conn, alice, "USD") == (D("99795"), D("105"))
    assert_invariants_hold(app_conn)


def test_partial_fills_move_orders_through_new_partially_filled_and_filled(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    maker = placed(app_conn, limit(bob, "b1", "sell", "1", "100"))
    assert (maker.status, maker.filled_quantity) == ("new", D("0"))

    first = ok(app_conn, limit(alice, "a1", "buy", "0.4", "100"))
    assert first.order is not None and first.order.status == "filled"
    assert status_of(app_conn, bob, "b1") == ("partially_filled", None)
    assert order_row(app_conn, bob, "b1")[3] == D("0.4")

    second = ok(app_conn, limit(alice, "a2", "buy", "1", "100"))
    assert second.order is not None
    assert (second.order.status, second.order.filled_quantity) == ("partially_filled", D("0.6"))
    assert status_of(app_conn, bob, "b1") == ("filled", None)
    assert book(app_conn, SYMBOL) == ([(alice, "a2", D("100"), D("0.4"))], [])
    assert balance(app_conn, alice, "USD") == (D("99860"), D("40"))
    assert_invariants_hold(app_conn)


def test_result_lists_every_order_the_command_changed(
    app_conn: psycopg.Connection, alice: int, bob: int, carol: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))
    ok(app_conn, limit(carol, "c1", "sell", "1", "100"))

    result = ok(app_conn, limit(alice, "a1", "buy", "1.5", "100"))

    assert [(o.account, o.client_order_id, o.status) for o in result.orders] == [
        (alice, "a1", "filled"),
        (bob, "b1", "filled"),
        (carol, "c1", "partially_filled"),
    ]


# --- fees and settlement ----------------------------------------------------------------------


def test_buy_taker_pays_the_taker_rate_in_base_and_seller_maker_rate_in_quote(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))

    result = ok(app_conn, limit(alice, "a1", "buy", "1", "100"))

    [trade] = result.trades
    assert (trade.taker_side, trade.maker_fee, trade.taker_fee) == ("buy", D("0.1"), D("0.002"))
    assert balance(app_conn, alice, "BTC") == (D("10.998"), D("0"))
    assert balance(app_conn, alice, "USD") == (D("99900"), D("0"))
    assert balance(app_conn, bob, "BTC") == (D("9"), D("0"))
    assert balance(app_conn, bob, "USD") == (D("100099.9"), D("0"))
    assert_invariants_hold(app_conn)


def test_sell_taker_pays_the_taker_rate_in_quote_and_buyer_maker_rate_in_base(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "buy", "1", "100"))

    result = ok(app_conn, limit(alice, "a1", "sell", "1", "100"))

    [trade] = result.trades
    assert (trade.taker_side, trade.maker_fee, trade.taker_fee) == ("sell", D("0.001"), D("0.2"))
    assert balance(app_conn, alice, "USD") == (D("100099.8"), D("0"))
    assert balance(app_conn, alice, "BTC") == (D("9"), D("0"))
    assert balance(app_conn, bob, "BTC") == (D("10.999"), D("0"))
    assert balance(app_conn, bob, "USD") == (D("99900"), D("0"))
    assert_invariants_hold(app_conn)


def test_fee_accounts_of_the_instrument_receive_the_fees(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))  # taker buy: 0.002 BTC, 0.1 USD
    ok(app_conn, limit(bob, "b2", "buy", "1", "100"))
    ok(app_conn, limit(alice, "a2", "sell", "1", "100"))  # taker sell: 0.001 BTC, 0.2 USD

    assert fee_balance(app_conn, SYMBOL, "BTC") == D("0.003")
    assert fee_balance(app_conn, SYMBOL, "USD") == D("0.3")
    assert_invariants_hold(app_conn)


def test_fees_are_rounded_up_to_the_asset_scale(
    admin: psycopg.Connection, app_conn: psycopg.Connection
) -> None:
    rate = D("0.0012345")
    create_market(admin, maker_fee_rate=rate, taker_fee_rate=rate)
    seller = funded_account(app_conn, BTC="1")
    buyer = funded_account(app_conn, USD="1000")
    ok(app_conn, limit(seller, "s1", "sell", "0.012", "100"))

    [trade] = ok(app_conn, limit(buyer, "b1", "buy", "0.012", "100")).trades

    # Buyer: 0.012 x 0.0012345 = 0.000014814 BTC -> 0.00001482 (8 decimals, up, not nearest).
    # Seller: 1.2 x 0.0012345 = 0.0014814 USD -> 0.001482 (6 decimals, up, not nearest).
    assert (trade.taker_fee, trade.maker_fee) == (D("0.00001482"), D("0.001482"))
    assert balance(app_conn, buyer, "BTC") == (D("0.01198518"), D("0"))
    assert balance(app_conn, seller, "USD") == (D("1.198518"), D("0"))
    assert fee_balance(app_conn, SYMBOL, "BTC") == D("0.00001482")
    assert fee_balance(app_conn, SYMBOL, "USD") == D("0.001482")
    assert_invariants_hold(app_conn)


def test_every_trade_journal_sums_to_zero_per_asset_without_zero_legs(
    admin: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int, carol: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))
    ok(app_conn, limit(carol, "c1", "sell", "1", "100.5"))
    ok(app_conn, limit(alice, "a1", "buy", "1.5", "101"))  # with price improvement
    ok(app_conn, limit(carol, "c2", "buy", "1", "99"))
    ok(app_conn, market(bob, "b2", "sell", "0.5"))

    rows = admin.execute(
        """
        SELECT t.id, e.asset, sum(e.amount), count(*), bool_or(e.amount = 0)
          FROM trading.trade t JOIN ledger.journal j ON j.id = t.journal_id
          JOIN ledger.entry e ON e.journal_id = j.id
         WHERE j.kind = 'trade'
         GROUP BY t.id, e.asset ORDER BY t.id, e.asset
        """
    ).fetchall()
    assert len(rows) == 2 * trade_count(app_conn) == 6
    assert all(total == 0 and not zero_leg for _, _, total, _, zero_leg in rows)
    assert_invariants_hold(app_conn)


# --- time in force ----------------------------------------------------------------------------


def test_ioc_remainder_expires_and_releases_its_hold(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))

    order = placed(app_conn, limit(alice, "a1", "buy", "1.5", "100", time_in_force="IOC"))

    assert (order.status, order.reason, order.filled_quantity) == (
        "expired",
        "unfilled_remainder",
        D("1"),
    )
    assert balance(app_conn, alice, "USD") == (D("99900"), D("0"))
    assert book(app_conn, SYMBOL) == ([], [])
    assert_invariants_hold(app_conn)


def test_ioc_that_crosses_nothing_expires_unfilled(
    app_conn: psycopg.Connection, alice: int
) -> None:
    order = placed(app_conn, limit(alice, "a1", "sell", "1", "100", time_in_force="IOC"))

    assert (order.status, order.reason, order.filled_quantity) == (
        "expired",
        "unfilled_remainder",
        D("0"),
    )
    assert balance(app_conn, alice, "BTC") == (D("10"), D("0"))


def test_fok_that_can_fill_completely_fills_across_several_makers(
    app_conn: psycopg.Connection, alice: int, bob: int, carol: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))
    ok(app_conn, limit(carol, "c1", "sell", "1", "101"))

    result = ok(app_conn, limit(alice, "a1", "buy", "2", "101", time_in_force="FOK"))

    assert result.order is not None and result.order.status == "filled"
    assert len(result.trades) == 2
    assert_invariants_hold(app_conn)


def test_fok_that_cannot_fill_completely_expires_without_any_trade(
    app_conn: psycopg.Connection, alice: int, bob: int, carol: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))
    ok(app_conn, limit(carol, "c1", "sell", "1", "102"))
    before = {
        who: (balance(app_conn, who, "BTC"), balance(app_conn, who, "USD"))
        for who in (alice, bob, carol)
    }
    books_before = book(app_conn, SYMBOL)

    result = ok(app_conn, limit(alice, "a1", "buy", "2", "101", time_in_force="FOK"))

    assert result.order is not None
    assert (result.order.status, result.order.reason, result.order.filled_quantity) == (
        "expired",
        "fok_not_filled",
        D("0"),
    )
    assert result.trades == ()
    assert trade_count(app_conn) == 0
    assert book(app_conn, SYMBOL) == books_before
    after = {
        who: (balance(app_conn, who, "BTC"), balance(app_conn, who, "USD"))
        for who in (alice, bob, carol)
    }
    assert after == before
    assert_invariants_hold(app_conn)


def test_fok_that_cannot_fill_leaves_no_hold_journal(
    app_conn: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "a1", "sell", "2", "100", time_in_force="FOK"))  # an empty book

    assert journal_kinds(app_conn, alice, "BTC") == ["deposit"]


def test_fok_does_not_cancel_a_resting_order_by_self_trade_prevention_when_it_fails(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "sell", "1", "100"))
    ok(app_conn, limit(bob, "b1", "sell", "1", "101"))

    result = ok(
        app_conn,
        limit(
            alice,
            "a2",
            "buy",
            "2",
            "101",
            time_in_force="FOK",
            self_trade_prevention="cancel_oldest",
        ),
    )

    assert result.order is not None
    assert (result.order.status, result.order.reason) == ("expired", "fok_not_filled")
    assert status_of(app_conn, alice, "a1") == ("new", None)
    assert book(app_conn, SYMBOL)[1] == [
        (alice, "a1", D("100"), D("1")),
        (bob, "b1", D("101"), D("1")),
    ]
    assert balance(app_conn, alice, "BTC") == (D("9"), D("1"))
    assert balance(app_conn, alice, "USD") == (D("100000"), D("0"))
    assert trade_count(app_conn) == 0
    assert_invariants_hold(app_conn)


def test_fok_decremented_by_self_trade_prevention_below_its_request_expires(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "sell", "0.5", "100"))
    ok(app_conn, limit(bob, "b1", "sell", "2", "101"))

    # Decrement takes 0.5 off the taker; the 1.5 left could fill, but not the 2 requested.
    result = ok(
        app_conn,
        limit(
            alice, "a2", "buy", "2", "101", time_in_force="FOK", self_trade_prevention="decrement"
        ),
    )

    assert result.order is not None
    assert (result.order.status, result.order.reason) == ("expired", "fok_not_filled")
    assert order_row(app_conn, alice, "a1")[:3] == ("new", None, D("0.5"))
    assert order_row(app_conn, bob, "b1")[:4] == ("new", None, D("2"), D("0"))
    assert trade_count(app_conn) == 0
    assert_invariants_hold(app_conn)


# --- market orders ----------------------------------------------------------------------------


def test_market_buy_walks_the_asks_and_pays_from_available(
    app_conn: psycopg.Connection, alice: int, bob: int, carol: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))
    ok(app_conn, limit(carol, "c1", "sell", "1", "101"))

    result = ok(app_conn, market(alice, "a1", "buy", "1.5"))

    assert result.order is not None
    assert (result.order.status, result.order.time_in_force) == ("filled", "IOC")
    assert [(t.price, t.quantity) for t in result.trades] == [
        (D("100"), D("1")),
        (D("101"), D("0.5")),
    ]
    assert balance(app_conn, alice, "USD") == (D("99849.5"), D("0"))
    assert balance(app_conn, alice, "BTC") == (D("11.497"), D("0"))  # 1.5 less 0.2 % fee
    assert "hold" not in journal_kinds(app_conn, alice, "USD")
    assert_invariants_hold(app_conn)


def test_market_sell_walks_the_bids_from_its_hold(
    app_conn: psycopg.Connection, alice: int, bob: int, carol: int
) -> None:
    ok(app_conn, limit(bob, "b1", "buy", "1", "100"))
    ok(app_conn, limit(carol, "c1", "buy", "1", "99"))

    result = ok(app_conn, market(alice, "a1", "sell", "1.5"))

    assert result.order is not None and result.order.status == "filled"
    assert [(t.price, t.quantity) for t in result.trades] == [
        (D("100"), D("1")),
        (D("99"), D("0.5")),
    ]
    # 149.50 less 0.2 % = 0.299
    assert balance(app_conn, alice, "USD") == (D("100149.201"), D("0"))
    assert balance(app_conn, alice, "BTC") == (D("8.5"), D("0"))
    assert_invariants_hold(app_conn)


def test_market_order_beyond_the_book_expires_with_what_it_filled(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "buy", "1", "100"))

    order = placed(app_conn, market(alice, "a1", "sell", "3"))

    assert (order.status, order.reason, order.filled_quantity) == (
        "expired",
        "unfilled_remainder",
        D("1"),
    )
    assert balance(app_conn, alice, "BTC") == (D("9"), D("0"))
    assert_invariants_hold(app_conn)


def test_market_order_is_not_checked_against_the_minimum_notional(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "buy", "1", "50"))

    order = placed(app_conn, market(alice, "a1", "sell", "0.01"))  # 0.50 USD

    assert (order.status, order.filled_quantity) == ("filled", D("0.01"))


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_market_order_on_an_empty_book_expires(
    app_conn: psycopg.Connection, alice: int, side: str
) -> None:
    order = placed(app_conn, market(alice, "a1", side, "1"))

    assert (order.status, order.reason, order.filled_quantity) == (
        "expired",
        "unfilled_remainder",
        D("0"),
    )
    assert balance(app_conn, alice, "BTC") == (D("10"), D("0"))
    assert balance(app_conn, alice, "USD") == (D("100000"), D("0"))
    assert_invariants_hold(app_conn)


def test_market_fok_that_cannot_fill_completely_expires(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))

    order = placed(app_conn, market(alice, "a1", "buy", "2", time_in_force="FOK"))

    assert (order.status, order.reason) == ("expired", "fok_not_filled")
    assert trade_count(app_conn) == 0
    assert balance(app_conn, alice, "USD") == (D("100000"), D("0"))


# --- post-only --------------------------------------------------------------------------------


def test_post_only_order_that_would_cross_is_rejected_and_holds_nothing(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))

    result = ok(app_conn, limit(alice, "a1", "buy", "1", "100", post_only=True))

    assert result.order is not None
    assert (result.order.status, result.order.reason) == ("rejected", "post_only_would_take")
    assert result.trades == ()
    assert balance(app_conn, alice, "USD") == (D("100000"), D("0"))
    assert journal_kinds(app_conn, alice, "USD") == ["deposit"]
    assert status_of(app_conn, bob, "b1") == ("new", None)
    assert_invariants_hold(app_conn)


def test_post_only_order_crossing_its_own_account_is_rejected_too(
    app_conn: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))

    order = placed(app_conn, limit(alice, "a2", "sell", "1", "99", post_only=True))

    assert (order.status, order.reason) == ("rejected", "post_only_would_take")
    assert status_of(app_conn, alice, "a1") == ("new", None)


def test_post_only_order_that_does_not_cross_rests(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))

    order = placed(app_conn, limit(alice, "a1", "buy", "1", "99.99", post_only=True))

    assert (order.status, order.post_only) == ("new", True)
    assert balance(app_conn, alice, "USD") == (D("99900.01"), D("99.99"))
    assert_invariants_hold(app_conn)


# --- self-trade prevention --------------------------------------------------------------------


def test_cancel_newest_cancels_the_taker_and_stops_matching(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "sell", "1", "100"))
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))

    result = ok(app_conn, limit(alice, "a2", "buy", "1", "100"))

    assert result.order is not None
    assert (result.order.status, result.order.reason) == ("canceled", "self_trade_prevention")
    assert result.trades == ()
    assert status_of(app_conn, alice, "a1") == ("new", None)
    assert status_of(app_conn, bob, "b1") == ("new", None)
    assert balance(app_conn, alice, "USD") == (D("100000"), D("0"))
    assert_invariants_hold(app_conn)


def test_cancel_oldest_cancels_the_resting_order_and_matching_goes_on(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "sell", "1", "100"))
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))

    result = ok(
        app_conn, limit(alice, "a2", "buy", "1", "100", self_trade_prevention="cancel_oldest")
    )

    assert result.order is not None and result.order.status == "filled"
    assert status_of(app_conn, alice, "a1") == ("canceled", "self_trade_prevention")
    assert [t.maker_client_order_id for t in result.trades] == ["b1"]
    assert balance(app_conn, alice, "BTC") == (D("10.998"), D("0"))
    assert_invariants_hold(app_conn)


def test_cancel_both_cancels_taker_and_resting_order_and_stops_matching(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "sell", "1", "100"))
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))

    result = ok(
        app_conn, limit(alice, "a2", "buy", "1", "100", self_trade_prevention="cancel_both")
    )

    assert result.order is not None
    assert (result.order.status, result.order.reason) == ("canceled", "self_trade_prevention")
    assert status_of(app_conn, alice, "a1") == ("canceled", "self_trade_prevention")
    assert status_of(app_conn, bob, "b1") == ("new", None)
    assert result.trades == ()
    assert balance(app_conn, alice, "BTC") == (D("10"), D("0"))
    assert balance(app_conn, alice, "USD") == (D("100000"), D("0"))
    assert_invariants_hold(app_conn)


def test_decrement_cancels_the_smaller_resting_order_and_the_taker_goes_on_reduced(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "sell", "1", "100"))
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))

    result = ok(
        app_conn, limit(alice, "a2", "buy", "1.5", "100", self_trade_prevention="decrement")
    )

    assert result.order is not None
    assert (result.order.status, result.order.quantity, result.order.filled_quantity) == (
        "filled",
        D("0.5"),
        D("0.5"),
    )
    assert status_of(app_conn, alice, "a1") == ("canceled", "self_trade_prevention")
    assert [(t.maker_client_order_id, t.quantity) for t in result.trades] == [("b1", D("0.5"))]
    assert balance(app_conn, alice, "USD") == (D("99950"), D("0"))
    assert balance(app_conn, alice, "BTC") == (D("10.499"), D("0"))
    assert_invariants_hold(app_conn)


def test_decrement_cancels_the_smaller_taker_and_reduces_the_resting_order(
    app_conn: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "a1", "sell", "2", "100"))

    result = ok(
        app_conn, limit(alice, "a2", "buy", "0.5", "100", self_trade_prevention="decrement")
    )

    assert result.order is not None
    assert (result.order.status, result.order.reason) == ("canceled", "self_trade_prevention")
    assert order_row(app_conn, alice, "a1")[:4] == ("new", None, D("1.5"), D("0"))
    assert balance(app_conn, alice, "BTC") == (D("8.5"), D("1.5"))
    assert balance(app_conn, alice, "USD") == (D("100000"), D("0"))
    assert_invariants_hold(app_conn)


def test_decrement_of_equal_remainders_cancels_both(
    app_conn: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "a1", "sell", "1", "100"))

    result = ok(app_conn, limit(alice, "a2", "buy", "1", "100", self_trade_prevention="decrement"))

    assert result.order is not None
    assert (result.order.status, result.order.reason) == ("canceled", "self_trade_prevention")
    assert status_of(app_conn, alice, "a1") == ("canceled", "self_trade_prevention")
    assert book(app_conn, SYMBOL) == ([], [])
    assert balance(app_conn, alice, "BTC") == (D("10"), D("0"))
    assert balance(app_conn, alice, "USD") == (D("100000"), D("0"))
    assert_invariants_hold(app_conn)


# --- amend ------------------------------------------------------------------------------------


def test_amend_to_a_lower_quantity_keeps_priority_and_releases_the_hold(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))
    ok(app_conn, limit(bob, "b1", "buy", "1", "100"))

    result = ok(app_conn, Amend(alice, "a1", quantity=D("0.4")))

    assert result.order is not None
    assert (result.order.quantity, result.order.priority) == (D("0.4"), 1)
    assert book(app_conn, SYMBOL)[0] == [
        (alice, "a1", D("100"), D("0.4")),
        (bob, "b1", D("100"), D("1")),
    ]
    assert balance(app_conn, alice, "USD") == (D("99960"), D("40"))
    assert_invariants_hold(app_conn)


def test_amend_to_a_new_price_loses_priority(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "sell", "1", "100.5"))
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))

    result = ok(app_conn, Amend(alice, "a1", price=D("100")))

    assert result.order is not None and result.order.priority == result.seq == 3
    assert book(app_conn, SYMBOL)[1] == [
        (bob, "b1", D("100"), D("1")),
        (alice, "a1", D("100"), D("1")),
    ]
    assert_invariants_hold(app_conn)


def test_amend_to_a_higher_quantity_loses_priority_and_holds_more(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))
    ok(app_conn, limit(bob, "b1", "buy", "1", "100"))

    ok(app_conn, Amend(alice, "a1", quantity=D("2")))

    assert book(app_conn, SYMBOL)[0] == [
        (bob, "b1", D("100"), D("1")),
        (alice, "a1", D("100"), D("2")),
    ]
    assert balance(app_conn, alice, "USD") == (D("99800"), D("200"))
    assert_invariants_hold(app_conn)


def test_amend_to_a_lower_buy_price_releases_part_of_the_hold(
    app_conn: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "2", "100"))

    ok(app_conn, Amend(alice, "a1", price=D("90")))

    assert balance(app_conn, alice, "USD") == (D("99820"), D("180"))
    assert_invariants_hold(app_conn)


def test_amend_that_crosses_matches_at_once(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "buy", "1", "99"))
    ok(app_conn, limit(alice, "a1", "sell", "1", "100"))

    result = ok(app_conn, Amend(alice, "a1", price=D("98")))

    assert result.order is not None and result.order.status == "filled"
    assert [
        (t.price, t.maker_client_order_id, t.taker_client_order_id, t.seq) for t in result.trades
    ] == [(D("99"), "b1", "a1", 3)]
    assert book(app_conn, SYMBOL) == ([], [])
    assert_invariants_hold(app_conn)


def test_amend_of_a_partially_filled_order_keeps_what_it_filled(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))
    ok(app_conn, limit(bob, "b1", "sell", "0.4", "100"))

    ok(app_conn, Amend(alice, "a1", quantity=D("2")))

    assert order_row(app_conn, alice, "a1")[:4] == ("partially_filled", None, D("2"), D("0.4"))
    assert balance(app_conn, alice, "USD") == (D("99800"), D("160"))
    assert_invariants_hold(app_conn)


def test_amend_to_the_same_price_and_quantity_changes_nothing(
    app_conn: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))
    before = trading_state(app_conn)

    result = ok(app_conn, Amend(alice, "a1", quantity=D("1"), price=D("100")))

    assert result.seq is None
    assert trading_state(app_conn) == before


def test_amend_of_a_post_only_order_into_crossing_is_refused(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(bob, "b1", "buy", "1", "99"))
    ok(app_conn, limit(alice, "a1", "sell", "1", "100", post_only=True))

    assert_refused(app_conn, SYMBOL, Amend(alice, "a1", price=D("99")), "post_only_would_take")


def test_post_only_crossing_is_checked_before_funds_on_amend(
    app_conn: psycopg.Connection, btc_usd: Instrument, bob: int
) -> None:
    trader = funded_account(app_conn, BTC="1")
    ok(app_conn, limit(bob, "b1", "buy", "1", "99"))
    ok(app_conn, limit(trader, "a1", "sell", "1", "100", post_only=True))

    assert_refused(
        app_conn,
        SYMBOL,
        Amend(trader, "a1", quantity=D("2"), price=D("99")),
        "post_only_would_take",
    )


@pytest.mark.parametrize("quantity", ["0.4", "0.3"])
def test_amend_to_a_quantity_not_above_the_filled_one_is_refused(
    app_conn: psycopg.Connection, alice: int, bob: int, quantity: str
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))
    ok(app_conn, limit(bob, "b1", "sell", "0.4", "100"))

    assert_refused(app_conn, SYMBOL, Amend(alice, "a1", quantity=D(quantity)), "invalid_quantity")


def test_amend_while_halted_is_refused(
    app_conn: psycopg.Connection, admin: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))
    halt(admin)

    assert_refused(app_conn, SYMBOL, Amend(alice, "a1", quantity=D("0.5")), "instrument_halted")


def test_amend_that_needs_more_than_is_available_is_refused(
    app_conn: psycopg.Connection, btc_usd: Instrument
) -> None:
    trader = funded_account(app_conn, USD="150")
    ok(app_conn, limit(trader, "a1", "buy", "1", "100"))

    assert_refused(app_conn, SYMBOL, Amend(trader, "a1", quantity=D("2")), "insufficient_funds")


AMEND_REFUSALS: dict[str, tuple[Callable[[int], Amend], str]] = {
    "price_off_tick": (lambda a: Amend(a, "a1", price=D("100.005")), "invalid_tick_size"),
    "quantity_off_lot": (lambda a: Amend(a, "a1", quantity=D("1.0005")), "invalid_lot_size"),
    "below_min_quantity": (lambda a: Amend(a, "a1", quantity=D("0.005")), "below_min_quantity"),
    "below_min_notional": (lambda a: Amend(a, "a1", price=D("0.5")), "below_min_notional"),
    "unknown_order": (lambda a: Amend(a, "nope", quantity=D("2")), "unknown_order"),
}


@pytest.mark.parametrize("case", AMEND_REFUSALS.values(), ids=AMEND_REFUSALS.keys())
def test_amend_breaking_an_order_rule_is_refused(
    app_conn: psycopg.Connection, alice: int, case: tuple[Callable[[int], Amend], str]
) -> None:
    build, code = case
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))

    assert_refused(app_conn, SYMBOL, build(alice), code)


def test_amend_of_a_filled_order_is_refused(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))

    assert_refused(app_conn, SYMBOL, Amend(alice, "a1", quantity=D("2")), "order_not_open")


# Each case breaks two consecutive amend checks; the earlier one wins. a1 is a buy of 1 at 100
# with 0.4 filled, done is filled, fresh is an untouched buy of 1 at 90.
AMEND_ORDER: dict[str, tuple[Callable[[int], Amend], bool, str]] = {
    "unknown_order_before_halted": (
        lambda a: Amend(a, "nope", quantity=D("2")),
        True,
        "unknown_order",
    ),
    "order_not_open_before_halted": (
        lambda a: Amend(a, "done", quantity=D("2")),
        True,
        "order_not_open",
    ),
    "halted_before_tick": (
        lambda a: Amend(a, "a1", price=D("100.005")),
        True,
        "instrument_halted",
    ),
    "tick_before_lot": (
        lambda a: Amend(a, "a1", quantity=D("1.0005"), price=D("100.005")),
        False,
        "invalid_tick_size",
    ),
    "lot_before_filled_quantity": (
        lambda a: Amend(a, "a1", quantity=D("0.0005")),
        False,
        "invalid_lot_size",
    ),
    "filled_quantity_before_min_quantity": (
        lambda a: Amend(a, "a1", quantity=D("0.005")),
        False,
        "invalid_quantity",
    ),
    "min_quantity_before_min_notional": (
        lambda a: Amend(a, "fresh", quantity=D("0.005")),
        False,
        "below_min_quantity",
    ),
}


@pytest.mark.parametrize("case", AMEND_ORDER.values(), ids=AMEND_ORDER.keys())
def test_the_first_failing_amend_check_gives_the_error(
    app_conn: psycopg.Connection,
    admin: psycopg.Connection,
    alice: int,
    bob: int,
    case: tuple[Callable[[int], Amend], bool, str],
) -> None:
    build, halted, code = case
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))
    ok(app_conn, limit(bob, "b1", "sell", "0.4", "100"))
    ok(app_conn, limit(alice, "done", "sell", "0.5", "200"))
    ok(app_conn, limit(bob, "b2", "buy", "0.5", "200"))
    ok(app_conn, limit(alice, "fresh", "buy", "1", "90"))
    if halted:
        halt(admin)

    assert_refused(app_conn, SYMBOL, build(alice), code)


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_releases_the_whole_remaining_hold(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))
    ok(app_conn, limit(bob, "b1", "sell", "0.4", "100"))

    result = ok(app_conn, Cancel(alice, "a1"))

    assert result.order is not None
    assert (result.order.status, result.order.reason) == ("canceled", "canceled_by_owner")
    assert balance(app_conn, alice, "USD") == (D("99960"), D("0"))
    assert journal_kinds(app_conn, alice, "USD")[-1] == "release"
    assert book(app_conn, SYMBOL) == ([], [])
    assert_invariants_hold(app_conn)


def test_cancel_of_an_already_canceled_order_returns_it_unchanged(
    app_conn: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))
    first = ok(app_conn, Cancel(alice, "a1"))
    before = trading_state(app_conn)

    again = ok(app_conn, Cancel(alice, "a1"))

    assert again.seq is None
    assert again.order == first.order
    assert trading_state(app_conn) == before


def test_cancel_of_a_filled_order_is_refused(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))

    assert_refused(app_conn, SYMBOL, Cancel(alice, "a1"), "order_not_open")


@pytest.mark.parametrize("tif", ["IOC", "FOK"])
def test_cancel_of_an_expired_order_is_refused(
    app_conn: psycopg.Connection, alice: int, tif: str
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100", time_in_force=tif))

    assert_refused(app_conn, SYMBOL, Cancel(alice, "a1"), "order_not_open")


def test_cancel_while_halted_is_accepted(
    app_conn: psycopg.Connection, admin: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "a1", "sell", "1", "100"))
    halt(admin)

    result = ok(app_conn, Cancel(alice, "a1"))

    assert result.order is not None and result.order.status == "canceled"
    assert balance(app_conn, alice, "BTC") == (D("10"), D("0"))
    assert_invariants_hold(app_conn)


def test_cancel_of_another_accounts_order_is_unknown(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))

    assert_refused(app_conn, SYMBOL, Cancel(bob, "a1"), "unknown_order")


def test_cancel_of_an_order_on_another_instrument_is_unknown(
    app_conn: psycopg.Connection, admin: psycopg.Connection, alice: int
) -> None:
    create_market(admin, "ETH", "USD")
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))

    assert_refused(app_conn, "ETH-USD", Cancel(alice, "a1"), "unknown_order")


def test_cancel_all_cancels_only_this_accounts_open_orders_on_this_instrument(
    app_conn: psycopg.Connection, admin: psycopg.Connection, alice: int, bob: int
) -> None:
    create_market(admin, "ETH", "USD")
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))
    ok(app_conn, limit(alice, "a2", "sell", "1", "200"))
    ok(app_conn, limit(alice, "a3", "buy", "1", "50"))
    ok(app_conn, Cancel(alice, "a3"))
    ok(app_conn, limit(alice, "e1", "buy", "1", "10"), "ETH-USD")
    ok(app_conn, limit(bob, "b1", "buy", "1", "100"))

    result = ok(app_conn, CancelAll(alice))

    assert [(o.client_order_id, o.status, o.reason) for o in result.orders] == [
        ("a1", "canceled", "canceled_by_cancel_all"),
        ("a2", "canceled", "canceled_by_cancel_all"),
    ]
    assert status_of(app_conn, alice, "a3") == ("canceled", "canceled_by_owner")
    assert status_of(app_conn, alice, "e1") == ("new", None)
    assert status_of(app_conn, bob, "b1") == ("new", None)
    assert balance(app_conn, alice, "BTC") == (D("10"), D("0"))
    assert balance(app_conn, alice, "USD") == (D("99990"), D("10"))
    assert_invariants_hold(app_conn)


def test_cancel_all_while_halted_is_accepted(
    app_conn: psycopg.Connection, admin: psycopg.Connection, alice: int
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))
    ok(app_conn, limit(alice, "a2", "sell", "1", "200"))
    halt(admin)

    result = ok(app_conn, CancelAll(alice))

    assert [o.status for o in result.orders] == ["canceled", "canceled"]
    assert book(app_conn, SYMBOL) == ([], [])
    assert_invariants_hold(app_conn)


def test_cancel_all_without_open_orders_changes_nothing(
    app_conn: psycopg.Connection, alice: int
) -> None:
    before = trading_state(app_conn)

    result = ok(app_conn, CancelAll(alice))

    assert (result.seq, result.orders) == (None, ())
    assert trading_state(app_conn) == before


# --- sequence numbers, events and batches -----------------------------------------------------


def test_refused_and_unchanging_commands_consume_no_sequence_number(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    results = run(
        app_conn,
        SYMBOL,
        limit(alice, "a1", "buy", "1", "100"),  # 1
        limit(alice, "bad", "buy", "1", "100.005"),  # refused
        limit(alice, "a1", "buy", "1", "100"),  # replay
        Amend(alice, "a1", quantity=D("1")),  # no-op
        Cancel(bob, "a1"),  # refused
        limit(bob, "b1", "sell", "0.5", "100"),  # 2
    )
    assert [r.seq for r in results] == [1, None, None, None, None, 2]
    assert_refused(app_conn, SYMBOL, Cancel(alice, "nope"), "unknown_order")

    assert ok(app_conn, Cancel(alice, "a1")).seq == 3

    assert event_seqs(app_conn) == [1, 2, 3]
    assert instrument_seq(app_conn) == 3
    assert [t[0] for t in trade_rows(app_conn)] == [2]


def test_each_event_records_its_command_orders_and_trades(
    admin: psycopg.Connection, app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))
    ok(app_conn, limit(bob, "b1", "sell", "1", "100"))
    ok(app_conn, limit(bob, "b2", "sell", "1", "101"))
    ok(app_conn, Cancel(bob, "b2"))

    rows = admin.execute(
        """
        SELECT seq, kind, payload -> 'command' ->> 'client_order_id',
               jsonb_array_length(payload -> 'orders'), jsonb_array_length(payload -> 'trades')
          FROM trading.event ORDER BY seq
        """
    ).fetchall()
    assert [tuple(row) for row in rows] == [
        (1, "place", "a1", 1, 0),
        (2, "place", "b1", 2, 1),
        (3, "place", "b2", 1, 0),
        (4, "cancel", "b2", 1, 0),
    ]


def test_sequences_are_per_instrument(
    app_conn: psycopg.Connection, admin: psycopg.Connection, alice: int
) -> None:
    create_market(admin, "ETH", "USD")
    ok(app_conn, limit(alice, "a1", "buy", "1", "100"))

    assert ok(app_conn, limit(alice, "e1", "buy", "1", "10"), "ETH-USD").seq == 1
    assert ok(app_conn, limit(alice, "a2", "buy", "1", "100")).seq == 2


def test_batch_with_a_refused_command_in_the_middle_applies_the_others_in_order(
    app_conn: psycopg.Connection, alice: int, bob: int
) -> None:
    results = run(
        app_conn,
        SYMBOL,
        limit(bob, "b1", "sell", "1", "100"),
        limit(alice, "a1", "buy", "1", "100.005"),
        limit(alice, "a2", "buy", "1", "100"),
    )

    assert [r.code for r in results] == [None, "invalid_tick_size", None]
    assert [r.seq for r in results] == [1, None, 2]
    assert trade_rows(app_conn) == [(2, D("100"), D("1"), "b1", "a2", D("0.1"), D("0.002"))]
    assert event_seqs(app_conn) == [1, 2]
    assert app_conn.execute(
        "SELECT count(*) FROM trading.orders WHERE client_order_id = 'a1'"
    ).fetchone() == (0,)
    assert_invariants_hold(app_conn)


# --- determinism ------------------------------------------------------------------------------

_replica_numbers = itertools.count(1)


@pytest.fixture
def replica(pg_cluster: Cluster, template_database: str) -> Iterator[ScratchDatabase]:
    """A second fresh database at the head revision, beside `db`."""
    name = f"replica_{next(_replica_numbers)}"
    with janitor(pg_cluster, name, template_dbname=template_database):
        with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
            conn.execute(f'GRANT CREATE ON DATABASE "{name}" TO {OWNER_ROLE}')
        yield ScratchDatabase(pg_cluster, name)


def session(admin: psycopg.Connection, app: psycopg.Connection) -> tuple[list[int], list[Command]]:
    """The market, three funded traders and a command sequence touching most rules."""
    create_market(admin, min_quantity=D("0.01"))
    a, b, c = (funded_account(app, **START) for _ in range(3))
    commands: list[Command] = [
        limit(a, "a1", "sell", "1", "100"),
        limit(b, "b1", "sell", "0.7", "100"),
        limit(c, "c1", "sell", "2", "101.5"),
        limit(a, "a2", "buy", "0.5", "99"),
        limit(b, "b2", "buy", "1.2", "102", self_trade_prevention="decrement"),
        limit(c, "c2", "buy", "0.3", "98", post_only=True),
        Amend(c, "c2", price=D("99")),
        limit(a, "a3", "sell", "0.8", "98.5", time_in_force="IOC"),
        market(c, "c3", "buy", "0.9"),
        limit(b, "b3", "buy", "3", "101.5", time_in_force="FOK"),
        limit(a, "a4", "buy", "0.2", "99.5", self_trade_prevention="cancel_oldest"),
        Amend(a, "a2", quantity=D("0.25")),
        limit(b, "b4", "sell", "0.333", "99.01"),
        Cancel(c, "c1"),
        limit(a, "bad", "buy", "1", "1.001"),
        market(b, "b5", "sell", "0.5"),
        CancelAll(a),
        limit(a, "a5", "sell", "0.05", "97"),
    ]
    return [a, b, c], commands


def snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    with observer(conn) as observed:
        return _snapshot(observed)


def _snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    orders = conn.execute(
        """
        SELECT customer_id, client_order_id, side, type, price, quantity, filled_quantity,
               status, reason, priority
          FROM trading.orders ORDER BY customer_id, client_order_id
        """
    ).fetchall()
    balances = conn.execute(
        """
        SELECT coalesce(customer_id::text, label), asset, bucket, balance FROM ledger.account
         ORDER BY 1, 2, 3
        """
    ).fetchall()
    events = conn.execute(
        "SELECT seq, kind, payload -> 'command' FROM trading.event ORDER BY seq"
    ).fetchall()
    return {
        "trades": trade_rows(conn),
        "orders": [tuple(row) for row in orders],
        "balances": [tuple(row) for row in balances],
        "events": [tuple(row) for row in events],
    }


def play(owner: psycopg.Connection, app: psycopg.Connection) -> tuple[list, dict[str, Any]]:
    """Run the session one command at a time: (code, seq) of each result and the market."""
    _, commands = session(owner, app)
    results = [run_one(app, SYMBOL, command) for command in commands]
    assert_invariants_hold(app)
    return [(r.code, r.seq) for r in results], snapshot(app)


def test_the_same_commands_on_two_fresh_databases_give_the_same_market(
    admin: psycopg.Connection, app_conn: psycopg.Connection, replica: ScratchDatabase
) -> None:
    first = play(admin, app_conn)
    broker = create_tenant(replica, "test-broker")
    with (
        replica.connect(tenant=broker) as owner,
        replica.connect(APP_ROLE, tenant=broker) as app,
    ):
        second = play(owner, app)

    assert first == second
    results, market_state = first
    assert len(market_state["trades"]) >= 5
    assert {code for code, _ in results} == {None, "invalid_tick_size"}


def test_replaying_the_event_log_in_sequence_order_rebuilds_the_market(
    admin: psycopg.Connection, app_conn: psycopg.Connection, replica: ScratchDatabase
) -> None:
    _, commands = session(admin, app_conn)
    run(app_conn, SYMBOL, *commands[:9])
    run(app_conn, SYMBOL, *commands[9:])
    original = snapshot(app_conn)
    logged = [command_from_event(payload) for _, _, payload in original["events"]]

    broker = create_tenant(replica, "test-broker")
    with (
        replica.connect(tenant=broker) as owner,
        replica.connect(APP_ROLE, tenant=broker) as app,
    ):
        session(owner, app)
        for command in logged:
            ok(app, command)
        rebuilt = snapshot(app)

    assert rebuilt == original


def command_from_event(payload: dict[str, Any]) -> Command:
    """The command an event records, as the engine received it."""
    account = int(payload["account"])
    op = payload["op"]
    if op == "place":
        price = payload.get("price")
        return Place(
            account,
            payload["client_order_id"],
            payload["side"],
            payload["type"],
            D(payload["quantity"]),
            None if price is None else D(price),
            payload.get("time_in_force"),
            payload["post_only"],
            payload["self_trade_prevention"],
        )
    if op == "amend":
        quantity, price = payload.get("quantity"), payload.get("price")
        return Amend(
            account,
            payload["client_order_id"],
            None if quantity is None else D(quantity),
            None if price is None else D(price),
        )
    if op == "cancel":
        return Cancel(account, payload["client_order_id"])
    assert op == "cancel_all", payload
    return CancelAll(account)
