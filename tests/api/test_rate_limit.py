"""Order entry is rate limited per API key (a token bucket: 1 order a second, bursts of 2)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.api import create_app
from tests.api.conftest import (
    ADMIN,
    Broker,
    api_settings,
    create_market,
    funded_account,
    new_broker,
)
from tests.conftest import APP_ROLE, ScratchDatabase

BURST = 2


@pytest.fixture
def limited(db: ScratchDatabase) -> Iterator[TestClient]:
    settings = api_settings(order_rate_per_second=1, order_burst=BURST)
    with TestClient(create_app(db.conninfo(APP_ROLE), settings)) as client:
        create_market(client)
        yield client


@pytest.fixture
def broker(limited: TestClient) -> Broker:
    return new_broker(limited, "broker")


@pytest.fixture
def account(limited: TestClient, broker: Broker) -> int:
    return funded_account(limited, broker, USD="10000")


def order(account_id: int, client_order_id: str) -> dict[str, object]:
    return {
        "account_id": account_id,
        "symbol": "BTC-USD",
        "side": "buy",
        "type": "limit",
        "price": "100",
        "quantity": "1",
        "client_order_id": client_order_id,
    }


def orders_of(client: TestClient, broker: Broker) -> list[str]:
    response = client.get("/v1/orders", headers=broker.headers)
    assert response.status_code == 200, response.text
    return sorted(o["client_order_id"] for o in response.json()["items"])


def test_an_order_beyond_the_burst_is_429_with_retry_after_and_writes_nothing(
    limited: TestClient, broker: Broker, account: int
) -> None:
    for n in range(BURST):
        accepted = limited.post("/v1/orders", json=order(account, f"o{n}"), headers=broker.headers)
        assert accepted.status_code == 201, accepted.text
    balances = limited.get(f"/v1/accounts/{account}/balances", headers=broker.headers).json()

    refused = limited.post("/v1/orders", json=order(account, "o-late"), headers=broker.headers)

    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert orders_of(limited, broker) == ["o0", "o1"]
    assert limited.get(f"/v1/accounts/{account}/balances", headers=broker.headers).json() == (
        balances
    )


def test_cancels_and_amends_count_against_the_same_limit(
    limited: TestClient, broker: Broker, account: int
) -> None:
    placed = limited.post("/v1/orders", json=order(account, "o"), headers=broker.headers)
    assert placed.status_code == 201, placed.text
    amended = limited.patch(
        f"/v1/orders/{placed.json()['id']}", json={"quantity": "0.5"}, headers=broker.headers
    )
    assert amended.status_code == 200, amended.text

    refused = limited.delete(f"/v1/orders/{placed.json()['id']}", headers=broker.headers)

    assert refused.status_code == 429, refused.text
    stored = limited.get(f"/v1/orders/{placed.json()['id']}", headers=broker.headers).json()
    assert stored["status"] == "new"


def test_reads_are_not_limited(limited: TestClient, broker: Broker, account: int) -> None:
    for n in range(BURST):
        limited.post("/v1/orders", json=order(account, f"o{n}"), headers=broker.headers)

    for _ in range(10):
        assert limited.get("/v1/orders", headers=broker.headers).status_code == 200
        assert limited.get(f"/v1/accounts/{account}", headers=broker.headers).status_code == 200
        assert limited.get("/v1/fills", headers=broker.headers).status_code == 200


def test_another_key_is_not_affected(limited: TestClient, broker: Broker, account: int) -> None:
    second_key = limited.post(
        f"/v1/admin/tenants/{broker.tenant_id}/api-keys", json={"scopes": ["trade"]}, headers=ADMIN
    ).json()["key"]
    other_broker = new_broker(limited, "other")
    other_account = funded_account(limited, other_broker, USD="1000")
    for n in range(BURST):
        limited.post("/v1/orders", json=order(account, f"o{n}"), headers=broker.headers)
    exhausted = limited.post("/v1/orders", json=order(account, "o-late"), headers=broker.headers)
    assert exhausted.status_code == 429

    same_broker = limited.post(
        "/v1/orders",
        json=order(account, "second-key"),
        headers={"Authorization": f"Bearer {second_key}"},
    )
    other = limited.post(
        "/v1/orders", json=order(other_account, "other"), headers=other_broker.headers
    )

    assert same_broker.status_code == 201, same_broker.text
    assert other.status_code == 201, other.text
