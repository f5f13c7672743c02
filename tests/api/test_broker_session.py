"""The broker API as a broker uses it: the real app against the real database, no mocks.

BTC-USD (create_market): tick 0.01, lot 0.001, maker fee 0.001, taker fee 0.002; BTC has scale
8, USD scale 6. The buyer pays its fee in the base asset, the seller in the quote asset, each
rounded up to the asset's scale.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

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
    place,
)
from tests.conftest import APP_ROLE, ScratchDatabase

D = Decimal
SYMBOL = "BTC-USD"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


# --- helpers -------------------------------------------------------------------------------


def balances(client: TestClient, broker: Broker, account_id: int) -> dict[str, tuple[D, D]]:
    """asset -> (available, held)."""
    response = client.get(f"/v1/accounts/{account_id}/balances", headers=broker.headers)
    assert response.status_code == 200, response.text
    return {b["asset"]: (D(b["available"]), D(b["held"])) for b in response.json()}


def order_body(account_id: int, **fields: object) -> dict[str, object]:
    return {"account_id": account_id, "symbol": SYMBOL, "type": "limit", **fields}


def post_order(client: TestClient, broker: Broker, account_id: int, **fields: object) -> Any:
    return client.post("/v1/orders", json=order_body(account_id, **fields), headers=broker.headers)


def move(
    client: TestClient, broker: Broker, account_id: int, kind: str, key: str, **body: str
) -> Any:
    return client.post(
        f"/v1/accounts/{account_id}/{kind}",
        json=body,
        headers={**broker.headers, "Idempotency-Key": key},
    )


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = dict(response.json())
    assert set(problem) == PROBLEM_FIELDS
    assert (problem["status"], problem["code"]) == (status, code)
    assert problem["type"] == f"/problems/{code}"
    assert problem["title"] and problem["detail"]
    return problem


def walk(client: TestClient, broker: Broker, url: str, limit: int) -> list[list[Any]]:
    """Every page of a paginated list, following next_cursor; the ids of each page."""
    pages: list[list[Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, object] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = client.get(url, params=params, headers=broker.headers)
        assert response.status_code == 200, response.text
        pages.append([item["id"] for item in response.json()["items"]])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "pagination does not end"


def all_ids(client: TestClient, broker: Broker, url: str) -> list[Any]:
    response = client.get(url, params={"limit": 500}, headers=broker.headers)
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return [item["id"] for item in response.json()["items"]]


def open_orders(client: TestClient, broker: Broker, account_id: int) -> list[dict[str, Any]]:
    response = client.get(
        "/v1/orders", params={"account_id": account_id, "status": "open"}, headers=broker.headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def ledger_entries(client: TestClient, broker: Broker, account_id: int) -> list[dict[str, Any]]:
    response = client.get(
        f"/v1/accounts/{account_id}/ledger", params={"limit": 500}, headers=broker.headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def market(client: TestClient) -> dict[str, object]:
    return create_market(client)


@pytest.fixture
def broker(client: TestClient, market: dict[str, object]) -> Broker:
    return new_broker(client, "broker")


@pytest.fixture
def account(client: TestClient, broker: Broker) -> int:
    """An account of `broker` holding 10,000 USD and 10 BTC."""
    return funded_account(client, broker, USD="10000", BTC="10")


# --- the full session ----------------------------------------------------------------------


def test_two_brokers_trade_settle_cancel_and_withdraw_with_exact_balances(
    client: TestClient,
) -> None:
    market = create_market(client)
    assert market["maker_fee_rate"] == "0.001" and market["taker_fee_rate"] == "0.002"
    a, b = new_broker(client, "broker-a"), new_broker(client, "broker-b")
    alice = funded_account(client, a, USD="10000")
    bob = funded_account(client, b, BTC="2")

    # Bob (broker B) offers 1 BTC at 100.01; Alice (broker A) takes 0.003 of it.
    ask = place(client, b, bob, side="sell", price="100.01", quantity="1", client_order_id="b1")
    assert (ask["status"], ask["fills"]) == ("new", [])
    take = place(
        client, a, alice, side="buy", price="100.01", quantity="0.003", client_order_id="a1"
    )
    assert take["status"] == "filled"
    assert D(take["filled_quantity"]) == D("0.003") and D(take["remaining_quantity"]) == 0
    [fill] = take["fills"]
    # The buyer's taker fee: 0.003 x 0.002 = 0.000006 BTC.
    assert (fill["liquidity"], fill["fee_asset"]) == ("taker", "BTC")
    assert (D(fill["price"]), D(fill["quantity"]), D(fill["fee"])) == (
        D("100.01"),
        D("0.003"),
        D("0.000006"),
    )

    # Alice bids 0.5 at 99.99 (rests); Bob sells 0.2 into it as the taker.
    bid = place(client, a, alice, side="buy", price="99.99", quantity="0.5", client_order_id="a2")
    assert bid["status"] == "new"
    hit = place(client, b, bob, side="sell", price="99.99", quantity="0.2", client_order_id="b2")
    assert hit["status"] == "filled"
    [hit_fill] = hit["fills"]
    # The seller's taker fee: 99.99 x 0.2 x 0.002 = 0.039996 USD.
    assert (hit_fill["liquidity"], hit_fill["fee_asset"], D(hit_fill["fee"])) == (
        "taker",
        "USD",
        D("0.039996"),
    )

    # Fills: each broker sees its side of the same two trades, and only its own.
    fills_a = client.get("/v1/fills", headers=a.headers).json()["items"]
    fills_b = client.get("/v1/fills", headers=b.headers).json()["items"]
    assert {f["account_id"] for f in fills_a} == {alice}
    assert {f["account_id"] for f in fills_b} == {bob}
    assert sorted(f["trade_id"] for f in fills_a) == sorted(f["trade_id"] for f in fills_b)
    fees_a = {(f["client_order_id"], f["liquidity"]): D(f["fee"]) for f in fills_a}
    fees_b = {(f["client_order_id"], f["liquidity"]): D(f["fee"]) for f in fills_b}
    # The maker fees: Alice's bid 0.2 x 0.001 = 0.0002 BTC; Bob's ask
    # 100.01 x 0.003 x 0.001 = 0.00030003 USD, rounded up to 0.000301.
    assert fees_a == {("a1", "taker"): D("0.000006"), ("a2", "maker"): D("0.0002")}
    assert fees_b == {("b1", "maker"): D("0.000301"), ("b2", "taker"): D("0.039996")}

    # Alice paid 0.30003 + 19.998 USD and holds 0.3 x 99.99 for the rest of her bid; she got
    # 0.003 - 0.000006 + 0.2 - 0.0002 BTC. Bob gave 0.203 BTC and holds 0.997 for his ask; he got
    # 0.30003 - 0.000301 + 19.998 - 0.039996 USD.
    assert balances(client, a, alice) == {
        "USD": (D("9949.704970"), D("29.997")),
        "BTC": (D("0.202794"), D(0)),
    }
    assert balances(client, b, bob) == {
        "BTC": (D("0.8"), D("0.997")),
        "USD": (D("20.257733"), D(0)),
    }

    # Alice cancels her bid; Bob cancels all his orders: every hold is released.
    canceled = client.delete(f"/v1/orders/{bid['id']}", headers=a.headers)
    assert canceled.status_code == 200, canceled.text
    assert (canceled.json()["status"], canceled.json()["reason"]) == (
        "canceled",
        "canceled_by_owner",
    )
    all_canceled = client.delete("/v1/orders", params={"account_id": bob}, headers=b.headers)
    assert all_canceled.status_code == 200, all_canceled.text
    assert [(o["id"], o["status"], o["reason"]) for o in all_canceled.json()] == [
        (ask["id"], "canceled", "canceled_by_cancel_all")
    ]
    assert balances(client, a, alice) == {
        "USD": (D("9979.70197"), D(0)),
        "BTC": (D("0.202794"), D(0)),
    }
    assert balances(client, b, bob) == {"BTC": (D("1.797"), D(0)), "USD": (D("20.257733"), D(0))}

    # Both withdraw.
    out_b = move(client, b, bob, "withdrawals", "w-bob", asset="USD", amount="20")
    out_a = move(client, a, alice, "withdrawals", "w-alice", asset="BTC", amount="0.2")
    assert out_b.status_code == 201 and out_a.status_code == 201, (out_a.text, out_b.text)
    assert (out_b.json()["asset"], D(out_b.json()["amount"])) == ("USD", D(20))
    assert balances(client, a, alice) == {
        "USD": (D("9979.70197"), D(0)),
        "BTC": (D("0.002794"), D(0)),
    }
    assert balances(client, b, bob) == {"BTC": (D("1.797"), D(0)), "USD": (D("0.257733"), D(0))}

    # Alice's statement (newest first): each entry with its journal's kind and reference and
    # the balance of its bucket after it.
    entries = ledger_entries(client, a, alice)
    statement = [
        (e["kind"], e["asset"], e["bucket"], D(e["amount"]), D(e["balance_after"]))
        for e in reversed(entries)
    ]
    assert statement == [
        ("deposit", "USD", "available", D("10000"), D("10000")),
        ("trade", "USD", "available", D("-0.30003"), D("9999.69997")),
        ("trade", "BTC", "available", D("0.002994"), D("0.002994")),
        ("hold", "USD", "available", D("-49.995"), D("9949.70497")),
        ("hold", "USD", "held", D("49.995"), D("49.995")),
        ("trade", "BTC", "available", D("0.1998"), D("0.202794")),
        ("trade", "USD", "held", D("-19.998"), D("29.997")),
        ("release", "USD", "available", D("29.997"), D("9979.70197")),
        ("release", "USD", "held", D("-29.997"), D(0)),
        ("withdrawal", "BTC", "available", D("-0.2"), D("0.002794")),
    ]
    references = {e["kind"]: e["reference"] for e in entries}
    assert references["hold"] == references["release"] == f"order/{bid['id']}"
    assert references["trade"].startswith(f"trade/{SYMBOL}/")
    # Six journals: the deposit, two trades, the hold, its release and the withdrawal.
    assert len({e["journal_id"] for e in entries}) == 6


# --- accounts ------------------------------------------------------------------------------


def test_an_account_is_created_listed_and_read(client: TestClient, broker: Broker) -> None:
    created = client.post("/v1/accounts", json={"external_ref": "c-1"}, headers=broker.headers)

    assert created.status_code == 201, created.text
    account = created.json()
    assert set(account) == {"id", "external_ref", "created_at"}
    assert account["external_ref"] == "c-1"
    read = client.get(f"/v1/accounts/{account['id']}", headers=broker.headers)
    assert (read.status_code, read.json()) == (200, account)
    listed = client.get("/v1/accounts", headers=broker.headers).json()
    assert listed == {"items": [account], "next_cursor": None}


def test_an_unknown_account_is_404(client: TestClient, broker: Broker) -> None:
    assert_problem(
        client.get("/v1/accounts/999999", headers=broker.headers), 404, "unknown_account"
    )


# --- deposits and withdrawals --------------------------------------------------------------


def test_a_deposit_is_201_and_its_retry_200_with_the_same_body(
    client: TestClient, broker: Broker, account: int
) -> None:
    first = move(client, broker, account, "deposits", "dep-1", asset="USD", amount="12.50")
    again = move(client, broker, account, "deposits", "dep-1", asset="USD", amount="12.50")

    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert (first.json()["asset"], D(first.json()["amount"])) == ("USD", D("12.50"))
    assert balances(client, broker, account)["USD"] == (D("10012.50"), D(0))


def test_a_withdrawal_is_201_and_its_retry_200_with_the_same_body(
    client: TestClient, broker: Broker, account: int
) -> None:
    first = move(client, broker, account, "withdrawals", "wd-1", asset="BTC", amount="1.5")
    again = move(client, broker, account, "withdrawals", "wd-1", asset="BTC", amount="1.5")

    assert first.status_code == 201, first.text
    assert (again.status_code, again.json()) == (200, first.json())
    assert balances(client, broker, account)["BTC"] == (D("8.5"), D(0))


@pytest.mark.parametrize("kind", ["deposits", "withdrawals"])
def test_an_idempotency_key_reused_with_another_body_is_409(
    client: TestClient, broker: Broker, account: int, kind: str
) -> None:
    first = move(client, broker, account, kind, "k-1", asset="USD", amount="10")
    assert first.status_code == 201, first.text
    before = ledger_entries(client, broker, account)

    other = move(client, broker, account, kind, "k-1", asset="USD", amount="11")

    assert_problem(other, 409, "idempotency_key_reused")
    assert ledger_entries(client, broker, account) == before


@pytest.mark.parametrize("kind", ["deposits", "withdrawals"])
def test_a_movement_without_an_idempotency_key_is_400(
    client: TestClient, broker: Broker, account: int, kind: str
) -> None:
    before = ledger_entries(client, broker, account)

    response = client.post(
        f"/v1/accounts/{account}/{kind}",
        json={"asset": "USD", "amount": "1"},
        headers=broker.headers,
    )

    assert_problem(response, 400, "invalid_request")
    assert "Idempotency-Key" in response.json()["detail"]
    assert ledger_entries(client, broker, account) == before


def test_a_withdrawal_beyond_the_available_balance_is_422_and_writes_nothing(
    client: TestClient, broker: Broker, account: int
) -> None:
    before = ledger_entries(client, broker, account)

    response = move(client, broker, account, "withdrawals", "big", asset="USD", amount="10000.01")

    assert_problem(response, 422, "insufficient_funds")
    assert ledger_entries(client, broker, account) == before


# --- order entry ---------------------------------------------------------------------------


def test_an_order_is_201_and_the_same_client_order_id_again_200_with_the_stored_order(
    client: TestClient, broker: Broker, account: int
) -> None:
    fields = {"side": "buy", "price": "100", "quantity": "1", "client_order_id": "o-1"}
    first = post_order(client, broker, account, **fields)
    again = post_order(client, broker, account, **fields)

    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert len(open_orders(client, broker, account)) == 1
    assert balances(client, broker, account)["USD"] == (D("9900"), D("100"))


def test_the_same_client_order_id_with_another_order_is_409(
    client: TestClient, broker: Broker, account: int
) -> None:
    place(client, broker, account, side="buy", price="100", quantity="1", client_order_id="o-1")

    response = post_order(
        client, broker, account, side="buy", price="101", quantity="1", client_order_id="o-1"
    )

    assert_problem(response, 409, "duplicate_client_order_id")
    [stored] = open_orders(client, broker, account)
    assert D(stored["price"]) == D(100)


def test_an_order_beyond_the_available_funds_is_422_and_writes_nothing(
    client: TestClient, broker: Broker, account: int
) -> None:
    before = (balances(client, broker, account), ledger_entries(client, broker, account))

    response = post_order(
        client, broker, account, side="buy", price="1000", quantity="10.001", client_order_id="x"
    )

    assert_problem(response, 422, "insufficient_funds")
    after = (balances(client, broker, account), ledger_entries(client, broker, account))
    assert after == before
    listed = client.get("/v1/orders", params={"account_id": account}, headers=broker.headers)
    assert listed.json()["items"] == []


def test_a_price_off_the_tick_is_422_invalid_tick_size(
    client: TestClient, broker: Broker, account: int
) -> None:
    response = post_order(
        client, broker, account, side="buy", price="100.005", quantity="1", client_order_id="x"
    )

    assert_problem(response, 422, "invalid_tick_size")
    assert open_orders(client, broker, account) == []


def test_an_unknown_instrument_is_404(client: TestClient, broker: Broker, account: int) -> None:
    response = post_order(
        client,
        broker,
        account,
        symbol="ETH-USD",
        side="buy",
        price="100",
        quantity="1",
        client_order_id="x",
    )

    assert_problem(response, 404, "unknown_instrument")


def test_an_order_on_a_halted_instrument_is_409_and_accepted_again_after_resuming(
    client: TestClient, broker: Broker, account: int
) -> None:
    halted = client.patch(
        f"/v1/admin/instruments/{SYMBOL}", json={"status": "halted"}, headers=ADMIN
    )
    assert (halted.status_code, halted.json()["status"]) == (200, "halted")

    refused = post_order(
        client, broker, account, side="buy", price="100", quantity="1", client_order_id="x"
    )

    assert_problem(refused, 409, "instrument_halted")
    assert open_orders(client, broker, account) == []
    resumed = client.patch(
        f"/v1/admin/instruments/{SYMBOL}", json={"status": "trading"}, headers=ADMIN
    )
    assert resumed.status_code == 200, resumed.text
    place(client, broker, account, side="buy", price="100", quantity="1", client_order_id="x")


@pytest.fixture
def counterparty(client: TestClient, market: dict[str, object]) -> tuple[Broker, int]:
    """Another broker's account, with 10 BTC and 10,000 USD, to trade against."""
    other = new_broker(client, "counterparty")
    return other, funded_account(client, other, USD="10000", BTC="10")


