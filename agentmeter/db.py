"""Engine construction and migrations, the same for SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from agentmeter.settings import Settings

_MIGRATIONS = Path(__file__).parent / "migrations"

_READ_ONLY = "agentmeter_read_only"

# Errors that mean "the database cannot serve us now", not "this request is wrong".
UNAVAILABLE_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


def is_sqlite(engine: Engine) -> bool:
    """True when the engine writes to an embedded SQLite file."""
    return engine.dialect.name == "sqlite"


def make_engine(settings: Settings) -> Engine:
    """Create the engine for `settings.database_url`.

    SQLite runs in WAL mode so readers never block the writer, with a busy timeout so a
    second process waits rather than failing at once; the writer itself is serialized by the
    usage sink. PostgreSQL gets a connection pool sized by `db_pool_size`.
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={
                "timeout": settings.sqlite_busy_timeout_seconds,
                "check_same_thread": False,
            },
        )
        synchronous = settings.sqlite_synchronous

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            # Transactions are begun below, not by the driver (which would begin lazily).
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            # Take the write lock when a transaction starts, so a read-then-write (check a
            # status, then finalize) is serialized like SELECT … FOR UPDATE on PostgreSQL.
            # Connections from `read_only` do not: readers never wait for the writer.
            if connection.get_execution_options().get(_READ_ONLY):
                connection.exec_driver_sql("BEGIN")
            else:
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=settings.db_pool_size, max_overflow=4, pool_pre_ping=True)


def read_only(engine: Engine) -> Connection:
    """A connection for reads alone (key lookups, readiness): on SQLite its transactions
    take no write lock. Use as a context manager, like `engine.connect()`."""
    return engine.connect().execution_options(**{_READ_ONLY: True})


def alembic_config(engine: Engine) -> Config:
    """An Alembic config that migrates `engine` with the migrations shipped in the package."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    command.upgrade(alembic_config(engine), "head")
