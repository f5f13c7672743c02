"""Tenancy through the API: a broker's key reaches only its own objects, on every route.

The matrix below names every route of the app under /v1 and how to call it on one broker's
objects. A route the matrix does not name fails `test_every_route_is_in_the_matrix`, so a new
route cannot be forgotten. Two brokers, A and B, each have an account, a filled order, an open
order and fills (they traded with each other); then A's key is used on each of B's objects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
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

SYMBOL = "BTC-USD"
BROKER_SCOPES = ("read", "trade", "transfer")
TENANT_TABLES = (
    "tenancy.tenant",
    "ledger.customer",
    "ledger.account",
    "ledger.journal",
    "ledger.entry",
    "trading.orders",
    "trading.trade",
)


# --- the two brokers -----------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Brokers "a" and "b" and, for each, an account, an open order and a filled order."""

    brokers: dict[str, Broker]
    accounts: dict[str, int]
    open_orders: dict[str, int]
    filled_orders: dict[str, int]

    @property
    def a(self) -> Broker:
        return self.brokers["a"]

    @property
    def b(self) -> Broker:
        return self.brokers["b"]


def key_id(broker: Broker) -> int:
    return int(broker.key.split("_")[1])


@pytest.fixture
def world(client: TestClient) -> World:
    create_market(client)
    a, b = new_broker(client, "broker-a"), new_broker(client, "broker-b")
    alice = funded_account(client, a, USD="10000", BTC="5")
    bob = funded_account(client, b, USD="10000", BTC="5")
    # A and B trade with each other both ways, then each leaves an order open.
    filled_b = place(client, b, bob, side="sell", price="100", quantity="1", client_order_id="s")
    filled_a = place(client, a, alice, side="buy", price="100", quantity="1", client_order_id="b")
    place(client, a, alice, side="sell", price="101", quantity="0.5", client_order_id="s")
    place(client, b, bob, side="buy", price="101", quantity="0.5", client_order_id="b")
    open_a = place(client, a, alice, side="buy", price="90", quantity="1", client_order_id="o")
    open_b = place(client, b, bob, side="sell", price="110", quantity="1", client_order_id="o")
    for broker, order in ((a, filled_a), (b, filled_b)):
        stored = client.get(f"/v1/orders/{order['id']}", headers=broker.headers).json()
        assert (stored["status"], len(stored["fills"])) == ("filled", 1)
    return World(
        brokers={"a": a, "b": b},
        accounts={"a": alice, "b": bob},
        open_orders={"a": open_a["id"], "b": open_b["id"]},
        filled_orders={"a": filled_a["id"], "b": filled_b["id"]},
    )


# --- the matrix ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    params: dict[str, object] = field(default_factory=dict)
    json: object = None
    headers: dict[str, str] = field(default_factory=dict)

    def send(self, client: TestClient, headers: dict[str, str]) -> Any:
        return client.request(
            self.method,
            self.url,
            params=self.params,
            json=self.json,
            headers={**self.headers, **headers},
        )


@dataclass(frozen=True)
class Route:
    """scope: what a key needs ("admin": operators only; "any": every valid key).
    calls(world, owner): the route's requests on the objects of broker `owner` ("a" or "b").
    owned: whether those requests name the owner's objects (an account or an order); if not,
    the route shows or makes only the caller's own objects, or shared ones (instruments)."""

    scope: str
    calls: Callable[[World, str], list[Call]]
    owned: bool


def _account(w: World, o: str) -> int:
    return w.accounts[o]


def _order_ids(w: World, o: str) -> list[int]:
    return [w.open_orders[o], w.filled_orders[o]]