def test_a_fill_or_kill_order_that_cannot_fill_is_201_expired_with_nothing_traded(
    client: TestClient, broker: Broker, account: int, counterparty: tuple[Broker, int]
) -> None:
    other, seller = counterparty
    place(client, other, seller, side="sell", price="100", quantity="0.5", client_order_id="s")

    response = post_order(
        client,
        broker,
        account,
        side="buy",
        price="100",
        quantity="1",
        time_in_force="FOK",
        client_order_id="fok",
    )

    assert response.status_code == 201, response.text
    order = response.json()
    assert (order["status"], order["reason"], order["fills"]) == ("expired", "fok_not_filled", [])
    assert D(order["filled_quantity"]) == 0
    assert balances(client, broker, account)["USD"] == (D("10000"), D(0))
    assert len(open_orders(client, other, seller)) == 1


def test_a_post_only_order_that_would_take_is_201_rejected(
    client: TestClient, broker: Broker, account: int, counterparty: tuple[Broker, int]
) -> None:
    other, seller = counterparty
    place(client, other, seller, side="sell", price="100", quantity="0.5", client_order_id="s")

    response = post_order(
        client,
        broker,
        account,
        side="buy",
        price="100",
        quantity="1",
        post_only=True,
        client_order_id="po",
    )

    assert response.status_code == 201, response.text
    order = response.json()
    assert (order["status"], order["reason"], order["fills"]) == (
        "rejected",
        "post_only_would_take",
        [],
    )
    assert balances(client, broker, account)["USD"] == (D("10000"), D(0))


