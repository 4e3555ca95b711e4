"""The transport-independent part of the receiver: auth, decode, extract, store, answer.

An export is answered only after the usage extracted from it is committed by the sink.
Blocking work (key lookup, decoding, extraction, the database write) runs in a worker
thread so the event loop keeps accepting connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_processor.conventions import DEFAULT_CUSTOMER_KEYS
from otel_processor.otlp import extract_usage
from otel_processor.usage import StoreUnavailableError, UsageSink

logger = logging.getLogger("agentmeter.ingest")


@dataclass(frozen=True, slots=True)
class IngestTenant:
    """The tenant an ingest key belongs to, with its attribution settings."""

    tenant_id: str
    customer_keys: Sequence[str] = DEFAULT_CUSTOMER_KEYS


class IngestKeyResolver(Protocol):
    """Looks up ingest keys. Blocking; called from a worker thread."""

    def tenant_for_ingest_key(self, key: str) -> IngestTenant | None:
        """The tenant of a valid, unrevoked ingest key, else None."""
        ...


class UnauthenticatedError(Exception):
    """Missing, unknown or revoked ingest key; nothing was stored."""


class OverloadedError(StoreUnavailableError):
    """Too many exports are already waiting for the store; retry later."""


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    """What happened to one export, for the response, the log line and the metrics."""

    tenant_id: str
    spans: int
    rejected: int
    inserted: int
    duplicates: int
    unattributed: int  # records that arrived without a customer (some inherit one later)
    error_message: str


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class TraceIngest:
    """Turns authenticated OTLP exports into committed usage.

    `export` is a coroutine; at most `max_pending` exports wait for the store at once,
    and the next one fails fast with `OverloadedError` so its exporter backs off and
    retries rather than piling up memory here.
    """

    def __init__(
        self,
        sink: UsageSink,
        keys: IngestKeyResolver,
        *,
        max_pending: int,
        executor: ThreadPoolExecutor,
        observers: Sequence[Callable[[ExportOutcome, float], None]] = (),
    ) -> None:
        self._sink = sink
        self._keys = keys
        self._max_pending = max_pending
        self._pending = 0
        self._executor = executor
        self._observers = observers

    async def export(
        self,
        authorization: str | None,
        decode: Callable[[], ExportTraceServiceRequest],
    ) -> ExportOutcome:
        """Authenticate, decode (via `decode`, which may raise `InvalidRequestError`),
        extract and commit. Raises `UnauthenticatedError`, `InvalidRequestError` or
        `StoreUnavailableError`; returns only once the usage is durable."""
        if self._pending >= self._max_pending:
            raise OverloadedError(f"more than {self._max_pending} exports are waiting")
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._export, authorization, decode)
        finally:
            self._pending -= 1

    def _export(
        self, authorization: str | None, decode: Callable[[], ExportTraceServiceRequest]
    ) -> ExportOutcome:
        started = time.perf_counter()
        token = bearer_token(authorization)
        if token is None:
            raise UnauthenticatedError("missing Authorization: Bearer <ingest key>")
        tenant = self._keys.tenant_for_ingest_key(token)
        if tenant is None:
            raise UnauthenticatedError("unknown or revoked ingest key")
        request = decode()
        extraction = extract_usage(request, tenant.customer_keys)
        result = self._sink.write(tenant.tenant_id, extraction.batch)
        outcome = ExportOutcome(
            tenant_id=tenant.tenant_id,
            spans=extraction.spans,
            rejected=extraction.rejected,
            inserted=result.inserted,
            duplicates=result.duplicates,
            unattributed=sum(1 for r in extraction.batch.records if not r.customer_id),
            error_message=extraction.error_message(),
        )
        elapsed = time.perf_counter() - started
        for observe in self._observers:
            observe(outcome, elapsed)
        return outcome
