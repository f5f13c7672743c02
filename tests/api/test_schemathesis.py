"""Schemathesis against the app's /openapi.json: whatever it generates, the app answers without a
server error, with a status code its schema documents and a body that matches the schema.

A bounded, derandomized run (CI must be reproducible and quick): a few valid and a few invalid
examples per operation, with a broker's key and with the operators' token, against one database
seeded with a market, accounts with funds, orders and fills, so generated ids sometimes name real
objects. The WebSocket stream is not in the OpenAPI document and so not exercised here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans

from app.api import create_app
from app.pgcluster import Cluster
from app.tenancy import keys
from tests.api.conftest import (
    ADMIN,
    api_settings,
    create_market,
    funded_account,
    new_broker,
    place,
)
from tests.conftest import APP_ROLE, ScratchDatabase, janitor

EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 10}
AIMED_EXAMPLES = 25
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


def _operations() -> list[str]:
    """Every operation of the OpenAPI document, as METHOD /path (no database needed)."""
    document = create_app("dbname=none").openapi()
    return [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]


OPERATIONS = _operations()


@dataclass(frozen=True)
class Api:
    schema: Any  # schemathesis' OpenAPI schema, bound to the running app
    db: ScratchDatabase
    broker_tenant: int
    # Real values of the broker's parameters (account_id, order_id, symbol), to aim with.
    known: dict[str, list[object]]


_databases = itertools.count(1)


@pytest.fixture(scope="module")
def api(pg_cluster: Cluster, template_database: str) -> Iterator[Api]:
    """The app on one database for the whole module, seeded with a market, funded accounts,
    open orders and fills. Generated requests change it as they go; that is the point."""
    name = f"fuzz_{next(_databases)}"
    with janitor(pg_cluster, name, template_dbname=template_database):
        db = ScratchDatabase(pg_cluster, name)
        # Generated orders must not be refused for their rate: no limit worth the name.
        app = create_app(
            db.conninfo(APP_ROLE), api_settings(order_rate_per_second=1e6, order_burst=10**6)
        )
        with TestClient(app) as client:
            create_market(client)
            broker, other = new_broker(client, "fuzzed"), new_broker(client, "other")
            account = funded_account(client, broker, USD="100000", BTC="100")
            seller = funded_account(client, other, BTC="100")
            orders = [
                place(client, who, acct, side=side, price=price, quantity="1", client_order_id=cid)
                for who, acct, side, price, cid in (
                    (other, seller, "sell", "100", "s"),  # half filled by "b", half open
                    (broker, account, "buy", "100", "b"),  # filled
                    (broker, account, "buy", "90", "o"),  # open
                    (broker, account, "sell", "110", "a"),  # open
                )
            ]
        known: dict[str, list[object]] = {
            "account_id": [account, seller],
            "order_id": [order["id"] for order in orders],  # one of them the other broker's
            "symbol": ["BTC-USD"],
        }
        try:
            schema = schemathesis.openapi.from_asgi("/openapi.json", app)
            yield Api(schema, db, broker.tenant_id, known)
        finally:
            shutdown_lifespans()  # the app's lifespan that schemathesis started for its requests


@pytest.fixture
def broker_headers(api: Api) -> dict[str, str]:
    """A fresh key of the seeded broker for each test: what the operators' fuzzing did before
    (it may revoke keys by id) cannot leave it revoked."""
    with api.db.connect() as conn:
        new = keys.create_key(conn, api.broker_tenant, ["read", "trade", "transfer"])
    return {"Authorization": f"Bearer {new.key}"}


def aim(case: schemathesis.Case, values: dict[str, object]) -> schemathesis.Case:
    """The case with the real values of the parameters it has (path, query or body)."""
    body = case.body if isinstance(case.body, dict) else None
    for container in (case.path_parameters, case.query, body):
        for name, value in values.items():
            if container is not None and name in container:
                container[name] = value
    return case


def run(
    strategy: st.SearchStrategy[schemathesis.Case], examples: int, headers: dict[str, str]
) -> None:
    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    check()


def fuzz(api: Api, label: str, headers: dict[str, str], aimed: bool) -> None:
    """Valid and invalid requests; and, if `aimed`, valid ones on the seeded objects."""
    operation = api.schema.find_operation_by_label(label)
    assert operation is not None, label
    for mode, examples in EXAMPLES.items():
        run(operation.as_strategy(generation_mode=mode), examples, headers)
    if aimed:
        values = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in api.known.items()})
        cases = st.tuples(operation.as_strategy(), values).map(lambda pair: aim(*pair))
        run(cases, AIMED_EXAMPLES, headers)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_with_a_broker_key(api: Api, broker_headers: dict[str, str], operation: str) -> None:
    fuzz(api, operation, broker_headers, aimed=True)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_with_the_admin_token(api: Api, operation: str) -> None:
    # Not aimed: an operator could halt the market or revoke the broker's key for the rest.
    fuzz(api, operation, ADMIN, aimed=False)


def test_every_operation_documents_its_problems() -> None:
    document = create_app("dbname=none").openapi()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            refused = operation["responses"].get("4XX")
            assert refused is not None, f"{method.upper()} {path}"
            assert set(refused["content"]) == {"application/problem+json"}, f"{method} {path}"
            schema = refused["content"]["application/problem+json"]["schema"]
            assert set(schema["required"]) == {"type", "title", "status", "detail", "code"}
