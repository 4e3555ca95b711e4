"""The compatibility suite's fixtures: one real `agentmeter serve` per module and backend
(modules share nothing; each test gets a tenant of its own on it), fake providers, and an
OTel SDK `TracerProvider` for the whole suite whose spans go, test by test, to the server
over OTLP/HTTP (protobuf) with that test's ingest key."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentmeter.db import make_engine
from agentmeter.settings import Settings
from agentmeter.tenants import create_tenant
from tests.compat.fake_anthropic import FakeAnthropic, fake_anthropic_serving
from tests.conftest import BACKENDS, RunningServer, _postgres_database


@pytest.fixture(scope="module", params=BACKENDS)
def shared_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    migrated_templates: dict[str, str],
) -> Iterator[RunningServer]:
    """`agentmeter serve` on a migrated database of each backend, for a whole module."""
    folder = tmp_path_factory.mktemp("compat")
    if request.param == "sqlite":
        shutil.copyfile(migrated_templates["sqlite"], folder / "agentmeter.db")
        yield from _serving(f"sqlite:///{folder / 'agentmeter.db'}", folder)
        return
    with _postgres_database(template=migrated_templates.get("postgresql")) as url:
        yield from _serving(url, folder)


def _serving(database_url: str, folder: Path) -> Iterator[RunningServer]:
    engine = make_engine(Settings(database_url=database_url))
    try:
        running = RunningServer(
            database_url=database_url,
            tenant=create_tenant(engine, "compat"),
            log_path=folder / "server.log",
        )
    finally:
        engine.dispose()
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def agentmeter(shared_server: RunningServer) -> RunningServer:
    """The module's server, seen through a tenant of this test's own."""
    engine = make_engine(Settings(database_url=shared_server.database_url))
    try:
        return replace(shared_server, tenant=create_tenant(engine, "compat"))
    finally:
        engine.dispose()


class _Forward(SpanProcessor):
    """Hands each span to the current test's processors. Some instrumentations keep the
    first tracer provider they were given for the life of the process (OpenLLMetry's
    LangChain callback handler does), so every test of the suite uses one provider and
    switches where its spans go."""

    def __init__(self) -> None:
        self.targets: list[SpanProcessor] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for target in self.targets:
            target.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for target in self.targets:
            target.on_end(span)


class Telemetry:
    """The suite's TracerProvider, exporting each span of this test at once to AgentMeter
    (OTLP/HTTP, protobuf, the test tenant's ingest key) and to memory, so a test can also
    assert on what the instrumentation emitted."""

    def __init__(self, provider: TracerProvider, server: RunningServer) -> None:
        self.provider = provider
        self.spans = InMemorySpanExporter()
        to_agentmeter = OTLPSpanExporter(endpoint=server.traces_url, headers=server.ingest_headers)
        self.processors: list[SpanProcessor] = [
            SimpleSpanProcessor(to_agentmeter),
            SimpleSpanProcessor(self.spans),
        ]

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """A processor of this test's spans only (e.g. `CustomerSpanProcessor`), run first."""
        self.processors.insert(0, processor)

    def span_names(self) -> list[str]:
        return [span.name for span in self.spans.get_finished_spans()]


@pytest.fixture(scope="session")
def _forward() -> Iterator[tuple[TracerProvider, _Forward]]:
    forward = _Forward()
    provider = TracerProvider(resource=Resource.create({"service.name": "compat-agent"}))
    provider.add_span_processor(forward)
    try:
        yield provider, forward
    finally:
        provider.shutdown()


@pytest.fixture
def telemetry(
    agentmeter: RunningServer, _forward: tuple[TracerProvider, _Forward]
) -> Iterator[Telemetry]:
    provider, forward = _forward
    found = Telemetry(provider, agentmeter)
    forward.targets = found.processors
    try:
        yield found
    finally:
        forward.targets = []
        for processor in found.processors:
            processor.shutdown()


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with fake_anthropic_serving() as provider:
        yield provider


@pytest.fixture
def anthropic_provider(fake_anthropic: FakeAnthropic) -> FakeAnthropic:
    """The module's fake Anthropic, its calls forgotten."""
    fake_anthropic.clear()
    return fake_anthropic
