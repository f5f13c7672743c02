"""Public market data over REST: instruments, book, trades, ticker, candles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import (
    ADMIN,
    Broker,
    create_market,
    funded_account,
    new_broker,
    place,
)


@pytest.fixture
def market(client: TestClient) -> tuple[Broker, int, Broker, int]:
    """BTC-USD with a buyer (broker a) and a seller (broker b), both funded."""
    create_market(client)
    a, b = new_broker(client, "a"), new_broker(client, "b")
    return a, funded_account(client, a, USD="100000"), b, funded_account(client, b, BTC="50")


def test_book_aggregates_orders_by_price_level_at_the_seq_it_shows(
    client: TestClient, market: tuple[Broker, int, Broker, int]
) -> None:
    a, buyer, b, seller = market
    place(client, b, seller, side="sell", price="101", quantity="1", client_order_id="s1")
    place(client, b, seller, side="sell", price="101.00", quantity="0.5", client_order_id="s2")
    place(client, b, seller, side="sell", price="102.50", quantity="2", client_order_id="s3")
    place(client, a, buyer, side="buy", price="99.99", quantity="0.25", client_order_id="b1")
    place(client, a, buyer, side="buy", price="100", quantity="3", client_order_id="b2")

    response = client.get("/v1/markets/BTC-USD/book", headers=a.headers)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "symbol": "BTC-USD",
        "seq": 5,
        "bids": [["100.00", "3.000"], ["99.99", "0.250"]],
        "asks": [["101.00", "1.500"], ["102.50", "2.000"]],
    }
    top = client.get("/v1/markets/BTC-USD/book?depth=1", headers=ADMIN).json()
    assert (top["bids"], top["asks"]) == ([["100.00", "3.000"]], [["101.00", "1.500"]])


def test_book_of_a_new_market_is_empty_at_seq_zero(client: TestClient) -> None:
    create_market(client)
    response = client.get("/v1/markets/BTC-USD/book", headers=ADMIN)
    assert response.json() == {"symbol": "BTC-USD", "seq": 0, "bids": [], "asks": []}


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/markets/ETH-USD/book", 404, "unknown_instrument"),
        ("/v1/markets/ETH-USD/ticker", 404, "unknown_instrument"),
        ("/v1/markets/btc-usd/trades", 400, "invalid_request"),
        ("/v1/markets/BTC-USD/book?depth=0", 400, "invalid_request"),
        ("/v1/markets/BTC-USD/book?depth=1001", 400, "invalid_request"),
        ("/v1/markets/BTC-USD/trades?limit=501", 400, "invalid_request"),
        ("/v1/markets/BTC-USD/candles?interval=2m", 400, "invalid_request"),
        (
            "/v1/markets/BTC-USD/candles?start=2024-01-02T00:00:00Z&end=2024-01-01T00:00:00Z",
            400,
            "invalid_request",
        ),
        (
            "/v1/markets/BTC-USD/candles?interval=1m&start=2024-01-01T00:00:00Z"
            "&end=2024-01-02T00:00:00Z",
            400,
            "invalid_request",
        ),
        ("/v1/markets/BTC-USD/candles?end=0001-01-01T00:00:00Z", 400, "invalid_request"),
        ("/v1/markets/BTC-USD/candles?start=0001-01-01T00:00:00%2B14:00", 400, "invalid_request"),
    ],
)
def test_bad_market_data_requests_are_problems_not_errors(
    client: TestClient, path: str, status: int, code: str
) -> None:
    create_market(client)
    response = client.get(path, headers=ADMIN)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


def test_market_data_needs_a_valid_key(client: TestClient) -> None:
    create_market(client)
    for path in ("/v1/instruments", "/v1/markets/BTC-USD/book"):
        assert client.get(path).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert client.get(path, headers=bad).json()["code"] == "invalid_api_key"


def test_any_broker_key_reads_market_data(client: TestClient) -> None:
    create_market(client)
    trader = new_broker(client, "t", scopes=("trade",))
    response = client.get("/v1/instruments", headers=trader.headers)
    assert response.status_code == 200
    [btc] = response.json()["items"]
    assert (btc["symbol"], btc["tick_size"], btc["status"]) == ("BTC-USD", "0.01", "trading")


def test_trades_are_public_newest_first_without_their_parties(
    client: TestClient, market: tuple[Broker, int, Broker, int]
) -> None:
    a, buyer, b, seller = market
    place(client, b, seller, side="sell", price="100", quantity="1", client_order_id="s1")
    place(client, b, seller, side="sell", price="101", quantity="1", client_order_id="s2")
    place(client, a, buyer, side="buy", price="101", quantity="2.5", client_order_id="b1")
    place(client, b, seller, side="sell", price="99", quantity="0.1", client_order_id="s3")

    response = client.get("/v1/markets/BTC-USD/trades", headers=b.headers)

    assert response.status_code == 200
    items = response.json()["items"]
    assert [(t["seq"], t["price"], t["quantity"], t["taker_side"]) for t in items] == [
        (4, "101.00", "0.100", "sell"),
        (3, "101.00", "1.000", "buy"),
        (3, "100.00", "1.000", "buy"),
    ]
    assert set(items[0]) == {"id", "seq", "price", "quantity", "taker_side", "time"}
    limited = client.get("/v1/markets/BTC-USD/trades?limit=1", headers=b.headers).json()
    assert limited["items"] == items[:1]


def test_ticker_shows_last_price_best_prices_and_the_day(
    client: TestClient, market: tuple[Broker, int, Broker, int]
) -> None:
    a, buyer, b, seller = market
    empty = client.get("/v1/markets/BTC-USD/ticker", headers=a.headers).json()
    assert (empty["last"], empty["best_bid"], empty["volume_24h"], empty["high_24h"]) == (
        None,
        None,
        "0.000",
        None,
    )
    place(client, b, seller, side="sell", price="100", quantity="1", client_order_id="s1")
    place(client, b, seller, side="sell", price="102", quantity="1", client_order_id="s2")
    place(client, a, buyer, side="buy", price="102", quantity="1.5", client_order_id="b1")
    place(client, a, buyer, side="buy", price="98", quantity="1", client_order_id="b2")

    ticker = client.get("/v1/markets/BTC-USD/ticker", headers=a.headers).json()

    assert ticker | {"time": None} == {
        "symbol": "BTC-USD",
        "seq": 4,
        "last": "102.00",
        "best_bid": "98.00",
        "best_ask": "102.00",
        "volume_24h": "1.500",
        "quote_volume_24h": "151.00000",
        "high_24h": "102.00",
        "low_24h": "100.00",
        "trades_24h": 2,
        "time": None,
    }


def test_candles_are_ohlcv_of_the_trades_per_bucket(
    client: TestClient, market: tuple[Broker, int, Broker, int]
) -> None:
    a, buyer, b, seller = market
    for i, price in enumerate(("100", "103", "99", "101")):
        place(client, b, seller, side="sell", price=price, quantity="1", client_order_id=f"s{i}")
        place(client, a, buyer, side="buy", price=price, quantity="1", client_order_id=f"b{i}")

    response = client.get("/v1/markets/BTC-USD/candles?interval=1h", headers=a.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    # Expected from the trades themselves, bucketed by their hour (they may straddle one).
    trades = client.get("/v1/markets/BTC-USD/trades", headers=a.headers).json()["items"][::-1]
    expected: dict[str, list[dict[str, object]]] = {}
    for trade in trades:
        hour = datetime.fromisoformat(trade["time"]).astimezone(UTC)
        expected.setdefault(hour.replace(minute=0, second=0, microsecond=0).isoformat(), []).append(
            trade
        )
    assert [c["start"] for c in body["items"]] == list(expected)
    for candle, bucket in zip(body["items"], expected.values(), strict=True):
        prices = [Decimal(str(t["price"])) for t in bucket]
        assert (candle["open"], candle["close"]) == (bucket[0]["price"], bucket[-1]["price"])
        assert (Decimal(candle["high"]), Decimal(candle["low"])) == (max(prices), min(prices))
        assert Decimal(candle["volume"]) == len(bucket)
        assert candle["trades"] == len(bucket)
    assert [t["price"] for t in trades] == ["100.00", "103.00", "99.00", "101.00"]
    end = datetime.fromisoformat(body["end"])
    assert end - datetime.fromisoformat(body["start"]) <= timedelta(hours=25)


def test_candles_outside_the_window_are_not_shown(
    client: TestClient, market: tuple[Broker, int, Broker, int]
) -> None:
    a, buyer, b, seller = market
    place(client, b, seller, side="sell", price="100", quantity="1", client_order_id="s1")
    place(client, a, buyer, side="buy", price="100", quantity="1", client_order_id="b1")
    past = client.get(
        "/v1/markets/BTC-USD/candles?interval=1h&start=2020-01-01T00:00:00&end=2020-01-02T00:00:00",
        headers=a.headers,
    ).json()
    assert past["items"] == []
    assert past["start"] == "2020-01-01T00:00:00+00:00"
