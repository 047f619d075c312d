"""Alembic environment: runs migrations on the engine handed over by gateway.meta.db.migrate."""

from alembic import context

from gateway.meta.schema import metadata

engine = context.config.attributes.get("connection_engine")
if engine is None:  # invoked by the alembic command line
    from gateway.meta.db import make_engine

    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("alembic: set sqlalchemy.url (or run migrations through gateway.meta.db.migrate)")
    engine = make_engine(url)

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
