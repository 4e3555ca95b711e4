"""Request-scoped dependencies: the database session (committed at the request boundary)
and the authenticated tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.db import UNAVAILABLE_ERRORS, read_only
from agentmeter.settings import Settings
from agentmeter.tenants import KeyKind, TenantKeys
from billing_api.errors import UnauthorizedError
from otel_processor.receiver.service import bearer_token
from otel_processor.usage import StoreUnavailableError


def _session(engine: Engine, *, reads: bool) -> Iterator[Session]:
    try:
        if reads:
            # On SQLite a deferred transaction: it reads its WAL snapshot and never waits
            # for the writer (a billing run, ingest) as BEGIN IMMEDIATE would.
            with read_only(engine) as connection, Session(connection) as session, session.begin():
                yield session
        else:
            with Session(engine) as session, session.begin():
                yield session
    except UNAVAILABLE_ERRORS as error:
        raise StoreUnavailableError(f"database unavailable: {error}") from None


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; services never commit, this boundary does. GET and HEAD
    requests read without taking the write lock; an endpoint whose GET writes declares it
    with `WriteSession`."""
    yield from _session(request.app.state.engine, reads=request.method in ("GET", "HEAD"))


def get_write_session(request: Request) -> Iterator[Session]:
    """A session that takes the write lock when it begins, whatever the method."""
    yield from _session(request.app.state.engine, reads=False)


def get_tenant_id(request: Request) -> str:
    """The tenant of the request's admin key (`Authorization: Bearer <admin_key>`)."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise UnauthorizedError("missing Authorization: Bearer <admin key>")
    keys: TenantKeys = request.app.state.keys
    tenant = keys.tenant_for_key(token, KeyKind.ADMIN)
    if tenant is None:
        raise UnauthorizedError("unknown or revoked admin key")
    return tenant.tenant_id


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


DbSession = Annotated[Session, Depends(get_session, scope="function")]
WriteSession = Annotated[Session, Depends(get_write_session, scope="function")]
AppSettings = Annotated[Settings, Depends(get_settings)]
TenantId = Annotated[str, Depends(get_tenant_id)]
