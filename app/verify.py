"""`exchange verify`: every invariant of the ledger, trading, tenancy and reporting, in one list."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg

from app.ledger import invariants as ledger_invariants
from app.ledger.invariants import Invariant, Violation
from app.reporting import invariants as reporting_invariants
from app.tenancy import invariants as tenancy_invariants
from app.trading import invariants as trading_invariants

INVARIANTS: tuple[Invariant, ...] = (
    ledger_invariants.INVARIANTS
    + trading_invariants.INVARIANTS
    + tenancy_invariants.INVARIANTS
    + reporting_invariants.INVARIANTS
)


def violations(conn: psycopg.Connection) -> Iterator[Violation]:
    """Yields each broken invariant, in the order of INVARIANTS, with a few example rows."""
    return ledger_invariants.violations(conn, INVARIANTS)
