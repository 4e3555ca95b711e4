"""`UsageSpanExporter`: in-process billing of finished spans, to the SQL store directly or to
a remote AgentMeter over `UsageService` — the same records as the OTLP path, exactly once.

Spans come from a real SDK `TracerProvider` with `CustomerSpanProcessor`. The OTLP path
is the SDK's own OTLP/gRPC exporter; the remote path is `UsageServiceClient` against a real
`agentmeter serve` (the `server` fixture); the direct path is `SqlUsageSink` on SQLite and
PostgreSQL. Rows are read back from the `usage_records` table.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Engine, select

from agentmeter.tables import UsageRow
from agentmeter.tenants import create_tenant
from exporter import UsageSpanExporter
from exporter.span_exporter import spans_to_usage
from exporter.sql_sink import SqlUsageSink
from exporter.usage_service import (
    USAGE_SERVICE,
    UsageServiceClient,
    extract_usage_request,
    record_from_proto,
    record_to_proto,
)
from otel_processor import CustomerSpanProcessor, customer, step
from otel_processor.otlp import InvalidRequestError, extract_usage
from otel_processor.usage import (
    MAX_QUANTITY,
    SOURCE_CUSTOM,
    SOURCE_LLM,
    SOURCE_TOOL,
    Quantity,
    UsageBatch,
    UsageRecord,
    UsageSink,
    WriteResult,
    source_of,
    to_micros,
)
from proto.agentmeter.v1 import usage_pb2
from tests.conftest import RunningServer
from tests.genai_spans import (
    AGENT_NAME,
    CLAUDE_CALL,
    GPT4O_CALL,
    GPT4O_MINI_CALL,
    INPUT,
    OPERATION,
    OUTPUT,
    REQUEST_MODEL,
    SERVICE,
    WEB_SEARCH_CALL,
    code_run_call,
)
from tests.polling import wait_until
from tests.sdk_exporters import export_once, make_exporter

END_TIME = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

# Every column of a stored usage row but its key, tenant and arrival time.
ROW_COLUMNS = (
    "trace_id",
    "span_id",
    "meter",
    "quantity_micros",
    "customer_id",
    "time_unix_nano",
    "provider",
    "model",
    "operation",
    "agent_name",
    "step",
    "tool",
    "service_name",
    "source",
)
Row = tuple[Any, ...]


# --- Spans of a small agent run, and the rows they must become ----------------------------


def agent_spans() -> list[ReadableSpan]:
    """Finished spans of four traces, from a real SDK provider.

    A: `customer("acme")` around an agent span and its children (LLM calls in steps, a tool).
    B: the customer named only on the agent span, with the fallback key `customer.id`.
    C: an LLM call of no customer. D: a span with invalid usage (refused on every path).
    """
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    finished = InMemorySpanExporter()
    provider.add_span_processor(CustomerSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(finished))
    tracer = provider.get_tracer("agentmeter.tests.span_exporter")
    with (
        customer("acme"),
        tracer.start_as_current_span(
            "invoke_agent support",
            attributes={OPERATION: "invoke_agent", AGENT_NAME: "support", INPUT: 2000},
        ),
    ):
        with step("plan"):
            tracer.start_span("chat gpt-4o", attributes=GPT4O_CALL).end(END_TIME)
        tracer.start_span("execute_tool web_search", attributes=WEB_SEARCH_CALL).end(END_TIME + 1)
        with step("answer"):
            tracer.start_span("chat claude-sonnet-4", attributes=CLAUDE_CALL).end(END_TIME + 2)
    with tracer.start_as_current_span(
        "invoke_agent coder",
        attributes={OPERATION: "invoke_agent", AGENT_NAME: "coder", "customer.id": "globex"},
    ):
        tracer.start_span("chat gpt-4o-mini", attributes=GPT4O_MINI_CALL).end(END_TIME + 3)
        for seconds in (12.5, 0.25):
            tracer.start_span("execute_tool run_code", attributes=code_run_call(seconds)).end(
                END_TIME + 4
            )
    tracer.start_span(
        "chat gpt-4o-mini",
        attributes={OPERATION: "chat", REQUEST_MODEL: "gpt-4o-mini", INPUT: 7, OUTPUT: 3},
    ).end(END_TIME + 5)
    with customer("acme"):
        tracer.start_span("chat broken", attributes={OPERATION: "chat", INPUT: -5}).end()
    provider.shutdown()
    return list(finished.get_finished_spans())


SPANS_REFUSED = 1  # "chat broken"

# (customer, meter, quantity, model, step, tool, source) of every row the spans must give.
ExpectedRow = tuple[str, str, int | Decimal, str, str, str, str]
EXPECTED_ROWS: Counter[ExpectedRow] = Counter(
    [
        ("acme", "input_tokens", 1200, "gpt-4o-2024-08-06", "plan", "", SOURCE_LLM),
        ("acme", "cache_read_tokens", 200, "gpt-4o-2024-08-06", "plan", "", SOURCE_LLM),
        ("acme", "output_tokens", 300, "gpt-4o-2024-08-06", "plan", "", SOURCE_LLM),
        ("acme", "output_reasoning_tokens", 50, "gpt-4o-2024-08-06", "plan", "", SOURCE_LLM),
        ("acme", "tool_calls", 1, "", "execute_tool web_search", "web_search", SOURCE_TOOL),
        ("acme", "web_searches", 3, "", "execute_tool web_search", "web_search", SOURCE_CUSTOM),
        ("acme", "input_tokens", 800, "claude-sonnet-4", "answer", "", SOURCE_LLM),
        ("acme", "cache_write_tokens", 100, "claude-sonnet-4", "answer", "", SOURCE_LLM),
        ("acme", "output_tokens", 150, "claude-sonnet-4", "answer", "", SOURCE_LLM),
        ("globex", "input_tokens", 64, "gpt-4o-mini", "chat gpt-4o-mini", "", SOURCE_LLM),
        ("globex", "output_tokens", 16, "gpt-4o-mini", "chat gpt-4o-mini", "", SOURCE_LLM),
        *[
            ("globex", "tool_calls", 1, "", "execute_tool run_code", "run_code", SOURCE_TOOL)
            for _ in range(2)
        ],
        (
            "globex",
            "sandbox_seconds",
            Decimal("12.5"),
            "",
            "execute_tool run_code",
            "run_code",
            SOURCE_CUSTOM,
        ),
        (
            "globex",
            "sandbox_seconds",
            Decimal("0.25"),
            "",
            "execute_tool run_code",
            "run_code",
            SOURCE_CUSTOM,
        ),
        ("", "input_tokens", 7, "gpt-4o-mini", "chat gpt-4o-mini", "", SOURCE_LLM),
        ("", "output_tokens", 3, "gpt-4o-mini", "chat gpt-4o-mini", "", SOURCE_LLM),
    ]
)
EXPECTED_RECORDS = sum(EXPECTED_ROWS.values())


def stored_rows(engine: Engine, tenant_id: str) -> list[Row]:
    """Every usage row of `tenant_id` (all of `ROW_COLUMNS`), sorted."""
    table = UsageRow.__table__
    query = select(*(table.c[name] for name in ROW_COLUMNS)).where(table.c.tenant_id == tenant_id)
    with engine.connect() as connection:
        return sorted(tuple(row) for row in connection.execute(query))


def billed(rows: Sequence[Row]) -> Counter[tuple[Any, ...]]:
    """Rows as (customer, meter, quantity, model, step, tool, source), like `EXPECTED_ROWS`."""
    index = {name: n for n, name in enumerate(ROW_COLUMNS)}
    projected: Counter[tuple[Any, ...]] = Counter()
    for row in rows:
        assert row[index["service_name"]] == SERVICE
        projected[
            (
                row[index["customer_id"]],
                row[index["meter"]],
                Decimal(row[index["quantity_micros"]]).scaleb(-6).normalize(),
                row[index["model"]],
                row[index["step"]],
                row[index["tool"]],
                row[index["source"]],
            )
        ] += 1
    return projected


def expected_billed() -> Counter[tuple[Any, ...]]:
    return Counter(
        {
            (c, meter, Decimal(q).normalize(), *rest): n
            for (c, meter, q, *rest), n in EXPECTED_ROWS.items()
        }
    )


# --- Sinks and endpoints for the exporter -------------------------------------------------


class CountingSink:
    """A `UsageSink` that passes writes on and remembers how each attempt ended."""

    def __init__(self, sink: UsageSink) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self._outcomes: list[str] = []
        self.messages: list[str] = []

    def write(self, tenant_id: str, batch: UsageBatch) -> WriteResult:
        try:
            result = self._sink.write(tenant_id, batch)
        except Exception as error:
            with self._lock:
                self._outcomes.append(type(error).__name__)
                self.messages.append(str(error))
            raise
        with self._lock:
            self._outcomes.append("ok")
        return result

    @property
    def outcomes(self) -> list[str]:
        with self._lock:
            return list(self._outcomes)

    def close(self) -> None:
        close = getattr(self._sink, "close", None)
        if callable(close):
            close()


class FailingSink:
    """A `UsageSink` with a bug: every write raises something no exporter expects."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, tenant_id: str, batch: UsageBatch) -> WriteResult:
        self.writes += 1
        raise RuntimeError("bug in the sink")


