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
import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import httpx
import openai
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from agentmeter.tenants import NewTenant
from otel_processor import CustomerSpanProcessor, customer, step

SERVICE = "support-agent"
MODELS = {"acme": "gpt-4o-mini", "globex": "gpt-4o"}


class Server(Protocol):
    """What these tests use of tests/conftest.py's `RunningServer`."""

    @property
    def grpc_target(self) -> str: ...
    @property
    def api_url(self) -> str: ...
    @property
    def ingest_headers(self) -> dict[str, str]: ...
    @property
    def admin_headers(self) -> dict[str, str]: ...
    @property
    def tenant(self) -> NewTenant: ...


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


class _ChatCompletionsHandler(BaseHTTPRequestHandler):
    server: FakeProvider

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._answer(404, {"error": {"message": f"no route {self.path}"}})
            return
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        match = _PROMPT.match(body["messages"][-1]["content"])
        assert match is not None
        prompt_tokens, completion_tokens = provider_usage(match["customer"], int(match["turn"]))
        self.server.record(prompt_tokens, completion_tokens)
        self._answer(
            200,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": f"{body['model']}-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Done."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    def _answer(self, status: int, document: object) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeProvider(ThreadingHTTPServer):
    """`POST /v1/chat/completions` on port 0; counts the tokens it reported."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ChatCompletionsHandler)
        self._lock = threading.Lock()
        self.calls = 0
        self.tokens = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def record(self, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self.calls += 1
            self.tokens += prompt_tokens + completion_tokens


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    provider = FakeProvider()
    thread = threading.Thread(target=provider.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        provider.shutdown()
        provider.server_close()
        thread.join(timeout=10)


# --- The agent ---------------------------------------------------------------------------


class RecordingExporter(SpanExporter):
    """The real OTLP exporter, remembering what each export returned:
    `BatchSpanProcessor.force_flush()` is True even when a batch was given up."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        self._lock = threading.Lock()
        self._results: list[tuple[int, SpanExportResult]] = []

    @property
    def results(self) -> list[tuple[int, SpanExportResult]]:
        """(spans, result) of every export so far."""
        with self._lock:
            return list(self._results)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._exporter.export(spans)
        with self._lock:
            self._results.append((len(spans), result))
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)


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
    server: Server, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Agent]:
    """An agent process: SDK + `CustomerSpanProcessor` + openai-v2 + OTLP/gRPC export."""
    # Default GenAI conventions, whatever an earlier test in this process opted into.
    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    stability = _OpenTelemetrySemanticConventionStability
    monkeypatch.setattr(stability, "_initialized", False)
    monkeypatch.setattr(stability, "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", {})

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(CustomerSpanProcessor())
    exporter = RecordingExporter(
        OTLPSpanExporter(endpoint=server.grpc_target, insecure=True, headers=server.ingest_headers)
    )
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


def usage_table(server: Server, *dims: str, **params: str) -> dict[tuple[str, ...], int]:
    """`{(customer_id, meter, *dims): quantity}` from `GET /api/v1/usage`."""
    if dims:
        params["group_by"] = ",".join(dims)
    response = httpx.get(
        f"{server.api_url}/api/v1/usage", params=params, headers=server.admin_headers, timeout=30
    )
    assert response.status_code == 200, response.text
    table: dict[tuple[str, ...], int] = {}
    for row in response.json()["rows"]:
        key = (row["customer_id"], row["meter"], *(row[d] for d in dims))
        assert key not in table
        table[key] = int(row["quantity"])
    return table


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
        self, server: Server, agent: Agent, fake_provider: FakeProvider
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
        assert usage_table(server, "step", "model") == {
            ("acme", "input_tokens", "plan", model): p0 + p1,
            ("acme", "output_tokens", "plan", model): c0 + c1,
            ("acme", "input_tokens", "answer", model): p2,
            ("acme", "output_tokens", "answer", model): c2,
            ("", "input_tokens", "chat gpt-4o-mini", model): p_nobody,
            ("", "output_tokens", "chat gpt-4o-mini", model): c_nobody,
        }
        assert usage_table(server, "provider", "service_name", unattributed="true") == {
            ("", "input_tokens", "openai", SERVICE): p_nobody,
            ("", "output_tokens", "openai", SERVICE): c_nobody,
        }
        assert sum(usage_table(server).values()) == fake_provider.tokens

    def test_two_customers_in_two_threads_are_never_mixed(
        self, server: Server, agent: Agent, fake_provider: FakeProvider
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

        assert usage_table(server, "model") == expected_totals({"acme": turns, "globex": turns})
        assert usage_table(server, unattributed="true") == {}
        assert fake_provider.calls == 2 * turns

    def test_two_customers_in_concurrent_asyncio_tasks_are_never_mixed(
        self, server: Server, agent: Agent, fake_provider: FakeProvider
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

        assert usage_table(server, "model") == expected_totals(turns)
        assert usage_table(server, unattributed="true") == {}