def test_an_immediate_or_cancel_remainder_is_201_expired_after_its_fills(
    client: TestClient, broker: Broker, account: int, counterparty: tuple[Broker, int]
) -> None:
    other, seller = counterparty
    place(client, other, seller, side="sell", price="100", quantity="0.4", client_order_id="s")

    response = post_order(
        client,
        broker,
        account,
        side="buy",
        price="100",
        quantity="1",
        time_in_force="IOC",
        client_order_id="ioc",
    )

    assert response.status_code == 201, response.text
    order = response.json()
    assert (order["status"], order["reason"]) == ("expired", "unfilled_remainder")
    assert (D(order["filled_quantity"]), D(order["remaining_quantity"])) == (D("0.4"), D("0.6"))
    assert [D(f["quantity"]) for f in order["fills"]] == [D("0.4")]
    # Paid 40 USD, nothing held for the expired remainder; received 0.4 - 0.0008 BTC.
    assert balances(client, broker, account) == {
        "USD": (D("9960"), D(0)),
        "BTC": (D("10.3992"), D(0)),
    }


def test_an_order_meeting_its_own_account_is_201_canceled_by_self_trade_prevention(
    client: TestClient, broker: Broker, account: int
) -> None:
    resting = place(
        client, broker, account, side="sell", price="100", quantity="1", client_order_id="s"
    )

    response = post_order(
        client, broker, account, side="buy", price="100", quantity="1", client_order_id="b"
    )

    assert response.status_code == 201, response.text
    order = response.json()
    assert (order["status"], order["reason"], order["fills"]) == (
        "canceled",
        "self_trade_prevention",
        [],
    )
    [still_open] = open_orders(client, broker, account)
    assert still_open["id"] == resting["id"]


