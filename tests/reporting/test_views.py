"""The views of schema reporting on the known history of tests/reporting/helpers.py: what finance
staff see when they query them directly (the present)."""

from __future__ import annotations

from decimal import Decimal

import psycopg

from tests.reporting.conftest import Seeded
from tests.reporting.helpers import SYMBOL, phase_1

D = Decimal

VIEWS = [
    "account_statement", "asset", "balances", "fee_revenue", "journals", "open_order_exposure",
    "order_history", "reconciliation", "trade_side", "traded_volume", "trades", "trial_balance",
]  # fmt: skip


def select(conn: psycopg.Connection, query: str, *args: object) -> list[tuple]:
    return [tuple(row) for row in conn.execute(query, args).fetchall()]


def test_the_reporting_schema_holds_these_views_and_only_views(reader: psycopg.Connection) -> None:
    rows = select(
        reader,
        "SELECT relname, relkind FROM pg_class"
        " WHERE relnamespace = 'reporting'::regnamespace ORDER BY relname COLLATE \"C\"",
    )

    assert rows == [(view, "v") for view in sorted(VIEWS)]


def test_every_view_and_the_schema_are_documented_with_a_comment(
    reader: psycopg.Connection,
) -> None:
    undocumented = select(
        reader,
        "SELECT relname FROM pg_class WHERE relnamespace = 'reporting'::regnamespace"
        " AND obj_description(oid, 'pg_class') IS NULL",
    )
    schema = select(reader, "SELECT obj_description('reporting'::regnamespace, 'pg_namespace')")

    assert undocumented == []
    assert schema[0][0]


def test_trial_balance_view_sums_to_zero_per_asset(reader: psycopg.Connection) -> None:
    assert select(reader, "SELECT * FROM reporting.trial_balance ORDER BY asset") == [
        ("BTC", D("7.497"), D("0.5"), D("0.003"), D("-8"), D("0")),
        ("USD", D("101055"), D("2900"), D("45"), D("-104000"), D("0")),
    ]


def test_balances_view_gives_cached_balances_per_tenant_customer_and_asset(
    reader: psycopg.Connection,
) -> None:
    rows = select(
        reader,
        "SELECT tenant, external_ref, asset, bucket, balance FROM reporting.balances"
        " WHERE tenant IS NOT NULL ORDER BY tenant, customer_id, asset, bucket",
    )

    assert rows == [
        ("acme", "alice", "BTC", "available", D("1.497")),
        ("acme", "alice", "USD", "available", D("54000")),
        ("acme", "carol", "USD", "available", D("2100")),
        ("acme", "carol", "USD", "held", D("2900")),
        ("globex", "bob", "BTC", "available", D("6")),
        ("globex", "bob", "BTC", "held", D("0.5")),
        ("globex", "bob", "USD", "available", D("44955")),
    ]