@pytest.fixture
def nothing_listening() -> Iterator[str]:
    """A local gRPC target where connections are refused: a port bound but not listening,
    so no other process can take it during the test."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def otlp_export(server: RunningServer, spans: Sequence[ReadableSpan]) -> SpanExportResult:
    """The OTLP path: the SDK's own OTLP/gRPC exporter with the tenant's ingest key."""
    return export_once(make_exporter("grpc", server), spans)


def remote_exporter(target: str, ingest_key: str, **options: Any) -> UsageSpanExporter:
    return UsageSpanExporter(UsageServiceClient(target, ingest_key), **options)


class ExportInThread:
    """`exporter.export(spans)` running in its own thread (the retry loop blocks)."""

    def __init__(self, exporter: UsageSpanExporter, spans: Sequence[ReadableSpan]) -> None:
        self.result: SpanExportResult | None = None
        self.raised: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, args=(exporter, spans), daemon=True)
        self._thread.start()

    def _run(self, exporter: UsageSpanExporter, spans: Sequence[ReadableSpan]) -> None:
        started = time.monotonic()
        try:
            self.result = exporter.export(spans)
        except BaseException as error:
            self.raised = error
        self.seconds = time.monotonic() - started

    def join(self, timeout: float) -> SpanExportResult | None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"export still running after {timeout} s"
        assert self.raised is None, f"export raised {self.raised!r}"
        return self.result


# --- span → usage, without I/O --------------------------------------------------------------


class TestSpansToUsage:
    def test_same_usage_as_the_otlp_receiver_extracts(self) -> None:
        spans = agent_spans()

        in_process = spans_to_usage(spans)
        over_otlp = extract_usage(encode_spans(spans))

        assert in_process.records == over_otlp.records
        assert in_process.trace_customers == over_otlp.trace_customers
        assert (in_process.spans, in_process.rejected) == (over_otlp.spans, over_otlp.rejected)
        assert (
            in_process.rejected_by_reason
            == over_otlp.rejected_by_reason
            == {"invalid_quantity": SPANS_REFUSED}
        )
        assert len(in_process.records) == EXPECTED_RECORDS

    def test_customer_keys_are_configurable(self) -> None:
        spans = agent_spans()

        extraction = spans_to_usage(spans, customer_keys=("customer.id",))

        # Only trace B names its customer under `customer.id`.
        assert set(extraction.trace_customers.values()) == {"globex"}
        assert {r.customer_id for r in extraction.records} == {""}


# --- UsageSpanExporter → SqlUsageSink, on both backends -------------------------------------


class TestDirectToTheDatabase:
    def test_stores_the_usage_of_the_spans(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "direct")
        exporter = UsageSpanExporter(SqlUsageSink(engine), tenant_id=tenant.tenant_id)

        assert exporter.export(agent_spans()) is SpanExportResult.SUCCESS

        assert billed(stored_rows(engine, tenant.tenant_id)) == expected_billed()

    def test_span_by_span_export_attributes_children_ended_before_their_agent_span(
        self, engine: Engine
    ) -> None:
        """Children end (and are exported) before the agent span that names the customer;
        the store attributes them when it arrives."""
        tenant = create_tenant(engine, "direct")
        exporter = UsageSpanExporter(SqlUsageSink(engine), tenant_id=tenant.tenant_id)

        for span in agent_spans():
            assert exporter.export([span]) is SpanExportResult.SUCCESS

        assert billed(stored_rows(engine, tenant.tenant_id)) == expected_billed()

    def test_same_spans_again_are_stored_once(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "direct")
        spans = agent_spans()
        exporter = UsageSpanExporter(SqlUsageSink(engine), tenant_id=tenant.tenant_id)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        first = stored_rows(engine, tenant.tenant_id)

        assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert exporter.export(spans[2:5]) is SpanExportResult.SUCCESS

        assert stored_rows(engine, tenant.tenant_id) == first

    def test_without_tenant_is_failure_not_an_exception(self, engine: Engine) -> None:
        exporter = UsageSpanExporter(SqlUsageSink(engine))

        assert exporter.export(agent_spans()) is SpanExportResult.FAILURE


# --- The three paths store the same records, once -------------------------------------------


class TestSameRecordsOnEveryPath:
    def test_otlp_usage_service_and_direct_sql_store_identical_rows(
        self, server: RunningServer, engine: Engine
    ) -> None:
        spans = agent_spans()
        remote = create_tenant(engine, "usage service")
        direct = create_tenant(engine, "direct")

        assert otlp_export(server, spans) is SpanExportResult.SUCCESS
        exporter = remote_exporter(server.grpc_target, remote.ingest_key)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
        exporter = UsageSpanExporter(SqlUsageSink(engine), tenant_id=direct.tenant_id)
        assert exporter.export(spans) is SpanExportResult.SUCCESS

        over_otlp = stored_rows(engine, server.tenant.tenant_id)
        assert billed(over_otlp) == expected_billed()
        assert stored_rows(engine, remote.tenant_id) == over_otlp
        assert stored_rows(engine, direct.tenant_id) == over_otlp

    def test_usage_service_after_otlp_is_all_duplicates(
        self, server: RunningServer, engine: Engine
    ) -> None:
        spans = agent_spans()
        assert otlp_export(server, spans) is SpanExportResult.SUCCESS
        before = stored_rows(engine, server.tenant.tenant_id)
        client = UsageServiceClient(server.grpc_target, server.tenant.ingest_key)

        result = client.write("", spans_to_usage(spans).batch)
        exporter = UsageSpanExporter(client)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()

        assert result == WriteResult(inserted=0, duplicates=EXPECTED_RECORDS)
        assert stored_rows(engine, server.tenant.tenant_id) == before

    def test_otlp_and_direct_sql_after_usage_service_store_nothing_new(
        self, server: RunningServer, engine: Engine
    ) -> None:
        spans = agent_spans()
        exporter = remote_exporter(server.grpc_target, server.tenant.ingest_key)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
        before = stored_rows(engine, server.tenant.tenant_id)
        assert billed(before) == expected_billed()

        assert otlp_export(server, spans) is SpanExportResult.SUCCESS
        direct = UsageSpanExporter(SqlUsageSink(engine), tenant_id=server.tenant.tenant_id)
        assert direct.export(spans) is SpanExportResult.SUCCESS

        assert stored_rows(engine, server.tenant.tenant_id) == before


# --- Retries ---------------------------------------------------------------------------------


class TestRetries:
    def test_nothing_listening_is_failure_within_about_the_timeout(
        self, nothing_listening: str
    ) -> None:
        sink = CountingSink(UsageServiceClient(nothing_listening, "am_ingest_unused", timeout=1))
        exporter = UsageSpanExporter(sink, timeout=1.5)

        started = time.monotonic()
        result = exporter.export(agent_spans())
        seconds = time.monotonic() - started
        exporter.shutdown()

        assert result is SpanExportResult.FAILURE
        assert len(sink.outcomes) >= 2, "gave up without retrying"
        assert set(sink.outcomes) == {"StoreUnavailableError"}
        assert seconds < 1.5 + 5, f"took {seconds:.1f} s with timeout=1.5"

    def test_silent_peer_is_failure_within_about_the_timeout(self) -> None:
        # Listening, never accepting: TCP connects (the kernel's backlog), gRPC never answers.
        silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        exporter = remote_exporter(target, "am_ingest_unused", timeout=1)
        try:
            started = time.monotonic()
            result = exporter.export(agent_spans())
            seconds = time.monotonic() - started
        finally:
            exporter.shutdown()
            silent.close()

        assert result is SpanExportResult.FAILURE
        assert seconds < 1 + 5, f"took {seconds:.1f} s with timeout=1"

    def test_shutdown_ends_the_retries(self, nothing_listening: str) -> None:
        sink = CountingSink(UsageServiceClient(nothing_listening, "am_ingest_unused", timeout=1))
        exporter = UsageSpanExporter(sink, timeout=120)
        export = ExportInThread(exporter, agent_spans())
        wait_until(lambda: len(sink.outcomes) >= 2, timeout=30, what="a retry")

        exporter.shutdown()

        assert export.join(timeout=30) is SpanExportResult.FAILURE
        assert exporter.export(agent_spans()) is SpanExportResult.FAILURE

    def test_server_back_within_the_timeout_is_success(
        self, server: RunningServer, engine: Engine
    ) -> None:
        sink = CountingSink(UsageServiceClient(server.grpc_target, server.tenant.ingest_key))
        exporter = UsageSpanExporter(sink, timeout=90)
        server.kill()
        export = ExportInThread(exporter, agent_spans())
        wait_until(lambda: len(sink.outcomes) >= 2, timeout=30, what="a retry")

        server.start()

        assert export.join(timeout=120) is SpanExportResult.SUCCESS
        exporter.shutdown()
        outcomes = sink.outcomes
        assert outcomes[-1] == "ok"
        assert set(outcomes[:-1]) == {"StoreUnavailableError"}
        assert billed(stored_rows(engine, server.tenant.tenant_id)) == expected_billed()

    @pytest.mark.parametrize(
        "key",
        [
            pytest.param("am_ingest_not-a-key", id="unknown-key"),
            pytest.param("admin", id="admin-key"),
        ],
    )
    def test_invalid_ingest_key_is_failure_without_retrying(
        self, server: RunningServer, engine: Engine, key: str
    ) -> None:
        ingest_key = server.tenant.admin_key if key == "admin" else key
        sink = CountingSink(UsageServiceClient(server.grpc_target, ingest_key))
        exporter = UsageSpanExporter(sink, timeout=60)

        started = time.monotonic()
        result = exporter.export(agent_spans())
        seconds = time.monotonic() - started
        exporter.shutdown()

        assert result is SpanExportResult.FAILURE
        assert sink.outcomes == ["UsageRefusedError"]
        assert sink.messages[0].startswith("UNAUTHENTICATED: ")
        assert seconds < 30, f"took {seconds:.1f} s"
        assert stored_rows(engine, server.tenant.tenant_id) == []

    def test_a_bug_in_the_sink_is_failure_not_an_exception(self) -> None:
        sink = FailingSink()
        exporter = UsageSpanExporter(sink, timeout=60)

        assert exporter.export(agent_spans()) is SpanExportResult.FAILURE
        assert sink.writes == 1

    def test_spans_without_usage_or_customer_never_reach_the_sink(self) -> None:
        provider = TracerProvider()
        finished = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(finished))
        with provider.get_tracer("t").start_as_current_span("http GET /"):
            pass
        sink = FailingSink()

        result = UsageSpanExporter(sink).export(finished.get_finished_spans())

        assert result is SpanExportResult.SUCCESS
        assert sink.writes == 0


# --- Invalid records on UsageService ----------------------------------------------------------

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


def wire_record(**overrides: Any) -> usage_pb2.UsageRecord:
    """A valid UsageRecord message, with `overrides`."""
    fields: dict[str, Any] = {
        "trace_id": TRACE,
        "span_id": SPAN,
        "meter": "input_tokens",
        "quantity": "1200",
        "customer_id": "acme",
        "time_unix_nano": END_TIME,
        "provider": "openai",
        "model": "gpt-4o",
        "operation": "chat",
        "step": "plan",
        "service_name": SERVICE,
        "source": SOURCE_LLM,
    }
    fields.update(overrides)
    return usage_pb2.UsageRecord(**fields)


def request_body(
    records: Sequence[usage_pb2.UsageRecord],
    trace_customers: Sequence[tuple[str, str]] = (),
) -> bytes:
    request = usage_pb2.ExportUsageRequest(
        records=records,
        trace_customers=[
            usage_pb2.TraceCustomer(trace_id=t, customer_id=c) for t, c in trace_customers
        ],
    )
    body: bytes = request.SerializeToString()
    return body


INVALID_RECORDS = [
    pytest.param({"trace_id": "not-hex-" * 4}, "invalid_id", id="trace-id-not-hex"),
    pytest.param({"trace_id": TRACE.upper()}, "invalid_id", id="trace-id-uppercase"),
    pytest.param({"trace_id": TRACE[:-2]}, "invalid_id", id="trace-id-short"),
    pytest.param({"trace_id": "0" * 32}, "invalid_id", id="trace-id-zero"),
    pytest.param({"span_id": "xyz" + SPAN[3:]}, "invalid_id", id="span-id-not-hex"),
    pytest.param({"span_id": SPAN + "00"}, "invalid_id", id="span-id-long"),
    pytest.param({"span_id": "0" * 16}, "invalid_id", id="span-id-zero"),
    pytest.param({"quantity": "abc"}, "invalid_quantity", id="quantity-abc"),
    pytest.param({"quantity": ""}, "invalid_quantity", id="quantity-empty"),
    pytest.param({"quantity": "-1"}, "invalid_quantity", id="quantity-negative"),
    pytest.param({"quantity": "-0.5"}, "invalid_quantity", id="quantity-negative-fraction"),
    pytest.param({"quantity": "NaN"}, "invalid_quantity", id="quantity-nan"),
    pytest.param({"quantity": "Infinity"}, "invalid_quantity", id="quantity-infinity"),
    pytest.param({"quantity": "1,200"}, "invalid_quantity", id="quantity-thousands-separator"),
    pytest.param({"quantity": str(MAX_QUANTITY + 1)}, "invalid_quantity", id="quantity-huge"),
    pytest.param({"meter": ""}, "invalid_meter", id="meter-empty"),
    pytest.param({"meter": "Input-Tokens"}, "invalid_meter", id="meter-malformed"),
    pytest.param({"time_unix_nano": 0}, "missing_time", id="no-time"),
    pytest.param({"source": "gpu"}, "invalid_dimension", id="unknown-source"),
    pytest.param({"source": "custom"}, "invalid_dimension", id="tokens-not-from-an-llm"),
    pytest.param({"quantity": "12.5"}, "invalid_quantity", id="part-of-a-token"),
    pytest.param(
        {"meter": "tool_calls", "source": SOURCE_LLM}, "invalid_dimension", id="tool-calls-as-llm"
    ),
    pytest.param({"model": "m" * 257}, "invalid_dimension", id="model-too-long"),
    pytest.param({"customer_id": "c" * 257}, "invalid_dimension", id="customer-too-long"),
    pytest.param({"customer_id": "a\x00b"}, "invalid_dimension", id="customer-with-nul"),
    pytest.param({"time_unix_nano": 2**63}, "invalid_time", id="time-past-int64"),
    pytest.param({"time_unix_nano": 2**64 - 1}, "invalid_time", id="time-max-fixed64"),
]

# Quantities are stored in micro-units: more than 6 decimal places are not refused but
# rounded half-to-even to 6 places (so a tiny positive quantity can become 0), and whole
# results become ints.
ACCEPTED_QUANTITIES = [
    pytest.param("1200", 1200, id="whole"),
    pytest.param("12.50", Decimal("12.5"), id="trailing-zero"),
    pytest.param("0.000001", Decimal("0.000001"), id="one-micro"),
    pytest.param("1.2345678", Decimal("1.234568"), id="7-places-rounded"),
    pytest.param("1.0000015", Decimal("1.000002"), id="half-rounds-to-even-up"),
    pytest.param("1.0000005", 1, id="half-rounds-to-even-down"),
    pytest.param("0.0000004", 0, id="below-a-micro-becomes-zero"),
    pytest.param("0", 0, id="zero"),
    pytest.param(str(MAX_QUANTITY), MAX_QUANTITY, id="largest"),
]


class TestUsageServiceOverTheWire:
    def test_record_time_past_int64_is_refused_alone(
        self, server: RunningServer, engine: Engine
    ) -> None:
        # Issue 8, defect 1: UsageService answered UNKNOWN and leaked "OverflowError".
        body = request_body(
            [wire_record(span_id="00000000000000aa", time_unix_nano=2**64 - 1), wire_record()]
        )
        with grpc.insecure_channel(server.grpc_target) as channel:
            export = channel.unary_unary(
                f"/{USAGE_SERVICE}/Export", request_serializer=None, response_deserializer=None
            )
            raw = export(body, metadata=(("authorization", f"Bearer {server.tenant.ingest_key}"),))
        response = usage_pb2.ExportUsageResponse.FromString(raw)

        assert (response.inserted, response.duplicates, response.rejected) == (1, 0, 1)
        assert "past year 2262" in response.error_message
        assert [row[1] for row in stored_rows(engine, server.tenant.tenant_id)] == [SPAN]


class TestExtractUsageRequest:
    @pytest.mark.parametrize(("overrides", "reason"), INVALID_RECORDS)
    def test_invalid_record_is_counted_and_the_valid_ones_kept(
        self, overrides: dict[str, Any], reason: str
    ) -> None:
        bad = wire_record(**overrides)
        good = wire_record(span_id="00000000000000aa")

        extraction = extract_usage_request(request_body([bad, good]), ())

        assert [r.span_id for r in extraction.records] == ["00000000000000aa"]
        assert (extraction.spans, extraction.rejected) == (2, 1)
        assert extraction.rejected_by_reason == {reason: 1}
        assert extraction.error_message().startswith(f"record {bad.span_id}/{bad.meter}: ")

    @pytest.mark.parametrize(("wire", "quantity"), ACCEPTED_QUANTITIES)
    def test_accepted_quantity_is_normalized(self, wire: str, quantity: Quantity) -> None:
        # A custom meter: token meters take whole tokens only.
        sent = wire_record(quantity=wire, meter="gpu_seconds", source="custom")
        extraction = extract_usage_request(request_body([sent]), ())

        assert extraction.rejected == 0
        [record] = extraction.records
        assert record.quantity == quantity
        assert type(record.quantity) is type(quantity)

    @pytest.mark.parametrize("wire", ["1e3", "1E-6", "+5", "-0", " 7 "])
    def test_quantity_outside_the_wire_syntax_is_refused(self, wire: str) -> None:
        extraction = extract_usage_request(request_body([wire_record(quantity=wire)]), ())

        assert extraction.rejected_by_reason == {"invalid_quantity": 1}

    def test_trace_customers_are_validated_and_the_first_one_wins(self) -> None:
        other = "1" * 32
        body = request_body(
            [],
            [
                (TRACE, "acme"),
                (TRACE, "globex"),
                (other, ""),  # no customer: nothing to record
                ("XYZ", "initech"),
                ("2" * 32, "c" * 257),
            ],
        )

        extraction = extract_usage_request(body, ())

        assert extraction.trace_customers == {TRACE: "acme"}
        assert extraction.rejected == 2
        assert extraction.rejected_by_reason == {"invalid_id": 1, "invalid_dimension": 1}

    @pytest.mark.parametrize(
        "overrides",
        [
            {"customer_id": "globex"},
            {"model": "gpt-4o-mini"},
            {"parent_span_id": "00000000000000ff"},
            {"response_id": "chatcmpl-2"},
        ],
    )
    def test_records_of_one_span_must_agree_on_what_the_span_holds(
        self, overrides: dict[str, Any]
    ) -> None:
        """The store keeps a span's customer, dimensions, parent and response id once: a
        later record of the span that says otherwise is refused, not silently rewritten."""
        first = wire_record(response_id="chatcmpl-1")
        other = wire_record(**{"meter": "output_tokens", "response_id": "chatcmpl-1", **overrides})
        tool = wire_record(meter="tool_calls", source="tool", quantity="1")

        extraction = extract_usage_request(request_body([first, other, tool]), ())

        assert [r.meter for r in extraction.records] == ["input_tokens", "tool_calls"]
        assert extraction.rejected_by_reason == {"invalid_dimension": 1}
        assert "differ from the span's first record" in extraction.error_message()

    def test_undecodable_body_is_an_invalid_request(self) -> None:
        with pytest.raises(InvalidRequestError, match="ExportUsageRequest"):
            extract_usage_request(b"\xff\xff\xff\xff", ())


def raw_export(
    server: RunningServer, body: bytes, key: str | None = None
) -> usage_pb2.ExportUsageResponse:
    """One `UsageService/Export` call with raw bytes, answering the decoded response."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        export = channel.unary_unary(
            f"/{USAGE_SERVICE}/Export", request_serializer=None, response_deserializer=None
        )
        answer = export(
            body,
            metadata=(("authorization", f"Bearer {key or server.tenant.ingest_key}"),),
            timeout=30,
        )
    assert isinstance(answer, bytes)
    return usage_pb2.ExportUsageResponse.FromString(answer)


