"""End to end: real OTel SDK exporters and instrumentation → `agentmeter serve` → usage API.

Nothing here is faked on AgentMeter's side: spans leave a real `TracerProvider` through the
OTLP/gRPC and OTLP/HTTP exporters of the OpenTelemetry Python SDK, reach a real
`agentmeter serve` child process (the `server` fixture, on SQLite and on PostgreSQL), and
are read back through `GET /api/v1/usage`. The only fake is the LLM provider that the real
`openai` client talks to, because the real one cannot be reached from here.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import openai
import pytest
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from opentelemetry.util.types import AttributeValue
from sqlalchemy import Engine, select

from agentmeter.tables import UsageRow, to_unix_nano
from agentmeter.tenants import create_tenant
from tests.conftest import RunningServer
from tests.fake_openai import FakeOpenAI, ProviderUsage, fake_openai_serving
from tests.genai_spans import (
    CACHE_READ,
    CLAUDE_CALL,
    CUSTOMER,
    GPT4O_CALL,
    GPT4O_MINI_CALL,
    INPUT,
    OPERATION,
    OUTPUT,
    PROVIDER,
    REASONING,
    REQUEST_MODEL,
    RESPONSE_MODEL,
    SERVICE,
    WEB_SEARCH_CALL,
    chat_attributes,
    code_run_call,
)
from tests.polling import wait_until
from tests.sdk_exporters import RecordingExporter, make_exporter, use_genai_semconv
from tests.usage_queries import UsageTable, usage_response, usage_rows, usage_table

TRANSPORTS = [pytest.param("grpc", id="grpc"), pytest.param("http", id="http")]


# --- Known bugs in the code under test ----------------------------------------------------


# --- The agent side: a real SDK pipeline ------------------------------------------------


@dataclass
class Pipeline:
    """A `TracerProvider` exporting through a `BatchSpanProcessor` to AgentMeter, plus an
    in-memory copy of every finished span (what the agent believes it sent)."""

    provider: TracerProvider
    batch: BatchSpanProcessor
    exporter: RecordingExporter
    finished: InMemorySpanExporter

    @property
    def tracer(self) -> Tracer:
        return self.provider.get_tracer("agentmeter.tests.e2e")

    def flush(self) -> None:
        """Export everything queued; fail if any batch was not accepted."""
        assert self.batch.force_flush()
        assert self.exporter.failed_spans() == 0, f"exports failed: {self.exporter.results}"


@contextmanager
def pipeline(
    exporter: SpanExporter,
    *,
    max_queue_size: int | None = None,
    schedule_delay_millis: float | None = None,
    max_export_batch_size: int | None = None,
) -> Iterator[Pipeline]:
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    recording = RecordingExporter(exporter)
    batch = BatchSpanProcessor(
        recording,
        max_queue_size=max_queue_size,
        schedule_delay_millis=schedule_delay_millis,
        max_export_batch_size=max_export_batch_size,
    )
    finished = InMemorySpanExporter()
    provider.add_span_processor(batch)
    provider.add_span_processor(SimpleSpanProcessor(finished))
    try:
        yield Pipeline(provider=provider, batch=batch, exporter=recording, finished=finished)
    finally:
        provider.shutdown()


def emit(
    tracer: Tracer,
    name: str,
    attributes: Mapping[str, AttributeValue],
    *,
    end: datetime | int | None = None,
) -> None:
    """One finished span, ending at `end` (a time, Unix nanoseconds, or now if None)."""
    end_ns = to_unix_nano(end) if isinstance(end, datetime) else end
    start_ns = end_ns - 1_000_000 if end_ns is not None else None
    span = tracer.start_span(name, attributes=attributes, start_time=start_ns)
    span.end(end_time=end_ns)


# --- The billing side: the usage API -----------------------------------------------------


def sum_table(entries: Sequence[tuple[tuple[str, ...], Decimal | int]]) -> UsageTable:
    """Expected rows from `(key, quantity)` pairs, summed per key like the API does."""
    sums: dict[tuple[str, ...], Decimal] = {}
    for key, quantity in entries:
        sums[key] = sums.get(key, Decimal(0)) + Decimal(quantity)
    return {key: str(quantity) for key, quantity in sums.items()}


# --- 1. Real SDK exporters, GenAI spans ----------------------------------------------------


def emit_support_conversation(tracer: Tracer) -> None:
    """An agent run for `acme`: the agent span names the customer and repeats the totals of
    its children (as `invoke_agent` spans do); children carry no customer of their own."""
    agent: dict[str, AttributeValue] = {
        OPERATION: "invoke_agent",
        "gen_ai.agent.name": "support",
        CUSTOMER: "acme",
        REQUEST_MODEL: "gpt-4o",
        # Totals of the children below: billing them too would double count.
        INPUT: 1200 + 800 + 500,
        OUTPUT: 300 + 150 + 120,
        CACHE_READ: 200,
    }
    with tracer.start_as_current_span("invoke_agent support", attributes=agent):
        for name, attributes in (
            ("chat gpt-4o", GPT4O_CALL),
            ("execute_tool web_search", WEB_SEARCH_CALL),
            ("chat claude-sonnet-4", CLAUDE_CALL),
            (
                "chat gpt-4o",
                chat_attributes("openai", "gpt-4o", 500, 120, response_model="gpt-4o-2024-08-06"),
            ),
        ):
            with tracer.start_as_current_span(name, attributes=attributes):
                pass


def emit_code_run(tracer: Tracer) -> None:
    """A trace for `globex`, named with the fallback key `customer.id` on a leaf span only,
    with a fractional custom meter."""
    with tracer.start_as_current_span(
        "chat gpt-4o-mini", attributes={**GPT4O_MINI_CALL, "customer.id": "globex"}
    ):
        for seconds in (12.5, 0.25):
            emit(tracer, "execute_tool run_code", code_run_call(seconds))


class TestSdkExporters:
    @pytest.mark.parametrize("transport", TRANSPORTS)
    def test_stored_usage_equals_emitted_leaf_usage(
        self, server: RunningServer, transport: str
    ) -> None:
        with pipeline(make_exporter(transport, server)) as agent:
            emit_support_conversation(agent.tracer)
            emit_code_run(agent.tracer)
            agent.flush()

        gpt4o, claude, mini = "gpt-4o-2024-08-06", "claude-sonnet-4", "gpt-4o-mini"
        assert usage_table(server, "model") == {
            ("acme", "input_tokens", gpt4o): "1700",
            ("acme", "output_tokens", gpt4o): "420",
            ("acme", "cache_read_tokens", gpt4o): "200",
            ("acme", "output_reasoning_tokens", gpt4o): "50",
            ("acme", "input_tokens", claude): "800",
            ("acme", "output_tokens", claude): "150",
            ("acme", "cache_write_tokens", claude): "100",
            ("acme", "tool_calls", ""): "1",
            ("acme", "web_searches", ""): "3",
            ("globex", "input_tokens", mini): "64",
            ("globex", "output_tokens", mini): "16",
            ("globex", "tool_calls", ""): "2",
            ("globex", "sandbox_seconds", ""): "12.75",
        }
        # The agent span's totals are not counted: per customer, one leaf's worth only.
        assert usage_table(server) == {
            ("acme", "input_tokens"): "2500",
            ("acme", "output_tokens"): "570",
            ("acme", "cache_read_tokens"): "200",
            ("acme", "cache_write_tokens"): "100",
            ("acme", "output_reasoning_tokens"): "50",
            ("acme", "tool_calls"): "1",
            ("acme", "web_searches"): "3",
            ("globex", "input_tokens"): "64",
            ("globex", "output_tokens"): "16",
            ("globex", "tool_calls"): "2",
            ("globex", "sandbox_seconds"): "12.75",
        }
        tools = usage_table(server, "tool", "source", "service_name", meter="tool_calls")
        assert tools == {
            ("acme", "tool_calls", "web_search", "tool", SERVICE): "1",
            ("globex", "tool_calls", "run_code", "tool", SERVICE): "2",
        }
        providers = usage_table(server, "provider", customer_id="acme", meter="input_tokens")
        assert providers == {
            ("acme", "input_tokens", "openai"): "1700",
            ("acme", "input_tokens", "anthropic"): "800",
        }

    @pytest.mark.parametrize("transport", TRANSPORTS)
    def test_export_again_is_not_counted_twice(self, server: RunningServer, transport: str) -> None:
        """An exporter that retries a batch the server already committed (its answer was
        lost) sends the same spans again: they must be ignored."""
        with pipeline(make_exporter(transport, server)) as agent:
            emit_support_conversation(agent.tracer)
            agent.flush()
            before = usage_table(server, "model")
            spans = agent.finished.get_finished_spans()
            assert agent.exporter.export(spans) is SpanExportResult.SUCCESS
            assert agent.exporter.export(spans[:2]) is SpanExportResult.SUCCESS
        assert usage_table(server, "model") == before

    @pytest.mark.parametrize("transport", TRANSPORTS)
    def test_admin_key_cannot_ingest(self, server: RunningServer, transport: str) -> None:
        with pipeline(make_exporter(transport, server, headers=server.admin_headers)) as agent:
            emit_support_conversation(agent.tracer)
            agent.batch.force_flush()
            assert agent.exporter.failed_spans() == 5
        assert usage_rows(server) == []


# --- 2. A real instrumentation library: opentelemetry-instrumentation-openai-v2 -----------


def provider_usage(n: int, request: dict[str, Any]) -> ProviderUsage:
    """Different usage on every call: of the `n`th call, whatever it asked."""
    return ProviderUsage(
        prompt_tokens=1000 * n + 37 * n * n,
        completion_tokens=100 * n + 7,
        cached_tokens=(256 * n) % 900,
        reasoning_tokens=13 * n,
    )


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with fake_openai_serving(provider_usage) as provider:
        yield provider


@pytest.fixture
def openai_instrumentor() -> Iterator[OpenAIInstrumentor]:
    """The instrumentor, uninstrumented at teardown whatever the test did."""
    instrumentor = OpenAIInstrumentor()  # type: ignore[no-untyped-call]
    try:
        yield instrumentor
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


SEMCONV_MODES = [
    pytest.param("gen_ai_latest_experimental", id="latest-semconv"),
    pytest.param(None, id="default-semconv"),
]


class TestOpenAIInstrumentation:
    @pytest.mark.parametrize("opt_in", SEMCONV_MODES)
    def test_usage_reported_by_the_provider_is_billed_to_the_customer(
        self,
        server: RunningServer,
        fake_openai: FakeOpenAI,
        openai_instrumentor: OpenAIInstrumentor,
        monkeypatch: pytest.MonkeyPatch,
        opt_in: str | None,
    ) -> None:
        use_genai_semconv(monkeypatch, opt_in)

        with pipeline(make_exporter("http", server)) as agent:
            openai_instrumentor.instrument(tracer_provider=agent.provider)
            client = openai.OpenAI(base_url=fake_openai.base_url, api_key="sk-test", max_retries=0)
            messages: Any = [{"role": "user", "content": "Summarize the ticket."}]
            # The customer is named once, on the agent span; the client spans inherit it
            # through their trace.
            with agent.tracer.start_as_current_span(
                "invoke_agent researcher",
                attributes={OPERATION: "invoke_agent", CUSTOMER: "initech"},
            ):
                for model in ("gpt-4o-mini", "gpt-4o", "gpt-4o-mini"):
                    client.chat.completions.create(model=model, messages=messages)

                async def ask_async() -> None:
                    async_client = openai.AsyncOpenAI(
                        base_url=fake_openai.base_url, api_key="sk-test", max_retries=0
                    )
                    await async_client.chat.completions.create(model="o3-mini", messages=messages)
                    await async_client.close()

                asyncio.run(ask_async())
            agent.flush()
            chat_spans = [
                span
                for span in agent.finished.get_finished_spans()
                if (span.attributes or {}).get(OPERATION) == "chat"
            ]

        assert len(fake_openai.calls) == len(chat_spans) == 4
        attributes = [dict(span.attributes or {}) for span in chat_spans]
        # Which convention names the provider is what the opt-in switches.
        provider_key = PROVIDER if opt_in else "gen_ai.system"
        assert all(a.get(provider_key) == "openai" for a in attributes), attributes
        assert all(
            a.keys().isdisjoint({PROVIDER, "gen_ai.system"} - {provider_key}) for a in attributes
        )
        # Every call's span reports what the provider reported; cached and reasoning tokens
        # only if the instrumentation reads them (2.4b0 does not, for chat completions, on
        # either path): then they must be billed exactly as reported too.
        calls_by_response_id = {call.response_id: call for call in fake_openai.calls}
        expected: list[tuple[tuple[str, ...], int]] = []
        for a in attributes:
            call = calls_by_response_id[str(a["gen_ai.response.id"])]
            usage = call.usage
            assert a[REQUEST_MODEL] == call.request_model
            assert a[RESPONSE_MODEL] == call.response_model
            assert (a[INPUT], a[OUTPUT]) == (usage.prompt_tokens, usage.completion_tokens)
            key = ("initech", "openai", call.response_model)
            expected += [
                ((key[0], "input_tokens", *key[1:]), usage.prompt_tokens),
                ((key[0], "output_tokens", *key[1:]), usage.completion_tokens),
            ]
            if CACHE_READ in a:
                assert usage.cached_tokens is not None
                assert a[CACHE_READ] == usage.cached_tokens
                expected.append(((key[0], "cache_read_tokens", *key[1:]), usage.cached_tokens))
            if REASONING in a:
                assert usage.reasoning_tokens is not None
                assert a[REASONING] == usage.reasoning_tokens
                expected.append(
                    ((key[0], "output_reasoning_tokens", *key[1:]), usage.reasoning_tokens)
                )

        assert usage_table(server, "provider", "model") == sum_table(expected)
        assert usage_rows(server, unattributed="true") == []


# --- 3. Crash safety: SIGKILL mid-stream -----------------------------------------------


class SpanStream(threading.Thread):
    """Finishes one `chat` span after another, each in a trace of its own, until stopped."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__(name="span-stream", daemon=True)
        self._tracer = tracer
        self._halt = threading.Event()
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def run(self) -> None:
        n = 0
        while not self._halt.is_set():
            emit(
                self._tracer,
                "chat gpt-4o-mini",
                {
                    OPERATION: "chat",
                    PROVIDER: "openai",
                    REQUEST_MODEL: "gpt-4o-mini",
                    CUSTOMER: "acme",
                    INPUT: 1 + n % 997,
                    OUTPUT: 1 + n % 13,
                },
            )
            n += 1
            with self._lock:
                self._count = n
            time.sleep(0.001)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)
        assert not self.is_alive()


