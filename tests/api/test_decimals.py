"""Decimals leave the API positional, as exact as the database holds them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from fastapi.testclient import TestClient

from app.api.routers.orders import order_json
from app.trading.commands import Instrument, Order
from tests.api.conftest import create_market, funded_account, new_broker, place


def test_a_zero_balance_at_scale_8_reads_as_zeros_not_exponent_form(client: TestClient) -> None:
    create_market(client)
    broker = new_broker(client, "acme")
    account = funded_account(client, broker, BTC="1.5")
    withdrawal = client.post(
        f"/v1/accounts/{account}/withdrawals",
        json={"asset": "BTC", "amount": "1.5"},
        headers={**broker.headers, "Idempotency-Key": "all-out"},
    )
    assert withdrawal.status_code == 201

    balances = client.get(f"/v1/accounts/{account}/balances", headers=broker.headers).json()

    assert balances[0]["available"] == "0.00000000"


def test_a_filled_orders_remaining_quantity_reads_positionally(client: TestClient) -> None:
    create_market(client, tick_size="100", lot_size="0.00000001", min_quantity="0.00000001")
    maker, taker = new_broker(client, "maker"), new_broker(client, "taker")
    seller = funded_account(client, maker, BTC="1")
    buyer = funded_account(client, taker, USD="1000")
    place(
        client, maker, seller, side="sell", price="100", quantity="0.12345678", client_order_id="s1"
    )

    bought = place(
        client, taker, buyer, side="buy", price="100", quantity="0.12345678", client_order_id="b1"
    )

    assert bought["status"] == "filled"
    assert "E" not in bought["remaining_quantity"]
    assert bought["fills"][0]["fee"] == "0.00024692"


def test_an_engine_timestamp_with_trailing_zeros_trimmed_reads_as_the_stored_one() -> None:
    # PostgreSQL's JSON writes 08:02:06.73754; the stored column reads 08:02:06.737540.
    instrument = Instrument("BTC-USD", "BTC", "USD", 8, 6, *(Decimal(0),) * 6)
    order = Order(
        1, "o", "buy", "limit", Decimal(1), Decimal(1), Decimal(0), "new", None, "GTC", False,
        "cancel_newest", 1, id=1, created_at="2026-11-25T08:02:06.73754+00:00",
    )  # fmt: skip

    created_at = order_json(order, instrument, ())["created_at"]

    assert created_at == datetime(2026, 11, 25, 8, 2, 6, 737540, tzinfo=UTC)


def test_every_balance_reads_at_its_assets_scale_even_when_zero(client: TestClient) -> None:
    create_market(client)
    broker = new_broker(client, "acme")
    account = funded_account(client, broker, USD="7")

    balances = client.get(f"/v1/accounts/{account}/balances", headers=broker.headers).json()

    assert balances == [
        {"asset": "USD", "available": "7.000000", "held": "0.000000", "total": "7.000000"}
    ]
