"""Engine construction and migrations, the same for SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session

from agentmeter.settings import Settings

_MIGRATIONS = Path(__file__).parent / "migrations"

_READ_ONLY = "agentmeter_read_only"

# PostgreSQL conditions that pass (SQLSTATE, Appendix A of its manual): connection
# exceptions (class 08), insufficient resources (53: disk full, out of memory, too many
# connections), the server shutting down or starting (57P01-57P05), and a transaction
# aborted by serialization failure or deadlock (40001, 40P01), which a retry redoes.
_RETRYABLE_SQLSTATE_CLASSES = frozenset({"08", "53"})
_RETRYABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05", "40001", "40P01"})
# SQLite's primary result codes that pass: another connection holds the lock past the busy
# timeout (BUSY, LOCKED), the disk is full or failing (FULL, IOERR), the file cannot be
# opened (CANTOPEN). Their messages too, for errors raised without a code.
_RETRYABLE_SQLITE_CODES = frozenset(
    {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN"}
)
_RETRYABLE_SQLITE_MESSAGES = (
    "database is locked",
    "database or disk is full",
    "disk i/o error",
    "unable to open database file",
)


def is_retryable(error: BaseException) -> bool:
    """True when `error` means "the database cannot serve us now" (connection lost or
    refused, a lock or busy timeout, disk full or failing, a serialization failure or
    deadlock): the same request may succeed later, so the API answers 503 and ingest
    UNAVAILABLE. Anything else (no such table or column, a syntax error, a constraint the
    code should have checked) is a bug in the code or the schema: retrying cannot help, so
    it answers 500/INTERNAL with the traceback logged.
    """
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sa_exc.InterfaceError | sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # the driver lost the connection; the pool timed out waiting for one
    cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    sqlstate = getattr(cause, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate[:2] in _RETRYABLE_SQLSTATE_CLASSES or sqlstate in _RETRYABLE_SQLSTATES
    if isinstance(cause, psycopg.OperationalError):
        return True  # no SQLSTATE: the server never answered (refused, closed, unreachable)
    if isinstance(cause, sqlite3.Error):
        # Extended codes name their primary one first: SQLITE_IOERR_WRITE is an IOERR.
        primary = "_".join(str(getattr(cause, "sqlite_errorname", "")).split("_")[:2])
        message = str(cause).lower()
        return primary in _RETRYABLE_SQLITE_CODES or any(
            known in message for known in _RETRYABLE_SQLITE_MESSAGES
        )
    return False


def is_sqlite(engine: Engine) -> bool:
    """True when the engine writes to an embedded SQLite file."""
    return engine.dialect.name == "sqlite"


def driver_placeholder(bind: Engine | Connection) -> str:
    """The parameter placeholder of raw driver SQL (`exec_driver_sql`): sqlite3's `?`, or
    psycopg's `%b`, which sends every value in binary. With its default, `%s`, psycopg
    sends a list as a text array, escaping each byte string: ingest's arrays of trace ids
    and span ids (512 pairs) took 6.1 ms to adapt so, 0.13 ms in binary."""
    return "?" if bind.dialect.paramstyle == "qmark" else "%b"


def dialect_insert(
    bind: Engine | Connection | Session, table: Table | type[DeclarativeBase]
) -> sqlite.Insert | postgresql.Insert:
    """An INSERT into `table` in the dialect of `bind`, so `on_conflict_do_nothing`,
    `on_conflict_do_update` and `excluded` read the same on SQLite and PostgreSQL."""
    dialect = bind.get_bind().dialect if isinstance(bind, Session) else bind.dialect
    return sqlite.insert(table) if dialect.name == "sqlite" else postgresql.insert(table)


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


IN_CHUNK = 500
_T = TypeVar("_T")


def in_chunks(values: Iterable[_T], size: int = IN_CHUNK) -> Iterator[list[_T]]:
    """`values` in lists of at most `size`, for IN lists that stay well under both
    backends' limits on bound parameters."""
    iterator = iter(values)
    while chunk := list(islice(iterator, size)):
        yield chunk


def holds_write_lock(session: Session) -> bool:
    """True when `session` is in a SQLite transaction begun with the write lock (any but
    `read_only`'s): another connection's write would wait for it to end."""
    if not is_sqlite(session.get_bind().engine):
        return False
    return not session.connection().get_execution_options().get(_READ_ONLY)


def alembic_config(engine: Engine) -> Config:
    """An Alembic config that migrates `engine` with the migrations shipped in the package."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    command.upgrade(alembic_config(engine), "head")