# In walking order: what the owner's walk changes comes after what it reads.
MATRIX: dict[tuple[str, str], Route] = {
    # Brokers: accounts, money, orders, fills.
    ("GET", "/v1/accounts"): Route("read", lambda w, o: [Call("GET", "/v1/accounts")], False),
    ("GET", "/v1/accounts/{account_id}"): Route(
        "read", lambda w, o: [Call("GET", f"/v1/accounts/{_account(w, o)}")], True
    ),
    ("GET", "/v1/accounts/{account_id}/balances"): Route(
        "read", lambda w, o: [Call("GET", f"/v1/accounts/{_account(w, o)}/balances")], True
    ),
    ("GET", "/v1/accounts/{account_id}/ledger"): Route(
        "read",
        lambda w, o: [
            Call("GET", f"/v1/accounts/{_account(w, o)}/ledger"),
            Call("GET", f"/v1/accounts/{_account(w, o)}/ledger", {"asset": "USD", "limit": 1}),
        ],
        True,
    ),
    ("GET", "/v1/orders/{order_id}"): Route(
        "read", lambda w, o: [Call("GET", f"/v1/orders/{i}") for i in _order_ids(w, o)], True
    ),
    ("GET", "/v1/orders"): Route(
        "read",
        lambda w, o: [
            Call("GET", "/v1/orders", {"account_id": _account(w, o)}),
            Call("GET", "/v1/orders", {"account_id": _account(w, o), "status": "open"}),
            Call("GET", "/v1/orders", {"account_id": _account(w, o), "symbol": SYMBOL}),
        ],
        True,
    ),
    ("GET", "/v1/fills"): Route(
        "read",
        lambda w, o: [
            Call("GET", "/v1/fills", {"account_id": _account(w, o)}),
            Call("GET", "/v1/fills", {"account_id": _account(w, o), "symbol": SYMBOL}),
        ],
        True,
    ),
    ("POST", "/v1/accounts/{account_id}/deposits"): Route(
        "transfer",
        lambda w, o: [
            Call(
                "POST",
                f"/v1/accounts/{_account(w, o)}/deposits",
                json={"asset": "USD", "amount": "1"},
                headers={"Idempotency-Key": "walk-deposit"},
            )
        ],
        True,
    ),
    ("POST", "/v1/accounts/{account_id}/withdrawals"): Route(
        "transfer",
        lambda w, o: [
            Call(
                "POST",
                f"/v1/accounts/{_account(w, o)}/withdrawals",
                json={"asset": "USD", "amount": "1"},
                headers={"Idempotency-Key": "walk-withdrawal"},
            )
        ],
        True,
    ),
    ("POST", "/v1/orders"): Route(
        "trade",
        lambda w, o: [
            Call(
                "POST",
                "/v1/orders",
                json={
                    "account_id": _account(w, o),
                    "symbol": SYMBOL,
                    "side": "buy",
                    "type": "limit",
                    "price": "50",
                    "quantity": "0.01",
                    "client_order_id": "walk",
                },
            )
        ],
        True,
    ),
    ("PATCH", "/v1/orders/{order_id}"): Route(
        "trade",
        lambda w, o: [Call("PATCH", f"/v1/orders/{w.open_orders[o]}", json={"quantity": "0.5"})],
        True,
    ),
    ("DELETE", "/v1/orders/{order_id}"): Route(
        "trade", lambda w, o: [Call("DELETE", f"/v1/orders/{w.open_orders[o]}")], True
    ),
    ("DELETE", "/v1/orders"): Route(
        "trade",
        lambda w, o: [
            Call("DELETE", "/v1/orders", {"account_id": _account(w, o), "symbol": SYMBOL}),
            Call("DELETE", "/v1/orders", {"account_id": _account(w, o)}),
        ],
        True,
    ),
    ("POST", "/v1/accounts"): Route(
        "trade", lambda w, o: [Call("POST", "/v1/accounts", json={"external_ref": "walk"})], False
    ),
    # Market data: instruments are shared by all brokers, and their data names nobody.
    ("GET", "/v1/instruments"): Route("any", lambda w, o: [Call("GET", "/v1/instruments")], False),
    ("GET", "/v1/markets/{symbol}/book"): Route(
        "any", lambda w, o: [Call("GET", f"/v1/markets/{SYMBOL}/book")], False
    ),
    ("GET", "/v1/markets/{symbol}/trades"): Route(
        "any", lambda w, o: [Call("GET", f"/v1/markets/{SYMBOL}/trades")], False
    ),
    ("GET", "/v1/markets/{symbol}/ticker"): Route(
        "any", lambda w, o: [Call("GET", f"/v1/markets/{SYMBOL}/ticker")], False
    ),
    ("GET", "/v1/markets/{symbol}/candles"): Route(
        "any", lambda w, o: [Call("GET", f"/v1/markets/{SYMBOL}/candles")], False
    ),
    # Operators. Tenants and keys are the operators' objects, not a broker's.
    ("POST", "/v1/admin/tenants"): Route(
        "admin", lambda w, o: [Call("POST", "/v1/admin/tenants", json={"name": "walk"})], False
    ),
    ("POST", "/v1/admin/tenants/{tenant_id}/api-keys"): Route(
        "admin",
        lambda w, o: [
            Call(
                "POST",
                f"/v1/admin/tenants/{w.brokers[o].tenant_id}/api-keys",
                json={"scopes": ["read"]},
            )
        ],
        False,
    ),
    ("POST", "/v1/admin/assets"): Route(
        "admin",
        lambda w, o: [Call("POST", "/v1/admin/assets", json={"code": "ETH", "scale": 8})],
        False,
    ),
    ("POST", "/v1/admin/instruments"): Route(
        "admin",
        lambda w, o: [
            Call(
                "POST",
                "/v1/admin/instruments",
                json={
                    "symbol": "BTC-EUR",
                    "base": "BTC",
                    "quote": "EUR",
                    "tick_size": "0.01",
                    "lot_size": "0.001",
                },
            )
        ],
        False,
    ),
    ("PATCH", "/v1/admin/instruments/{symbol}"): Route(
        "admin",
        lambda w, o: [Call("PATCH", f"/v1/admin/instruments/{SYMBOL}", json={"status": "trading"})],
        False,
    ),
    ("DELETE", "/v1/admin/api-keys/{key_id}"): Route(
        "admin",
        lambda w, o: [Call("DELETE", f"/v1/admin/api-keys/{key_id(w.brokers[o])}")],
        False,
    ),
}
# WebSocket routes (the market data stream) are not walked: one that took a path parameter or
# an account_id would fail test_every_route_is_in_the_matrix.


