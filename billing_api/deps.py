"""Request-scoped dependencies: the database session (committed at the request boundary)
and the settings. Who is asking: `billing_api.auth`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.db import read_only
from agentmeter.settings import Settings
from billing_api.errors import database_errors


def _session(engine: Engine, *, reads: bool) -> Iterator[Session]:
    with database_errors():
        if reads:
            # On SQLite a deferred transaction: it reads its WAL snapshot and never waits
            # for the writer (a billing run, ingest) as BEGIN IMMEDIATE would.
            with read_only(engine) as connection, Session(connection) as session, session.begin():
                yield session
        else:
            with Session(engine) as session, session.begin():
                yield session


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; services never commit, this boundary does. GET and HEAD
    requests read without taking the write lock; an endpoint whose GET writes declares it
    with `WriteSession`."""
    yield from _session(request.app.state.engine, reads=request.method in ("GET", "HEAD"))


def get_write_session(request: Request) -> Iterator[Session]:
    """A session that takes the write lock when it begins, whatever the method."""
    yield from _session(request.app.state.engine, reads=False)


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


DbSession = Annotated[Session, Depends(get_session, scope="function")]
WriteSession = Annotated[Session, Depends(get_write_session, scope="function")]
AppSettings = Annotated[Settings, Depends(get_settings)]
