"""Fixtures for the report tests: one database per module holding the history of
tests/reporting/helpers.py (reports only read, so the module's tests share it), and finance
login roles."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime

import psycopg
import pytest

from app.pgcluster import Cluster
from tests.conftest import OWNER_ROLE, Exchange, ScratchDatabase, janitor
from tests.reporting.helpers import History, now, phase_1, phase_2

_numbers = itertools.count(1)


@dataclass(frozen=True)
class Seeded:
    db: ScratchDatabase
    history: History
    t1: datetime  # between phase 1 and phase 2
    day: date  # the UTC day of both phases


@pytest.fixture(scope="module")
def seeded(pg_cluster: Cluster, template_database: str) -> Iterator[Seeded]:
    name = f"reporting_{os.getpid()}_{next(_numbers)}"
    with janitor(pg_cluster, name, template_dbname=template_database):
        with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
            conn.execute(f'GRANT CREATE ON DATABASE "{name}" TO {OWNER_ROLE}')
        db = ScratchDatabase(pg_cluster, name)
        with db.connect() as conn:
            history = phase_1(conn)
            t1 = now(conn)
            phase_2(conn, history)
            row = conn.execute("SELECT (%s::timestamptz AT TIME ZONE 'UTC')::date", (t1,))
            day = row.fetchone()[0]  # type: ignore[index]
        yield Seeded(db, history, t1, day)


@pytest.fixture
def reader(seeded: Seeded) -> Iterator[psycopg.Connection]:
    """A superuser connection to the seeded database (autocommit), for reading reports."""
    with seeded.db.connect() as conn:
        yield conn


@pytest.fixture
def finance_login(pg_cluster: Cluster) -> Iterator[str]:
    """A new login role (cluster-wide: dropped after the test), not yet a finance member."""
    role = f"finance_staff_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        yield role
    finally:
        with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{role}"')


@pytest.fixture
def finance_member(finance_login: str, pg_cluster: Cluster) -> str:
    """A login role granted finance_reader."""
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f'GRANT finance_reader TO "{finance_login}"')
    return finance_login


@pytest.fixture
def finance(seeded: Seeded, finance_member: str) -> Iterator[psycopg.Connection]:
    """A finance staff member's connection to the seeded database (autocommit)."""
    with seeded.db.connect(finance_member) as conn:
        yield conn


@pytest.fixture
def exchange_on_seeded(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Exchange:
    """`exchange ARGS...` in process against the seeded database: (exit code, stdout, stderr)."""
    from app import cli

    monkeypatch.setenv("DATABASE_URL", seeded.db.url())
    monkeypatch.delenv("ADMIN_DATABASE_URL", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run