# --- amend, cancel, cancel all -------------------------------------------------------------


def test_an_amend_to_a_lower_quantity_and_a_new_price_changes_the_order_and_its_hold(
    client: TestClient, broker: Broker, account: int
) -> None:
    order = place(
        client, broker, account, side="buy", price="100", quantity="2", client_order_id="o"
    )

    smaller = client.patch(
        f"/v1/orders/{order['id']}", json={"quantity": "1.5"}, headers=broker.headers
    )
    assert smaller.status_code == 200, smaller.text
    assert (D(smaller.json()["quantity"]), D(smaller.json()["price"])) == (D("1.5"), D(100))
    assert balances(client, broker, account)["USD"] == (D("9850"), D("150"))

    repriced = client.patch(
        f"/v1/orders/{order['id']}", json={"price": "90.5"}, headers=broker.headers
    )
    assert repriced.status_code == 200, repriced.text
    assert (D(repriced.json()["quantity"]), D(repriced.json()["price"])) == (D("1.5"), D("90.5"))
    assert repriced.json()["status"] == "new"
    assert balances(client, broker, account)["USD"] == (D("9864.25"), D("135.75"))


def test_an_amend_without_a_change_is_400(client: TestClient, broker: Broker, account: int) -> None:
    order = place(
        client, broker, account, side="buy", price="100", quantity="1", client_order_id="o"
    )

    response = client.patch(f"/v1/orders/{order['id']}", json={}, headers=broker.headers)

    assert_problem(response, 400, "invalid_request")