def stored_spans(engine: Engine, tenant_id: str) -> list[tuple[str, str, int]]:
    """`(meter, span id, quantity micros)` of every stored usage row, read from the table."""
    query = select(UsageRow.meter, UsageRow.span_id, UsageRow.quantity_micros).where(
        UsageRow.tenant_id == tenant_id
    )
    with engine.connect() as connection:
        return [(row.meter, row.span_id, row.quantity_micros) for row in connection.execute(query)]


class TestCrashSafety:
    @pytest.mark.parametrize("transport", TRANSPORTS)
    def test_sigkill_mid_stream_loses_and_duplicates_nothing(
        self, server: RunningServer, engine: Engine, transport: str
    ) -> None:
        # Both SDK exporters retry what a dead server causes: HTTP retries connection errors
        # (refused, reset mid-request) and 503, gRPC retries UNAVAILABLE, each with backoff
        # 1, 2, 4, 8, 16 s (6 attempts) — but only while the backoff fits in `timeout`,
        # which bounds all attempts of one batch together. The default of 10 s gives up
        # after ~7 s of outage, and a restart on PostgreSQL (migrations included) can come
        # close to that, so 60 s lets the retries outlast it. While the worker waits, new
        # spans queue: the queue must hold them all (the default 2048 drops the rest).
        exporter = make_exporter(transport, server, timeout=60)
        with pipeline(
            exporter, max_queue_size=1_000_000, schedule_delay_millis=20, max_export_batch_size=64
        ) as agent:
            stream = SpanStream(agent.tracer)
            stream.start()
            try:
                tenant = server.tenant.tenant_id
                wait_until(
                    lambda: len(stored_spans(engine, tenant)) > 200, timeout=60, what="ingest"
                )
                server.kill()
                sent_at_kill = stream.count
                time.sleep(0.5)  # spans keep coming while nothing listens
                server.start()
                sent_at_restart = stream.count
                wait_until(
                    lambda: stream.count > sent_at_restart + 300, timeout=60, what="more spans"
                )
            finally:
                stream.stop()
            agent.flush()
            finished = agent.finished.get_finished_spans()

        assert sent_at_restart > sent_at_kill, "no span was finished during the outage"
        assert len(finished) == stream.count
        # Every span the agent finished is stored once per meter, with its own quantity.
        expected: dict[tuple[str, str], int] = {}
        for span in finished:
            span_id = format(span.context.span_id, "016x")
            attributes = span.attributes or {}
            for meter, key in (("input_tokens", INPUT), ("output_tokens", OUTPUT)):
                tokens = attributes[key]
                assert isinstance(tokens, int)
                expected[meter, span_id] = tokens * 10**6
        stored = stored_spans(engine, server.tenant.tenant_id)
        per_meter = Counter(meter for meter, _, _ in stored)
        assert per_meter == {"input_tokens": len(finished), "output_tokens": len(finished)}
        assert {(meter, span_id): micros for meter, span_id, micros in stored} == expected
        # And the API adds them up to exactly the sum of what was sent.
        assert usage_table(server) == {
            ("acme", meter): str(sum(q for (m, _), q in expected.items() if m == meter) // 10**6)
            for meter in ("input_tokens", "output_tokens")
        }


# --- 4. The usage API's shape ------------------------------------------------------------

START = datetime(2025, 3, 1, tzinfo=UTC)
END = datetime(2025, 4, 1, tzinfo=UTC)


def chat(
    customer: str | None, model: str, tokens: int, **extra: AttributeValue
) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        OPERATION: "chat",
        PROVIDER: "openai",
        REQUEST_MODEL: model,
        INPUT: tokens,
        OUTPUT: tokens // 10,
        **extra,
    }
    if customer is not None:
        attributes[CUSTOMER] = customer
    return attributes


