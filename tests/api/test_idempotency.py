"""Retries that race: the same request sent by 8 threads at once has exactly one effect."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Broker, create_market, funded_account, new_broker
from tests.conftest import ScratchDatabase

THREADS = 8


def race(send: Callable[[], Any]) -> list[Any]:
    """`send` from THREADS threads released together; their responses."""
    barrier = threading.Barrier(THREADS)

    def one() -> Any:
        barrier.wait()
        return send()

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(one) for _ in range(THREADS)]
        return [f.result(timeout=60) for f in futures]


@pytest.fixture
def broker(client: TestClient) -> Broker:
    create_market(client)
    return new_broker(client, "broker")


@pytest.fixture
def account(client: TestClient, broker: Broker) -> int:
    return funded_account(client, broker, USD="1000")


def scalar(db: ScratchDatabase, query: str, *args: object) -> Any:
    with db.connect() as conn:  # superuser: sees every row
        row = conn.execute(query, args).fetchone()
    assert row is not None
    return row[0]


@pytest.mark.parametrize("kind", ["deposits", "withdrawals"])
def test_concurrent_retries_of_a_movement_write_one_journal_and_get_the_same_body(
    client: TestClient, db: ScratchDatabase, broker: Broker, account: int, kind: str
) -> None:
    journals_before = scalar(db, "SELECT count(*) FROM ledger.journal")

    responses = race(
        lambda: client.post(
            f"/v1/accounts/{account}/{kind}",
            json={"asset": "USD", "amount": "25.5"},
            headers={**broker.headers, "Idempotency-Key": "race-1"},
        )
    )

    assert Counter(r.status_code for r in responses) == {201: 1, 200: THREADS - 1}, [
        r.text for r in responses
    ]
    assert len({r.content for r in responses}) == 1
    journal_id = responses[0].json()["journal_id"]
    assert scalar(db, "SELECT count(*) FROM ledger.journal") == journals_before + 1
    assert scalar(db, "SELECT count(*) FROM ledger.journal WHERE id = %s", journal_id) == 1
    balances = client.get(f"/v1/accounts/{account}/balances", headers=broker.headers).json()
    expected = Decimal("1025.5") if kind == "deposits" else Decimal("974.5")
    assert [Decimal(b["available"]) for b in balances if b["asset"] == "USD"] == [expected]


def test_concurrent_retries_of_an_order_place_one_order_and_get_the_same_body(
    client: TestClient, db: ScratchDatabase, broker: Broker, account: int
) -> None:
    body = {
        "account_id": account,
        "symbol": "BTC-USD",
        "side": "buy",
        "type": "limit",
        "price": "100",
        "quantity": "1",
        "client_order_id": "race-1",
    }

    responses = race(lambda: client.post("/v1/orders", json=body, headers=broker.headers))

    assert Counter(r.status_code for r in responses) == {201: 1, 200: THREADS - 1}, [
        r.text for r in responses
    ]
    assert len({r.content for r in responses}) == 1
    assert scalar(db, "SELECT count(*) FROM trading.orders") == 1
    holds = scalar(db, "SELECT count(*) FROM ledger.journal WHERE kind = 'hold'")
    assert holds == 1
    balances = client.get(f"/v1/accounts/{account}/balances", headers=broker.headers).json()
    assert [(b["asset"], Decimal(b["available"]), Decimal(b["held"])) for b in balances] == [
        ("USD", Decimal(900), Decimal(100))
    ]
