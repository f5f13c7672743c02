"""The `exchange` command line, run against the per-test database through DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Exchange, ScratchDatabase
from tests.test_migrations import HEAD


@pytest.fixture
def customer(exchange: Exchange, tenant: int) -> int:
    """A customer of the `tenant` broker holding nothing yet, with the asset USD at scale 2."""
    assert exchange("asset", "create", "USD", "--scale", "2")[0] == 0
    code, out, _ = exchange(
        "customer", "create", "--tenant", str(tenant), "--external-ref", "alice"
    )
    assert code == 0
    return int(out.strip())


def movement(
    exchange: Exchange, kind: str, customer: int, amount: str, key: str
) -> tuple[int, str, str]:
    return exchange(
        kind,
        "--customer",
        str(customer),
        "--asset",
        "USD",
        "--amount",
        amount,
        "--idempotency-key",
        key,
    )


def balances(exchange: Exchange, customer: int) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    """`exchange balances` parsed: asset -> (available, held, total)."""
    code, out, _ = exchange("balances", "--customer", str(customer))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["asset", "available", "held", "total"]
    table = {}
    for row in rows:
        asset, available, held, total = row.split()
        table[asset] = (Decimal(available), Decimal(held), Decimal(total))
    return table


def journal_count(admin: psycopg.Connection) -> int:
    row = admin.execute("SELECT count(*) FROM ledger.journal").fetchone()
    assert row is not None
    return int(row[0])


def test_deposit_and_withdraw_show_in_balances(exchange: Exchange, customer: int) -> None:
    assert movement(exchange, "deposit", customer, "100.00", "dep-1")[0] == 0
    assert movement(exchange, "withdraw", customer, "25.50", "wd-1")[0] == 0

    assert balances(exchange, customer) == {
        "USD": (Decimal("74.50"), Decimal("0"), Decimal("74.50"))
    }


def test_deposit_beyond_the_asset_scale_fails_and_writes_no_journal(
    exchange: Exchange, customer: int, admin: psycopg.Connection
) -> None:
    code, _, err = movement(exchange, "deposit", customer, "10.001", "dep-1")

    assert code == 1
    assert "amount_scale" in err
    assert journal_count(admin) == 0


def test_withdrawal_beyond_the_available_balance_fails_with_insufficient_funds(
    exchange: Exchange, customer: int
) -> None:
    assert movement(exchange, "deposit", customer, "10.00", "dep-1")[0] == 0

    code, _, err = movement(exchange, "withdraw", customer, "10.01", "wd-1")

    assert code == 1
    assert "insufficient_funds" in err
    assert balances(exchange, customer)["USD"][0] == Decimal("10.00")


def test_retried_deposit_with_the_same_idempotency_key_credits_once(
    exchange: Exchange, customer: int, admin: psycopg.Connection
) -> None:
    first = movement(exchange, "deposit", customer, "100.00", "dep-1")
    retry = movement(exchange, "deposit", customer, "100.00", "dep-1")

    assert first[0] == retry[0] == 0
    assert retry[1] == first[1]  # the same journal
    assert journal_count(admin) == 1
    assert balances(exchange, customer)["USD"][0] == Decimal("100.00")


def test_verify_passes_on_a_clean_database(exchange: Exchange, customer: int) -> None:
    assert movement(exchange, "deposit", customer, "100.00", "dep-1")[0] == 0

    code, out, err = exchange("verify")

    assert code == 0
    assert err == ""
    assert "FAIL" not in out


def test_verify_names_a_disabled_integrity_trigger(
    exchange: Exchange, admin: psycopg.Connection
) -> None:
    admin.execute("ALTER TABLE ledger.entry DISABLE TRIGGER entry_immutable")

    code, out, err = exchange("verify")

    assert code == 1
    assert "first violation: integrity_triggers_enabled" in err
    assert "entry_immutable" in err
    assert "FAIL integrity_triggers_enabled" in out


def test_verify_names_a_cached_balance_that_disagrees_with_its_entries(
    exchange: Exchange, customer: int, admin: psycopg.Connection
) -> None:
    assert movement(exchange, "deposit", customer, "100.00", "dep-1")[0] == 0
    admin.execute("SET session_replication_role = replica")  # no triggers: a hand edit
    admin.execute(
        "UPDATE ledger.account SET balance = balance + 1"
        " WHERE customer_id = %s AND bucket = 'available'",
        (customer,),
    )

    code, _, err = exchange("verify")

    assert code == 1
    assert "first violation: cached_balance_matches_entries" in err


def test_db_current_prints_the_head_revision(exchange: Exchange) -> None:
    code, out, _ = exchange("db", "current")

    assert code == 0
    assert out.strip() == HEAD


def test_non_decimal_amount_is_a_usage_error(
    exchange: Exchange, customer: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        movement(exchange, "deposit", customer, "abc", "dep-1")

    assert exited.value.code == 2
    assert "not a decimal number: 'abc'" in capsys.readouterr().err


def test_console_script_verify_exits_zero(db: ScratchDatabase) -> None:
    script = Path(sys.executable).parent / "exchange"
    environment = {k: v for k, v in os.environ.items() if k != "ADMIN_DATABASE_URL"}
    environment["DATABASE_URL"] = db.url()

    result = subprocess.run(
        [str(script), "verify"], env=environment, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   journal_balanced" in result.stdout


def test_downgrade_of_a_ledger_holding_money_is_refused_without_allow_data_loss(
    exchange: Exchange, customer: int
) -> None:
    assert movement(exchange, "deposit", customer, "1.00", "d1")[0] == 0
    # Tenancy's downgrade refuses too while tenants exist; let it go, to reach the ledger's.
    assert exchange("db", "downgrade", "0003", "--allow-data-loss")[0] == 0

    code, _, err = exchange("db", "downgrade", "base")

    assert code == 1
    assert "would destroy them" in err
    assert exchange("db", "current")[1].strip() == "0001"


def test_operator_command_refused_by_the_database_reports_it_without_a_traceback(
    exchange: Exchange, db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", db.url("exchange_app"))

    code, _, err = exchange("apikey", "list")

    assert code == 1
    assert err.startswith("error: the database refused: permission denied")
