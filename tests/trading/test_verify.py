"""`exchange verify` reports each way of tampering with trading state, by the right invariant.

Each test builds a real market with the engine (as the application role), then breaks one trading
invariant as the superuser (or as exchange_owner, through SET ROLE) in the narrowest way it can,
and checks that app.verify, which combines the ledger's invariants with trading's, reports exactly
that invariant, naming the object.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from app import verify
from app.ledger import service
from app.trading.commands import Amend, Cancel
from tests.trading.helpers import D, create_market, funded_account, limit, market, run_one

SYMBOL = "BTC-USD"
START = {"BTC": "10", "USD": "100000"}


@dataclass(frozen=True)
class Market:
    """BTC-USD with one trade, an ask (alice: 1 @ 101.00, 0.4 filled) and a bid (bob: 1 @ 99.00)."""

    instrument_id: int
    alice: int
    bob: int
    ask_id: int
    bid_id: int
    trade_id: int
    trade_journal_id: int


def broken(conn: psycopg.Connection) -> dict[str, list[str]]:
    """The violated invariants (ledger and trading), by name, as the superuser sees them."""
    conn.execute("RESET ROLE")
    return {v.invariant.name: v.details for v in verify.violations(conn)}


def scalar(conn: psycopg.Connection, query: str, *params: object) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def traded(admin: psycopg.Connection, app_conn: psycopg.Connection) -> Market:
    instrument = create_market(admin)
    alice = funded_account(app_conn, **START)
    bob = funded_account(app_conn, **START)
    ask = run_one(app_conn, SYMBOL, limit(alice, "a1", "sell", "1", "101.00"))
    fill = run_one(app_conn, SYMBOL, limit(bob, "b1", "buy", "0.4", "101.00"))
    bid = run_one(app_conn, SYMBOL, limit(bob, "b2", "buy", "1", "99.00"))
    assert ask.order is not None and bid.order is not None
    assert ask.order.status == "new" and bid.order.status == "new"
    (trade,) = fill.trades
    assert trade.id is not None and ask.order.id is not None and bid.order.id is not None
    assert broken(admin) == {}  # the corruption below is the only one
    return Market(
        instrument_id=int(
            scalar(admin, "SELECT id FROM trading.instrument WHERE symbol = %s", instrument.symbol)
        ),
        alice=alice,
        bob=bob,
        ask_id=ask.order.id,
        bid_id=bid.order.id,
        trade_id=trade.id,
        trade_journal_id=int(
            scalar(admin, "SELECT journal_id FROM trading.trade WHERE id = %s", trade.id)
        ),
    )


@pytest.fixture
def owner(admin: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """The superuser connection acting as exchange_owner, as migrations and operators do."""
    admin.execute("SET ROLE exchange_owner")
    yield admin
    admin.execute("RESET ROLE")


def post_as_owner(
    owner: psycopg.Connection, kind: str, legs: list[tuple[int, str, str, str]]
) -> int:
    """Posts a balanced journal through ledger.post_journal, which only the owner may call:
    legs are (customer, asset, bucket, amount)."""
    account_ids = [
        scalar(owner, "SELECT ledger.account_id(%s, %s, %s)", customer, asset, bucket)
        for customer, asset, bucket, _ in legs
    ]
    return int(
        scalar(
            owner,
            "SELECT ledger.post_journal(%s, NULL, NULL, %s, %s, %s::numeric[])",
            kind,
            account_ids,
            [asset for _, asset, _, _ in legs],
            [amount for _, _, _, amount in legs],
        )
    )


def test_ordinary_trading_activity_violates_nothing(
    admin: psycopg.Connection, app_conn: psycopg.Connection, traded: Market
) -> None:
    create_market(admin, "ETH", "USD")
    carol = funded_account(app_conn, ETH="50", USD="10000")
    results = [
        run_one(app_conn, SYMBOL, Amend(traded.bob, "b2", price=D("98.50"))),
        run_one(app_conn, SYMBOL, market(traded.bob, "b3", "buy", "0.3")),  # fills the ask further
        run_one(
            app_conn, SYMBOL, limit(traded.alice, "a2", "sell", "0.5", "98.50", time_in_force="IOC")
        ),
        run_one(app_conn, SYMBOL, Cancel(traded.alice, "a1")),
        run_one(app_conn, "ETH-USD", limit(carol, "c1", "sell", "2", "30.00")),
        run_one(app_conn, "ETH-USD", limit(carol, "c2", "buy", "1", "29.00")),
    ]
    assert all(result.ok for result in results), results
    assert sum(len(result.trades) for result in results) >= 2

    assert broken(admin) == {}


# held_matches_open_orders ------------------------------------------------------------------


def test_funds_held_without_an_order_are_reported(
    owner: psycopg.Connection, traded: Market
) -> None:
    # A hold journal posted by hand: balanced, so the ledger itself is fine.
    post_as_owner(
        owner, "hold", [(traded.bob, "USD", "available", "-5"), (traded.bob, "USD", "held", "5")]
    )

    assert broken(owner) == {
        "held_matches_open_orders": [
            f"account {traded.bob} USD: held 104.000000, open orders reserve 99.00"
        ]
    }


# book_not_crossed ----------------------------------------------------------------------------


def test_crossed_book_is_reported(admin: psycopg.Connection, traded: Market) -> None:
    # A sell reserves its base quantity whatever its price: only the book is wrong.
    admin.execute("UPDATE trading.orders SET price = 98.00 WHERE id = %s", (traded.ask_id,))

    assert broken(admin) == {"book_not_crossed": [f"{SYMBOL}: best bid 99.00 >= best ask 98.00"]}


# filled_quantity_matches_trades --------------------------------------------------------------


def test_fill_without_a_trade_is_reported(admin: psycopg.Connection, traded: Market) -> None:
    # Quantity grows with the fill, so the remaining quantity (and what it reserves) is unchanged.
    admin.execute(
        "UPDATE trading.orders SET quantity = quantity + 0.5, filled_quantity = 0.5,"
        " status = 'partially_filled' WHERE id = %s",
        (traded.bid_id,),
    )

    assert broken(admin) == {
        "filled_quantity_matches_trades": [f"order {traded.bid_id}: filled 0.5, trades sum to 0"]
    }


# trade_settled_by_its_journal ----------------------------------------------------------------


def test_trade_journal_without_a_trade_is_reported(
    owner: psycopg.Connection, traded: Market
) -> None:
    journal = post_as_owner(
        owner,
        "trade",
        [(traded.alice, "USD", "available", "-1"), (traded.bob, "USD", "available", "1")],
    )

    assert broken(owner) == {
        "trade_settled_by_its_journal": [f"trade journal {journal} settles no trade"]
    }


def test_trade_pointing_at_another_journal_is_reported(
    admin: psycopg.Connection, traded: Market
) -> None:
    deposit = scalar(admin, "SELECT min(id) FROM ledger.journal WHERE kind = 'deposit'")
    with admin.transaction():
        admin.execute("SET LOCAL session_replication_role = replica")  # trade_immutable sleeps
        admin.execute(
            "UPDATE trading.trade SET journal_id = %s WHERE id = %s", (deposit, traded.trade_id)
        )

    assert broken(admin) == {
        "trade_settled_by_its_journal": [
            f"trade {traded.trade_id}: journal {deposit} is a deposit journal",
            f"trade journal {traded.trade_journal_id} settles no trade",
        ]
    }


def test_trade_settled_in_other_assets_is_reported(
    admin: psycopg.Connection, app_conn: psycopg.Connection, traded: Market
) -> None:
    service.create_asset(admin, "EUR", 2)
    customer = service.create_customer(app_conn, "eve")
    euros = service.deposit(app_conn, customer, "EUR", D("5"), "eur-1")
    with admin.transaction():
        admin.execute("SET LOCAL session_replication_role = replica")  # trade_immutable sleeps
        admin.execute(
            "UPDATE trading.trade SET journal_id = %s WHERE id = %s", (euros, traded.trade_id)
        )

    assert broken(admin)["trade_settled_by_its_journal"] == [
        f"trade {traded.trade_id}: journal {euros} is a deposit journal",
        f"trade journal {traded.trade_journal_id} settles no trade",
        f"trade {traded.trade_id} of {SYMBOL} is settled by journal {euros}, which moves EUR",
    ]


# event_sequence_gap_free ---------------------------------------------------------------------


def test_missing_event_is_reported(admin: psycopg.Connection, traded: Market) -> None:
    assert scalar(admin, "SELECT seq FROM trading.instrument WHERE symbol = %s", SYMBOL) == 3
    with admin.transaction():
        admin.execute("SET LOCAL session_replication_role = replica")  # event_immutable sleeps
        admin.execute(
            "DELETE FROM trading.event WHERE instrument_id = %s AND seq = 2",
            (traded.instrument_id,),
        )

    assert broken(admin) == {
        "event_sequence_gap_free": [f"{SYMBOL}: seq 3, 2 events numbered up to 3"]
    }


def test_events_beyond_the_instrument_seq_are_reported(
    admin: psycopg.Connection, traded: Market
) -> None:
    with admin.transaction():
        admin.execute("SET LOCAL session_replication_role = replica")
        admin.execute(
            "UPDATE trading.instrument SET seq = seq - 1 WHERE id = %s", (traded.instrument_id,)
        )

    assert broken(admin) == {
        "event_sequence_gap_free": [f"{SYMBOL}: seq 2, 3 events numbered up to 3"]
    }


# trading_triggers_enabled --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statements", "detail"),
    [
        (
            ["ALTER TABLE trading.trade DISABLE TRIGGER trade_immutable"],
            "trigger trade_immutable on trading.trade is not enabled",
        ),
        (
            # Fires only while session_replication_role = replica: not in ordinary sessions.
            ["ALTER TABLE trading.orders ENABLE REPLICA TRIGGER orders_check_update"],
            "trigger orders_check_update on trading.orders is not enabled",
        ),
        (
            ["DROP TRIGGER event_immutable ON trading.event"],
            "trigger event_immutable on trading.event is missing",
        ),
        (
            [
                "DROP TRIGGER instrument_no_delete ON trading.instrument",
                "CREATE TRIGGER instrument_no_delete BEFORE DELETE ON trading.instrument"
                " FOR EACH ROW EXECUTE FUNCTION trading.instrument_copy_scales()",
            ],
            "trigger instrument_no_delete on trading.instrument calls"
            " trading.instrument_copy_scales()",
        ),
    ],
)
def test_tampered_trading_trigger_is_reported(
    owner: psycopg.Connection, traded: Market, statements: list[str], detail: str
) -> None:
    for statement in statements:
        owner.execute(statement)

    assert broken(owner) == {"trading_triggers_enabled": [detail]}


# app_role_cannot_write_trading ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("grant", "revoke", "detail"),
    [
        (
            "GRANT INSERT ON trading.orders TO exchange_app",
            "REVOKE INSERT ON trading.orders FROM exchange_app",
            "exchange_app can INSERT trading.orders",
        ),
        (
            "GRANT UPDATE (status) ON trading.instrument TO PUBLIC",
            "REVOKE UPDATE (status) ON trading.instrument FROM PUBLIC",
            "exchange_app can UPDATE columns (status) of trading.instrument",
        ),
        (
            "GRANT DELETE ON trading.event TO exchange_app",
            "REVOKE DELETE ON trading.event FROM exchange_app",
            "exchange_app can DELETE trading.event",
        ),
        (
            "GRANT USAGE ON SEQUENCE trading.trade_id_seq TO exchange_app",
            "REVOKE USAGE ON SEQUENCE trading.trade_id_seq FROM exchange_app",
            "exchange_app can USAGE sequence trading.trade_id_seq",
        ),
        (
            "GRANT CREATE ON SCHEMA trading TO exchange_app",
            "REVOKE CREATE ON SCHEMA trading FROM exchange_app",
            "exchange_app can CREATE in schema trading",
        ),
        (
            "GRANT EXECUTE ON FUNCTION trading.reject_change() TO exchange_app",
            "REVOKE EXECUTE ON FUNCTION trading.reject_change() FROM exchange_app",
            "exchange_app can execute trading.reject_change()",
        ),
    ],
)
def test_app_role_write_privilege_on_trading_is_reported(
    owner: psycopg.Connection, traded: Market, grant: str, revoke: str, detail: str
) -> None:
    owner.execute(grant)
    try:
        found = broken(owner)
        # Market events carry every broker's orders: tenancy's invariant names them as well;
        # and a grant to PUBLIC reaches finance_reader too.
        found.pop("app_role_cannot_read_secrets", None)
        found.pop("finance_reader_reads_only_reporting", None)
        assert found == {"app_role_cannot_write_trading": [detail]}
    finally:
        owner.execute("SET ROLE exchange_owner")
        owner.execute(revoke)
    assert broken(owner) == {}


# trading_schema_intact -----------------------------------------------------------------------


def test_dropped_trading_constraint_is_reported(admin: psycopg.Connection, traded: Market) -> None:
    admin.execute("ALTER TABLE trading.orders DROP CONSTRAINT orders_valid")

    assert broken(admin) == {
        "trading_schema_intact": ["constraint orders_valid on trading.orders is missing"]
    }


def test_rule_on_a_trading_table_is_reported(admin: psycopg.Connection, traded: Market) -> None:
    admin.execute("CREATE RULE hide AS ON INSERT TO trading.event DO INSTEAD NOTHING")

    assert broken(admin) == {"trading_schema_intact": ["rule hide on trading.event"]}


def test_extra_trigger_on_a_trading_table_is_reported(
    admin: psycopg.Connection, traded: Market
) -> None:
    admin.execute(
        "CREATE TRIGGER sneaky BEFORE INSERT ON trading.trade"
        " FOR EACH ROW EXECUTE FUNCTION trading.instrument_copy_scales()"
    )

    assert broken(admin) == {
        "trading_schema_intact": ["unexpected trigger sneaky on trading.trade"]
    }
