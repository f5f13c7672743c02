"""`exchange instrument create|list|halt|resume`, run against the per-test database."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from tests.conftest import Exchange
from tests.trading.helpers import trading_state

HEADER = ["symbol", "status", "tick", "lot", "min", "qty", "min", "notional", "maker", "taker"]


@pytest.fixture
def assets(exchange: Exchange) -> None:
    """BTC at scale 8 and USD at scale 2, created through the CLI; no instrument yet."""
    assert exchange("asset", "create", "BTC", "--scale", "8")[0] == 0
    assert exchange("asset", "create", "USD", "--scale", "2")[0] == 0


def instrument_table(out: str) -> dict[str, list[str]]:
    """An instrument table as printed: symbol -> the other columns."""
    header, *rows = out.splitlines()
    assert header.split() == HEADER
    return {row.split()[0]: row.split()[1:] for row in rows}


def create_btc_usd(exchange: Exchange, *options: str) -> tuple[int, str, str]:
    return exchange(
        "instrument", "create", "BTC", "USD", "--tick-size", "0.01", "--lot-size", "1", *options
    )


@pytest.mark.usefixtures("assets")
def test_create_prints_the_new_instrument(
    exchange: Exchange,
    admin: psycopg.Connection,
) -> None:
    code, out, err = create_btc_usd(
        exchange, "--min-quantity", "2", "--min-notional", "10", "--taker-fee-rate", "0.002"
    )

    assert (code, err) == (0, "")
    assert instrument_table(out) == {"BTC-USD": ["trading", "0.01", "1", "2", "10", "0", "0.002"]}
    row = admin.execute(
        "SELECT base, quote, base_scale, quote_scale, tick_size, lot_size, min_quantity,"
        " min_notional, maker_fee_rate, taker_fee_rate, status FROM trading.instrument"
    ).fetchall()
    assert row == [("BTC", "USD", 8, 2, Decimal("0.01"), 1, 2, 10, 0, Decimal("0.002"), "trading")]


@pytest.mark.usefixtures("assets")
@pytest.mark.parametrize(
    ("tick_size", "lot_size", "message"),
    [
        # 0.001 x 1 is not a cent: a notional would be inexact in USD (scale 2).
        ("0.001", "1", "lot size = 0.001 is not representable in USD (scale 2)"),
        # A lot of 10^-9 BTC does not fit BTC's scale 8.
        ("0.01", "0.000000001", "lot size 0.000000001 is not representable in BTC (scale 8)"),
        # Fits each scale alone, but 0.01 x 0.1 does not fit USD's.
        ("0.01", "0.1", "lot size = 0.001 is not representable in USD (scale 2)"),
    ],
)
def test_create_with_inexact_sizes_fails_and_writes_nothing(
    exchange: Exchange,
    admin: psycopg.Connection,
    tick_size: str,
    lot_size: str,
    message: str,
) -> None:
    before = trading_state(admin)

    code, out, err = exchange(
        "instrument", "create", "BTC", "USD", "--tick-size", tick_size, "--lot-size", lot_size
    )

    assert (code, out) == (1, "")
    assert err.startswith("error [invalid_instrument]: ")
    assert message in err
    assert trading_state(admin) == before
    assert admin.execute("SELECT count(*) FROM trading.instrument").fetchone() == (0,)


@pytest.mark.usefixtures("assets")
def test_create_with_an_unknown_asset_fails_with_invalid_instrument(
    exchange: Exchange,
) -> None:
    code, _, err = exchange(
        "instrument", "create", "ETH", "USD", "--tick-size", "0.01", "--lot-size", "1"
    )

    assert code == 1
    assert err.startswith("error [invalid_instrument]: unknown asset ETH")


@pytest.mark.usefixtures("assets")
def test_creating_an_existing_instrument_again_fails_with_instrument_exists(
    exchange: Exchange,
    admin: psycopg.Connection,
) -> None:
    assert create_btc_usd(exchange)[0] == 0
    before = trading_state(admin)

    code, out, err = create_btc_usd(exchange, "--maker-fee-rate", "0.001")

    assert (code, out) == (1, "")
    assert err.startswith("error [instrument_exists]: instrument BTC-USD already exists")
    assert trading_state(admin) == before


@pytest.mark.usefixtures("assets")
def test_list_shows_every_instrument_by_symbol(exchange: Exchange) -> None:
    assert exchange("asset", "create", "ETH", "--scale", "8")[0] == 0
    assert exchange("instrument", "list")[1].splitlines()[1:] == []
    assert create_btc_usd(exchange)[0] == 0
    assert (
        exchange("instrument", "create", "ETH", "BTC", "--tick-size", "0.0001", "--lot-size", "1")[
            0
        ]
        == 0
    )

    code, out, err = exchange("instrument", "list")

    assert (code, err) == (0, "")
    assert instrument_table(out) == {
        "BTC-USD": ["trading", "0.01", "1", "0", "0", "0", "0"],
        "ETH-BTC": ["trading", "0.0001", "1", "0", "0", "0", "0"],
    }
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["BTC-USD", "ETH-BTC"]


@pytest.mark.usefixtures("assets")
def test_halt_and_resume_change_the_status(exchange: Exchange) -> None:
    assert create_btc_usd(exchange)[0] == 0

    assert exchange("instrument", "halt", "BTC-USD") == (0, "BTC-USD halted\n", "")
    assert instrument_table(exchange("instrument", "list")[1])["BTC-USD"][0] == "halted"

    assert exchange("instrument", "resume", "BTC-USD") == (0, "BTC-USD trading\n", "")
    assert instrument_table(exchange("instrument", "list")[1])["BTC-USD"][0] == "trading"


@pytest.mark.usefixtures("assets")
@pytest.mark.parametrize("command", ["halt", "resume"])
def test_halt_or_resume_of_an_unknown_symbol_fails_with_unknown_instrument(
    exchange: Exchange,
    command: str,
) -> None:
    code, out, err = exchange("instrument", command, "DOGE-USD")

    assert (code, out) == (1, "")
    assert err.startswith("error [unknown_instrument]: unknown instrument DOGE-USD")


def test_instrument_create_help_exits_zero(
    exchange: Exchange,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        exchange("instrument", "create", "--help")

    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--tick-size" in out and "--lot-size" in out


def test_instrument_create_without_sizes_is_a_usage_error(
    exchange: Exchange,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        exchange("instrument", "create", "BTC", "USD", "--tick-size", "0.01")

    assert exited.value.code == 2
    assert "--lot-size" in capsys.readouterr().err


def test_verify_lists_the_trading_invariants_and_names_a_disabled_trading_trigger(
    exchange: Exchange, admin: psycopg.Connection
) -> None:
    code, out, err = exchange("verify")
    assert (code, err) == (0, "")
    assert "ok   book_not_crossed" in out

    admin.execute("ALTER TABLE trading.event DISABLE TRIGGER event_immutable")

    code, out, err = exchange("verify")

    assert code == 1
    assert "FAIL trading_triggers_enabled" in out
    assert "first violation: trading_triggers_enabled" in err
    assert "trigger event_immutable on trading.event is not enabled" in err
