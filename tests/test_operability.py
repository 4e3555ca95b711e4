"""What ops teams rely on: `/healthz`, `/readyz`, Prometheus `/metrics`, and the JSON log
line per export — which never contains a key.

Everything runs against `agentmeter serve` (the `server` fixture) on SQLite and PostgreSQL,
fed by the SDK's real OTLP/gRPC and OTLP/HTTP exporters and by `UsageServiceClient`.

`/readyz` answering 503 is checked on PostgreSQL only, by making the database refuse
connections. On SQLite there is no reliable way: `SELECT 1` never reads the database file,
the pool keeps its open connections (which keep a deleted or replaced file's inode), and
the tests run as root, so an unreadable directory does not stop them either.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.types import AttributeValue
from prometheus_client.parser import text_string_to_metric_families

from exporter.usage_service import UsageRefusedError, UsageServiceClient
from otel_processor.usage import UsageBatch, UsageRecord, WriteResult
from tests.conftest import RunningServer
from tests.genai_spans import CACHE_READ, CUSTOMER, INPUT, OPERATION, OUTPUT, REQUEST_MODEL
from tests.polling import wait_until
from tests.sdk_exporters import export_once, make_exporter
from tests.store_outages import postgresql_refusing_connections


@pytest.fixture
def postgresql_only(database_url: str) -> None:
    """Skip on SQLite; listed before `server`, it skips before a server is started."""
    if not database_url.startswith("postgresql"):
        pytest.skip("no reliable way to make SQLite unreachable (see the module docstring)")


def get(
    server: RunningServer, path: str, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    return httpx.get(f"{server.api_url}{path}", headers=headers, timeout=30)


# --- Health ------------------------------------------------------------------------------------


class TestHealth:
    def test_healthz_and_readyz_answer_without_credentials(self, server: RunningServer) -> None:
        alive = get(server, "/healthz")
        ready = get(server, "/readyz")

        assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})

    def test_readyz_is_503_while_postgresql_refuses_connections(
        self, postgresql_only: None, server: RunningServer, database_url: str
    ) -> None:
        with postgresql_refusing_connections(database_url):
            unready = get(server, "/readyz")
            alive = get(server, "/healthz")

        assert unready.status_code == 503, unready.text
        assert unready.json() == {"error": {"code": "unavailable", "message": "store unreachable"}}
        assert alive.status_code == 200
        wait_until(
            lambda: get(server, "/readyz").status_code == 200, timeout=30, what="ready again"
        )


# --- Exports to observe --------------------------------------------------------------------


def finished_spans(spans: Sequence[tuple[str, dict[str, AttributeValue]]]) -> list[ReadableSpan]:
    """Finished SDK spans, each the root of its own trace."""
    provider = TracerProvider(resource=Resource.create({"service.name": "ops-check"}))
    finished = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(finished))
    tracer = provider.get_tracer("agentmeter.tests.operability")
    for name, attributes in spans:
        tracer.start_span(name, attributes=attributes).end()
    provider.shutdown()
    return list(finished.get_finished_spans())


def chat(
    tokens_in: int, tokens_out: int, extra: Mapping[str, AttributeValue] | None = None
) -> dict[str, AttributeValue]:
    return {
        OPERATION: "chat",
        REQUEST_MODEL: "gpt-4o",
        INPUT: tokens_in,
        OUTPUT: tokens_out,
        **(extra or {}),
    }


def grpc_batch() -> list[ReadableSpan]:
    """4 spans: 2 valid (one attributed, one not: 2 records each), 2 refused."""
    return finished_spans(
        [
            ("chat", chat(100, 10, {CUSTOMER: "acme"})),
            ("chat", chat(5, 1)),
            ("chat", chat(-1, 1, {CUSTOMER: "acme"})),  # invalid_quantity
            ("chat", chat(10, 1, {CACHE_READ: 20, CUSTOMER: "acme"})),  # inconsistent_tokens
        ]
    )


def http_batch() -> list[ReadableSpan]:
    return finished_spans([("chat", chat(7, 3, {CUSTOMER: "globex"}))])


def usage_service_batch() -> UsageBatch:
    record = UsageRecord(
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        meter="web_searches",
        quantity=2,
        customer_id="acme",
        time_unix_nano=1_767_225_600_000_000_000,
        source="custom",
    )
    return UsageBatch(records=[record], trace_customers={record.trace_id: "acme"})


def grpc_export(server: RunningServer, spans: Sequence[ReadableSpan], key: str) -> SpanExportResult:
    return export_once(make_exporter("grpc", server, headers=bearer(key)), spans)


def http_export(server: RunningServer, spans: Sequence[ReadableSpan], key: str) -> SpanExportResult:
    return export_once(make_exporter("http", server, headers=bearer(key)), spans)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def usage_service_export(server: RunningServer, batch: UsageBatch, key: str) -> WriteResult:
    client = UsageServiceClient(server.grpc_target, key)
    try:
        return client.write("", batch)
    finally:
        client.close()


@dataclass(frozen=True)
class Exported:
    """Expected fields of the log line of one accepted export."""

    transport: str
    spans: int
    rejected: int
    inserted: int
    duplicates: int
    unattributed: int


def export_everything(server: RunningServer) -> list[Exported]:
    """Accepted exports on every transport, a resend, and refused ones (bad keys)."""
    key = server.tenant.ingest_key
    spans = grpc_batch()
    assert grpc_export(server, spans, key) is SpanExportResult.SUCCESS
    assert grpc_export(server, spans, key) is SpanExportResult.SUCCESS  # all duplicates
    assert http_export(server, http_batch(), key) is SpanExportResult.SUCCESS
    assert usage_service_export(server, usage_service_batch(), key) == WriteResult(1, 0)
    wrong = f"am_ingest_{secrets.token_urlsafe(32)}"
    assert grpc_export(server, spans, wrong) is SpanExportResult.FAILURE
    assert http_export(server, spans, wrong) is SpanExportResult.FAILURE
    with pytest.raises(UsageRefusedError):
        usage_service_export(server, usage_service_batch(), wrong)
    return [
        Exported("grpc", spans=4, rejected=2, inserted=4, duplicates=0, unattributed=2),
        Exported("grpc", spans=4, rejected=2, inserted=0, duplicates=4, unattributed=2),
        Exported("http", spans=1, rejected=0, inserted=2, duplicates=0, unattributed=0),
        Exported("usage_service", spans=1, rejected=0, inserted=1, duplicates=0, unattributed=0),
    ]


# --- Metrics -------------------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: RunningServer) -> Samples:
    response = get(server, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


class TestMetrics:
    def test_prometheus_text_with_zero_counters_before_any_export(
        self, server: RunningServer
    ) -> None:
        samples = scrape(server)

        for name in (
            "agentmeter_usage_records_inserted_total",
            "agentmeter_usage_records_duplicate_total",
            "agentmeter_usage_records_unattributed_total",
        ):
            assert value(samples, name) == 0
        assert series(samples, "agentmeter_spans_received_total") == {}

    def test_counts_after_exports_on_every_transport(self, server: RunningServer) -> None:
        export_everything(server)

        samples = scrape(server)

        assert series(samples, "agentmeter_spans_received_total") == {
            labels(transport="grpc"): 8,
            labels(transport="http"): 1,
            labels(transport="usage_service"): 1,
        }
        assert value(samples, "agentmeter_usage_records_inserted_total") == 4 + 2 + 1
        assert value(samples, "agentmeter_usage_records_duplicate_total") == 4
        assert series(samples, "agentmeter_spans_rejected_total") == {
            labels(reason="invalid_quantity"): 2,
            labels(reason="inconsistent_tokens"): 2,
        }
        assert value(samples, "agentmeter_usage_records_unattributed_total") == 2 + 2
        assert series(samples, "agentmeter_exports_refused_total") == {
            labels(transport="grpc", reason="unauthenticated"): 1,
            labels(transport="http", reason="unauthenticated"): 1,
            labels(transport="usage_service", reason="unauthenticated"): 1,
        }
        latency = "agentmeter_export_latency_seconds"
        for transport, count in (("grpc", 2), ("http", 1), ("usage_service", 1)):
            assert value(samples, f"{latency}_count", transport=transport) == count
            assert value(samples, f"{latency}_sum", transport=transport) > 0
            buckets = {
                dict(key)["le"]: v
                for key, v in series(samples, f"{latency}_bucket").items()
                if dict(key)["transport"] == transport
            }
            assert buckets["+Inf"] == count
            ordered = sorted(buckets.items(), key=lambda item: float(item[0]))
            assert [v for _, v in ordered] == sorted(buckets.values())


# --- The export log ------------------------------------------------------------------------------


def log_text(server: RunningServer) -> str:
    assert server.log_path is not None
    return server.log_path.read_text()


def log_lines(server: RunningServer) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log_text(server).splitlines() if line.startswith("{")]
    assert all(isinstance(line, dict) for line in lines)
    return lines


class TestExportLog:
    def test_one_json_line_per_export_with_tenant_counts_and_latency(
        self, server: RunningServer
    ) -> None:
        expected = export_everything(server)

        lines = log_lines(server)
        exports = [line for line in lines if line.get("message") == "export"]
        assert [
            Exported(
                line["transport"],
                spans=line["spans"],
                rejected=line["rejected"],
                inserted=line["inserted"],
                duplicates=line["duplicates"],
                unattributed=line["unattributed"],
            )
            for line in exports
        ] == expected
        for line in exports:
            assert line["tenant_id"] == server.tenant.tenant_id
            assert line["logger"] == "agentmeter.ingest"
            assert isinstance(line["latency_ms"], int | float)
            assert line["latency_ms"] >= 0
        refused = [line for line in lines if line.get("message") == "export refused"]
        assert sorted((line["transport"], line["reason"]) for line in refused) == [
            ("grpc", "unauthenticated"),
            ("http", "unauthenticated"),
            ("usage_service", "unauthenticated"),
        ]

    def test_no_key_ever_reaches_the_log(self, server: RunningServer) -> None:
        tenant = server.tenant
        wrong_ingest = f"am_ingest_{secrets.token_urlsafe(32)}"
        wrong_admin = f"am_admin_{secrets.token_urlsafe(32)}"
        keys_sent = [tenant.ingest_key, tenant.admin_key, wrong_ingest, wrong_admin]
        spans = grpc_batch()
        batch = usage_service_batch()

        # Ingest with the right key, a wrong one, and the admin key, on every transport.
        for key in (tenant.ingest_key, wrong_ingest, tenant.admin_key):
            grpc_export(server, spans, key)
            http_export(server, spans, key)
            with contextlib.suppress(UsageRefusedError):
                usage_service_export(server, batch, key)
        # The API with the right key, a wrong one, the ingest key, other schemes, and a key
        # where none belongs (a query parameter, which the API refuses as unknown).
        for headers in (
            server.admin_headers,
            {"authorization": f"Bearer {wrong_admin}"},
            {"authorization": f"Bearer {tenant.ingest_key}"},
            {"authorization": f"Basic {tenant.admin_key}"},
            {"authorization": tenant.admin_key},
        ):
            get(server, "/api/v1/usage", headers)
            get(server, "/api/v1/customers/acme", headers)
        get(server, f"/api/v1/usage?api_key={tenant.admin_key}", server.admin_headers)
        httpx.post(
            f"{server.api_url}/api/v1/customers",
            json={"id": "acme", "name": tenant.ingest_key},
            headers={"authorization": f"Bearer {wrong_admin}"},
            timeout=30,
        )

        log = log_text(server)
        assert log_lines(server), "the server logged nothing: the check would be vacuous"
        for key in keys_sent:
            assert key not in log
            # Nor a recognisable part of one (a truncated or wrapped copy).
            assert key[-24:] not in log