def test_a_cancel_releases_the_hold_and_a_repeated_cancel_returns_the_same_order(
    client: TestClient, broker: Broker, account: int
) -> None:
    order = place(
        client, broker, account, side="buy", price="100", quantity="1", client_order_id="o"
    )

    canceled = client.delete(f"/v1/orders/{order['id']}", headers=broker.headers)
    again = client.delete(f"/v1/orders/{order['id']}", headers=broker.headers)

    assert canceled.status_code == 200, canceled.text
    assert (canceled.json()["status"], canceled.json()["reason"]) == (
        "canceled",
        "canceled_by_owner",
    )
    assert (again.status_code, again.json()) == (200, canceled.json())
    assert balances(client, broker, account)["USD"] == (D("10000"), D(0))


def test_a_cancel_answers_the_order_as_a_read_of_it_does(
    client: TestClient, broker: Broker, account: int
) -> None:
    order = place(
        client, broker, account, side="buy", price="100.50", quantity="1.250",
        client_order_id="o",
    )

    canceled = client.delete(f"/v1/orders/{order['id']}", headers=broker.headers)

    assert canceled.status_code == 200, canceled.text
    assert canceled.json() == client.get(f"/v1/orders/{order['id']}", headers=broker.headers).json()
    assert (canceled.json()["price"], canceled.json()["fills"]) == ("100.50", [])


