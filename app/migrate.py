"""Schema migrations: Alembic applies the versioned SQL files under `sql/`.

A landed SQL file is never edited: a changed function is a new file (`name.v2.sql`) applied by a
new migration, so replaying the migrations from an empty database always builds the same schema.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
from alembic import command, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import create_engine, pool

ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = ROOT / "sql"
OWNER_ROLE = "exchange_owner"
APP_ROLE = "exchange_app"


class ConfigurationError(RuntimeError):
    """The environment does not say which database to use."""


def admin_url_from_environment() -> str:
    url = os.environ.get("ADMIN_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not url:
        raise ConfigurationError("set ADMIN_DATABASE_URL or DATABASE_URL")
    return url


def sqlalchemy_url(url: str) -> str:
    """SQLAlchemy's spelling of a libpq URL, with the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def run_sql_files(*names: str, as_owner: bool = False) -> None:
    """Inside a migration: execute files from `sql/`, as the schema owner when asked."""
    driver_connection = op.get_bind().connection.driver_connection
    if as_owner:
        driver_connection.execute(f"SET LOCAL ROLE {OWNER_ROLE}")
    for name in names:
        driver_connection.execute((SQL_DIR / name).read_text())
    if as_owner:
        driver_connection.execute("RESET ROLE")


def alembic_config(url: str, *, allow_data_loss: bool = False) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url
    config.attributes["allow_data_loss"] = allow_data_loss
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str, *, allow_data_loss: bool = False) -> None:
    """Migrate down; a step that would drop booked money refuses unless `allow_data_loss`."""
    command.downgrade(alembic_config(url, allow_data_loss=allow_data_loss), revision)


def current_revision(url: str) -> str | None:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def revisions() -> list[tuple[str, str]]:
    """Every revision, oldest first, with its title: the first paragraph of its docstring."""
    scripts = ScriptDirectory.from_config(alembic_config("unused"))
    return [
        (script.revision, " ".join(script.doc.split()))
        for script in reversed(list(scripts.walk_revisions()))
    ]


def set_app_password(url: str, password: str) -> None:
    """Give the application role (created by the migrations with LOGIN but no password) a
    password. It is hashed here, with the server's password_encryption, so the clear text never
    reaches the server or its logs."""
    if not password:
        raise ConfigurationError("the password is empty")
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        hashed = conn.pgconn.encrypt_password(password.encode(), APP_ROLE.encode())
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(APP_ROLE), sql.Literal(hashed.decode())
            )
        )
