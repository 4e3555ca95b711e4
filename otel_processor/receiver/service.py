"""The transport-independent part of every ingest path: auth, extract, store, answer.

OTLP over gRPC and HTTP, and AgentMeter's own `UsageService`, all go through `UsageIngest`.
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
from dataclasses import dataclass, field
from typing import Protocol

from otel_processor.conventions import DEFAULT_CUSTOMER_KEYS
from otel_processor.otlp import Extraction, InvalidRequestError
from otel_processor.usage import StoreUnavailableError, UsageSink

logger = logging.getLogger("agentmeter.ingest")

# Given the tenant's customer attribute keys, decode the request and extract its usage.
Extract = Callable[[Sequence[str]], Extraction]


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


class RateLimiter(Protocol):
    """Counts requests per key. Thread-safe; must not block."""

    def retry_after(self, key: str) -> int | None:
        """Count one request of `key`: None when allowed, else whole seconds to wait."""
        ...


class RateLimitedError(Exception):
    """The ingest key sent more exports than its rate limit allows; nothing was stored."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limit of this ingest key exceeded; retry in {retry_after} s")
        self.retry_after = retry_after


class OverloadedError(StoreUnavailableError):
    """Too many exports are already waiting for the store; retry later."""


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    """What happened to one export, for the response, the log line and the metrics."""

    tenant_id: str
    transport: str
    spans: int
    rejected: int
    inserted: int
    duplicates: int
    unattributed: int  # records that arrived without a customer (some inherit one later)
    error_message: str
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


class ExportObserver(Protocol):
    """Sees every export: for metrics and logs. Must not block or raise."""

    def exported(self, outcome: ExportOutcome, seconds: float) -> None:
        """An export was committed (and is about to be answered)."""
        ...

    def refused(self, transport: str, reason: str) -> None:
        """A whole export was refused (unauthenticated, invalid, too large, unavailable)."""
        ...


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class UsageIngest:
    """Turns authenticated exports into committed usage.

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
        observers: Sequence[ExportObserver] = (),
        limiter: RateLimiter | None = None,
    ) -> None:
        self._sink = sink
        self._limiter = limiter
        self._keys = keys
        self._max_pending = max_pending
        self._pending = 0
        self._executor = executor
        self._observers = observers

    def refused(self, transport: str, reason: str) -> None:
        """Record a refusal decided by a transport before `export` (e.g. too large)."""
        for observer in self._observers:
            try:
                observer.refused(transport, reason)
            except Exception:
                logger.exception("export observer failed")

    async def export(
        self, transport: str, authorization: str | None, extract: Extract
    ) -> ExportOutcome:
        """Authenticate, extract (via `extract`, which may raise `InvalidRequestError`) and
        commit. Raises `UnauthenticatedError`, `RateLimitedError`, `InvalidRequestError` or
        `StoreUnavailableError`; returns only once the usage is durable."""
        if self._pending >= self._max_pending:
            self.refused(transport, "overloaded")
            raise OverloadedError(f"more than {self._max_pending} exports are waiting")
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, self._export, transport, authorization, extract
            )
        except UnauthenticatedError:
            self.refused(transport, "unauthenticated")
            raise
        except RateLimitedError:
            self.refused(transport, "rate_limited")
            raise
        except StoreUnavailableError:
            self.refused(transport, "unavailable")
            raise
        except InvalidRequestError:
            self.refused(transport, "invalid")
            raise
        finally:
            self._pending -= 1

    def _export(self, transport: str, authorization: str | None, extract: Extract) -> ExportOutcome:
        started = time.perf_counter()
        token = bearer_token(authorization)
        if token is None:
            raise UnauthenticatedError("missing Authorization: Bearer <ingest key>")
        tenant = self._keys.tenant_for_ingest_key(token)
        if tenant is None:
            raise UnauthenticatedError("unknown or revoked ingest key")
        if self._limiter is not None and (wait := self._limiter.retry_after(token)) is not None:
            raise RateLimitedError(wait)
        extraction = extract(tenant.customer_keys)
        result = self._sink.write(tenant.tenant_id, extraction.batch)
        outcome = ExportOutcome(
            tenant_id=tenant.tenant_id,
            transport=transport,
            spans=extraction.spans,
            rejected=extraction.rejected,
            inserted=result.inserted,
            duplicates=result.duplicates,
            unattributed=sum(1 for r in extraction.batch.records if not r.customer_id),
            error_message=extraction.error_message(),
            rejected_by_reason=dict(extraction.rejected_by_reason),
        )
        elapsed = time.perf_counter() - started
        for observer in self._observers:
            try:
                observer.exported(outcome, elapsed)
            except Exception:  # the usage is committed: a metrics bug must not fail the reply
                logger.exception("export observer failed")
        return outcome