def test_a_quantity_of_thirty_digits_is_answered_in_full_by_placement_and_cancel(
    client: TestClient, broker: Broker, account: int
) -> None:
    quantity = "1." + "0" * 29  # 30 significant digits: beyond Python's default precision

    order = place(
        client, broker, account, side="buy", price="100", quantity=quantity, client_order_id="o"
    )
    canceled = client.delete(f"/v1/orders/{order['id']}", headers=broker.headers)

    assert order["remaining_quantity"] == quantity
    assert canceled.json()["remaining_quantity"] == quantity
    assert canceled.json() == client.get(f"/v1/orders/{order['id']}", headers=broker.headers).json()


def test_a_cancel_of_a_partly_filled_order_answers_it_with_its_fills(
    client: TestClient, broker: Broker, account: int, counterparty: tuple[Broker, int]
) -> None:
    other, seller = counterparty
    bid = place(client, broker, account, side="buy", price="100", quantity="2", client_order_id="b")
    place(client, other, seller, side="sell", price="100", quantity="0.5", client_order_id="s")

    canceled = client.delete(f"/v1/orders/{bid['id']}", headers=broker.headers)

    assert canceled.status_code == 200, canceled.text
    assert (canceled.json()["status"], D(canceled.json()["filled_quantity"])) == (
        "canceled",
        D("0.5"),
    )
    assert [(D(f["quantity"]), f["liquidity"]) for f in canceled.json()["fills"]] == [
        (D("0.5"), "maker")
    ]
    assert canceled.json() == client.get(f"/v1/orders/{bid['id']}", headers=broker.headers).json()


def test_a_cancel_by_another_broker_is_404_even_for_an_order_this_process_just_placed(
    client: TestClient, broker: Broker, account: int
) -> None:
    order = place(
        client, broker, account, side="buy", price="100", quantity="1", client_order_id="o"
    )
    intruder = new_broker(client, "intruder")

    response = client.delete(f"/v1/orders/{order['id']}", headers=intruder.headers)

    assert_problem(response, 404, "unknown_order")
    assert client.get(f"/v1/orders/{order['id']}", headers=broker.headers).json() == order


