"""Random streams of deposits, withdrawals and transfers agree with a plain-Python model."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ledger import service
from app.ledger.errors import LedgerError
from tests.conftest import ScratchDatabase, create_tenant
from tests.ledger.helpers import assert_invariants_hold, create_asset, ledger_state, refused

SCALES = {"USD": 2, "BTC": 8}
CUSTOMERS = 3

operation = st.tuples(
    st.sampled_from(["deposit", "withdraw", "transfer"]),
    st.integers(0, CUSTOMERS - 1),
    st.integers(0, CUSTOMERS - 1),
    st.sampled_from(sorted(SCALES)),
    st.integers(1, 10_000),
    # One extra decimal place sometimes: an amount the asset cannot represent.
    st.sampled_from([0, 0, 0, 1]),
)


def expected_outcome(
    model: dict[tuple[int, str], Decimal], op: tuple, amount: Decimal
) -> str | None:
    kind, source, target, asset, *_ = op
    if kind == "transfer" and source == target:
        return "invalid_request"
    if amount != round(amount, SCALES[asset]):
        return "amount_scale"
    if kind in ("withdraw", "transfer") and model[(source, asset)] < amount:
        return "insufficient_funds"
    return None


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(operations=st.lists(operation, min_size=1, max_size=25))
def test_ledger_matches_the_model(db: ScratchDatabase, operations: list[tuple]) -> None:
    with db.connect() as admin:
        for code, scale in SCALES.items():
            if not admin.execute("SELECT 1 FROM ledger.asset WHERE code = %s", (code,)).fetchone():
                create_asset(admin, code, scale)

    with db.connect("exchange_app", tenant=create_tenant(db)) as conn:
        customers = [service.create_customer(conn, f"c{i}") for i in range(CUSTOMERS)]
        model: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
        for number, op in enumerate(operations):
            kind, source, target, asset, units, too_fine = op
            amount = Decimal(units).scaleb(-(SCALES[asset] + too_fine))
            expected = expected_outcome(model, op, amount)
            before = ledger_state(conn)
            key = f"op-{number}"

            outcome = None
            try:
                if kind == "deposit":
                    service.deposit(conn, customers[source], asset, amount, key)
                elif kind == "withdraw":
                    service.withdraw(conn, customers[source], asset, amount, key)
                else:
                    service.transfer(conn, customers[source], customers[target], asset, amount, key)
            except LedgerError as error:
                outcome = error.code

            assert outcome == expected, (op, amount)
            if outcome is not None:
                assert ledger_state(conn) == before
                continue
            if kind == "deposit":
                model[(source, asset)] += amount
            elif kind == "withdraw":
                model[(source, asset)] -= amount
            else:
                model[(source, asset)] -= amount
                model[(target, asset)] += amount

        for index, customer_id in enumerate(customers):
            actual = {b.asset: b.available for b in service.balances(conn, customer_id)}
            for asset in SCALES:
                assert actual.get(asset, Decimal(0)) == model[(index, asset)]
        assert_invariants_hold(conn)


def test_ledger_state_sees_a_new_entry(db: ScratchDatabase) -> None:
    with db.connect() as admin:
        create_asset(admin, "USD", 2)
    with db.connect("exchange_app", tenant=create_tenant(db)) as conn:
        customer = service.create_customer(conn, "c")
        before = ledger_state(conn)
        service.deposit(conn, customer, "USD", Decimal("1"), "k")

        assert ledger_state(conn) != before


def test_refused_fails_when_the_refused_block_changed_the_ledger(db: ScratchDatabase) -> None:
    with db.connect() as admin:
        create_asset(admin, "USD", 2)
    with db.connect("exchange_app", tenant=create_tenant(db)) as conn:
        customer = service.create_customer(conn, "c")

        with pytest.raises(AssertionError), refused(conn, sqlstate="EX002"):
            service.deposit(conn, customer, "USD", Decimal("1"), "k")  # commits: autocommit
            conn.execute("SELECT ledger.withdraw(%s, 'USD', 5, 'w')", (customer,))
