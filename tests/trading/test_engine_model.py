"""The database engine and the reference model agree on random command streams.

Each example builds two fresh instruments that share their quote asset and three accounts, then
applies the same random steps (batches of commands of every kind, halts and resumes) to the
model (`app.trading.model`) and to the database (`trading.execute`), demanding after every step
identical results (codes, orders, trades, seq), books, balances and fee revenue.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ledger import service
from app.trading import engine, instruments
from app.trading.commands import (
    Amend,
    Cancel,
    CancelAll,
    Command,
    Instrument,
    Order,
    Place,
    Result,
)
from app.trading.model import Exchange
from tests.conftest import APP_ROLE, ScratchDatabase
from tests.ledger.helpers import assert_invariants_hold

D = Decimal
ACCOUNTS = 3
CLIENT_ORDER_IDS = [f"o{n}" for n in range(30)]
# Instrument parameters chosen so that fees round and sizes can be off tick or lot.
MARKETS = (
    {
        "tick_size": D("0.5"),
        "lot_size": D("0.2"),
        "min_quantity": D("0.4"),
        "min_notional": D("2"),
        "maker_fee_rate": D("0.001"),
        "taker_fee_rate": D("0.0025"),
    },
    {
        "tick_size": D("0.5"),
        "lot_size": D("0.5"),
        "min_quantity": D("0"),
        "min_notional": D("0"),
        "maker_fee_rate": D("0"),
        "taker_fee_rate": D("0.012345678901234567891"),
    },
)
# The second market's base has the largest scale, where rounding fees up is easiest to get wrong.
BASE_SCALES, QUOTE_SCALE = (3, 18), 2

_example_numbers = itertools.count(1)

prices = st.sampled_from([D(p) for p in ("9", "9.5", "10", "10", "10.5", "11")])
odd_prices = st.sampled_from([D("9.3"), D("0"), D("-1")])
quantities = st.sampled_from([D(q) for q in ("1", "1", "2", "3", "0.4", "0.5")])
odd_quantities = st.sampled_from([D("0.1"), D("0.3"), D("0")])


def mostly(common: st.SearchStrategy, rare: st.SearchStrategy) -> st.SearchStrategy:
    """`common` nine times in ten, `rare` otherwise (shrinking towards `common`)."""
    return st.sampled_from([common] * 9 + [rare]).flatmap(lambda strategy: strategy)


@st.composite
def places(draw: st.DrawFn) -> Place:
    order_type = draw(st.sampled_from(["limit", "limit", "limit", "market"]))
    price = draw(mostly(prices, odd_prices)) if order_type == "limit" else None
    return Place(
        account=draw(st.integers(0, ACCOUNTS - 1)),
        client_order_id=draw(st.sampled_from(CLIENT_ORDER_IDS)),
        side=draw(st.sampled_from(["buy", "sell"])),
        type=order_type,
        quantity=draw(mostly(quantities, odd_quantities)),
        price=price,
        time_in_force=draw(st.sampled_from([None, None, None, "GTC", "IOC", "FOK"])),
        post_only=draw(st.sampled_from([False] * 5 + [True])),
        self_trade_prevention=draw(
            st.sampled_from(["cancel_newest", "cancel_oldest", "cancel_both", "decrement"])
        ),
    )


accounts = st.integers(0, ACCOUNTS - 1)
client_order_ids = st.sampled_from(CLIENT_ORDER_IDS)
commands = mostly(
    mostly(
        places(),
        st.builds(
            Amend,
            accounts,
            client_order_ids,
            quantity=st.one_of(st.none(), quantities, odd_quantities),
            price=st.one_of(st.none(), prices),
        ),
    ),
    st.one_of(st.builds(Cancel, accounts, client_order_ids), st.builds(CancelAll, accounts)),
)
batches = st.tuples(st.integers(0, 1), st.lists(commands, min_size=1, max_size=4))
steps = mostly(
    batches,
    mostly(
        batches, st.tuples(st.integers(0, 1), st.sampled_from(["halted", "trading", "trading"]))
    ),
)
fundings = st.lists(
    st.tuples(st.sampled_from(["1000", "100", "10"]), st.sampled_from(["100", "10", "1"])),
    min_size=ACCOUNTS,
    max_size=ACCOUNTS,
)


@pytest.fixture
def connections(
    db: ScratchDatabase, tenant: int
) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    """(superuser for set-up and reads, application role for the engine), both autocommit and
    acting for one broker."""
    with db.connect(tenant=tenant) as admin, db.connect(APP_ROLE, tenant=tenant) as app:
        yield admin, app


class Pair:
    """The model and the database, set up identically with fresh assets, instruments and
    accounts (so examples can share one database)."""

    def __init__(self, admin: psycopg.Connection, app: psycopg.Connection) -> None:
        self.admin = admin
        self.app = app
        self.model = Exchange()
        number = next(_example_numbers)
        quote = f"Q{number}"
        service.create_asset(admin, quote, QUOTE_SCALE)
        self.symbols: list[str] = []
        for index, (parameters, base_scale) in enumerate(zip(MARKETS, BASE_SCALES, strict=True)):
            base = f"B{index}X{number}"
            service.create_asset(admin, base, base_scale)
            created = instruments.create_instrument(admin, base, quote, **parameters)
            self.model.add_instrument(created)
            self.symbols.append(created.symbol)
        self.assets = sorted(
            {i.base for i in self._instruments()} | {i.quote for i in self._instruments()}
        )
        self.accounts = [service.create_customer(app, f"trader-{n}") for n in range(ACCOUNTS)]
        for account in self.accounts:
            self.model.open_account(account)

    def _instruments(self) -> list[Instrument]:
        return [instruments.get_instrument(self.admin, symbol) for symbol in self.symbols]

    def fund(self, amounts: list[tuple[str, str]]) -> None:
        for account, (quote_amount, base_amount) in zip(self.accounts, amounts, strict=True):
            for asset in self.assets:
                amount = D(quote_amount if asset.startswith("Q") else base_amount)
                service.deposit(self.app, account, asset, amount, f"fund-{asset}")
                self.model.deposit(account, asset, amount)

    def with_accounts(self, command: Command) -> Command:
        """The generated command with its account index replaced by the real account id."""
        return type(command)(**{**command.__dict__, "account": self.accounts[command.account]})

    def step(self, index: int, action: list[Command] | str) -> None:
        symbol = self.symbols[index]
        if isinstance(action, str):
            instruments.set_status(self.admin, symbol, action)
            self.model.set_status(symbol, action)
            return
        batch = [self.with_accounts(command) for command in action]
        from_database = engine.execute(self.app, symbol, batch)
        from_model = [self.model.execute(symbol, command) for command in batch]
        for command, db_result, model_result in zip(
            batch, from_database, from_model, strict=True
        ):
            assert comparable(db_result) == comparable(model_result), command
        self.assert_same_state()

    def assert_same_state(self) -> None:
        for symbol in self.symbols:
            assert self.database_book(symbol) == self.model.book(symbol), symbol
            assert self.database_fees(symbol) == self.model.fees(symbol), symbol
        assert self.database_balances() == self.model.balances()

    def database_book(self, symbol: str) -> tuple[list[Order], list[Order]]:
        sides = []
        for side, price_order in (("buy", "DESC"), ("sell", "ASC")):
            rows = self.admin.execute(
                f"""
                SELECT trading.order_json(o)
                  FROM trading.orders o JOIN trading.instrument i ON i.id = o.instrument_id
                 WHERE i.symbol = %s AND o.side = %s AND o.status IN ('new', 'partially_filled')
                 ORDER BY o.price {price_order}, o.priority
                """,
                (symbol, side),
            ).fetchall()
            sides.append([engine.order_from_json(row[0]) for row in rows])
        return sides[0], sides[1]

    def database_fees(self, symbol: str) -> dict[str, Decimal]:
        rows = self.admin.execute(
            "SELECT asset, balance FROM ledger.account"
            " WHERE bucket = 'fee' AND label = %s AND balance <> 0",
            (symbol,),
        ).fetchall()
        return {asset: amount for asset, amount in rows}

    def database_balances(self) -> dict[tuple[int, str], tuple[Decimal, Decimal]]:
        rows = self.admin.execute(
            """
            SELECT customer_id, asset,
                   coalesce(sum(balance) FILTER (WHERE bucket = 'available'), 0),
                   coalesce(sum(balance) FILTER (WHERE bucket = 'held'), 0)
              FROM ledger.account
             WHERE customer_id = ANY (%s)
             GROUP BY customer_id, asset
            HAVING sum(abs(balance)) <> 0
            """,
            (self.accounts,),
        ).fetchall()
        return {(row[0], row[1]): (row[2], row[3]) for row in rows}


def comparable(result: Result) -> tuple[object, ...]:
    """What must agree: messages are worded by each side and database ids have no model twin."""
    return (result.code, result.order, result.orders, result.trades, result.seq, result.replayed)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(funding=fundings, plan=st.lists(steps, min_size=10, max_size=40))
def test_database_engine_matches_the_model(
    connections: tuple[psycopg.Connection, psycopg.Connection],
    funding: list[tuple[str, str]],
    plan: list[tuple[int, list[Command] | str]],
) -> None:
    admin, app = connections
    pair = Pair(admin, app)
    pair.fund(funding)
    for index, action in plan:
        pair.step(index, action)
    assert_invariants_hold(admin)