def test_a_cancel_of_an_order_placed_through_another_api_process_finds_it(
    db: ScratchDatabase, client: TestClient, broker: Broker, account: int
) -> None:
    order = place(
        client, broker, account, side="buy", price="100", quantity="1", client_order_id="o"
    )

    with TestClient(create_app(db.conninfo(APP_ROLE), api_settings())) as other_process:
        canceled = other_process.delete(f"/v1/orders/{order['id']}", headers=broker.headers)

    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert balances(client, broker, account)["USD"] == (D("10000"), D(0))


def test_a_cancel_of_a_filled_order_is_409_order_not_open(
    client: TestClient, broker: Broker, account: int, counterparty: tuple[Broker, int]
) -> None:
    other, seller = counterparty
    place(client, other, seller, side="sell", price="100", quantity="1", client_order_id="s")
    filled = place(
        client, broker, account, side="buy", price="100", quantity="1", client_order_id="b"
    )
    assert filled["status"] == "filled"

    response = client.delete(f"/v1/orders/{filled['id']}", headers=broker.headers)

    assert_problem(response, 409, "order_not_open")


def test_an_order_is_read_by_its_id(client: TestClient, broker: Broker, account: int) -> None:
    order = place(
        client, broker, account, side="sell", price="150", quantity="1", client_order_id="o"
    )

    read = client.get(f"/v1/orders/{order['id']}", headers=broker.headers)

    assert (read.status_code, read.json()) == (200, order)
    assert_problem(client.get("/v1/orders/999999", headers=broker.headers), 404, "unknown_order")


def test_cancel_all_returns_the_canceled_orders_and_leaves_other_accounts_alone(
    client: TestClient, broker: Broker, account: int
) -> None:
    other_account = funded_account(client, broker, USD="1000")
    kept = place(
        client, broker, other_account, side="buy", price="90", quantity="1", client_order_id="k"
    )
    ids = [
        place(client, broker, account, side="buy", price=price, quantity="1", client_order_id=c)[
            "id"
        ]
        for price, c in (("90", "a"), ("91", "b"), ("92", "c"))
    ]
    filled_or_closed = client.delete(f"/v1/orders/{ids[1]}", headers=broker.headers)
    assert filled_or_closed.status_code == 200

    response = client.delete(
        "/v1/orders", params={"account_id": account, "symbol": SYMBOL}, headers=broker.headers
    )

    assert response.status_code == 200, response.text
    assert [(o["id"], o["status"], o["reason"]) for o in response.json()] == [
        (ids[0], "canceled", "canceled_by_cancel_all"),
        (ids[2], "canceled", "canceled_by_cancel_all"),
    ]
    assert open_orders(client, broker, account) == []
    assert [o["id"] for o in open_orders(client, broker, other_account)] == [kept["id"]]
    assert balances(client, broker, account)["USD"] == (D("10000"), D(0))


def test_orders_are_filtered_by_account_symbol_and_status(
    client: TestClient, broker: Broker, account: int
) -> None:
    open_order = place(
        client, broker, account, side="buy", price="90", quantity="1", client_order_id="open"
    )
    closed = place(
        client, broker, account, side="buy", price="91", quantity="1", client_order_id="closed"
    )
    client.delete(f"/v1/orders/{closed['id']}", headers=broker.headers)

    def listed(**params: object) -> list[int]:
        response = client.get("/v1/orders", params=params, headers=broker.headers)
        assert response.status_code == 200, response.text
        return [o["id"] for o in response.json()["items"]]

    assert listed(account_id=account) == [closed["id"], open_order["id"]]  # newest first
    assert listed(account_id=account, status="open") == [open_order["id"]]
    assert listed(account_id=account, status="closed") == [closed["id"]]
    assert listed(symbol=SYMBOL, status="open") == [open_order["id"]]
    assert listed(symbol="ETH-USD") == []


# --- pagination ----------------------------------------------------------------------------


@pytest.fixture
def busy(client: TestClient, broker: Broker, account: int, counterparty: tuple[Broker, int]) -> int:
    """`account` after seven orders, five fills, and the deposits and trades they made."""
    other, seller = counterparty
    for n in range(5):
        place(
            client, other, seller, side="sell", price="100", quantity="0.1", client_order_id=f"s{n}"
        )
        place(
            client,
            broker,
            account,
            side="buy",
            price="100",
            quantity="0.1",
            client_order_id=f"b{n}",
        )
    for n in range(2):
        place(
            client, broker, account, side="buy", price="50", quantity="0.1", client_order_id=f"r{n}"
        )
    for _ in range(4):
        funded_account(client, broker)
    return account


