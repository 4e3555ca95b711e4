"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from agentmeter.db import alembic_config, make_engine, migrate
from agentmeter.partitions import include_name, is_partition
from agentmeter.settings import Settings
from agentmeter.tables import Base, on_dialect


def _head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


class TestMigrate:
    def test_creates_every_model_table_in_an_empty_database(self, empty_database_url: str) -> None:
        engine = make_engine(Settings(database_url=empty_database_url))
        try:
            assert inspect(engine).get_table_names() == []

            migrate(engine)

            # PostgreSQL also lists the usage table's monthly partitions (agentmeter.partitions).
            tables = {t for t in inspect(engine).get_table_names() if not is_partition(t)}
            assert tables == {*Base.metadata.tables, "alembic_version"}
            assert _current_revision(engine) == _head_revision(engine)
        finally:
            engine.dispose()

    def test_leaves_the_engine_fixture_at_head(self, engine: Engine) -> None:
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
        assert _current_revision(engine) == _head_revision(engine)

    def test_is_idempotent(self, engine: Engine) -> None:
        tables_before = set(inspect(engine).get_table_names())

        migrate(engine)

        assert set(inspect(engine).get_table_names()) == tables_before
        assert _current_revision(engine) == _head_revision(engine)

    def test_schema_matches_models(self, engine: Engine) -> None:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "include_name": include_name,
                    "include_object": on_dialect(connection.dialect.name),
                },
            )
            differences = compare_metadata(context, Base.metadata)

        assert differences == []
