"""Request-scoped dependencies: the database session (committed at the request boundary)
and the authenticated tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.db import UNAVAILABLE_ERRORS
from agentmeter.settings import Settings
from agentmeter.tenants import KeyKind, TenantKeys
from billing_api.errors import UnauthorizedError
from otel_processor.receiver.service import bearer_token
from otel_processor.usage import StoreUnavailableError


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; services never commit, this boundary does."""
    engine: Engine = request.app.state.engine
    try:
        with Session(engine) as session, session.begin():
            yield session
    except UNAVAILABLE_ERRORS as error:
        raise StoreUnavailableError(f"database unavailable: {error}") from None


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
AppSettings = Annotated[Settings, Depends(get_settings)]
TenantId = Annotated[str, Depends(get_tenant_id)]
