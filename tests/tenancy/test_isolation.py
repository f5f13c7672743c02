"""Row-level security and the tenant checks of the owner's functions: a broker's transaction sees
and moves only its own customers, orders and money, whatever query the application runs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import psycopg
import pytest

from app import verify
from app.ledger import service
from app.ledger.errors import LedgerError
from app.trading import engine
from app.trading.commands import Cancel, Place
from tests.conftest import APP_ROLE, ScratchDatabase, create_tenant
from tests.ledger.helpers import ledger_state
from tests.trading.helpers import create_market, limit, trading_state

D = Decimal
SYMBOL = "BTC-USD"

TENANT_TABLES = (
    "tenancy.tenant",
    "ledger.customer",
    "ledger.account",
    "ledger.journal",
    "ledger.entry",
    "trading.orders",
    "trading.trade",
)


@dataclass(frozen=True)
class Brokers:
    a: int
    b: int
    alice: int  # a customer of broker a
    bob: int  # a customer of broker b


def app_connection(db: ScratchDatabase, tenant: int | None) -> psycopg.Connection:
    return db.connect(APP_ROLE, tenant=tenant)


@pytest.fixture
def brokers(db: ScratchDatabase, admin: psycopg.Connection) -> Iterator[Brokers]:
    """Two brokers with one funded customer each, who have traded with each other."""
    create_market(admin)
    a, b = create_tenant(db, "broker-a"), create_tenant(db, "broker-b")
    customers = []
    for tenant, assets in ((a, {"USD": "1000"}), (b, {"BTC": "2"})):
        with app_connection(db, tenant) as conn:
            customer = service.create_customer(conn, "client")
            for asset, amount in assets.items():
                service.deposit(conn, customer, asset, D(amount), f"fund-{asset}")
            customers.append(customer)
    alice, bob = customers
    with app_connection(db, b) as conn:
        engine.execute(conn, SYMBOL, [limit(bob, "b1", "sell", "1", "100")])
    with app_connection(db, a) as conn:
        engine.execute(conn, SYMBOL, [limit(alice, "a1", "buy", "0.5", "100")])
    yield Brokers(a, b, alice, bob)


def visible_rows(conn: psycopg.Connection) -> dict[str, int]:
    counts = {}
    for table in TENANT_TABLES:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        counts[table] = row[0]
    return counts


def test_application_role_without_a_tenant_sees_no_tenant_rows(
    db: ScratchDatabase, brokers: Brokers
) -> None:
    with app_connection(db, None) as conn:
        assert visible_rows(conn) == dict.fromkeys(TENANT_TABLES, 0)


def test_a_broker_sees_only_its_own_customers_accounts_and_orders(
    db: ScratchDatabase, brokers: Brokers
) -> None:
    with app_connection(db, brokers.a) as conn:
        customers = conn.execute("SELECT id FROM ledger.customer").fetchall()
        owners = conn.execute("SELECT DISTINCT customer_id FROM ledger.account").fetchall()
        orders = conn.execute("SELECT customer_id, client_order_id FROM trading.orders").fetchall()
        tenants = conn.execute("SELECT id FROM tenancy.tenant").fetchall()

    assert customers == [(brokers.alice,)]
    assert owners == [(brokers.alice,)]
    assert orders == [(brokers.alice, "a1")]
    assert tenants == [(brokers.a,)]


def test_a_broker_sees_its_side_of_a_trade_with_another_broker(
    db: ScratchDatabase, brokers: Brokers
) -> None:
    with app_connection(db, brokers.a) as conn:
        trades = conn.execute("SELECT quantity FROM trading.trade").fetchall()
        entries = conn.execute(
            "SELECT DISTINCT a.customer_id FROM ledger.entry e"
            " JOIN ledger.account a ON a.id = e.account_id"
        ).fetchall()

    assert trades == [(D("0.5"),)]
    assert entries == [(brokers.alice,)]  # the journal's other legs stay hidden


def test_set_local_tenant_ends_with_its_transaction(db: ScratchDatabase, brokers: Brokers) -> None:
    with app_connection(db, None) as conn:
        with conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(brokers.a),))
            assert visible_rows(conn)["ledger.customer"] == 1
        assert visible_rows(conn)["ledger.customer"] == 0


def test_a_broker_cannot_move_another_brokers_money(db: ScratchDatabase, brokers: Brokers) -> None:
    with app_connection(db, brokers.a) as conn:
        before = ledger_state(conn)
        for move in (
            lambda: service.deposit(conn, brokers.bob, "BTC", D("1"), "steal-1"),
            lambda: service.withdraw(conn, brokers.bob, "BTC", D("1"), "steal-2"),
            lambda: service.transfer(conn, brokers.bob, brokers.alice, "BTC", D("1"), "steal-3"),
        ):
            with pytest.raises(LedgerError) as caught:
                move()
            assert caught.value.code == "unknown_account"
        assert ledger_state(conn) == before


def test_a_broker_cannot_trade_or_cancel_for_another_brokers_account(
    db: ScratchDatabase, brokers: Brokers
) -> None:
    with app_connection(db, brokers.a) as conn:
        before = trading_state(conn)
        results = engine.execute(
            conn,
            SYMBOL,
            [Cancel(brokers.bob, "b1"), limit(brokers.bob, "b2", "sell", "0.1", "100")],
        )
        assert [r.code for r in results] == ["unknown_account", "unknown_account"]
        assert trading_state(conn) == before


def test_refused_commands_of_a_batch_leave_the_others_running_in_order(
    db: ScratchDatabase, brokers: Brokers
) -> None:
    with app_connection(db, brokers.a) as conn:
        results = engine.execute(
            conn,
            SYMBOL,
            [
                limit(brokers.alice, "a2", "buy", "0.1", "99"),
                Cancel(brokers.bob, "b1"),
                Cancel(brokers.alice, "a2"),
            ],
        )

    assert [r.code for r in results] == [None, "unknown_account", None]
    assert [r.order.status for r in (results[0], results[2]) if r.order] == ["new", "canceled"]


def test_each_command_of_a_batch_may_act_for_its_own_tenant(
    db: ScratchDatabase, brokers: Brokers
) -> None:
    commands = [
        {"op": "cancel", "account": brokers.bob, "client_order_id": "b1", "tenant": brokers.b},
        {"op": "cancel", "account": brokers.alice, "client_order_id": "a1", "tenant": brokers.b},
    ]
    with app_connection(db, None) as conn:
        row = conn.execute(
            "SELECT trading.execute(%s, %s::jsonb)", (SYMBOL, psycopg.types.json.Jsonb(commands))
        ).fetchone()
    assert row is not None

    assert [result.get("code") for result in row[0]] == [None, "unknown_account"]


def test_application_role_without_a_tenant_cannot_create_customers_or_trade(
    db: ScratchDatabase, brokers: Brokers
) -> None:
    with app_connection(db, None) as conn:
        with pytest.raises(psycopg.Error, match="acts for no tenant"):
            conn.execute("SELECT ledger.create_customer('nobody')")
        (result,) = engine.execute(conn, SYMBOL, [Cancel(brokers.alice, "a1")])

    assert result.code == "tenant_required"


def test_a_customers_tenant_never_changes(admin: psycopg.Connection, brokers: Brokers) -> None:
    admin.execute("SET ROLE exchange_owner")
    with pytest.raises(psycopg.Error, match="tenant of a customer never changes"):
        admin.execute(
            "UPDATE ledger.customer SET tenant_id = %s WHERE id = %s", (brokers.b, brokers.alice)
        )


@pytest.mark.parametrize(
    "statement",
    ["DELETE FROM ledger.customer", "DELETE FROM tenancy.tenant", "TRUNCATE tenancy.api_key"],
)
def test_customers_tenants_and_keys_are_never_deleted(
    admin: psycopg.Connection, brokers: Brokers, statement: str
) -> None:
    admin.execute("SET ROLE exchange_owner")
    with pytest.raises(psycopg.Error, match="never deleted"):
        admin.execute(statement)


def test_public_book_shows_every_brokers_orders_without_their_owners(
    db: ScratchDatabase, brokers: Brokers
) -> None:
    with app_connection(db, brokers.a) as conn:
        levels = conn.execute(
            "SELECT side, price, quantity, orders FROM marketdata.book_level WHERE symbol = %s",
            (SYMBOL,),
        ).fetchall()
        columns = [c.name for c in conn.execute("SELECT * FROM marketdata.book_level").description]

    assert levels == [("sell", D("100"), D("0.5"), 1)]  # broker b's order, half filled
    assert "customer_id" not in columns


def test_verify_is_clean_after_two_brokers_trade(
    admin: psycopg.Connection, brokers: Brokers
) -> None:
    assert [v.invariant.name for v in verify.violations(admin)] == []


def test_place_named_by_a_broker_for_its_own_customer_is_accepted(
    db: ScratchDatabase, brokers: Brokers
) -> None:
    with app_connection(db, brokers.b) as conn:
        (result,) = engine.execute(
            conn, SYMBOL, [Place(brokers.bob, "b9", "sell", "limit", D("0.1"), D("101"))]
        )

    assert result.code is None


def test_a_session_acting_for_one_tenant_cannot_name_another_in_a_command(
    db: ScratchDatabase, brokers: Brokers
) -> None:
    command = {
        "op": "place", "account": brokers.bob, "client_order_id": "b7", "side": "sell",
        "type": "limit", "price": "100", "quantity": "0.1", "tenant": brokers.b,
    }  # fmt: skip
    with app_connection(db, brokers.a) as conn:
        before = trading_state(conn)
        row = conn.execute(
            "SELECT trading.execute(%s, %s::jsonb)", (SYMBOL, psycopg.types.json.Jsonb([command]))
        ).fetchone()
        assert row is not None
        assert [result.get("code") for result in row[0]] == ["unknown_account"]
        assert trading_state(conn) == before


def test_an_engine_result_shows_a_broker_only_its_side_of_a_trade(
    db: ScratchDatabase, brokers: Brokers
) -> None:
    with app_connection(db, brokers.a) as conn:
        (result,) = engine.execute(conn, SYMBOL, [limit(brokers.alice, "a2", "buy", "0.2", "100")])

    (trade,) = result.trades
    assert (trade.taker_account, trade.taker_client_order_id) == (brokers.alice, "a2")
    assert (trade.maker_account, trade.maker_client_order_id, trade.maker_fee) == (None,) * 3
    assert [o.account for o in result.orders] == [brokers.alice]  # bob's order left out


def test_executions_show_a_broker_only_its_side_of_a_trade(
    db: ScratchDatabase, brokers: Brokers
) -> None:
    with app_connection(db, brokers.b) as conn:
        rows = conn.execute(
            "SELECT orders, trades FROM marketdata.executions_after(%s, 0, 100) ORDER BY seq",
            (SYMBOL,),
        ).fetchall()

    accounts = {o["account"] for orders, _ in rows for o in orders}
    (trade,) = [t for _, trades in rows for t in trades]
    assert accounts == {brokers.bob}
    assert trade["maker_account"] == brokers.bob
    assert (trade["taker_account"], trade["taker_client_order_id"], trade["taker_fee"]) == (
        None,
        None,
        None,
    )
