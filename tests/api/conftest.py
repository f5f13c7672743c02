"""The API under test: the real ASGI app against the test's real database (no mocks)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from app.api import create_app
from app.api.settings import ApiSettings
from tests.conftest import APP_ROLE, ScratchDatabase

ADMIN_TOKEN = "test-admin-token"


@dataclass(frozen=True)
class Broker:
    """A tenant with a key of every broker scope, and its authorization header."""

    tenant_id: int
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def api_settings(**overrides: object) -> ApiSettings:
    return ApiSettings(admin_token=ADMIN_TOKEN, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def client(db: ScratchDatabase) -> Iterator[TestClient]:
    """The app, connected as exchange_app, with its lifespan (pool, order lanes) running."""
    with TestClient(create_app(db.conninfo(APP_ROLE), api_settings())) as test_client:
        yield test_client


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def new_broker(
    client: TestClient, name: str, scopes: tuple[str, ...] = ("read", "trade", "transfer")
) -> Broker:
    tenant = client.post("/v1/admin/tenants", json={"name": name}, headers=ADMIN)
    assert tenant.status_code == 201, tenant.text
    key = client.post(
        f"/v1/admin/tenants/{tenant.json()['id']}/api-keys",
        json={"scopes": list(scopes)},
        headers=ADMIN,
    )
    assert key.status_code == 201, key.text
    return Broker(tenant.json()["id"], key.json()["key"])


def create_market(
    client: TestClient,
    base: str = "BTC",
    quote: str = "USD",
    **parameters: str,
) -> dict[str, object]:
    """Assets (base scale 8, quote scale 6, if missing) and the instrument BASE-QUOTE."""
    for code, scale in ((base, 8), (quote, 6)):
        asset = {"code": code, "scale": scale}
        response = client.post("/v1/admin/assets", json=asset, headers=ADMIN)
        assert response.status_code in (201, 409), response.text
    body = {
        "symbol": f"{base}-{quote}",
        "base": base,
        "quote": quote,
        "tick_size": "0.01",
        "lot_size": "0.001",
        "min_quantity": "0.001",
        "min_notional": "0",
        "maker_fee_rate": "0.001",
        "taker_fee_rate": "0.002",
        **parameters,
    }
    response = client.post("/v1/admin/instruments", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return dict(response.json())


def funded_account(client: TestClient, broker: Broker, **amounts: str) -> int:
    """A new account of `broker` with these deposits (asset=amount)."""
    account = client.post("/v1/accounts", json={"external_ref": "client"}, headers=broker.headers)
    assert account.status_code == 201, account.text
    account_id = int(account.json()["id"])
    for asset, amount in amounts.items():
        response = client.post(
            f"/v1/accounts/{account_id}/deposits",
            json={"asset": asset, "amount": amount},
            headers={**broker.headers, "Idempotency-Key": f"fund-{asset}"},
        )
        assert response.status_code == 201, response.text
    return account_id


def place(client: TestClient, broker: Broker, account_id: int, **order: object) -> dict:
    """POST /v1/orders; defaults: BTC-USD GTC limit, asserts 201."""
    body = {"account_id": account_id, "symbol": "BTC-USD", "type": "limit", **order}
    response = client.post("/v1/orders", json=body, headers=broker.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())
