"""Alembic environment: one transaction per migration, against the admin database URL."""

from alembic import context
from sqlalchemy import create_engine, pool

from app.migrate import admin_url_from_environment, sqlalchemy_url

config = context.config
url = config.attributes.get("url") or admin_url_from_environment()
engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)

with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
