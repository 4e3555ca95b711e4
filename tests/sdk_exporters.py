"""The agent side of the OTLP tests: the OpenTelemetry SDK's own OTLP exporters, pointed at
a running `agentmeter serve`, and what they answered."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Protocol

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class OtlpEndpoint(Protocol):
    """Where and as whom an agent exports spans (a `RunningServer`, or a stand-in)."""

    @property
    def grpc_target(self) -> str: ...
    @property
    def traces_url(self) -> str: ...
    @property
    def ingest_headers(self) -> dict[str, str]: ...


def make_exporter(
    transport: str,
    server: OtlpEndpoint,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> SpanExporter:
    """The SDK's own OTLP exporter for `transport` ("grpc" or "http"), authenticated with
    `headers`, by default the ingest key."""
    sent = dict(server.ingest_headers if headers is None else headers)
    if transport == "grpc":
        return GrpcSpanExporter(
            endpoint=server.grpc_target, insecure=True, headers=sent, timeout=timeout
        )
    assert transport == "http", transport
    return HttpSpanExporter(endpoint=server.traces_url, headers=sent, timeout=timeout)


def export_once(exporter: SpanExporter, spans: Sequence[ReadableSpan]) -> SpanExportResult:
    """`spans` exported in one call, then the exporter shut down."""
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


class RecordingExporter(SpanExporter):
    """A real exporter that also remembers what each export returned.

    `BatchSpanProcessor.force_flush()` returns True even when the exporter gave up on a
    batch, so without this a dropped batch would only show up as a wrong total.
    """

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        self._lock = threading.Lock()
        self._results: list[tuple[int, SpanExportResult]] = []

    @property
    def results(self) -> list[tuple[int, SpanExportResult]]:
        """(spans, result) of every export so far."""
        with self._lock:
            return list(self._results)

    def failed_spans(self) -> int:
        return sum(n for n, result in self.results if result is not SpanExportResult.SUCCESS)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._exporter.export(spans)
        with self._lock:
            self._results.append((len(spans), result))
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)


def use_genai_semconv(monkeypatch: pytest.MonkeyPatch, opt_in: str | None) -> None:
    """Set (or with None, clear) `OTEL_SEMCONV_STABILITY_OPT_IN` for instrumentation set up
    after this, whatever an earlier test in this process opted into.

    The opt-in is read once per process, at the first `instrument()`: this forgets what was
    read (restored at teardown).
    """
    if opt_in is None:
        monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    else:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in)
    stability = _OpenTelemetrySemanticConventionStability
    monkeypatch.setattr(stability, "_initialized", False)
    monkeypatch.setattr(stability, "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", {})