def routes_of(scope: str) -> list[tuple[str, str]]:
    return [name for name, route in MATRIX.items() if route.scope == scope]


def calls(world: World, owner: str, names: list[tuple[str, str]]) -> Iterator[tuple[str, Call]]:
    for name in names:
        for call in MATRIX[name].calls(world, owner):
            yield f"{call.method} {call.url} {call.params}", call


# --- the app's routes ----------------------------------------------------------------------


@dataclass(frozen=True)
class AppRoute:
    methods: frozenset[str]
    path: str
    path_parameters: frozenset[str]
    query_parameters: frozenset[str]
    websocket: bool


def _query_parameters(dependant: Any) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_parameters(sub)
    return names


def app_routes(app: FastAPI) -> list[AppRoute]:
    """Every route of the app, whether or not it is in the OpenAPI document."""
    try:  # FastAPI keeps included routers as such in app.routes and flattens them here
        from fastapi.routing import iter_route_contexts

        contexts: list[Any] = list(iter_route_contexts(app.routes))
    except ImportError:
        contexts = list(app.routes)
    found = []
    for route in contexts:
        dependant = getattr(route, "dependant", None)
        methods = getattr(route, "methods", None)
        found.append(
            AppRoute(
                methods=frozenset(methods or ()) - {"HEAD"},
                path=route.path,
                path_parameters=frozenset(getattr(route, "param_convertors", {})),
                query_parameters=frozenset(_query_parameters(dependant) if dependant else ()),
                websocket=methods is None,
            )
        )
    return found


