"""The engine's edges: hostile or malformed input refuses one command, never the whole batch;
fees round up exactly at every scale; the instrument lock is out of the application's reach."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg
import pytest

from app.ledger.errors import SQLSTATE_CODES as LEDGER_CODES
from app.trading import engine
from app.trading.commands import Instrument
from app.trading.errors import SQLSTATE_CODES as TRADING_CODES
from app.trading.model import _round_up
from tests.trading.helpers import (
    D,
    create_market,
    funded_account,
    limit,
    run,
    trading_state,
)

SYMBOL = "BTC-USD"


@pytest.fixture
def btc_usd(admin: psycopg.Connection) -> Instrument:
    return create_market(admin)


@pytest.fixture
def alice(app_conn: psycopg.Connection, btc_usd: Instrument) -> int:
    return funded_account(app_conn, BTC="10", USD="100000")


@pytest.mark.parametrize("client_order_id", ["nul\x00", "surrogate\ud800"])
def test_unstorable_text_refuses_only_its_command(
    app_conn: psycopg.Connection, alice: int, client_order_id: str
) -> None:
    results = run(
        app_conn,
        SYMBOL,
        limit(alice, "good-1", "buy", "1", "100"),
        limit(alice, client_order_id, "buy", "1", "100"),
        limit(alice, "good-2", "buy", "1", "100"),
    )

    assert [r.code for r in results] == [None, "invalid_order", None]


def test_post_only_given_as_a_string_is_an_invalid_order(
    app_conn: psycopg.Connection, alice: int
) -> None:
    command = engine.command_json(limit(alice, "p1", "buy", "1", "100"))
    command["post_only"] = "true"
    before = trading_state(app_conn)

    row = app_conn.execute(
        "SELECT trading.execute(%s, %s::jsonb)", (SYMBOL, json.dumps([command]))
    ).fetchone()

    assert row is not None and row[0][0]["code"] == "invalid_order"
    assert trading_state(app_conn) == before


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_the_engine_refuses_to_run_on_an_old_snapshot(
    app_conn: psycopg.Connection, alice: int, isolation: str
) -> None:
    command = json.dumps([engine.command_json(limit(alice, "o1", "buy", "1", "100"))])

    with pytest.raises(psycopg.Error) as refused, app_conn.transaction():
        app_conn.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        app_conn.execute("SELECT trading.execute(%s, %s::jsonb)", (SYMBOL, command))

    assert refused.value.sqlstate == "EY017"


def test_the_application_cannot_lock_an_instrument(
    app_conn: psycopg.Connection, btc_usd: Instrument
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege), app_conn.transaction():
        app_conn.execute("SELECT FROM trading.instrument WHERE symbol = %s FOR UPDATE", (SYMBOL,))


def test_an_advisory_lock_held_by_the_application_does_not_stop_trading(
    db: object, app_conn: psycopg.Connection, alice: int, btc_usd: Instrument
) -> None:
    instrument_id = app_conn.execute(
        "SELECT id FROM trading.instrument WHERE symbol = %s", (SYMBOL,)
    ).fetchone()
    assert instrument_id is not None
    app_conn.execute("SELECT pg_advisory_lock(1414676804, %s)", (instrument_id[0],))

    (result,) = run(app_conn, SYMBOL, limit(alice, "o1", "buy", "1", "100"))

    assert result.ok


@pytest.mark.parametrize(
    ("received", "rate", "scale"),
    [
        ("10.0001", "0.123456789012345679", 18),
        ("3", "0.000000000000000001", 18),
        ("7.77", "0.0025", 17),
        ("1", "0.3333333333333333333", 16),
        ("250.5", "0.001", 2),
        ("0.003", "0.0025", 0),
        ("4", "0.25", 8),  # exact: no rounding
    ],
)
def test_fees_round_up_exactly_at_every_scale(
    admin: psycopg.Connection, received: str, rate: str, scale: int
) -> None:
    row = admin.execute(
        "SELECT trading.fee(%s::numeric, %s::numeric, %s::smallint)", (received, rate, scale)
    ).fetchone()

    assert row is not None
    assert row[0] == _round_up(D(received) * D(rate), scale)
    assert row[0] >= D(received) * D(rate) and row[0].as_tuple().exponent == -scale


def test_largest_order_settles_below_the_ledgers_bound(
    app_conn: psycopg.Connection, btc_usd: Instrument
) -> None:
    """Price and quantity each stay below 10^12, so no amount reaches the ledger's 10^24."""
    largest_price, largest_quantity = D("999999999999.99"), D("999999999.999")
    seller = funded_account(app_conn, BTC=largest_quantity)
    buyer = funded_account(app_conn, USD=Decimal("1e22"))

    results = run(
        app_conn,
        SYMBOL,
        limit(seller, "s", "sell", str(largest_quantity), str(largest_price)),
        limit(buyer, "b", "buy", str(largest_quantity), str(largest_price)),
    )

    assert [r.code for r in results] == [None, None]
    assert results[1].trades[0].quantity == largest_quantity


def test_python_and_sql_name_every_error_code_alike(admin: psycopg.Connection) -> None:
    """trading.error_code (the codes in batch results) and app.trading.errors (raised errors)
    are two spellings of one table: they must not drift apart."""
    expected = {**TRADING_CODES, "EX002": LEDGER_CODES["EX002"]}

    named = {
        sqlstate: admin.execute("SELECT trading.error_code(%s)", (sqlstate,)).fetchone()[0]
        for sqlstate in expected
    }

    assert named == expected