@pytest.mark.parametrize(
    "url",
    [
        "/v1/accounts",
        "/v1/orders",
        "/v1/fills",
        "/v1/accounts/{account}/ledger",
    ],
)
@pytest.mark.parametrize("limit", [1, 3])
def test_pages_followed_by_cursor_have_no_overlap_and_no_gap(
    client: TestClient, broker: Broker, busy: int, url: str, limit: int
) -> None:
    url = url.format(account=busy)
    everything = all_ids(client, broker, url)
    assert len(everything) >= 5

    pages = walk(client, broker, url, limit)

    assert all(len(p) == limit for p in pages[:-1]) and 1 <= len(pages[-1]) <= limit
    assert [i for p in pages for i in p] == everything


# --- request validation and problems -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/accounts", {"external_ref": "c", "tenant_id": 2}),
        ("/v1/orders", {"side": "buy", "price": "1", "quantity": "1", "taker_fee_rate": "0"}),
        ("/v1/orders", {"side": "buy", "price": "1", "quantity": "1", "tenant_id": 2}),
        ("/v1/accounts/{account}/deposits", {"asset": "USD", "amount": "1", "tenant_id": 2}),
    ],
)
def test_a_body_with_an_unknown_field_is_400_and_writes_nothing(
    client: TestClient, broker: Broker, account: int, path: str, body: dict[str, object]
) -> None:
    if path == "/v1/orders":
        body = {**order_body(account, client_order_id="x"), **body}
    before = (balances(client, broker, account), all_ids(client, broker, "/v1/accounts"))

    response = client.post(
        path.format(account=account),
        json=body,
        headers={**broker.headers, "Idempotency-Key": "k"},
    )

    problem = assert_problem(response, 400, "invalid_request")
    assert "tenant_id" in problem["detail"] or "taker_fee_rate" in problem["detail"]
    assert (balances(client, broker, account), all_ids(client, broker, "/v1/accounts")) == before
    assert open_orders(client, broker, account) == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/orders", {"side": "buy", "price": 100, "quantity": "1"}),
        ("/v1/orders", {"side": "buy", "price": "100", "quantity": 1.5}),
        ("/v1/accounts/{account}/deposits", {"asset": "USD", "amount": 10}),
        ("/v1/accounts/{account}/withdrawals", {"asset": "USD", "amount": 0.1}),
    ],
)
def test_a_json_number_for_money_is_400(
    client: TestClient, broker: Broker, account: int, path: str, body: dict[str, object]
) -> None:
    if path == "/v1/orders":
        body = {**order_body(account, client_order_id="x"), **body}
    before = balances(client, broker, account)

    response = client.post(
        path.format(account=account),
        json=body,
        headers={**broker.headers, "Idempotency-Key": "k"},
    )

    problem = assert_problem(response, 400, "invalid_request")
    assert "decimal string" in problem["detail"]
    assert balances(client, broker, account) == before
    assert open_orders(client, broker, account) == []


@pytest.mark.parametrize(
    "request_",
    [
        lambda c, h: c.get("/v1/no-such-route", headers=h),
        lambda c, h: c.get("/v1/accounts/not-a-number", headers=h),
        lambda c, h: c.post("/v1/accounts", content=b"{not json", headers=h),
        lambda c, h: c.get("/v1/orders", params={"limit": 0}, headers=h),
    ],
    ids=["unknown-route", "malformed-path", "malformed-json", "limit-out-of-range"],
)
def test_every_error_is_a_problem_document(
    client: TestClient, broker: Broker, request_: Callable[[TestClient, dict[str, str]], Any]
) -> None:
    response = request_(client, broker.headers)

    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert set(problem) == PROBLEM_FIELDS
    assert problem["status"] == response.status_code
    assert problem["type"] == f"/problems/{problem['code']}"


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe{}"], ids=["malformed", "not-utf-8"])
def test_a_body_that_is_not_json_is_400_invalid_request(
    client: TestClient, broker: Broker, content: bytes
) -> None:
    response = client.post(
        "/v1/accounts",
        content=content,
        headers={**broker.headers, "Content-Type": "application/json"},
    )

    assert_problem(response, 400, "invalid_request")
    assert all_ids(client, broker, "/v1/accounts") == []
