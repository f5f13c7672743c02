"""Operators' endpoints refuse malformed names with a problem, never an internal error."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import ADMIN, create_market


@pytest.mark.parametrize("symbol", ["%00", "btc-usd", "BTC_USD", "B" * 40 + "-USD"])
def test_halting_a_malformed_symbol_is_a_bad_request(client: TestClient, symbol: str) -> None:
    create_market(client)

    response = client.patch(
        f"/v1/admin/instruments/{symbol}", json={"status": "halted"}, headers=ADMIN
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


def test_halting_an_unknown_instrument_is_not_found(client: TestClient) -> None:
    response = client.patch(
        "/v1/admin/instruments/ETH-EUR", json={"status": "halted"}, headers=ADMIN
    )

    assert (response.status_code, response.json()["code"]) == (404, "unknown_instrument")


def test_a_second_tenant_of_the_same_name_is_a_conflict_said_plainly(client: TestClient) -> None:
    client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)

    again = client.post("/v1/admin/tenants", json={"name": "acme"}, headers=ADMIN)

    assert (again.status_code, again.json()["code"]) == (409, "tenant_exists")
    assert again.json()["detail"] == "a tenant with this name exists"