class TestUsageServiceRefusals:
    def test_invalid_records_are_counted_and_the_valid_ones_stored(
        self, server: RunningServer, engine: Engine
    ) -> None:
        valid = [
            wire_record(span_id="00000000000000a1"),
            wire_record(
                span_id="00000000000000a2",
                quantity="1.2345678",
                meter="gpu_seconds",
                source="custom",
            ),
            wire_record(span_id="00000000000000a3", customer_id=""),
        ]
        invalid = [
            wire_record(span_id="00000000000000b1", trace_id="XYZ"),
            wire_record(span_id="00000000000000b2", quantity="abc"),
            wire_record(span_id="00000000000000b3", quantity="-3"),
            wire_record(span_id="not-hex"),
        ]
        body = request_body([*valid, *invalid])

        first = raw_export(server, body)
        again = raw_export(server, body)

        assert (first.inserted, first.duplicates, first.rejected) == (3, 0, 4)
        assert "record 00000000000000b1/input_tokens: trace_id" in first.error_message
        assert (again.inserted, again.duplicates, again.rejected) == (0, 3, 4)
        index = ROW_COLUMNS.index
        stored = {
            row[index("span_id")]: (row[index("quantity_micros")], row[index("customer_id")])
            for row in stored_rows(engine, server.tenant.tenant_id)
        }
        assert stored == {
            "00000000000000a1": (to_micros(1200), "acme"),
            "00000000000000a2": (1_234_568, "acme"),
            "00000000000000a3": (to_micros(1200), ""),
        }

    def test_undecodable_request_is_invalid_argument(self, server: RunningServer) -> None:
        with pytest.raises(grpc.RpcError) as raised:
            raw_export(server, b"\xff\xff\xff\xff")

        assert isinstance(raised.value, grpc.Call)
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT


# --- The wire form of a record ----------------------------------------------------------------

_HEX = "0123456789abcdef"
# Storable text: UTF-8 without NUL (which PostgreSQL text cannot hold).
_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


@st.composite
def usage_records(draw: st.DrawFn) -> UsageRecord:
    meter = draw(st.sampled_from(["input_tokens", "tool_calls", "gpu.seconds_2"]))
    micros = draw(st.integers(min_value=0, max_value=MAX_QUANTITY * 10**6))
    if meter == "input_tokens":  # tokens are whole
        micros -= micros % 10**6
    whole, fraction = divmod(micros, 10**6)
    quantity: Quantity = whole if not fraction else Decimal(micros).scaleb(-6).normalize()
    return UsageRecord(
        trace_id=draw(st.text(_HEX, min_size=31, max_size=31)) + "1",
        span_id=draw(st.text(_HEX, min_size=15, max_size=15)) + "1",
        meter=meter,
        quantity=quantity,
        customer_id=draw(_TEXT).strip(),
        time_unix_nano=draw(st.integers(min_value=1, max_value=2**63 - 1)),
        provider=draw(_TEXT),
        model=draw(_TEXT),
        operation=draw(_TEXT),
        agent_name=draw(_TEXT),
        step=draw(_TEXT),
        tool=draw(_TEXT),
        service_name=draw(_TEXT),
        source=source_of(meter),  # a record's source is its meter's
    )


class TestWireForm:
    @given(usage_records())
    def test_record_survives_the_wire_unchanged(self, record: UsageRecord) -> None:
        message = record_to_proto(record)
        decoded = usage_pb2.UsageRecord.FromString(message.SerializeToString())

        assert record_from_proto(decoded) == record
        assert "e" not in message.quantity.lower()
