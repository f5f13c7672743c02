"""The reports of sql/reports/ on a known history (tests/reporting/helpers.py): exact figures now,
and as of t1, a moment between the two phases, which later activity must not change."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg

from app.reporting import reports
from tests.reporting.conftest import Seeded
from tests.reporting.helpers import SYMBOL, History, phase_1, phase_2

D = Decimal


def report(conn: psycopg.Connection, name: str, *columns: str, **given: object) -> list[tuple]:
    """The report's rows, projected on `columns` (all of them when none are named)."""
    result = reports.run(conn, reports.load(name), {k: str(v) for k, v in given.items()})
    keep = [result.columns.index(c) for c in columns] if columns else range(len(result.columns))
    return [tuple(row[i] for i in keep) for row in result.rows]


def custody(customer: int) -> str:
    return f"customer/{customer}"


# Trial balance ------------------------------------------------------------------------------


def test_trial_balance_sums_each_bucket_and_every_asset_totals_zero(
    reader: psycopg.Connection,
) -> None:
    assert report(reader, "trial_balance") == [
        ("BTC", D("7.497"), D("0.5"), D("0.003"), D("-8"), D("0")),
        ("USD", D("101055"), D("2900"), D("45"), D("-104000"), D("0")),
    ]


def test_trial_balance_as_of_t1_gives_the_figures_of_t1_despite_later_activity(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    assert report(reader, "trial_balance", as_of=seeded.t1.isoformat()) == [
        ("BTC", D("8.998"), D("1"), D("0.002"), D("-10"), D("0")),
        ("USD", D("99970"), D("0"), D("30"), D("-100000"), D("0")),
    ]


def test_trial_balance_before_any_journal_is_empty(reader: psycopg.Connection) -> None:
    assert report(reader, "trial_balance", as_of="2000-01-01T00:00:00Z") == []


def test_trial_balance_shows_every_figure_at_its_asset_scale(reader: psycopg.Connection) -> None:
    (_, usd) = report(reader, "trial_balance")

    assert [format(value, "f") for value in usd[1:]] == [
        "101055.000000", "2900.000000", "45.000000", "-104000.000000", "0.000000",
    ]  # fmt: skip


# Balances -----------------------------------------------------------------------------------

BALANCE_COLUMNS = ("tenant", "external_ref", "asset", "bucket", "label", "balance", "entries")


def test_balances_gives_every_account_with_its_tenant_and_the_system_accounts_last(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    h = seeded.history

    assert report(reader, "balances", *BALANCE_COLUMNS) == [
        ("acme", "alice", "BTC", "available", "", D("1.497"), 2),
        ("acme", "alice", "USD", "available", "", D("54000"), 4),
        ("acme", "carol", "USD", "available", "", D("2100"), 2),
        ("acme", "carol", "USD", "held", "", D("2900"), 1),
        ("globex", "bob", "BTC", "available", "", D("6"), 3),
        ("globex", "bob", "BTC", "held", "", D("0.5"), 3),
        ("globex", "bob", "USD", "available", "", D("44955"), 2),
        (None, None, "BTC", "custody", custody(h.bob), D("-8"), 2),
        (None, None, "BTC", "fee", SYMBOL, D("0.003"), 2),
        (None, None, "USD", "custody", custody(h.alice), D("-99000"), 2),
        (None, None, "USD", "custody", custody(h.carol), D("-5000"), 1),
        (None, None, "USD", "fee", SYMBOL, D("45"), 2),
    ]


def test_balances_as_of_t1_leaves_out_later_entries_and_accounts(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    h = seeded.history

    assert report(reader, "balances", *BALANCE_COLUMNS, as_of=seeded.t1.isoformat()) == [
        ("acme", "alice", "BTC", "available", "", D("0.998"), 1),
        ("acme", "alice", "USD", "available", "", D("70000"), 2),
        ("globex", "bob", "BTC", "available", "", D("8"), 2),
        ("globex", "bob", "BTC", "held", "", D("1"), 2),
        ("globex", "bob", "USD", "available", "", D("29970"), 1),
        (None, None, "BTC", "custody", custody(h.bob), D("-10"), 1),
        (None, None, "BTC", "fee", SYMBOL, D("0.002"), 1),
        (None, None, "USD", "custody", custody(h.alice), D("-100000"), 1),
        (None, None, "USD", "fee", SYMBOL, D("30"), 1),
    ]


def test_balances_of_one_tenant_gives_only_its_customers_accounts(
    reader: psycopg.Connection,
) -> None:
    assert report(reader, "balances", "external_ref", "asset", "bucket", tenant="globex") == [
        ("bob", "BTC", "available"),
        ("bob", "BTC", "held"),
        ("bob", "USD", "available"),
    ]


# Statement ----------------------------------------------------------------------------------

STATEMENT_COLUMNS = ("kind", "asset", "bucket", "account_seq", "amount", "running_balance")


def test_statement_lists_each_account_history_with_its_running_balance(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    rows = report(reader, "statement", *STATEMENT_COLUMNS, customer=seeded.history.bob)

    assert rows == [
        ("deposit", "BTC", "available", 1, D("10"), D("10")),
        ("hold", "BTC", "available", 2, D("-2"), D("8")),
        ("withdrawal", "BTC", "available", 3, D("-2"), D("6")),
        ("hold", "BTC", "held", 1, D("2"), D("2")),
        ("trade", "BTC", "held", 2, D("-1"), D("1")),
        ("trade", "BTC", "held", 3, D("-0.5"), D("0.5")),
        ("trade", "USD", "available", 1, D("29970"), D("29970")),
        ("trade", "USD", "available", 2, D("14985"), D("44955")),
    ]


def test_statement_shows_the_journal_references(reader: psycopg.Connection, seeded: Seeded) -> None:
    rows = report(reader, "statement", "kind", "reference", customer=seeded.history.alice)

    assert [row for row in rows if row[0] != "trade"] == [
        ("deposit", "wire 1"),
        ("withdrawal", "wire out 1"),
    ]


def test_statement_as_of_t1_stops_at_t1(reader: psycopg.Connection, seeded: Seeded) -> None:
    rows = report(
        reader, "statement", *STATEMENT_COLUMNS,
        customer=seeded.history.alice, as_of=seeded.t1.isoformat(),
    )  # fmt: skip

    assert rows == [
        ("trade", "BTC", "available", 1, D("0.998"), D("0.998")),
        ("deposit", "USD", "available", 1, D("100000"), D("100000")),
        ("trade", "USD", "available", 2, D("-30000"), D("70000")),
    ]


def test_statement_since_t1_starts_after_t1_and_keeps_the_running_balance(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    rows = report(
        reader, "statement", *STATEMENT_COLUMNS,
        customer=seeded.history.alice, since=seeded.t1.isoformat(),
    )  # fmt: skip

    assert rows == [
        ("trade", "BTC", "available", 2, D("0.499"), D("1.497")),
        ("withdrawal", "USD", "available", 3, D("-1000"), D("69000")),
        ("trade", "USD", "available", 4, D("-15000"), D("54000")),
    ]


def test_statement_of_one_asset(reader: psycopg.Connection, seeded: Seeded) -> None:
    carol = seeded.history.carol
    rows = report(reader, "statement", "asset", "bucket", "amount", customer=carol, asset="USD")

    assert rows == [
        ("USD", "available", D("5000")),
        ("USD", "available", D("-2900")),
        ("USD", "held", D("2900")),
    ]


# Fee revenue --------------------------------------------------------------------------------


def test_fee_revenue_per_day_paying_tenant_instrument_and_asset(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    assert report(reader, "fee_revenue") == [
        (seeded.day, "acme", SYMBOL, "BTC", D("0"), D("0.003"), D("0.003")),
        (seeded.day, "globex", SYMBOL, "USD", D("45"), D("0"), D("45")),
    ]


def test_fee_revenue_as_of_t1_counts_only_the_first_trade(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    assert report(reader, "fee_revenue", as_of=seeded.t1.isoformat()) == [
        (seeded.day, "acme", SYMBOL, "BTC", D("0"), D("0.002"), D("0.002")),
        (seeded.day, "globex", SYMBOL, "USD", D("30"), D("0"), D("30")),
    ]


def test_fee_revenue_since_t1_counts_only_the_second_trade(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    rows = report(reader, "fee_revenue", "tenant", "asset", "fees", since=seeded.t1.isoformat())

    assert rows == [("acme", "BTC", D("0.001")), ("globex", "USD", D("15"))]


def test_fee_revenue_of_one_tenant(reader: psycopg.Connection) -> None:
    rows = report(reader, "fee_revenue", "tenant", "asset", "fees", tenant="globex")

    assert rows == [("globex", "USD", D("45"))]


def test_fee_revenue_adds_up_to_the_fee_accounts_of_the_trial_balance(
    reader: psycopg.Connection,
) -> None:
    revenue: dict[str, Decimal] = {}
    for asset, fees in report(reader, "fee_revenue", "asset", "fees"):
        revenue[asset] = revenue.get(asset, D(0)) + fees

    assert revenue == dict(report(reader, "trial_balance", "asset", "fee"))


# Daily volume -------------------------------------------------------------------------------


def test_daily_volume_per_day_instrument_and_tenant(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    day = seeded.day
    assert report(reader, "daily_volume") == [
        (day, SYMBOL, "acme", 2, D("1.5"), D("0"), D("1.5"), D("45000"), D("0"), D("45000")),
        (day, SYMBOL, "globex", 2, D("0"), D("1.5"), D("1.5"), D("0"), D("45000"), D("45000")),
    ]


def test_daily_volume_as_of_t1_counts_only_the_first_trade(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    day = seeded.day
    assert report(reader, "daily_volume", as_of=seeded.t1.isoformat()) == [
        (day, SYMBOL, "acme", 1, D("1"), D("0"), D("1"), D("30000"), D("0"), D("30000")),
        (day, SYMBOL, "globex", 1, D("0"), D("1"), D("1"), D("0"), D("30000"), D("30000")),
    ]


def test_daily_volume_of_one_tenant(reader: psycopg.Connection) -> None:
    rows = report(reader, "daily_volume", "tenant", "bought", "sold", tenant="acme")

    assert rows == [("acme", D("1.5"), D("0"))]


# Reconciliation -----------------------------------------------------------------------------

RECONCILIATION_COLUMNS = (
    "check_name", "tenant", "customer_id", "asset", "expected", "actual", "difference", "status",
)  # fmt: skip


def checks(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[0]] = counts.get(row[0], 0) + 1
    return counts


def test_reconciliation_now_checks_every_account_held_balance_and_asset_and_all_are_ok(
    reader: psycopg.Connection,
) -> None:
    rows = report(reader, "reconciliation", *RECONCILIATION_COLUMNS)

    assert checks(rows) == {
        "account_balance": 12, "held_reservation": 2, "running_balance": 12, "trial_balance": 2,
    }  # fmt: skip
    assert {row[-1] for row in rows} == {"ok"}


def test_reconciliation_compares_held_funds_with_open_order_reservations(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    h = seeded.history
    rows = report(reader, "reconciliation", *RECONCILIATION_COLUMNS)

    assert [row for row in rows if row[0] == "held_reservation"] == [
        ("held_reservation", "globex", h.bob, "BTC", D("0.5"), D("0.5"), D("0"), "ok"),
        ("held_reservation", "acme", h.carol, "USD", D("2900"), D("2900"), D("0"), "ok"),
    ]


def test_reconciliation_as_of_t1_rebuilds_the_orders_then_open_from_the_market_events(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    rows = report(reader, "reconciliation", *RECONCILIATION_COLUMNS, as_of=seeded.t1.isoformat())

    assert [row for row in rows if row[0] == "held_reservation"] == [
        ("held_reservation", "globex", seeded.history.bob, "BTC", D("1"), D("1"), D("0"), "ok"),
    ]
    # Cached balances are the present's: no account_balance rows for a past moment.
    assert checks(rows) == {"held_reservation": 1, "running_balance": 9, "trial_balance": 2}
    assert {row[-1] for row in rows} == {"ok"}


def test_reconciliation_of_one_tenant_has_only_its_customers_rows(
    reader: psycopg.Connection, seeded: Seeded
) -> None:
    rows = report(reader, "reconciliation", "tenant", "customer_id", tenant="acme")

    assert {row for row in rows} == {
        ("acme", seeded.history.alice),
        ("acme", seeded.history.carol),
    }


def history_in(admin: psycopg.Connection) -> History:
    history = phase_1(admin)
    phase_2(admin, history)
    return history


def test_reconciliation_reports_a_cached_balance_that_drifted_from_its_entries(
    admin: psycopg.Connection,
) -> None:
    history = history_in(admin)
    admin.execute("SET session_replication_role = replica")  # past the guarding trigger
    admin.execute(
        "UPDATE ledger.account SET balance = balance + 1"
        " WHERE customer_id = %s AND asset = 'USD' AND bucket = 'available'",
        (history.alice,),
    )
    admin.execute("RESET session_replication_role")

    rows = report(admin, "reconciliation", *RECONCILIATION_COLUMNS)

    assert [row for row in rows if row[-1] != "ok"] == [
        ("account_balance", "acme", history.alice, "USD", D("54000"), D("54001"), D("1"),
         "difference"),
    ]  # fmt: skip


def test_reconciliation_reports_held_funds_that_no_open_order_reserves(
    admin: psycopg.Connection,
) -> None:
    history = history_in(admin)
    admin.execute(
        """
        SELECT ledger.post_journal(
            'hold', 'by hand', 'by-hand-1',
            ARRAY[ledger.account_id(%(c)s, 'USD', 'available'),
                  ledger.account_id(%(c)s, 'USD', 'held')],
            ARRAY['USD', 'USD'], ARRAY[-100, 100])
        """,
        {"c": history.carol},
    )

    rows = report(admin, "reconciliation", *RECONCILIATION_COLUMNS)

    assert [row for row in rows if row[-1] != "ok"] == [
        ("held_reservation", "acme", history.carol, "USD", D("2900"), D("3000"), D("100"),
         "difference"),
    ]  # fmt: skip