def test_every_route_is_in_the_matrix(client: TestClient) -> None:
    routes = app_routes(client.app)  # type: ignore[arg-type]
    named = {(m, r.path) for r in routes for m in r.methods if r.path.startswith("/v1/")}
    missing = named - set(MATRIX)
    assert not missing, f"routes missing from the isolation matrix: {sorted(missing)}"
    assert not set(MATRIX) - named, "the matrix names routes the app does not have"
    for route in routes:
        names_objects = bool(route.path_parameters) or "account_id" in route.query_parameters
        if names_objects:
            assert not route.websocket, f"{route.path} names objects: walk it in the matrix"
            assert all((m, route.path) in MATRIX for m in route.methods), route.path
        # A broker's account or order named in the path or the query: walked on B's objects.
        if "account_id" in route.query_parameters or route.path_parameters & {
            "account_id",
            "order_id",
        }:
            assert all(MATRIX[(m, route.path)].owned for m in route.methods), route.path


# --- A's key on B's objects ----------------------------------------------------------------


def broker_view(client: TestClient, world: World, owner: str) -> dict[str, Any]:
    """Everything broker `owner` can read of its objects."""
    headers = world.brokers[owner].headers

    def get(url: str, **params: object) -> Any:
        response = client.get(url, params={"limit": 500, **params}, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    accounts = get("/v1/accounts")["items"]
    return {
        "accounts": accounts,
        "orders": get("/v1/orders"),
        "fills": get("/v1/fills"),
        **{
            f"balances-{a['id']}": client.get(
                f"/v1/accounts/{a['id']}/balances", headers=headers
            ).json()
            for a in accounts
        },
        **{f"ledger-{a['id']}": get(f"/v1/accounts/{a['id']}/ledger") for a in accounts},
    }


def row_counts(db: ScratchDatabase) -> dict[str, int]:
    with db.connect() as conn:  # superuser: every tenant's rows
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in TENANT_TABLES
        }


def owned_routes() -> list[tuple[str, str]]:
    return [name for name, route in MATRIX.items() if route.owned]


def test_a_key_of_one_broker_gets_404_on_every_object_of_another_and_changes_nothing(
    client: TestClient, db: ScratchDatabase, world: World
) -> None:
    before = (broker_view(client, world, "b"), row_counts(db))

    for name, call in calls(world, "b", owned_routes()):
        response = call.send(client, world.a.headers)

        assert response.status_code == 404, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json", name
        assert response.json()["code"] in {"unknown_account", "unknown_order"}, name

    assert (broker_view(client, world, "b"), row_counts(db)) == before


def test_the_owner_gets_an_answer_to_the_same_requests(client: TestClient, world: World) -> None:
    """The control of the test above: its requests are valid, only the key is another's."""
    for name, call in calls(world, "b", owned_routes()):
        response = call.send(client, world.b.headers)

        assert 200 <= response.status_code < 300, (name, response.text)


def test_a_foreign_object_looks_exactly_like_a_missing_one(
    client: TestClient, world: World
) -> None:
    missing_account, missing_order = 10**15, 10**15
    pairs = [
        (f"/v1/accounts/{world.accounts['b']}", f"/v1/accounts/{missing_account}"),
        (f"/v1/orders/{world.open_orders['b']}", f"/v1/orders/{missing_order}"),
    ]
    for foreign, missing in pairs:
        seen, absent = (
            client.get(foreign, headers=world.a.headers),
            client.get(missing, headers=world.a.headers),
        )
        assert seen.status_code == absent.status_code == 404
        assert seen.json()["code"] == absent.json()["code"]
        assert set(seen.headers) == set(absent.headers)


def test_lists_show_only_the_brokers_own_objects(client: TestClient, world: World) -> None:
    a = broker_view(client, world, "a")

    assert [acc["id"] for acc in a["accounts"]] == [world.accounts["a"]]
    assert {o["account_id"] for o in a["orders"]["items"]} == {world.accounts["a"]}
    assert {f["account_id"] for f in a["fills"]["items"]} == {world.accounts["a"]}
    assert world.open_orders["b"] not in {o["id"] for o in a["orders"]["items"]}


