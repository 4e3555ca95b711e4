"""The receiver's ingest-key resolver: ingest keys looked up in the SQL store."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from agentmeter.db import is_retryable
from agentmeter.tenants import KeyKind, key_owner
from otel_processor.receiver.service import IngestTenant
from otel_processor.usage import StoreUnavailableError


class SqlIngestKeys:
    """Resolves ingest keys to tenants against the database (an `IngestKeyResolver`).

    Blocking; thread-safe (each lookup takes its own pooled connection). A retryable
    database error raises `StoreUnavailableError` (the exporter retries); any other
    propagates, answered as an internal error."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def tenant_for_ingest_key(self, key: str) -> IngestTenant | None:
        """The tenant of a valid, unrevoked ingest key, else None."""
        try:
            owner = key_owner(self._engine, key, KeyKind.INGEST)
        except SQLAlchemyError as error:
            if is_retryable(error):
                raise StoreUnavailableError(f"key store unavailable: {error}") from None
            raise
        if owner is None:
            return None
        return IngestTenant(tenant_id=owner.tenant_id, customer_keys=owner.customer_keys)
