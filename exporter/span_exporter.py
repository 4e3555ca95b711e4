"""`UsageSpanExporter`: an OTel SDK `SpanExporter` that bills in-process, no OTLP hop.

    from exporter import UsageSpanExporter
    from exporter.usage_service import UsageServiceClient

    provider.add_span_processor(BatchSpanProcessor(
        UsageSpanExporter(UsageServiceClient("agentmeter:4317", ingest_key))))

Finished spans are turned into usage with the same mapping as the OTLP receiver, and the
batch goes to any `UsageSink`: a remote AgentMeter (`UsageServiceClient`) or the SQL store
directly (`SqlUsageSink`, with `tenant_id`). Retryable failures are retried with backoff
until `timeout` runs out; `export` then returns FAILURE and never raises.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from exporter.usage_service import UsageRefusedError
from otel_processor.conventions import DEFAULT_CUSTOMER_KEYS
from otel_processor.otlp import Extraction
from otel_processor.usage import StoreUnavailableError, UsageSink

logger = logging.getLogger("agentmeter.exporter")

_FIRST_BACKOFF = 0.2
_MAX_BACKOFF = 5.0


def spans_to_usage(
    spans: Sequence[ReadableSpan], customer_keys: Sequence[str] = DEFAULT_CUSTOMER_KEYS
) -> Extraction:
    """The usage of finished SDK spans, exactly as the OTLP receiver would extract it."""
    extraction = Extraction()
    for span in spans:
        context = span.context
        if context is None:
            continue
        resource = span.resource.attributes if span.resource is not None else {}
        extraction.add_span(
            trace_id=context.trace_id.to_bytes(16, "big"),
            span_id=context.span_id.to_bytes(8, "big"),
            name=span.name,
            end_time_unix_nano=span.end_time or 0,
            attributes=span.attributes or {},
            resource_attributes=resource,
            customer_keys=customer_keys,
            parent_span_id=span.parent.span_id.to_bytes(8, "big") if span.parent else b"",
        )
    return extraction


class UsageSpanExporter(SpanExporter):
    """Sends the usage of finished spans to a `UsageSink`.

    `export` blocks the calling thread (the SDK's span processor worker, not the agent's
    thread under `BatchSpanProcessor`) for at most `timeout` seconds, retrying retryable
    failures with jittered exponential backoff; it returns SUCCESS or FAILURE, never raises.
    """

    def __init__(
        self,
        sink: UsageSink,
        *,
        tenant_id: str = "",
        customer_keys: Sequence[str] = DEFAULT_CUSTOMER_KEYS,
        timeout: float = 10.0,
    ) -> None:
        self._sink = sink
        self._tenant_id = tenant_id
        self._customer_keys = tuple(customer_keys)
        self._timeout = timeout
        self._shutdown = threading.Event()
        # Attempts run here so that a sink that hangs cannot hold the SDK's worker past
        # the timeout; an abandoned attempt that lands later is harmless (writes dedup).
        self._attempts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-export")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown.is_set():
            return SpanExportResult.FAILURE
        try:
            extraction = spans_to_usage(spans, self._customer_keys)
        except Exception:  # on_end must not throw; an exporter bug must not kill the agent
            logger.exception("could not extract usage from spans")
            return SpanExportResult.FAILURE
        if extraction.rejected:
            logger.warning(
                "spans with invalid usage were not billed",
                extra={"rejected": extraction.rejected, "reason": extraction.error_message()},
            )
        if not (extraction.records or extraction.trace_customers or extraction.agent_spans):
            return SpanExportResult.SUCCESS
        return self._write(extraction)

    def _write(self, extraction: Extraction) -> SpanExportResult:
        deadline = time.monotonic() + self._timeout
        backoff = _FIRST_BACKOFF
        while True:
            attempt = self._attempts.submit(self._sink.write, self._tenant_id, extraction.batch)
            try:
                attempt.result(timeout=max(deadline - time.monotonic(), 0))
                return SpanExportResult.SUCCESS
            except FutureTimeout:
                logger.warning("usage export timed out after %.1f s", self._timeout)
                return SpanExportResult.FAILURE
            except StoreUnavailableError as error:
                pause = backoff * random.uniform(0.5, 1.0)
                if time.monotonic() + pause >= deadline:
                    logger.warning("usage export gave up after retries: %s", error)
                    return SpanExportResult.FAILURE
                if self._shutdown.wait(pause):
                    return SpanExportResult.FAILURE
                backoff = min(backoff * 2, _MAX_BACKOFF)
            except UsageRefusedError as error:
                logger.error("usage export refused: %s", error)
                return SpanExportResult.FAILURE
            except Exception:
                logger.exception("usage export failed")
                return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._shutdown.set()
        self._attempts.shutdown(wait=False, cancel_futures=True)
        close = getattr(self._sink, "close", None)
        if callable(close):
            close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