def test_market_data_is_shared_and_names_nobody(client: TestClient, world: World) -> None:
    for name, call in calls(world, "a", routes_of("any")):
        answers = [call.send(client, h) for h in (world.a.headers, world.b.headers, ADMIN)]

        assert [r.status_code for r in answers] == [200, 200, 200], (name, answers[0].text)
        text = answers[0].text
        assert "account_id" not in text and "client_order_id" not in text, name


# --- authentication and scopes -------------------------------------------------------------


def all_calls(world: World) -> Iterator[tuple[str, Call]]:
    return calls(world, "a", list(MATRIX))


def assert_unauthenticated(response: Any, code: str, name: str) -> None:
    assert response.status_code == 401, (name, response.text)
    assert response.headers["content-type"] == "application/problem+json", name
    assert response.headers["www-authenticate"] == "Bearer", name
    assert response.json()["code"] == code, name


def test_a_request_without_a_key_is_401_on_every_route(
    client: TestClient, db: ScratchDatabase, world: World
) -> None:
    before = row_counts(db)

    for name, call in all_calls(world):
        assert_unauthenticated(call.send(client, {}), "unauthenticated", name)
        basic = call.send(client, {"Authorization": "Basic dXNlcjpwYXNz"})
        assert_unauthenticated(basic, "unauthenticated", name)

    assert row_counts(db) == before


@pytest.mark.parametrize(
    "token",
    [
        "not-a-key",
        "xk_1_wrong-secret",  # an existing key id with another secret
        "xk_999999_" + "A" * 43,  # an unknown key id
        "xk_1_",
        "test-admin-token-but-longer",
    ],
)
def test_an_invalid_key_is_401_on_every_route(
    client: TestClient, db: ScratchDatabase, world: World, token: str
) -> None:
    before = row_counts(db)

    for name, call in all_calls(world):
        response = call.send(client, {"Authorization": f"Bearer {token}"})
        assert_unauthenticated(response, "invalid_api_key", name)

    assert row_counts(db) == before


def test_a_revoked_key_is_401_on_every_route(db: ScratchDatabase) -> None:
    settings = api_settings(key_cache_seconds=0)
    with TestClient(create_app(db.conninfo(APP_ROLE), settings)) as client:
        create_market(client)
        revoked = new_broker(client, "revoked")
        other = new_broker(client, "other")
        account = funded_account(client, revoked, USD="100")
        world = World(
            brokers={"a": revoked, "b": other},
            accounts={"a": account, "b": account},
            open_orders={"a": 1, "b": 1},
            filled_orders={"a": 1, "b": 1},
        )
        assert client.get(f"/v1/accounts/{account}", headers=revoked.headers).status_code == 200

        revoke = client.delete(f"/v1/admin/api-keys/{key_id(revoked)}", headers=ADMIN)
        assert revoke.status_code == 204, revoke.text

        for name, call in all_calls(world):
            assert_unauthenticated(call.send(client, revoked.headers), "invalid_api_key", name)
        assert client.get("/v1/accounts", headers=other.headers).status_code == 200
        again = client.delete(f"/v1/admin/api-keys/{key_id(revoked)}", headers=ADMIN)
        assert again.status_code == 204  # revoking a revoked key changes nothing
        unknown = client.delete("/v1/admin/api-keys/999999", headers=ADMIN)
        assert unknown.status_code == 404


@pytest.mark.parametrize("scope", BROKER_SCOPES)
def test_a_key_without_the_scope_of_a_route_is_403(
    client: TestClient, db: ScratchDatabase, world: World, scope: str
) -> None:
    others = [s for s in BROKER_SCOPES if s != scope]
    lacking = new_broker_key(client, world.a, others)
    before = row_counts(db)

    for name, call in calls(world, "a", routes_of(scope)):
        response = call.send(client, lacking)

        assert response.status_code == 403, (name, response.text)
        assert response.json()["code"] == "forbidden", name
        assert scope in response.json()["detail"], name

    assert row_counts(db) == before


