"""WS /v1/stream: book snapshots and deltas, trades, a tenant's executions, and resuming."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from app.api import create_app
from app.marketdata import feed
from app.marketdata.book import BookState
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

Book = dict[str, dict[Decimal, Decimal]]
Market = tuple[Broker, int, Broker, int]


@pytest.fixture
def market(client: TestClient) -> Market:
    """BTC-USD with a buyer (broker a) and a seller (broker b), both funded."""
    create_market(client)
    a, b = new_broker(client, "a"), new_broker(client, "b")
    return a, funded_account(client, a, USD="100000"), b, funded_account(client, b, BTC="50")


def receive(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    """The next message, failing the test (instead of hanging it) if none comes in time."""

    async def next_message() -> Any:
        with anyio.fail_after(timeout):
            return await ws._send_rx.receive()

    message = ws.portal.call(next_message)
    ws._raise_on_close(message)
    return dict(json.loads(message["text"]))


def subscribe(ws: Any, channel: str, since: object = None) -> dict[str, Any]:
    request: dict[str, Any] = {"op": "subscribe", "channel": channel}
    if since is not None:
        request["since"] = since
    ws.send_json(request)
    ack = receive(ws)
    assert ack["type"] == "subscribed", ack
    return ack


def nothing_more(ws: Any) -> None:
    """Every message sent before a pong has been received: the stream had nothing else."""
    ws.send_json({"op": "ping"})
    assert receive(ws) == {"type": "pong"}


def apply(book: Book, message: dict[str, Any]) -> None:
    for side, key in (("buy", "bids"), ("sell", "asks")):
        if message["type"] == "snapshot":
            book[side] = {}
        for price, quantity in message[key]:
            if Decimal(quantity):
                book[side][Decimal(price)] = Decimal(quantity)
            else:
                book[side].pop(Decimal(price), None)


def rest_book(client: TestClient) -> tuple[int, Book]:
    body = client.get("/v1/markets/BTC-USD/book?depth=1000", headers=ADMIN).json()
    book: Book = {"buy": {}, "sell": {}}
    apply(book, {"type": "snapshot", **body})
    return body["seq"], book


def deltas_until(ws: Any, seq: int) -> list[dict[str, Any]]:
    got = []
    while not got or got[-1]["seq"] < seq:
        got.append(receive(ws))
        assert got[-1]["type"] == "delta", got[-1]
    return got


def test_book_stream_resumes_after_a_disconnect_with_no_gap_and_no_duplicate(
    client: TestClient, market: Market
) -> None:
    a, buyer, b, seller = market
    place(client, b, seller, side="sell", price="101", quantity="2", client_order_id="s1")
    place(client, a, buyer, side="buy", price="99", quantity="1", client_order_id="b1")
    book: Book = {"buy": {}, "sell": {}}

    with client.websocket_connect("/v1/stream", headers=a.headers) as ws:
        assert subscribe(ws, "book:BTC-USD")["seq"] is None  # a snapshot follows
        snapshot = receive(ws)
        assert (snapshot["type"], snapshot["seq"]) == ("snapshot", 2)
        apply(book, snapshot)
        place(client, b, seller, side="sell", price="101", quantity="1", client_order_id="s2")
        place(client, a, buyer, side="buy", price="101", quantity="2.5", client_order_id="b2")
        deltas = deltas_until(ws, 4)
        assert [d["seq"] for d in deltas] == [3, 4]
        assert deltas[-1]["asks"] == [["101.00", "0.500"]]  # 2.5 of the 3 at 101 traded
        for delta in deltas:
            apply(book, delta)
        last_seen = deltas[-1]["seq"]
    # Disconnected: the market moves on (a trade, an amend to another price, a cancel, a
    # command that changes no level).
    place(client, b, seller, side="sell", price="100", quantity="1", client_order_id="s3")
    amended = place(client, a, buyer, side="buy", price="98", quantity="1", client_order_id="b3")
    assert (
        client.patch(
            f"/v1/orders/{amended['id']}", json={"price": "97.5"}, headers=a.headers
        ).status_code
        == 200
    )
    assert client.delete(f"/v1/orders/{amended['id']}", headers=a.headers).status_code == 200
    place(
        client,
        a,
        buyer,
        side="buy",
        price="1",
        quantity="1",
        client_order_id="ioc",
        time_in_force="IOC",
    )

    with client.websocket_connect("/v1/stream", headers=a.headers) as ws:
        assert subscribe(ws, "book:BTC-USD", since=last_seen)["seq"] == last_seen
        missed = deltas_until(ws, 9)
        nothing_more(ws)

    assert [d["seq"] for d in missed] == [5, 6, 7, 8, 9]
    assert missed[-1]["bids"] == missed[-1]["asks"] == []  # one delta per event, even empty
    assert missed[2] == {  # the amend: the order left 98 and rests at 97.5
        "channel": "book:BTC-USD",
        "type": "delta",
        "seq": 7,
        "bids": [["98.00", "0.000"], ["97.50", "1.000"]],
        "asks": [],
    }
    for delta in missed:
        apply(book, delta)
    assert rest_book(client) == (9, book)


def test_a_since_older_than_the_kept_history_gets_a_fresh_snapshot(
    db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "HISTORY_EVENTS", 2)
    with TestClient(create_app(db.conninfo(APP_ROLE), api_settings())) as client:
        create_market(client)
        b = new_broker(client, "b")
        seller = funded_account(client, b, BTC="10")
        with client.websocket_connect("/v1/stream", headers=b.headers) as ws:
            subscribe(ws, "book:BTC-USD")
            assert receive(ws)["seq"] == 0
            for i in range(4):
                place(
                    client,
                    b,
                    seller,
                    side="sell",
                    price=f"10{i}",
                    quantity="1",
                    client_order_id=f"s{i}",
                )
            assert [d["seq"] for d in deltas_until(ws, 4)] == [1, 2, 3, 4]
        # Only events 3 and 4 are kept: since 2 resumes, since 1 needs a snapshot.
        with client.websocket_connect("/v1/stream", headers=b.headers) as ws:
            assert subscribe(ws, "book:BTC-USD", since=2)["seq"] == 2
            assert [d["seq"] for d in deltas_until(ws, 4)] == [3, 4]
        with client.websocket_connect("/v1/stream", headers=b.headers) as ws:
            assert subscribe(ws, "book:BTC-USD", since=1)["seq"] is None
            snapshot = receive(ws)
            nothing_more(ws)
        book: Book = {"buy": {}, "sell": {}}
        apply(book, snapshot)
        assert rest_book(client) == (snapshot["seq"], book) == (4, book)


def test_another_api_process_streams_what_this_one_committed(
    db: ScratchDatabase, client: TestClient, market: Market
) -> None:
    a, buyer, b, seller = market
    with (
        TestClient(create_app(db.conninfo(APP_ROLE), api_settings())) as other,
        other.websocket_connect("/v1/stream", headers=a.headers) as ws,
    ):
        subscribe(ws, "book:BTC-USD")
        assert receive(ws)["seq"] == 0
        subscribe(ws, "trades:BTC-USD")
        place(client, b, seller, side="sell", price="100", quantity="1", client_order_id="s")
        place(client, a, buyer, side="buy", price="100", quantity="1", client_order_id="b")
        # (channels are independent: their messages may interleave in any order)
        got = sorted((receive(ws) for _ in range(3)), key=lambda m: (m["channel"], m["seq"]))
    assert [(m["channel"], m["seq"]) for m in got] == [
        ("book:BTC-USD", 1),
        ("book:BTC-USD", 2),
        ("trades:BTC-USD", 2),
    ]
    [trade] = got[2]["trades"]
    assert (trade["price"], trade["quantity"], trade["taker_side"]) == ("100.00", "1.000", "buy")


def test_trades_resume_from_the_table_beyond_the_kept_history(
    db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "HISTORY_EVENTS", 1)
    with TestClient(create_app(db.conninfo(APP_ROLE), api_settings())) as client:
        create_market(client)
        a, b = new_broker(client, "a"), new_broker(client, "b")
        buyer, seller = funded_account(client, a, USD="1000"), funded_account(client, b, BTC="9")
        with client.websocket_connect("/v1/stream", headers=a.headers) as ws:
            assert subscribe(ws, "trades:BTC-USD")["seq"] == 0
            for i in range(3):  # seqs 1..6; trades at 2, 4, 6
                place(
                    client,
                    b,
                    seller,
                    side="sell",
                    price="100",
                    quantity="1",
                    client_order_id=f"s{i}",
                )
                place(
                    client, a, buyer, side="buy", price="100", quantity="1", client_order_id=f"b{i}"
                )
            assert [receive(ws)["seq"] for _ in range(3)] == [2, 4, 6]
        with client.websocket_connect("/v1/stream", headers=a.headers) as ws:
            assert subscribe(ws, "trades:BTC-USD", since=2)["seq"] == 2
            assert [receive(ws)["seq"] for _ in range(2)] == [4, 6]
            nothing_more(ws)


def test_executions_show_only_the_tenants_own_orders_and_fills(
    client: TestClient, market: Market
) -> None:
    a, buyer, b, seller = market
    c = new_broker(client, "c")
    streams = {}
    with (
        client.websocket_connect("/v1/stream", headers=a.headers) as wa,
        client.websocket_connect("/v1/stream", headers=b.headers) as wb,
        client.websocket_connect("/v1/stream", headers=c.headers) as wc,
    ):
        for ws in (wa, wb, wc):
            assert subscribe(ws, "executions")["since"] == {"BTC-USD": 0}
        subscribe(wc, "trades:BTC-USD")
        place(client, a, buyer, side="buy", price="100", quantity="2", client_order_id="a-1")
        place(client, b, seller, side="sell", price="99", quantity="0.5", client_order_id="b-1")
        streams["a"] = [receive(wa), receive(wa)]
        streams["b"] = [receive(wb)]
        public = receive(wc)
        nothing_more(wa)
        nothing_more(wb)
        nothing_more(wc)

    placed, filled = streams["a"]
    assert (placed["seq"], placed["kind"], placed["fills"]) == (1, "place", [])
    assert [(o["client_order_id"], o["status"]) for o in placed["orders"]] == [("a-1", "new")]
    assert filled["seq"] == 2
    assert [
        (o["client_order_id"], o["status"], o["remaining_quantity"]) for o in filled["orders"]
    ] == [("a-1", "partially_filled", "1.5")]
    [fill] = filled["fills"]
    assert (fill["liquidity"], fill["side"], fill["price"], fill["fee_asset"]) == (
        "maker",
        "buy",
        "100",
        "BTC",
    )
    assert fill["account_id"] == buyer and fill["client_order_id"] == "a-1"
    [taken] = streams["b"]
    assert [o["client_order_id"] for o in taken["orders"]] == ["b-1"]
    assert [(f["liquidity"], f["fee_asset"], f["trade_id"]) for f in taken["fills"]] == [
        ("taker", "USD", fill["trade_id"])
    ]
    # Neither side learns the other's account or client order id.
    for tenant, account, other in (("a", buyer, "b-1"), ("b", seller, "a-1")):
        seen = streams[tenant]
        assert {o["account_id"] for m in seen for o in m["orders"]} == {account}
        assert {f["account_id"] for m in seen for f in m["fills"]} == {account}
        assert other not in json.dumps(seen)
    # The trade itself is public.
    assert (public["channel"], public["seq"]) == ("trades:BTC-USD", 2)
    assert [t["id"] for t in public["trades"]] == [fill["trade_id"]]


def test_a_trade_between_two_accounts_of_one_broker_is_two_fills(
    client: TestClient, market: Market
) -> None:
    a, buyer, _, _ = market
    own_seller = funded_account(client, a, BTC="1")
    with client.websocket_connect("/v1/stream", headers=a.headers) as ws:
        subscribe(ws, "executions")
        place(client, a, own_seller, side="sell", price="100", quantity="1", client_order_id="s")
        place(client, a, buyer, side="buy", price="100", quantity="1", client_order_id="b")
        assert receive(ws)["fills"] == []
        traded = receive(ws)
    assert sorted(
        (f["account_id"], f["side"], f["liquidity"], f["fee_asset"]) for f in traded["fills"]
    ) == sorted([(own_seller, "sell", "maker", "USD"), (buyer, "buy", "taker", "BTC")])
    assert {f["trade_id"] for f in traded["fills"]} == {traded["fills"][0]["trade_id"]}


def test_executions_resume_from_the_table_after_a_seq(client: TestClient, market: Market) -> None:
    a, buyer, b, seller = market
    place(client, a, buyer, side="buy", price="100", quantity="1", client_order_id="a-1")
    place(client, b, seller, side="sell", price="120", quantity="1", client_order_id="b-1")
    place(client, a, buyer, side="buy", price="101", quantity="1", client_order_id="a-2")
    with client.websocket_connect("/v1/stream", headers=a.headers) as ws:
        assert subscribe(ws, "executions", since={"BTC-USD": 1})["since"] == {"BTC-USD": 1}
        assert receive(ws)["seq"] == 3  # seq 2 was broker b's alone
        nothing_more(ws)


def test_unauthenticated_streams_are_refused(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"Authorization": "Basic x"}):
        with (
            pytest.raises(WebSocketDenialResponse) as refused,
            client.websocket_connect("/v1/stream", headers=headers),
        ):
            pass
        assert refused.value.status_code == 401
        assert refused.value.json()["code"] in ("unauthenticated", "invalid_api_key")


def test_a_key_revoked_during_a_stream_ends_it(db: ScratchDatabase) -> None:
    settings = api_settings(key_cache_seconds=0.1)
    with TestClient(create_app(db.conninfo(APP_ROLE), settings)) as client:
        create_market(client)
        broker = new_broker(client, "b")
        with client.websocket_connect("/v1/stream", headers=broker.headers) as ws:
            subscribe(ws, "executions")
            key_id = broker.key.split("_")[1]
            assert client.delete(f"/v1/admin/api-keys/{key_id}", headers=ADMIN).status_code == 204
            with pytest.raises(WebSocketDisconnect) as closed:
                receive(ws)
    assert closed.value.code == 1008


def test_executions_need_a_broker_key_with_read_scope(client: TestClient) -> None:
    create_market(client)
    trader = new_broker(client, "t", scopes=("trade",))
    for headers in (ADMIN, trader.headers):
        with client.websocket_connect("/v1/stream", headers=headers) as ws:
            ws.send_json({"op": "subscribe", "channel": "executions"})
            assert receive(ws)["code"] == "forbidden"
            assert subscribe(ws, "book:BTC-USD")["channel"] == "book:BTC-USD"  # public: fine


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ("not json", "invalid_message"),
        ('["subscribe"]', "invalid_message"),
        ('{"op": "dance"}', "invalid_message"),
        ('{"op": "subscribe", "channel": 7}', "unknown_channel"),
        ('{"op": "subscribe", "channel": "candles:BTC-USD"}', "unknown_channel"),
        ('{"op": "subscribe", "channel": "book:ETH-USD"}', "unknown_instrument"),
        ('{"op": "subscribe", "channel": "book:\\u0000"}', "unknown_instrument"),
        ('{"op": "subscribe", "channel": "book:BTC-USD", "since": 1}', "invalid_since"),
        ('{"op": "subscribe", "channel": "book:BTC-USD", "since": -1}', "invalid_since"),
        ('{"op": "subscribe", "channel": "trades:BTC-USD", "since": "0"}', "invalid_since"),
        ('{"op": "subscribe", "channel": "executions", "since": 0}', "invalid_since"),
        ('{"op": "subscribe", "channel": "executions", "since": {"BTC-USD": 5}}', "invalid_since"),
        ('{"op": "subscribe", "channel": "executions", "since": {"X-Y": 0}}', "unknown_instrument"),
        ('{"op": "unsubscribe", "channel": "book:BTC-USD"}', "not_subscribed"),
    ],
)
def test_bad_requests_get_an_error_and_the_connection_stays(
    client: TestClient, request_: str, code: str
) -> None:
    create_market(client)
    broker = new_broker(client, "b")
    with client.websocket_connect("/v1/stream", headers=broker.headers) as ws:
        ws.send_text(request_)
        error = receive(ws)
        assert (error["type"], error["code"]) == ("error", code), error
        nothing_more(ws)


def test_unsubscribe_stops_a_channel_and_subscriptions_are_bounded(
    client: TestClient, market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, buyer, _, _ = market
    from app.marketdata import session

    monkeypatch.setattr(session, "SUBSCRIPTIONS_MAX", 2)
    with client.websocket_connect("/v1/stream", headers=a.headers) as ws:
        subscribe(ws, "trades:BTC-USD")
        subscribe(ws, "book:BTC-USD")
        receive(ws)  # snapshot
        ws.send_json({"op": "subscribe", "channel": "book:BTC-USD"})
        assert receive(ws)["code"] == "already_subscribed"
        ws.send_json({"op": "subscribe", "channel": "executions"})
        assert receive(ws)["code"] == "too_many_subscriptions"
        ws.send_json({"op": "unsubscribe", "channel": "book:BTC-USD"})
        assert receive(ws) == {"type": "unsubscribed", "channel": "book:BTC-USD"}
        place(client, a, buyer, side="buy", price="100", quantity="1", client_order_id="a-1")
        subscribe(ws, "executions", since={"BTC-USD": 0})
        assert receive(ws)["channel"] == "executions"  # and not the book's delta
        nothing_more(ws)


def test_book_state_follows_amends_fills_and_cancels() -> None:
    book = BookState([(1, "buy", Decimal("10"), Decimal("2")), (2, "buy", Decimal("10.0"), 1)])
    assert book.levels()["buy"] == {Decimal(10): Decimal(3)}

    def order(
        id_: int, price: str | None, quantity: str, filled: str, status: str
    ) -> dict[str, Any]:
        return {
            "id": id_,
            "side": "buy",
            "type": "limit",
            "price": price,
            "quantity": quantity,
            "filled_quantity": filled,
            "status": status,
        }

    assert book.apply([order(1, "9.5", "2", "0", "new")]) == {
        "buy": {Decimal(10): Decimal(1), Decimal("9.5"): Decimal(2)},
        "sell": {},
    }
    assert book.apply([order(2, "10", "1", "0.4", "partially_filled")]) == {
        "buy": {Decimal(10): Decimal("0.6")},
        "sell": {},
    }
    assert book.apply(
        [order(2, "10", "1", "1", "filled"), order(1, "9.5", "2", "0", "canceled")]
    ) == {"buy": {Decimal(10): 0, Decimal("9.5"): 0}, "sell": {}}
    assert book.apply([order(3, None, "1", "1", "filled")]) == {"buy": {}, "sell": {}}
    assert book.levels() == {"buy": {}, "sell": {}}
