"""The compatibility suite's fixtures: one real `agentmeter serve` per module and backend
(modules share nothing; each test gets a tenant of its own on it), fake providers, and an
OTel SDK `TracerProvider` per test that exports to the server over OTLP/HTTP (protobuf)
with the tenant's ingest key."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
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


class Telemetry:
    """A TracerProvider exporting each finished span at once to AgentMeter (OTLP/HTTP,
    protobuf) and to memory, so a test can assert on what the instrumentation emitted."""

    def __init__(self, server: RunningServer, service: str) -> None:
        self.spans = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self.provider.add_span_processor(
            SimpleSpanProcessor(
                OTLPSpanExporter(endpoint=server.traces_url, headers=server.ingest_headers)
            )
        )
        self.provider.add_span_processor(SimpleSpanProcessor(self.spans))

    def span_names(self) -> list[str]:
        return [span.name for span in self.spans.get_finished_spans()]


@pytest.fixture
def telemetry(agentmeter: RunningServer, request: pytest.FixtureRequest) -> Iterator[Telemetry]:
    found = Telemetry(agentmeter, service=request.node.name[:60])
    try:
        yield found
    finally:
        found.provider.shutdown()


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with fake_anthropic_serving() as provider:
        yield provider


@pytest.fixture
def anthropic_provider(fake_anthropic: FakeAnthropic) -> FakeAnthropic:
    """The module's fake Anthropic, its calls forgotten."""
    fake_anthropic.clear()
    return fake_anthropic
