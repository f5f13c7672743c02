"""A known history for the report tests, in two phases with a point in time between them.

Market BTC-USD (BTC scale 8, USD scale 6; maker fee 0.1 %, taker fee 0.2 %). Tenants acme (alice,
carol) and globex (bob).

Phase 1:
  alice deposits 100000 USD; bob deposits 10 BTC.
  bob sells 2 BTC at 30000 (s1, rests: 2 BTC held).
  alice buys 1 BTC at 30000 (b1, takes): trade 1 @ 30000, notional 30000.
    alice pays 30000 USD, receives 0.998 BTC (taker fee 0.002 BTC);
    bob gives 1 BTC from his hold, receives 29970 USD (maker fee 30 USD).
Phase 2:
  alice withdraws 1000 USD.
  alice buys 0.5 BTC limit 31000 (b2, takes at 30000): trade 0.5 @ 30000, notional 15000.
    alice pays 15000 USD, receives 0.499 BTC (fee 0.001 BTC); bob receives 14985 USD (fee 15).
  carol deposits 5000 USD and bids 0.1 BTC at 29000 (c1, rests: 2900 USD held).
  bob withdraws 2 BTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from app.ledger import service
from tests.trading.helpers import D, create_market, limit, run_one

SYMBOL = "BTC-USD"


@dataclass(frozen=True)
class History:
    acme: int
    globex: int
    alice: int
    bob: int
    carol: int


def _tenant(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute("SELECT tenancy.create_tenant(%s)", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def _customer(conn: psycopg.Connection, tenant: int, name: str) -> int:
    conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant),))
    customer = service.create_customer(conn, name)
    conn.execute("SELECT set_config('app.tenant_id', '', false)")  # an operator again
    return customer


def _limit(
    conn: psycopg.Connection, account: int, client_order_id: str, side: str, quantity: str,
    price: str,
) -> None:  # fmt: skip
    result = run_one(conn, SYMBOL, limit(account, client_order_id, side, quantity, price))
    assert result.ok, result


def now(conn: psycopg.Connection) -> datetime:
    """The database's clock: journals booked before it are at or before it, later ones after."""
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def phase_1(admin: psycopg.Connection) -> History:
    """Run on a superuser connection in autocommit: each step commits on its own."""
    create_market(admin)
    acme, globex = _tenant(admin, "acme"), _tenant(admin, "globex")
    alice = _customer(admin, acme, "alice")
    bob = _customer(admin, globex, "bob")
    carol = _customer(admin, acme, "carol")
    service.deposit(admin, alice, "USD", D("100000"), "alice-usd-1", "wire 1")
    service.deposit(admin, bob, "BTC", D("10"), "bob-btc-1", "chain 1")
    _limit(admin, bob, "s1", "sell", "2", "30000")
    _limit(admin, alice, "b1", "buy", "1", "30000")
    return History(acme, globex, alice, bob, carol)


def phase_2(admin: psycopg.Connection, history: History) -> None:
    service.withdraw(admin, history.alice, "USD", D("1000"), "alice-usd-2", "wire out 1")
    _limit(admin, history.alice, "b2", "buy", "0.5", "31000")
    service.deposit(admin, history.carol, "USD", D("5000"), "carol-usd-1", "wire 2")
    _limit(admin, history.carol, "c1", "buy", "0.1", "29000")
    service.withdraw(admin, history.bob, "BTC", D("2"), "bob-btc-2", "chain out 1")