@pytest.mark.parametrize("scope", BROKER_SCOPES)
def test_a_key_with_only_the_scope_of_a_route_is_admitted(
    client: TestClient, world: World, scope: str
) -> None:
    only = new_broker_key(client, world.a, [scope])

    for name, call in calls(world, "a", routes_of(scope)):
        response = call.send(client, only)

        assert 200 <= response.status_code < 300, (name, response.text)


def test_a_broker_key_is_403_on_every_operator_route(
    client: TestClient, db: ScratchDatabase, world: World
) -> None:
    before = row_counts(db)

    for name, call in calls(world, "a", routes_of("admin")):
        response = call.send(client, world.a.headers)

        assert response.status_code == 403, (name, response.text)
        assert response.json()["code"] == "forbidden", name

    assert row_counts(db) == before


def test_the_admin_token_is_403_on_every_broker_route(
    client: TestClient, db: ScratchDatabase, world: World
) -> None:
    before = row_counts(db)
    broker_routes = [name for s in BROKER_SCOPES for name in routes_of(s)]

    for name, call in calls(world, "a", broker_routes):
        response = call.send(client, ADMIN)

        assert response.status_code == 403, (name, response.text)
        assert response.json()["code"] == "forbidden", name

    assert row_counts(db) == before


def new_broker_key(client: TestClient, broker: Broker, scopes: list[str]) -> dict[str, str]:
    response = client.post(
        f"/v1/admin/tenants/{broker.tenant_id}/api-keys", json={"scopes": scopes}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    assert response.json()["scopes"] == scopes
    return {"Authorization": f"Bearer {response.json()['key']}"}


# --- keys ----------------------------------------------------------------------------------


def test_a_key_is_random_shown_once_and_stored_only_as_the_hash_of_its_secret(
    client: TestClient, db: ScratchDatabase, world: World
) -> None:
    first, second = (new_broker_key(client, world.a, ["read"]) for _ in range(2))
    keys = [h["Authorization"].removeprefix("Bearer ") for h in (first, second)]
    assert keys[0] != keys[1]

    with db.connect() as conn:
        for key in keys:
            _, stored_id, secret = key.split("_", 2)
            assert len(secret) >= 43  # 256 random bits, base64url
            row = conn.execute(
                "SELECT to_jsonb(k)::text, secret_sha256 FROM tenancy.api_key k WHERE id = %s",
                (int(stored_id),),
            ).fetchone()
            assert row is not None
            stored_row, digest = row
            assert bytes(digest) == hashlib.sha256(secret.encode()).digest()
            assert secret not in stored_row and key not in stored_row


# --- the database's own proof --------------------------------------------------------------


def test_the_application_role_without_a_tenant_sees_no_row_the_api_wrote(
    client: TestClient, db: ScratchDatabase, world: World
) -> None:
    written = row_counts(db)
    assert all(written[table] > 0 for table in TENANT_TABLES), written

    with db.connect(APP_ROLE) as conn:
        for table in TENANT_TABLES:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row == (0,), table


def test_the_application_role_acting_for_a_broker_sees_only_its_rows(
    client: TestClient, db: ScratchDatabase, world: World
) -> None:
    with db.connect(APP_ROLE, tenant=world.a.tenant_id) as conn:
        tenants = conn.execute("SELECT id FROM tenancy.tenant").fetchall()
        customers = conn.execute("SELECT id FROM ledger.customer").fetchall()
        orders = conn.execute("SELECT DISTINCT customer_id FROM trading.orders").fetchall()

    assert tenants == [(world.a.tenant_id,)]
    assert customers == [(world.accounts["a"],)]
    assert orders == [(world.accounts["a"],)]