def test_account_statement_view_gives_each_entry_with_its_running_balance(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    rows = select(
        reader,
        "SELECT kind, reference, amount, running_balance FROM reporting.account_statement"
        " WHERE customer_id = %s AND asset = 'USD' ORDER BY account_seq",
        seeded.history.alice,
    )

    assert [(kind, amount, balance) for kind, _, amount, balance in rows] == [
        ("deposit", D("100000"), D("100000")),
        ("trade", D("-30000"), D("70000")),
        ("withdrawal", D("-1000"), D("69000")),
        ("trade", D("-15000"), D("54000")),
    ]
    assert rows[0][1] == "wire 1"


def test_trades_view_gives_both_sides_tenants_and_fees(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    h = seeded.history
    rows = select(
        reader,
        "SELECT instrument, taker_side, price, quantity, notional,"
        "       maker_customer_id, maker_tenant, maker_fee, maker_fee_asset,"
        "       taker_customer_id, taker_tenant, taker_fee, taker_fee_asset"
        "  FROM reporting.trades ORDER BY trade_id",
    )

    assert rows == [
        (SYMBOL, "buy", D("30000"), D("1"), D("30000"),
         h.bob, "globex", D("30"), "USD", h.alice, "acme", D("0.002"), "BTC"),
        (SYMBOL, "buy", D("30000"), D("0.5"), D("15000"),
         h.bob, "globex", D("15"), "USD", h.alice, "acme", D("0.001"), "BTC"),
    ]  # fmt: skip


def test_fee_revenue_view_groups_fees_by_day_paying_tenant_instrument_and_asset(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    rows = select(
        reader,
        "SELECT day, tenant, instrument, asset, maker_fees, taker_fees, fees"
        "  FROM reporting.fee_revenue ORDER BY tenant",
    )

    assert rows == [
        (seeded.day, "acme", SYMBOL, "BTC", D("0"), D("0.003"), D("0.003")),
        (seeded.day, "globex", SYMBOL, "USD", D("45"), D("0"), D("45")),
    ]


def test_traded_volume_view_gives_volume_and_notional_by_day_instrument_and_tenant(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    rows = select(
        reader,
        "SELECT day, instrument, tenant, trades, bought, sold, volume, notional"
        "  FROM reporting.traded_volume ORDER BY tenant",
    )

    assert rows == [
        (seeded.day, SYMBOL, "acme", 2, D("1.5"), D("0"), D("1.5"), D("45000")),
        (seeded.day, SYMBOL, "globex", 2, D("0"), D("1.5"), D("1.5"), D("45000")),
    ]


def test_open_order_exposure_view_gives_held_funds_and_what_open_orders_reserve(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    rows = select(
        reader,
        "SELECT tenant, customer_id, asset, held, open_orders, reserved"
        "  FROM reporting.open_order_exposure ORDER BY customer_id",
    )

    assert rows == [
        ("globex", seeded.history.bob, "BTC", D("0.5"), 1, D("0.5")),
        ("acme", seeded.history.carol, "USD", D("2900"), 1, D("2900")),
    ]


def test_order_history_view_gives_each_state_of_an_order_and_what_it_reserved(
    reader: psycopg.Connection,
) -> None:
    rows = select(
        reader,
        "SELECT seq, command, status, filled_quantity, reserved_asset, reserved"
        "  FROM reporting.order_history WHERE client_order_id = 's1' ORDER BY seq",
    )

    assert rows == [
        (1, "place", "new", D("0"), "BTC", D("2")),
        (2, "place", "partially_filled", D("1"), "BTC", D("1")),
        (3, "place", "partially_filled", D("1.5"), "BTC", D("0.5")),
    ]


def test_reconciliation_view_says_ok_for_every_check(reader: psycopg.Connection) -> None:
    rows = select(
        reader,
        "SELECT check_name, count(*), count(*) FILTER (WHERE status = 'ok'),"
        "       sum(abs(difference))"
        "  FROM reporting.reconciliation GROUP BY check_name ORDER BY check_name",
    )

    assert rows == [
        ("account_balance", 12, 12, D("0")),
        ("held_reservation", 2, 2, D("0")),
        ("running_balance", 12, 12, D("0")),
        ("trial_balance", 2, 2, D("0")),
    ]


def test_reconciliation_view_reports_held_funds_no_open_order_reserves_with_the_difference(
    admin: psycopg.Connection,
) -> None:
    history = phase_1(admin)  # bob's s1 reserves 1 BTC
    admin.execute(
        """
        SELECT ledger.post_journal(
            'hold', 'by hand', 'by-hand-1',
            ARRAY[ledger.account_id(%(c)s, 'BTC', 'available'),
                  ledger.account_id(%(c)s, 'BTC', 'held')],
            ARRAY['BTC', 'BTC'], ARRAY[-0.25, 0.25])
        """,
        {"c": history.bob},
    )

    rows = select(
        admin,
        "SELECT check_name, customer_id, asset, expected, actual, difference, status"
        "  FROM reporting.reconciliation WHERE status <> 'ok'",
    )

    assert rows == [
        ("held_reservation", history.bob, "BTC", D("1"), D("1.25"), D("0.25"), "difference"),
    ]
