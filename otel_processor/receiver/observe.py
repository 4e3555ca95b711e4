"""Observers of ingest: Prometheus metrics and one structured log line per export.

No key or token ever reaches either: observers see only tenant ids and counts.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Histogram

from otel_processor.receiver.service import ExportOutcome

logger = logging.getLogger("agentmeter.ingest")


class IngestMetrics:
    """Counters and a latency histogram, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.spans = Counter(
            "agentmeter_spans_received",
            "Spans (or usage records on UsageService) received in accepted exports",
            ["transport"],
            registry=registry,
        )
        self.inserted = Counter(
            "agentmeter_usage_records_inserted", "Usage records newly stored", registry=registry
        )
        self.duplicates = Counter(
            "agentmeter_usage_records_duplicate",
            "Usage records already stored (exporter retries), ignored",
            registry=registry,
        )
        self.rejected = Counter(
            "agentmeter_spans_rejected",
            "Spans or records refused as invalid, by reason",
            ["reason"],
            registry=registry,
        )
        self.unattributed = Counter(
            "agentmeter_usage_records_unattributed",
            "Usage records that arrived without a customer",
            registry=registry,
        )
        self.refusals = Counter(
            "agentmeter_exports_refused",
            "Whole exports refused, by transport and reason",
            ["transport", "reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "agentmeter_export_latency_seconds",
            "Time from receiving an export to its commit",
            ["transport"],
            registry=registry,
        )

    def exported(self, outcome: ExportOutcome, seconds: float) -> None:
        self.spans.labels(outcome.transport).inc(outcome.spans)
        self.inserted.inc(outcome.inserted)
        self.duplicates.inc(outcome.duplicates)
        self.unattributed.inc(outcome.unattributed)
        for reason, count in outcome.rejected_by_reason.items():
            self.rejected.labels(reason).inc(count)
        self.latency.labels(outcome.transport).observe(seconds)

    def refused(self, transport: str, reason: str) -> None:
        self.refusals.labels(transport, reason).inc()


class ExportLog:
    """One JSON log line per export: tenant, counts, latency."""

    def exported(self, outcome: ExportOutcome, seconds: float) -> None:
        logger.info(
            "export",
            extra={
                "tenant_id": outcome.tenant_id,
                "transport": outcome.transport,
                "spans": outcome.spans,
                "rejected": outcome.rejected,
                "inserted": outcome.inserted,
                "duplicates": outcome.duplicates,
                "unattributed": outcome.unattributed,
                "latency_ms": round(seconds * 1000, 3),
            },
        )

    def refused(self, transport: str, reason: str) -> None:
        logger.warning("export refused", extra={"transport": transport, "reason": reason})
