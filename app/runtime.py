"""Where the database is: DATABASE_URL, or else the embedded cluster in EXCHANGE_HOME.

Configuration (environment):
  DATABASE_URL        the application's connection, as the exchange_app role
  ADMIN_DATABASE_URL  migrations and operator commands (default: DATABASE_URL)
  EXCHANGE_HOME       the embedded cluster's directory when DATABASE_URL is unset
                      (default ./.exchange; data in ./.exchange/pgdata)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from app import migrate
from app.pgcluster import Cluster

EMBEDDED_DBNAME = "exchange"
APP_ROLE = "exchange_app"


@dataclass(frozen=True)
class DatabaseUrls:
    app: str
    admin: str


def embedded_cluster() -> Cluster:
    return Cluster(Path(os.environ.get("EXCHANGE_HOME", ".exchange")))


def _create_database(cluster: Cluster, dbname: str) -> None:
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{dbname}"')


@contextmanager
def database(*, migrate_embedded: bool = True) -> Iterator[DatabaseUrls]:
    """The database URLs for the duration of the block.

    With DATABASE_URL set, it is used as it is (operators migrate it with `exchange db upgrade`).
    Without it, the embedded cluster is started (or joined, if already running), its database is
    created and, unless told otherwise, migrated to head; a cluster we started is stopped after.
    """
    app_url = os.environ.get("DATABASE_URL")
    if app_url:
        yield DatabaseUrls(app=app_url, admin=os.environ.get("ADMIN_DATABASE_URL") or app_url)
        return
    cluster = embedded_cluster()
    with cluster.session():
        _create_database(cluster, EMBEDDED_DBNAME)
        urls = DatabaseUrls(
            app=cluster.url(EMBEDDED_DBNAME, APP_ROLE), admin=cluster.url(EMBEDDED_DBNAME)
        )
        if migrate_embedded:
            migrate.upgrade(urls.admin)
        yield urls