class TestUsageApi:
    def test_half_open_time_range(self, server: RunningServer) -> None:
        with pipeline(make_exporter("http", server)) as agent:
            ends: list[tuple[datetime | int, int]] = [
                (to_unix_nano(START) - 1, 1),  # a nanosecond before start
                (START, 10),  # exactly at start: included
                (START + timedelta(days=3), 100),
                (to_unix_nano(END) - 1, 1000),  # the last nanosecond inside
                (END, 10_000),  # exactly at end: excluded
                (END + timedelta(days=1), 100_000),
            ]
            for end, tokens in ends:
                emit(agent.tracer, "chat", chat("acme", "gpt-4o", tokens), end=end)
            agent.flush()

        def input_tokens(**params: str) -> str:
            table = usage_table(server, meter="input_tokens", **params)
            return table.get(("acme", "input_tokens"), "0")

        assert input_tokens(start=START.isoformat(), end=END.isoformat()) == "1110"
        assert input_tokens(start="2025-03-01T00:00:00Z", end="2025-04-01T00:00:00Z") == "1110"
        # Without an offset, times are UTC.
        assert input_tokens(start="2025-03-01T00:00:00", end="2025-04-01T00:00:00") == "1110"
        # The same instants in another offset.
        assert (
            input_tokens(start="2025-03-01T01:00:00+01:00", end="2025-03-31T19:00:00-05:00")
            == "1110"
        )
        assert input_tokens(start=START.isoformat()) == "111110"
        assert input_tokens(end=END.isoformat()) == "1111"
        assert input_tokens(end=START.isoformat()) == "1"
        assert input_tokens() == "111111"

    def test_group_by_dimensions_and_customer_filter(self, server: RunningServer) -> None:
        with pipeline(make_exporter("http", server)) as agent:
            emit(agent.tracer, "chat", chat("acme", "gpt-4o", 1000, **{"agentmeter.step": "plan"}))
            emit(
                agent.tracer,
                "chat",
                chat("acme", "gpt-4o-mini", 200, **{"agentmeter.step": "plan"}),
            )
            emit(agent.tracer, "chat", chat("acme", "gpt-4o", 30, **{"agentmeter.step": "write"}))
            emit(agent.tracer, "chat", chat("globex", "gpt-4o", 4))
            agent.flush()

        by_model_step = usage_table(
            server, "model", "step", customer_id="acme", meter="input_tokens"
        )
        assert by_model_step == {
            ("acme", "input_tokens", "gpt-4o", "plan"): "1000",
            ("acme", "input_tokens", "gpt-4o-mini", "plan"): "200",
            ("acme", "input_tokens", "gpt-4o", "write"): "30",
        }
        # Repeated group_by parameters mean the same as a comma-separated list.
        repeated = usage_response(
            server,
            {"group_by": ["model", "step"], "customer_id": "acme", "meter": "input_tokens"},
        )
        assert repeated.status_code == 200
        assert repeated.json()["rows"] == usage_rows(
            server, group_by="model,step", customer_id="acme", meter="input_tokens"
        )
        # customer_id and meter are always in a row; naming them in group_by changes nothing.
        assert usage_rows(server, group_by="customer_id,meter") == usage_rows(server)
        assert usage_table(server) == {
            ("acme", "input_tokens"): "1230",
            ("acme", "output_tokens"): "123",
            ("globex", "input_tokens"): "4",
            ("globex", "output_tokens"): "0",
        }
        assert usage_table(server, customer_id="globex") == {
            ("globex", "input_tokens"): "4",
            ("globex", "output_tokens"): "0",
        }
        assert usage_rows(server, customer_id="nobody") == []
        rows = usage_rows(server, group_by="model,operation,provider", customer_id="globex")
        assert rows == [
            {
                "customer_id": "globex",
                "meter": "input_tokens",
                "model": "gpt-4o",
                "operation": "chat",
                "provider": "openai",
                "quantity": "4",
            },
            {
                "customer_id": "globex",
                "meter": "output_tokens",
                "model": "gpt-4o",
                "operation": "chat",
                "provider": "openai",
                "quantity": "0",
            },
        ]

    def test_unattributed_lists_traces_that_never_named_a_customer(
        self, server: RunningServer
    ) -> None:
        with pipeline(make_exporter("http", server)) as agent:
            tracer = agent.tracer
            # Named on the agent span only: its child inherits the customer.
            with tracer.start_as_current_span(
                "invoke_agent", attributes={OPERATION: "invoke_agent", CUSTOMER: "acme"}
            ):
                emit(tracer, "chat", chat(None, "gpt-4o", 500))
            # Never named: kept, and listed as unattributed.
            with tracer.start_as_current_span(
                "invoke_agent", attributes={OPERATION: "invoke_agent"}
            ):
                emit(tracer, "chat", chat(None, "gpt-4o", 70))
                emit(
                    tracer, "execute_tool", {OPERATION: "execute_tool", "gen_ai.tool.name": "grep"}
                )
            agent.flush()

        assert usage_table(server, "model", unattributed="true") == {
            ("", "input_tokens", "gpt-4o"): "70",
            ("", "output_tokens", "gpt-4o"): "7",
            ("", "tool_calls", ""): "1",
        }
        assert usage_table(server, "model", customer_id="acme") == {
            ("acme", "input_tokens", "gpt-4o"): "500",
            ("acme", "output_tokens", "gpt-4o"): "50",
        }
        assert usage_table(server, unattributed="false") == {
            ("", "input_tokens"): "70",
            ("", "output_tokens"): "7",
            ("", "tool_calls"): "1",
            ("acme", "input_tokens"): "500",
            ("acme", "output_tokens"): "50",
        }

    @pytest.mark.parametrize(
        ("params", "mentions"),
        [
            pytest.param({"group_by": "model,colour"}, "colour", id="unknown-group-by"),
            pytest.param({"group_by": "quantity"}, "quantity", id="group-by-quantity"),
            pytest.param({"start": "yesterday"}, "start", id="bad-start"),
            pytest.param(
                {"start": END.isoformat(), "end": START.isoformat()}, "start", id="start-after-end"
            ),
            pytest.param(
                {"start": START.isoformat(), "end": START.isoformat()}, "start", id="empty-range"
            ),
            pytest.param(
                {"customer_id": "acme", "unattributed": "true"}, "unattributed", id="both-filters"
            ),
            pytest.param({"unattributed": "maybe"}, "unattributed", id="bad-boolean"),
            pytest.param({"colour": "blue"}, "colour", id="unknown-parameter"),
        ],
    )
    def test_bad_query_is_422_with_error_body(
        self, server: RunningServer, params: dict[str, str], mentions: str
    ) -> None:
        response = usage_response(server, params)
        assert response.status_code == 422, response.text
        body = response.json()
        assert set(body) == {"error"}
        assert set(body["error"]) == {"code", "message"}
        assert body["error"]["code"] == "validation_error"
        assert mentions in body["error"]["message"]

    def test_admin_key_required(self, server: RunningServer, engine: Engine) -> None:
        with pipeline(make_exporter("http", server)) as agent:
            emit(agent.tracer, "chat", chat("acme", "gpt-4o", 10))
            agent.flush()
        other_tenant = create_tenant(engine, "other tenant")
        for headers in (
            {},
            {"authorization": ""},
            {"authorization": f"Bearer {server.tenant.ingest_key}"},
            {"authorization": "Bearer am_admin_not-a-key"},
            {"authorization": f"Basic {server.tenant.admin_key}"},
            {"authorization": f"Bearer {other_tenant.ingest_key}"},
        ):
            response = usage_response(server, headers=headers)
            assert response.status_code == 401, (headers, response.text)
            error = response.json()["error"]
            assert set(error) == {"code", "message"}
            assert error["code"] == "unauthenticated"
        # Another tenant's admin key works, and sees none of this tenant's usage.
        other = usage_response(
            server, headers={"authorization": f"Bearer {other_tenant.admin_key}"}
        )
        assert other.status_code == 200
        assert other.json() == {"rows": []}
        assert usage_rows(server) != []
