"""Several `agentmeter serve` receivers on one PostgreSQL (docs/scaling.md).

Two real `serve` processes on their own ports share one database. Agents' real OTel SDK
exporters (OTLP/HTTP to one, OTLP/gRPC to the other, then the other way round) send
overlapping, duplicate batches to both at the same time; the two spans of one provider call,
and a trace's customer and its usage, arrive through different receivers. The store must
hold each record once and bill each call once, whichever receiver committed last. And
receivers starting together on an empty database must migrate it once, without failing.
"""

from __future__ import annotations

import functools
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Engine, text

from agentmeter.db import alembic_config, make_engine
from agentmeter.settings import Settings
from agentmeter.tenants import NewTenant, create_tenant
from tests.conftest import RunningServer
from tests.genai_spans import (
    AGENT_NAME,
    CACHE_READ,
    CUSTOMER,
    OPERATION,
    SERVICE,
    chat_attributes,
)
from tests.sdk_exporters import make_exporter
from tests.usage_queries import UsageTable, stored_row_count, usage_table

ON_POSTGRES = [pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)]
RESPONSE_ID = "gen_ai.response.id"
CUSTOMERS = ("acme", "globex")
TRACES = 24
# Concurrent rounds of new agent runs, each checked: a lost race shows in any one of them.
ROUNDS = 3
SPANS_PER_TRACE = 6
TRACES_PER_EXPORT = 2  # small exports: many concurrent transactions, each racing the other's
# Usage records each trace stores, superseded ones included (audit keeps them): gpt-4o 2,
# the claude call's SDK span 3 and instrumentation span 2, gpt-4o-mini's wrapper 2 and child 2.
RECORDS_PER_TRACE = 11


def agent_run_spans(round_number: int = 0) -> list[ReadableSpan]:
    """`TRACES` new agent runs, each: an `invoke_agent` span naming the customer (its usage spans
    name none and inherit it), a plain gpt-4o call, one claude call described twice
    (the SDK's span with cache reads and an instrumentation's sibling without, sharing the
    response id), and one gpt-4o-mini call described twice (a wrapper LLM span repeating
    its child's totals)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("scale-out-test")
    for n in range(TRACES):
        agent = {OPERATION: "invoke_agent", AGENT_NAME: "support", CUSTOMER: CUSTOMERS[n % 2]}
        claude = {
            **chat_attributes("anthropic", "claude-sonnet-4", 1000, 50, usage={CACHE_READ: 200}),
            RESPONSE_ID: f"msg_{round_number}_{n:04d}",
        }
        claude_instrumented = {k: v for k, v in claude.items() if k != CACHE_READ}
        mini = chat_attributes("openai", "gpt-4o-mini", 64, 16)
        with tracer.start_as_current_span("invoke_agent support", attributes=agent):
            with tracer.start_as_current_span(
                "chat gpt-4o", attributes=chat_attributes("openai", "gpt-4o", 100 + n, 10 + n)
            ):
                pass
            with tracer.start_as_current_span("chat claude-sonnet-4", attributes=claude):
                pass
            with tracer.start_as_current_span("anthropic.chat", attributes=claude_instrumented):
                pass
            with (
                tracer.start_as_current_span("chat gpt-4o-mini", attributes=mini),
                tracer.start_as_current_span("openai.chat", attributes=mini),  # its child
            ):
                pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def expected_usage(rounds: int = 1) -> UsageTable:
    """`usage_table(server, "model")` once the spans of `rounds` calls of `agent_run_spans`
    are stored: each provider call billed once."""
    totals: dict[tuple[str, ...], int] = defaultdict(int)
    for n in range(TRACES):
        customer = CUSTOMERS[n % 2]
        for model, meter, quantity in (
            ("gpt-4o", "input_tokens", 100 + n),
            ("gpt-4o", "output_tokens", 10 + n),
            ("claude-sonnet-4", "input_tokens", 1000),
            ("claude-sonnet-4", "output_tokens", 50),
            ("claude-sonnet-4", "cache_read_tokens", 200),
            ("gpt-4o-mini", "input_tokens", 64),
            ("gpt-4o-mini", "output_tokens", 16),
        ):
            totals[(customer, meter, model)] += quantity * rounds
    return {key: str(quantity) for key, quantity in totals.items()}


def split_overlapping(
    spans: Sequence[ReadableSpan],
) -> tuple[list[list[ReadableSpan]], list[list[ReadableSpan]]]:
    """Exports for two receivers, export i of both covering the same traces: each trace's
    spans alternately to one and the other, so the two spans of a call, and the customer's
    span and its usage spans, go different ways at the same moment; every third trace's
    spans go to both (duplicates racing their originals)."""
    by_trace: dict[int, list[ReadableSpan]] = defaultdict(list)
    for one in spans:
        assert one.context is not None
        by_trace[one.context.trace_id].append(one)
    first: list[list[ReadableSpan]] = []
    second: list[list[ReadableSpan]] = []
    for n, trace_spans in enumerate(by_trace.values()):
        if n % TRACES_PER_EXPORT == 0:
            first.append([])
            second.append([])
        for position, one in enumerate(trace_spans):
            own, other = (first, second) if position % 2 == 0 else (second, first)
            own[-1].append(one)
            if n % 3 == 0:
                other[-1].append(one)
    return first, second


def in_exports(spans: Sequence[ReadableSpan]) -> list[Sequence[ReadableSpan]]:
    size = TRACES_PER_EXPORT * SPANS_PER_TRACE
    return [spans[i : i + size] for i in range(0, len(spans), size)]


def send_concurrently(
    sends: Sequence[tuple[str, RunningServer, Sequence[Sequence[ReadableSpan]]]],
) -> list[SpanExportResult]:
    """Each (transport, receiver, exports) sent export by export on its own thread, the
    threads starting each export together; every export's result."""
    results: list[SpanExportResult] = []
    lock = threading.Lock()
    assert len({len(exports) for _, _, exports in sends}) == 1
    in_step = threading.Barrier(len(sends))

    def send(
        transport: str, receiver: RunningServer, exports: Sequence[Sequence[ReadableSpan]]
    ) -> None:
        exporter = make_exporter(transport, receiver, timeout=60)
        try:
            for spans in exports:
                in_step.wait(timeout=120)
                result = exporter.export(spans)
                with lock:
                    results.append(result)
        finally:
            exporter.shutdown()

    run_all([functools.partial(send, *args) for args in sends])
    return results


