"""An agent, as a builder writes one, billing its customers through a running AgentMeter.

The agent side is all real: the OTel SDK with `CustomerSpanProcessor`, the `openai` client
instrumented by opentelemetry-instrumentation-openai-v2, and the SDK's OTLP/gRPC exporter
behind a `BatchSpanProcessor`. It talks to `agentmeter serve` (the `server` fixture, on
SQLite and PostgreSQL) and the totals are read back from `GET /api/v1/usage`.

The only fake is the LLM provider: an OpenAI-compatible server on port 0 whose token counts
depend on the prompt, which names the customer and the turn. The provider never sees the
attribution, so a call billed to the wrong customer shows up as a wrong total.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

from otel_processor import CustomerSpanProcessor, customer, step
from tests.conftest import RunningServer
from tests.fake_openai import FakeOpenAI, ProviderUsage, fake_openai_serving
from tests.genai_spans import SERVICE
from tests.sdk_exporters import RecordingExporter, make_exporter, use_genai_semconv
from tests.usage_queries import usage_table

MODELS = {"acme": "gpt-4o-mini", "globex": "gpt-4o"}


# --- The fake LLM provider -----------------------------------------------------------------


def provider_usage(customer_id: str, turn: int) -> tuple[int, int]:
    """(prompt, completion) tokens the provider reports for a customer's turn: different
    for every customer and turn, so any misattributed call changes a total."""
    if customer_id == "acme":
        return 1000 + 17 * turn, 100 + turn
    if customer_id == "globex":
        return 30_000 + 3 * turn * turn, 7 + 11 * turn
    return 5 + turn, 1


_PROMPT = re.compile(r"^customer=(?P<customer>\w+) turn=(?P<turn>\d+)$")


def prompt(customer_id: str, turn: int) -> Any:
    return [{"role": "user", "content": f"customer={customer_id} turn={turn}"}]


def reported_usage(n: int, request: dict[str, Any]) -> ProviderUsage:
    """What the provider reports for a request: `provider_usage` of the prompt's customer
    and turn."""
    match = _PROMPT.match(request["messages"][-1]["content"])
    assert match is not None
    return ProviderUsage(*provider_usage(match["customer"], int(match["turn"])))


@pytest.fixture
def fake_provider() -> Iterator[FakeOpenAI]:
    with fake_openai_serving(reported_usage) as provider:
        yield provider


# --- The agent ---------------------------------------------------------------------------


@dataclass
class Agent:
    provider: TracerProvider
    batch: BatchSpanProcessor
    exporter: RecordingExporter
    llm_base_url: str

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.llm_base_url, api_key="sk-test", max_retries=0)

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.llm_base_url, api_key="sk-test", max_retries=0)

    def flush(self) -> int:
        """Export everything queued; fail if a batch was refused. Returns spans exported."""
        assert self.batch.force_flush(60_000)
        results = self.exporter.results
        assert all(r is SpanExportResult.SUCCESS for _, r in results), results
        return sum(n for n, _ in results)


@pytest.fixture
def agent(
    server: RunningServer, fake_provider: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Agent]:
    """An agent process: SDK + `CustomerSpanProcessor` + openai-v2 + OTLP/gRPC export."""
    # Default GenAI conventions, whatever an earlier test in this process opted into.
    use_genai_semconv(monkeypatch, None)

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(CustomerSpanProcessor())
    exporter = RecordingExporter(make_exporter("grpc", server))
    # Small, frequent batches: exports run while the agent is still calling the model.
    batch = BatchSpanProcessor(exporter, schedule_delay_millis=20, max_export_batch_size=8)
    provider.add_span_processor(batch)
    instrumentor = OpenAIInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield Agent(provider, batch, exporter, fake_provider.base_url)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


# --- The usage API -------------------------------------------------------------------------


def token_table(server: RunningServer, *dims: str, **params: str) -> dict[tuple[str, ...], int]:
    """`usage_table`, with the quantities (all whole tokens here) as ints."""
    return {key: int(quantity) for key, quantity in usage_table(server, *dims, **params).items()}


def expected_totals(turns: dict[str, int]) -> dict[tuple[str, ...], int]:
    """Per customer and meter, with the response model: what the provider reported."""
    table: dict[tuple[str, ...], int] = {}
    for customer_id, count in turns.items():
        model = f"{MODELS[customer_id]}-2024-07-18"
        usage = [provider_usage(customer_id, turn) for turn in range(count)]
        table[(customer_id, "input_tokens", model)] = sum(p for p, _ in usage)
        table[(customer_id, "output_tokens", model)] = sum(c for _, c in usage)
    return table


# --- Tests ---------------------------------------------------------------------------------


class TestAgentBillsItsCustomers:
    def test_calls_inside_the_block_are_billed_to_its_customer_by_step(
        self, server: RunningServer, agent: Agent, fake_provider: FakeOpenAI
    ) -> None:
        client = agent.client()
        with customer("acme"):
            with step("plan"):
                for turn in (0, 1):
                    client.chat.completions.create(
                        model="gpt-4o-mini", messages=prompt("acme", turn)
                    )
            with step("answer"):
                client.chat.completions.create(model="gpt-4o-mini", messages=prompt("acme", 2))
        # No customer named anywhere in this call's trace: kept, but unattributed.
        client.chat.completions.create(model="gpt-4o-mini", messages=prompt("nobody", 0))
        client.close()
        assert agent.flush() == 4

        model = "gpt-4o-mini-2024-07-18"
        (p0, c0), (p1, c1), (p2, c2) = (provider_usage("acme", t) for t in range(3))
        p_nobody, c_nobody = provider_usage("nobody", 0)
        assert token_table(server, "step", "model") == {
            ("acme", "input_tokens", "plan", model): p0 + p1,
            ("acme", "output_tokens", "plan", model): c0 + c1,
            ("acme", "input_tokens", "answer", model): p2,
            ("acme", "output_tokens", "answer", model): c2,
            ("", "input_tokens", "chat gpt-4o-mini", model): p_nobody,
            ("", "output_tokens", "chat gpt-4o-mini", model): c_nobody,
        }
        assert token_table(server, "provider", "service_name", unattributed="true") == {
            ("", "input_tokens", "openai", SERVICE): p_nobody,
            ("", "output_tokens", "openai", SERVICE): c_nobody,
        }
        assert sum(token_table(server).values()) == fake_provider.tokens

    def test_two_customers_in_two_threads_are_never_mixed(
        self, server: RunningServer, agent: Agent, fake_provider: FakeOpenAI
    ) -> None:
        turns = 25
        client = agent.client()  # one client shared by both threads, as agents do
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def conversation(customer_id: str) -> None:
            try:
                with customer(customer_id):
                    for turn in range(turns):
                        barrier.wait(timeout=30)  # both threads call the model at once
                        client.chat.completions.create(
                            model=MODELS[customer_id], messages=prompt(customer_id, turn)
                        )
            except BaseException as error:
                errors.append(error)
                barrier.abort()

        threads = [threading.Thread(target=conversation, args=(c,)) for c in MODELS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        client.close()
        assert errors == []
        assert agent.flush() == 2 * turns

        assert token_table(server, "model") == expected_totals({"acme": turns, "globex": turns})
        assert token_table(server, unattributed="true") == {}
        assert len(fake_provider.calls) == 2 * turns

    def test_two_customers_in_concurrent_asyncio_tasks_are_never_mixed(
        self, server: RunningServer, agent: Agent, fake_provider: FakeOpenAI
    ) -> None:
        turns = {"acme": 12, "globex": 9}

        async def conversation(client: openai.AsyncOpenAI, customer_id: str) -> None:
            with customer(customer_id):
                for turn in range(turns[customer_id]):
                    await client.chat.completions.create(
                        model=MODELS[customer_id], messages=prompt(customer_id, turn)
                    )

        async def main() -> None:
            client = agent.async_client()
            await asyncio.gather(*(conversation(client, c) for c in turns))
            await client.close()

        asyncio.run(main())
        assert agent.flush() == sum(turns.values())

        assert token_table(server, "model") == expected_totals(turns)
        assert token_table(server, unattributed="true") == {}
