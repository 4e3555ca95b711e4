"""Alembic environment: migrates the engine handed over in `config.attributes`."""

from alembic import context
from sqlalchemy import Engine

from agentmeter.partitions import include_name
from agentmeter.tables import Base

engine = context.config.attributes["engine"]
assert isinstance(engine, Engine)

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_name=include_name,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
