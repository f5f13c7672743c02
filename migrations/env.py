"""Alembic environment: one transaction per migration, against the admin database URL."""

from alembic import context
from sqlalchemy import create_engine, pool

from app.migrate import admin_url_from_environment, sqlalchemy_url

config = context.config
url = config.attributes.get("url") or admin_url_from_environment()
# `alembic downgrade ... -x allow_data_loss=true`, or migrate.downgrade(allow_data_loss=True).
allow_data_loss = bool(config.attributes.get("allow_data_loss")) or (
    context.get_x_argument(as_dictionary=True).get("allow_data_loss") == "true"
)
engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)

with engine.connect() as connection:
    if allow_data_loss:
        # Read by the downgrade files that would drop booked money (sql/ledger/drop.v1.sql).
        connection.exec_driver_sql("SELECT set_config('exchange.allow_data_loss', 'on', false)")
        connection.commit()
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
