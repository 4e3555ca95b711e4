"""The usage store made unavailable under a running `agentmeter serve`: a SQLite file locked
by another connection, or a PostgreSQL database refusing connections."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from agentmeter.db import make_engine, migrate
from agentmeter.settings import Settings
from agentmeter.tenants import create_tenant
from tests.conftest import POSTGRES_URL_ENV, RunningServer


@dataclass(frozen=True)
class LockableSqliteServer:
    """A server on a SQLite file that `locked()` holds an exclusive lock on."""

    server: RunningServer
    engine: Engine
    holder: sqlite3.Connection

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            self.holder.execute("ROLLBACK")


@contextmanager
def lockable_sqlite_server(tmp_path: Path) -> Iterator[LockableSqliteServer]:
    """A running server on a fresh SQLite file that waits at most 0.5 s for a lock."""
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}"
    engine = make_engine(Settings(database_url=url))
    migrate(engine)
    running = RunningServer(
        database_url=url,
        tenant=create_tenant(engine, "locked"),
        log_path=tmp_path / "locked-server.log",
        env={"AGENTMETER_SQLITE_BUSY_TIMEOUT_SECONDS": "0.5"},
    )
    try:
        running.start()
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            yield LockableSqliteServer(running, engine, holder)
        finally:
            holder.close()
    finally:
        running.stop()
        engine.dispose()


@contextmanager
def postgresql_refusing_connections(database_url: str) -> Iterator[None]:
    """While inside, the PostgreSQL database of `database_url` refuses new connections, and
    the ones open on entry (a server's pool) are cut."""
    name = make_url(database_url).database
    assert name is not None
    admin = create_engine(
        os.environ[POSTGRES_URL_ENV], isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    quoted = admin.dialect.identifier_preparer.quote(name)
    try:
        try:
            with admin.connect() as connection:
                connection.execute(text(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS false"))
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :database AND pid <> pg_backend_pid()"
                    ),
                    {"database": name},
                )
            yield
        finally:
            with admin.connect() as connection:
                connection.execute(text(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS true"))
    finally:
        admin.dispose()