def run_all(calls: Sequence[Callable[[], None]]) -> None:
    """Run `calls` on threads at once; re-raise the first failure."""
    errors: list[BaseException] = []

    def guarded(call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as error:  # reported to the test below
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    if errors:
        raise errors[0]


@pytest.fixture
def receivers(
    engine: Engine, database_url: str, tmp_path: Path
) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Two `agentmeter serve` on ports of their own, one database, one tenant."""
    tenant = create_tenant(engine, "scale-out tenant")
    pair = tuple(
        RunningServer(database_url=database_url, tenant=tenant, log_path=tmp_path / f"{n}.log")
        for n in ("first", "second")
    )
    try:
        run_all([server.start for server in pair])
        yield pair[0], pair[1]
    finally:
        for server in pair:
            server.stop()


@pytest.mark.parametrize("database_url", ON_POSTGRES, indirect=True)
def test_two_receivers_store_each_record_once_and_bill_each_call_once(
    receivers: tuple[RunningServer, RunningServer], engine: Engine
) -> None:
    first, second = receivers
    assert len({first.grpc_port, first.http_port, second.grpc_port, second.http_port}) == 4
    spans: list[ReadableSpan] = []
    for round_number in range(ROUNDS):
        new_spans = agent_run_spans(round_number)
        spans += new_spans
        to_first, to_second = split_overlapping(new_spans)
        results = send_concurrently([("http", first, to_first), ("grpc", second, to_second)])
        assert set(results) == {SpanExportResult.SUCCESS}
        assert usage_table(first, "model") == expected_usage(round_number + 1)
    # Then a retry storm: every span again through both, over the other transports.
    results = send_concurrently(
        [("grpc", first, in_exports(spans)), ("http", second, in_exports(spans[::-1]))]
    )
    assert set(results) == {SpanExportResult.SUCCESS}

    assert stored_row_count(engine) == ROUNDS * TRACES * RECORDS_PER_TRACE
    assert usage_table(first, "model") == expected_usage(ROUNDS)
    assert usage_table(second, "model") == expected_usage(ROUNDS)


@pytest.mark.parametrize("empty_database_url", ON_POSTGRES, indirect=True)
def test_receivers_starting_together_migrate_an_empty_database_once(
    empty_database_url: str, tmp_path: Path
) -> None:
    placeholder = NewTenant(tenant_id="", ingest_key="", admin_key="")
    pair = [
        RunningServer(
            database_url=empty_database_url, tenant=placeholder, log_path=tmp_path / f"{n}.log"
        )
        for n in ("first", "second")
    ]
    engine = make_engine(Settings(database_url=empty_database_url))
    try:
        run_all([server.start for server in pair])
        head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert versions.scalars().all() == [head]
        tenant = create_tenant(engine, "after a concurrent start")
        for server in pair:
            server.tenant = tenant
        spans = agent_run_spans()
        exports = in_exports(spans)
        results = send_concurrently([("http", pair[0], exports), ("grpc", pair[1], exports)])
        assert set(results) == {SpanExportResult.SUCCESS}
        assert usage_table(pair[1], "model") == expected_usage()
    finally:
        for server in pair:
            server.stop()
        engine.dispose()
