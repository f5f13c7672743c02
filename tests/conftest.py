"""Test harness: one throwaway PostgreSQL cluster per session, started by app.pgcluster.

The schema is migrated once, with Alembic, into a template database; every test gets a fresh
database cloned from it (pytest-postgresql's DatabaseJanitor), so tests never share rows. The
server on 127.0.0.1:5432, if any, is never used: the cluster listens on its own unix socket.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings
from pytest_postgresql.janitor import DatabaseJanitor

from app import migrate
from app.pgcluster import PORT, SUPERUSER, Cluster
from app.tenancy import context

TEMPLATE_DBNAME = "exchange_template"
APP_ROLE = "exchange_app"
OWNER_ROLE = "exchange_owner"

# Durability is irrelevant for throwaway data; these settings are for tests only.
TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}

_database_numbers = itertools.count(1)

# CI must be reproducible: the same examples on every run. Locally, hypothesis explores afresh.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@dataclass(frozen=True)
class ScratchDatabase:
    cluster: Cluster
    name: str

    def conninfo(self, user: str = SUPERUSER) -> str:
        return self.cluster.conninfo(self.name, user)

    def url(self, user: str = SUPERUSER) -> str:
        return self.cluster.url(self.name, user)

    def connect(
        self, user: str = SUPERUSER, *, autocommit: bool = True, tenant: int | None = None
    ) -> psycopg.Connection:
        """A connection; with `tenant`, every transaction on it acts for that broker."""
        conn = psycopg.connect(self.conninfo(user), autocommit=autocommit)
        if tenant is not None:
            act_for(conn, tenant)
        return conn


def janitor(cluster: Cluster, dbname: str, **options: object) -> DatabaseJanitor:
    return DatabaseJanitor(
        user=SUPERUSER, host=str(cluster.socket_dir), port=PORT, dbname=dbname, **options
    )


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    # mkdtemp makes a 0700 directory; the PostgreSQL user (when we are root) must reach inside.
    base = Path(tempfile.mkdtemp(prefix="exchange-test-"))
    base.chmod(0o755)
    cluster = Cluster(base / "cluster", settings=TEST_SETTINGS)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def template_database(pg_cluster: Cluster) -> Iterator[str]:
    with janitor(pg_cluster, TEMPLATE_DBNAME, as_template=True):
        migrate.upgrade(pg_cluster.url(TEMPLATE_DBNAME))
        yield TEMPLATE_DBNAME


# Roles are cluster-wide: a test that changes exchange_app must put it back, or every later
# test would run with the changed role. The db fixture checks that each test did.
APP_ROLE_STATE = """
    SELECT r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
           r.rolreplication, r.rolbypassrls,
           (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid),
           (SELECT count(*) FROM pg_db_role_setting s WHERE s.setrole = r.oid)
      FROM pg_roles r WHERE r.rolname = 'exchange_app'
"""


def app_role_state(cluster: Cluster) -> tuple[object, ...] | None:
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        return conn.execute(APP_ROLE_STATE).fetchone()


@pytest.fixture(scope="session")
def app_role_baseline(pg_cluster: Cluster, template_database: str) -> tuple[object, ...] | None:
    return app_role_state(pg_cluster)


@pytest.fixture
def db(
    pg_cluster: Cluster, template_database: str, app_role_baseline: tuple[object, ...] | None
) -> Iterator[ScratchDatabase]:
    """A fresh database at the head revision, for this test only."""
    name = f"test_{next(_database_numbers)}"
    with janitor(pg_cluster, name, template_dbname=template_database):
        # CREATE DATABASE ... TEMPLATE copies no database-level grant; restore the migration's.
        with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
            conn.execute(f'GRANT CREATE ON DATABASE "{name}" TO {OWNER_ROLE}')
        yield ScratchDatabase(pg_cluster, name)
    assert app_role_state(pg_cluster) == app_role_baseline, (
        "this test changed the cluster-wide role exchange_app and did not restore it"
    )


@pytest.fixture
def empty_db(pg_cluster: Cluster) -> Iterator[ScratchDatabase]:
    """A fresh database without any migration applied."""
    name = f"empty_{next(_database_numbers)}"
    with janitor(pg_cluster, name):
        yield ScratchDatabase(pg_cluster, name)


def create_tenant(db: ScratchDatabase, name: str | None = None) -> int:
    """A new broker (named uniquely unless `name` is given)."""
    with db.connect() as conn:
        row = conn.execute(
            "SELECT tenancy.create_tenant(%s)", (name or f"broker-{uuid.uuid4().hex}",)
        ).fetchone()
    assert row is not None
    return int(row[0])


def act_for(conn: psycopg.Connection, tenant_id: int) -> None:
    """Make every later transaction on `conn` act for `tenant_id` (tests only: the API sets it
    with SET LOCAL per transaction)."""
    context.act_for(conn, tenant_id, transaction_only=False)
    if not conn.autocommit:
        conn.commit()  # a session setting made in a transaction that rolls back is undone


@pytest.fixture
def tenant(db: ScratchDatabase) -> int:
    """The broker that the `admin` and `app_conn` connections act for."""
    return create_tenant(db, "test-broker")


@pytest.fixture
def admin(db: ScratchDatabase, tenant: int) -> Iterator[psycopg.Connection]:
    """A superuser connection (autocommit), for setting up what only operators may do. It acts
    for the `tenant` broker, so customers it creates belong to that broker."""
    with db.connect(tenant=tenant) as conn:
        yield conn


@pytest.fixture
def app_conn(db: ScratchDatabase, tenant: int) -> Iterator[psycopg.Connection]:
    """A connection as the application role (autocommit), acting for the `tenant` broker: what
    the application can do for it."""
    with db.connect(APP_ROLE, tenant=tenant) as conn:
        yield conn


Exchange = Callable[..., tuple[int, str, str]]


@pytest.fixture
def exchange(
    db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Exchange:
    """Runs `exchange ARGS...` in process against the test's database; returns (exit code,
    stdout, stderr)."""
    from app import cli

    monkeypatch.setenv("DATABASE_URL", db.url())
    monkeypatch.delenv("ADMIN_DATABASE_URL", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()  # only this command's output
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run
