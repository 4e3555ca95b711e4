"""Alembic environment: migrates the engine handed over in `config.attributes`."""

from alembic import context
from sqlalchemy import Engine, text

from agentmeter.partitions import include_name
from agentmeter.tables import Base, on_dialect

# Any fixed 64-bit key, the same in every process that migrates.
MIGRATION_LOCK_KEY = 0x61676D2D6D696772  # "agm-migr"

engine = context.config.attributes["engine"]
assert isinstance(engine, Engine)

with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        # Several `agentmeter serve` may start at once on one database: the first to take
        # this lock migrates; the others wait for its commit, then read the new version and
        # find nothing to do (PostgreSQL DDL is transactional). SQLite's BEGIN IMMEDIATE
        # (agentmeter.db) serialises them already.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_name=include_name,
        include_object=on_dialect(connection.dialect.name),
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
