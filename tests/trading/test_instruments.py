"""Instruments: created and halted by operators, immutable afterwards; trading history is
append-only, and the application role changes nothing except through trading.execute."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import psycopg
import pytest

from app.trading import instruments
from app.trading.commands import Instrument
from app.trading.errors import TradingError
from tests.conftest import OWNER_ROLE
from tests.trading.helpers import (
    BTC_USD,
    D,
    create_market,
    funded_account,
    limit,
    run_one,
    trading_state,
)

SYMBOL = "BTC-USD"


@pytest.fixture
def assets(admin: psycopg.Connection) -> None:
    """BTC at scale 8, USD at scale 6, ETH at scale 8; no instrument yet."""
    admin.execute(
        "INSERT INTO ledger.asset (code, scale) VALUES ('BTC', 8), ('USD', 6), ('ETH', 8)"
    )


@pytest.fixture
def btc_usd(admin: psycopg.Connection) -> Instrument:
    return create_market(admin)


@pytest.fixture
def traded(admin: psycopg.Connection, app_conn: psycopg.Connection, btc_usd: Instrument) -> None:
    """One trade on BTC-USD, so trading history has a trade, events and orders."""
    seller = funded_account(app_conn, BTC="1")
    buyer = funded_account(app_conn, USD="1000")
    assert run_one(app_conn, SYMBOL, limit(seller, "s1", "sell", "1", "100")).ok
    assert run_one(app_conn, SYMBOL, limit(buyer, "b1", "buy", "1", "100")).trades


def create(
    admin: psycopg.Connection, base: str = "BTC", quote: str = "USD", **changes: Decimal
) -> Instrument:
    return instruments.create_instrument(admin, base, quote, **{**BTC_USD, **changes})


def assert_operation_refused(
    admin: psycopg.Connection, code: str, create_it: Callable[[], object]
) -> None:
    before = trading_state(admin)
    with pytest.raises(TradingError) as caught:
        create_it()
    assert caught.value.code == code, caught.value
    assert trading_state(admin) == before


def assert_immutable(conn: psycopg.Connection, statement: str) -> None:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement)
    assert caught.value.sqlstate == "EY012", caught.value


# --- creation ---------------------------------------------------------------------------------


def test_creation_records_the_parameters_and_the_asset_scales(
    admin: psycopg.Connection, assets: None
) -> None:
    instrument = create(admin)

    assert instrument == Instrument(
        symbol=SYMBOL,
        base="BTC",
        quote="USD",
        base_scale=8,
        quote_scale=6,
        status="trading",
        **BTC_USD,
    )
    assert admin.execute(
        "SELECT seq FROM trading.instrument WHERE symbol = %s", (SYMBOL,)
    ).fetchone() == (0,)


def test_creation_makes_one_fee_account_per_asset_labelled_with_the_symbol(
    admin: psycopg.Connection, assets: None
) -> None:
    create(admin)
    create(admin, "ETH", "USD")

    rows = admin.execute(
        """
        SELECT label, asset, balance FROM ledger.account
         WHERE bucket = 'fee' AND customer_id IS NULL ORDER BY label, asset
        """
    ).fetchall()
    assert [tuple(row) for row in rows] == [
        ("BTC-USD", "BTC", D("0")),
        ("BTC-USD", "USD", D("0")),
        ("ETH-USD", "ETH", D("0")),
        ("ETH-USD", "USD", D("0")),
    ]


def test_creation_accepts_a_lot_exactly_at_the_base_scale_and_a_notional_at_the_quote_scale(
    admin: psycopg.Connection, assets: None
) -> None:
    instrument = create(admin, tick_size=D("0.01"), lot_size=D("0.0001"))

    assert (instrument.tick_size, instrument.lot_size) == (D("0.01"), D("0.0001"))
    assert create(admin, "ETH", "USD", lot_size=D("0.00000001"), tick_size=D("100")).lot_size == D(
        "0.00000001"
    )


def test_lot_size_finer_than_the_base_scale_is_refused(
    admin: psycopg.Connection, assets: None
) -> None:
    assert_operation_refused(
        admin, "invalid_instrument", lambda: create(admin, lot_size=D("0.000000001"))
    )


def test_tick_times_lot_finer_than_the_quote_scale_is_refused(
    admin: psycopg.Connection, assets: None
) -> None:
    # 0.0001 x 0.001 = 10^-7: a notional could need 7 decimals of USD, which has 6.
    assert_operation_refused(
        admin,
        "invalid_instrument",
        lambda: create(admin, tick_size=D("0.0001"), lot_size=D("0.001")),
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"tick_size": D("0")},
        {"tick_size": D("-0.01")},
        {"lot_size": D("0")},
        {"lot_size": D("-0.001")},
        {"min_quantity": D("-0.001")},
        {"min_notional": D("-1")},
    ],
    ids=[
        "zero_tick",
        "negative_tick",
        "zero_lot",
        "negative_lot",
        "negative_min_quantity",
        "negative_min_notional",
    ],
)
def test_non_positive_sizes_or_negative_minimums_are_refused(
    admin: psycopg.Connection, assets: None, changes: dict[str, Decimal]
) -> None:
    assert_operation_refused(admin, "invalid_instrument", lambda: create(admin, **changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"maker_fee_rate": D("1")},
        {"taker_fee_rate": D("1")},
        {"maker_fee_rate": D("1.5")},
        {"maker_fee_rate": D("-0.001")},
        {"taker_fee_rate": D("-0.001")},
    ],
    ids=["maker_one", "taker_one", "maker_above_one", "maker_negative", "taker_negative"],
)
def test_fee_rate_of_one_or_more_or_negative_is_refused(
    admin: psycopg.Connection, assets: None, changes: dict[str, Decimal]
) -> None:
    assert_operation_refused(admin, "invalid_instrument", lambda: create(admin, **changes))


def test_zero_fee_rates_are_accepted(admin: psycopg.Connection, assets: None) -> None:
    instrument = create(admin, maker_fee_rate=D("0"), taker_fee_rate=D("0"))

    assert (instrument.maker_fee_rate, instrument.taker_fee_rate) == (D("0"), D("0"))


@pytest.mark.parametrize("pair", [("XYZ", "USD"), ("BTC", "XYZ")], ids=["base", "quote"])
def test_unknown_asset_is_refused(
    admin: psycopg.Connection, assets: None, pair: tuple[str, str]
) -> None:
    assert_operation_refused(admin, "invalid_instrument", lambda: create(admin, *pair))


def test_base_and_quote_of_the_same_asset_are_refused(
    admin: psycopg.Connection, assets: None
) -> None:
    assert_operation_refused(admin, "invalid_instrument", lambda: create(admin, "USD", "USD"))


def test_second_instrument_of_the_same_symbol_is_refused(
    admin: psycopg.Connection, assets: None
) -> None:
    create(admin)

    assert_operation_refused(admin, "instrument_exists", lambda: create(admin, tick_size=D("0.1")))


def test_the_reverse_pair_is_another_instrument(admin: psycopg.Connection, assets: None) -> None:
    create(admin)

    assert create(admin, "USD", "BTC", tick_size=D("0.00000001"), lot_size=D("1")).symbol == (
        "USD-BTC"
    )


def test_instruments_are_listed_by_symbol(admin: psycopg.Connection, assets: None) -> None:
    create(admin, "ETH", "USD")
    create(admin)

    assert [i.symbol for i in instruments.list_instruments(admin)] == ["BTC-USD", "ETH-USD"]


def test_unknown_symbol_is_an_unknown_instrument(admin: psycopg.Connection, assets: None) -> None:
    with pytest.raises(TradingError) as caught:
        instruments.get_instrument(admin, "DOGE-USD")

    assert caught.value.code == "unknown_instrument"


# --- status -----------------------------------------------------------------------------------


def test_halt_and_resume_change_the_status(admin: psycopg.Connection, btc_usd: Instrument) -> None:
    assert instruments.set_status(admin, SYMBOL, "halted").status == "halted"
    assert instruments.set_status(admin, SYMBOL, "trading").status == "trading"


@pytest.mark.parametrize("status", ["closed", "HALTED", ""])
def test_unknown_status_is_refused(
    admin: psycopg.Connection, btc_usd: Instrument, status: str
) -> None:
    assert_operation_refused(
        admin, "invalid_instrument", lambda: instruments.set_status(admin, SYMBOL, status)
    )
    assert instruments.get_instrument(admin, SYMBOL).status == "trading"


def test_status_of_an_unknown_instrument_is_refused(
    admin: psycopg.Connection, btc_usd: Instrument
) -> None:
    assert_operation_refused(
        admin, "unknown_instrument", lambda: instruments.set_status(admin, "ETH-USD", "halted")
    )


def test_status_can_be_set_directly_by_the_owner(
    admin: psycopg.Connection, btc_usd: Instrument
) -> None:
    admin.execute("UPDATE trading.instrument SET status = 'halted' WHERE symbol = %s", (SYMBOL,))

    assert instruments.get_instrument(admin, SYMBOL).status == "halted"


# --- immutability -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "assignment",
    [
        "tick_size = 0.1",
        "lot_size = 0.01",
        "min_quantity = 1",
        "min_notional = 10",
        "maker_fee_rate = 0",
        "taker_fee_rate = 0.5",
        "base_scale = 2",
        "symbol = 'XBT-USD'",
        "seq = seq - 1",
    ],
)
def test_instrument_parameters_cannot_be_updated_even_by_a_superuser(
    admin: psycopg.Connection, traded: None, assignment: str
) -> None:
    before = trading_state(admin)

    assert_immutable(admin, f"UPDATE trading.instrument SET {assignment}")

    assert trading_state(admin) == before


def test_instrument_parameters_cannot_be_updated_by_the_owner(
    admin: psycopg.Connection, btc_usd: Instrument
) -> None:
    admin.execute(f"SET ROLE {OWNER_ROLE}")
    try:
        assert_immutable(admin, "UPDATE trading.instrument SET tick_size = 0.1")
    finally:
        admin.execute("RESET ROLE")


def test_instruments_cannot_be_deleted(admin: psycopg.Connection, btc_usd: Instrument) -> None:
    assert_immutable(admin, "DELETE FROM trading.instrument")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE trading.trade SET price = price + 1",
        "UPDATE trading.trade SET maker_fee = 0",
        "DELETE FROM trading.trade",
        "TRUNCATE trading.trade CASCADE",
        "UPDATE trading.event SET payload = '{}'",
        "DELETE FROM trading.event",
        "TRUNCATE trading.event",
    ],
)
def test_trades_and_events_cannot_be_changed_or_removed(
    admin: psycopg.Connection, traded: None, statement: str
) -> None:
    before = trading_state(admin)

    assert_immutable(admin, statement)

    assert trading_state(admin) == before


@pytest.mark.parametrize(
    "statement", ["DELETE FROM trading.orders", "TRUNCATE trading.orders CASCADE"]
)
def test_orders_cannot_be_removed(admin: psycopg.Connection, traded: None, statement: str) -> None:
    assert_immutable(admin, statement)


@pytest.mark.parametrize(
    "assignment",
    [
        "status = 'new', filled_quantity = 0",  # a filled order reopened
        "client_order_id = 'other'",
        "side = 'sell'",
        "requested_quantity = 2",
    ],
)
def test_closed_orders_and_order_identities_cannot_change(
    admin: psycopg.Connection, traded: None, assignment: str
) -> None:
    assert_immutable(admin, f"UPDATE trading.orders SET {assignment} WHERE client_order_id = 'b1'")


@pytest.fixture
def resting(admin: psycopg.Connection, app_conn: psycopg.Connection, btc_usd: Instrument) -> None:
    """A resting GTC limit buy 'r1' (status new) on BTC-USD."""
    buyer = funded_account(app_conn, USD="1000")
    assert run_one(app_conn, SYMBOL, limit(buyer, "r1", "buy", "1", "100")).ok


@pytest.mark.parametrize(
    ("assignment", "rule"),
    [
        ("status = 'filled'", "orders_status_matches_fill"),
        ("filled_quantity = 2, status = 'partially_filled'", "orders_quantities_valid"),
        ("status = 'canceled'", "orders_reason_matches_status"),
        ("status = 'closed'", "orders_status_valid"),
        ("price = NULL", "orders_price_matches_type"),
        ("quantity = 0", "orders_quantities_valid"),
    ],
)
def test_an_order_row_breaking_a_rule_is_refused_naming_the_rule(
    admin: psycopg.Connection, resting: None, assignment: str, rule: str
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        admin.execute(f"UPDATE trading.orders SET {assignment} WHERE client_order_id = 'r1'")

    assert caught.value.diag.constraint_name == rule


@pytest.mark.parametrize(
    ("client_order_id", "side", "type", "price", "rule"),
    [
        ("x y", "buy", "limit", 1, "orders_client_order_id_format"),
        ("m1", "buy", "market", None, "orders_only_gtc_limit_rests"),
        ("m2", "hold", "limit", 1, "orders_side_valid"),
    ],
)
def test_an_order_inserted_against_the_rules_is_refused_naming_the_rule(
    admin: psycopg.Connection,
    resting: None,
    client_order_id: str,
    side: str,
    type: str,
    price: int | None,
    rule: str,
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        admin.execute(
            "INSERT INTO trading.orders (instrument_id, customer_id, client_order_id, side, type,"
            " price, requested_price, time_in_force, quantity, requested_quantity, status,"
            " priority)"
            " SELECT instrument_id, customer_id, %s, %s, %s, %s, %s, 'GTC', 1, 1, 'new', 99"
            " FROM trading.orders WHERE client_order_id = 'r1'",
            (client_order_id, side, type, price, price),
        )

    assert caught.value.diag.constraint_name == rule


# --- the application role ---------------------------------------------------------------------

APP_WRITES = [
    "INSERT INTO trading.instrument (symbol, base, quote, tick_size, lot_size, min_quantity,"
    " min_notional, maker_fee_rate, taker_fee_rate)"
    " VALUES ('ETH-USD', 'ETH', 'USD', 0.01, 0.01, 0, 0, 0, 0)",
    "UPDATE trading.instrument SET status = 'halted'",
    "UPDATE trading.orders SET status = 'canceled', reason = 'x' WHERE status = 'new'",
    "INSERT INTO trading.event (instrument_id, seq, kind, payload) VALUES (1, 99, 'place', '{}')",
    "UPDATE trading.trade SET price = 1",
    "DELETE FROM trading.orders",
]


@pytest.mark.parametrize("statement", APP_WRITES)
def test_application_role_cannot_write_trading_tables(
    app_conn: psycopg.Connection, admin: psycopg.Connection, traded: None, statement: str
) -> None:
    admin.execute("INSERT INTO ledger.asset (code, scale) VALUES ('ETH', 8)")
    before = trading_state(admin)

    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute(statement)

    assert trading_state(admin) == before


def test_application_role_can_read_instruments_and_its_tenants_orders_and_trades(
    app_conn: psycopg.Connection, traded: None
) -> None:
    row = app_conn.execute(
        "SELECT (SELECT count(*) FROM trading.instrument), (SELECT count(*) FROM trading.orders),"
        " (SELECT count(*) FROM trading.trade)"
    ).fetchone()

    assert row == (1, 2, 1)


def test_application_role_cannot_read_market_events(
    app_conn: psycopg.Connection, traded: None
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute("SELECT count(*) FROM trading.event")


def test_application_role_creates_and_halts_instruments_only_through_the_operator_functions(
    app_conn: psycopg.Connection, admin: psycopg.Connection, assets: None
) -> None:
    # The admin API runs as the application role: it may call the operator functions (which
    # check every parameter), never write the table.
    instruments.create_instrument(app_conn, "BTC", "USD", **BTC_USD)
    instruments.set_status(app_conn, SYMBOL, "halted")

    assert instruments.get_instrument(admin, SYMBOL).status == "halted"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute("UPDATE trading.instrument SET status = 'trading'")
