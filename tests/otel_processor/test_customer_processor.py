"""`CustomerSpanProcessor`, `customer()` and `step()`: which spans an agent's work stamps.

The rule these tests pin down: the customer (and step) travel in OTel baggage, that is in
the current `contextvars` context. So they reach

- every span started inside the `with` block or decorated call, in the same thread;
- asyncio tasks created inside the block (a task copies the context when it is created),
  and `asyncio.to_thread` (it copies the context too);
- a new thread, a `ThreadPoolExecutor` worker or `loop.run_in_executor` only when the work
  is handed over with `contextvars.copy_context().run`; otherwise they start empty.

Spans come from a real SDK `TracerProvider`; the instrumentation tests use the real
`openai` client, instrumented by opentelemetry-instrumentation-openai-v2 and by
openinference-instrumentation-openai, against a small OpenAI-compatible server on port 0.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import openai
import pytest
from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInferenceInstrumentor
from opentelemetry import baggage, context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OpenAIV2Instrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from otel_processor import CustomerSpanProcessor, customer, step
from otel_processor.customer import CUSTOMER_KEY

STEP_KEY = "agentmeter.step"
TRACER_NAME = "agentmeter.tests.customer"


@dataclass
class Agent:
    """A real SDK pipeline: `CustomerSpanProcessor`, then an in-memory copy of each span."""

    provider: TracerProvider
    finished: InMemorySpanExporter

    @property
    def tracer(self) -> Tracer:
        return self.provider.get_tracer(TRACER_NAME)

    def span(self, name: str, **attributes: str) -> None:
        """Start and end one span named `name` in the current context."""
        with self.tracer.start_as_current_span(name, attributes=attributes):
            pass

    def spans(self) -> list[ReadableSpan]:
        return list(self.finished.get_finished_spans())

    def by_name(self) -> dict[str, ReadableSpan]:
        spans = self.spans()
        named = {span.name: span for span in spans}
        assert len(named) == len(spans), "span names must be unique in this test"
        return named

    def attribution(self) -> dict[str, tuple[str | None, str | None]]:
        """Span name → (customer, step) stamped on it."""
        return {name: attribution(span) for name, span in self.by_name().items()}


def attribution(span: ReadableSpan) -> tuple[str | None, str | None]:
    attributes = span.attributes or {}
    customer_id, step_name = attributes.get(CUSTOMER_KEY), attributes.get(STEP_KEY)
    assert customer_id is None or isinstance(customer_id, str)
    assert step_name is None or isinstance(step_name, str)
    return customer_id, step_name


@pytest.fixture
def agent() -> Iterator[Agent]:
    provider = TracerProvider()
    finished = InMemorySpanExporter()
    provider.add_span_processor(CustomerSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(finished))
    try:
        yield Agent(provider=provider, finished=finished)
    finally:
        provider.shutdown()


DetachErrors = Callable[[], list[str]]


@pytest.fixture
def detach_errors(caplog: pytest.LogCaptureFixture) -> DetachErrors:
    """Messages of `opentelemetry.context` errors so far: OTel logs a detach from the wrong
    context ("Failed to detach context") instead of raising."""
    caplog.set_level(logging.ERROR, logger="opentelemetry.context")

    def errors() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "opentelemetry.context"]

    return errors


# --- with customer(...) -----------------------------------------------------------------


class TestCustomerBlock:
    def test_spans_inside_carry_the_customer_and_spans_outside_do_not(self, agent: Agent) -> None:
        agent.span("before")
        with customer("acme"):
            agent.span("inside")
            with agent.tracer.start_as_current_span("parent"):
                agent.span("child")
        agent.span("after")

        assert agent.attribution() == {
            "before": (None, None),
            "inside": ("acme", None),
            "parent": ("acme", None),
            "child": ("acme", None),
            "after": (None, None),
        }

    def test_inner_customer_wins_until_its_block_ends(self, agent: Agent) -> None:
        with customer("acme"):
            with customer("globex"):
                agent.span("inner")
            agent.span("outer again")

        assert agent.attribution() == {
            "inner": ("globex", None),
            "outer again": ("acme", None),
        }

    def test_one_scope_object_can_be_entered_again_inside_itself(self, agent: Agent) -> None:
        acme = customer("acme")
        with acme:
            with acme:
                agent.span("twice inside")
            agent.span("once inside")
        agent.span("outside")

        assert agent.attribution() == {
            "twice inside": ("acme", None),
            "once inside": ("acme", None),
            "outside": (None, None),
        }

    def test_an_exception_ends_the_block_too(self, agent: Agent) -> None:
        with pytest.raises(RuntimeError), customer("acme"):
            agent.span("inside")
            raise RuntimeError("tool failed")
        agent.span("after")

        assert agent.attribution() == {"inside": ("acme", None), "after": (None, None)}

    def test_only_the_customer_is_on_the_span_not_other_attributes(self, agent: Agent) -> None:
        with customer("acme"):
            agent.span("inside", **{"gen_ai.operation.name": "chat"})

        attributes = dict(agent.by_name()["inside"].attributes or {})
        assert attributes == {CUSTOMER_KEY: "acme", "gen_ai.operation.name": "chat"}


class TestCustomerDecorator:
    def test_sync_function(self, agent: Agent) -> None:
        @customer("acme")
        def handle_ticket(n: int) -> int:
            agent.span(f"ticket {n}")
            return n * 2

        assert handle_ticket(1) == 2
        assert handle_ticket(n=2) == 4
        agent.span("after")

        assert handle_ticket.__name__ == "handle_ticket"
        assert agent.attribution() == {
            "ticket 1": ("acme", None),
            "ticket 2": ("acme", None),
            "after": (None, None),
        }

    def test_async_function(self, agent: Agent) -> None:
        @customer("acme")
        async def handle_ticket(n: int) -> int:
            await asyncio.sleep(0)
            agent.span(f"ticket {n}")
            return n * 2

        async def main() -> list[int]:
            results = await asyncio.gather(handle_ticket(1), handle_ticket(2))
            agent.span("after")
            return list(results)

        # Frameworks look at this to decide whether to await the handler.
        assert inspect.iscoroutinefunction(handle_ticket)
        assert asyncio.run(main()) == [2, 4]
        assert agent.attribution() == {
            "ticket 1": ("acme", None),
            "ticket 2": ("acme", None),
            "after": (None, None),
        }

    def test_concurrent_calls_of_one_decorated_function_in_threads(
        self, agent: Agent, detach_errors: DetachErrors
    ) -> None:
        threads = 8
        barrier = threading.Barrier(threads)

        @customer("acme")
        def work(n: int) -> None:
            barrier.wait(timeout=10)  # every call is inside the scope at the same time
            agent.span(f"inside {n}")
            barrier.wait(timeout=10)

        def run(n: int) -> None:
            work(n)
            agent.span(f"after {n}")

        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(run, range(threads)))

        found = agent.attribution()
        assert found == {
            **{f"inside {n}": ("acme", None) for n in range(threads)},
            **{f"after {n}": (None, None) for n in range(threads)},
        }
        assert detach_errors() == []

    def test_generator_function(self, agent: Agent) -> None:
        @customer("acme")
        def stream_answer() -> Iterator[str]:
            agent.span("chunk")
            yield "chunk"

        assert list(stream_answer()) == ["chunk"]

        assert agent.attribution() == {"chunk": ("acme", None)}

    def test_async_generator_function(self, agent: Agent) -> None:
        @customer("acme")
        async def stream_answer() -> Any:
            agent.span("chunk")
            yield "chunk"

        async def main() -> list[str]:
            return [chunk async for chunk in stream_answer()]

        assert asyncio.run(main()) == ["chunk"]

        assert agent.attribution() == {"chunk": ("acme", None)}


class TestStep:
    def test_nested_step_labels_the_spans_inside_it_only(self, agent: Agent) -> None:
        with customer("acme"):
            agent.span("no step yet")
            with step("plan"):
                agent.span("planning")
                with step("search"):
                    agent.span("searching")
                agent.span("planning again")
            agent.span("after the steps")

        assert agent.attribution() == {
            "no step yet": ("acme", None),
            "planning": ("acme", "plan"),
            "searching": ("acme", "search"),
            "planning again": ("acme", "plan"),
            "after the steps": ("acme", None),
        }

    def test_step_as_decorator_and_without_a_customer(self, agent: Agent) -> None:
        @step("summarize")
        def summarize() -> None:
            agent.span("summary")

        summarize()
        with step("plan"), customer("acme"):
            summarize()
            agent.span("plan")

        assert [attribution(span) for span in agent.spans()] == [
            (None, "summarize"),
            ("acme", "summarize"),
            ("acme", "plan"),
        ]


class TestInvalidNames:
    @pytest.mark.parametrize("value", ["", " ", "\t\n"], ids=["empty", "space", "whitespace"])
    @pytest.mark.parametrize("scope", [customer, step], ids=["customer", "step"])
    def test_blank_is_refused_when_called(
        self, agent: Agent, scope: Callable[[str], object], value: str
    ) -> None:
        with pytest.raises(ValueError, match="non-empty"):
            scope(value)
        agent.span("after")

        assert agent.attribution() == {"after": (None, None)}


class TestBaggage:
    def test_other_baggage_entries_are_not_copied(self, agent: Agent) -> None:
        private = baggage.set_baggage("user.email", "jane@example.com")
        private = baggage.set_baggage("session.id", "s-123", private)
        token = context.attach(private)
        try:
            agent.span("no customer")
            with customer("acme"), step("plan"):
                agent.span("with customer")
        finally:
            context.detach(token)

        spans = agent.by_name()
        assert dict(spans["no customer"].attributes or {}) == {}
        assert dict(spans["with customer"].attributes or {}) == {
            CUSTOMER_KEY: "acme",
            STEP_KEY: "plan",
        }

    def test_customer_from_an_upstream_service_baggage_header(self, agent: Agent) -> None:
        """A service called by the agent, with the same processor, stamps the customer
        that arrived in the W3C `baggage` header, and only that entry."""
        incoming = W3CBaggagePropagator().extract(
            {"baggage": f"{CUSTOMER_KEY}=acme,{STEP_KEY}=retrieve,user.email=jane%40example.com"}
        )
        token = context.attach(incoming)
        try:
            agent.span("downstream")
        finally:
            context.detach(token)

        assert dict(agent.by_name()["downstream"].attributes or {}) == {
            CUSTOMER_KEY: "acme",
            STEP_KEY: "retrieve",
        }

    def test_attribute_set_on_the_span_later_wins_over_baggage(self, agent: Agent) -> None:
        with customer("acme"), step("plan"), agent.tracer.start_as_current_span("call") as span:
            span.set_attribute(CUSTOMER_KEY, "globex")
            span.set_attribute(STEP_KEY, "search")

        assert agent.attribution() == {"call": ("globex", "search")}

    def test_attribute_given_at_span_start_wins_over_baggage(self, agent: Agent) -> None:
        with customer("acme"), step("plan"):
            agent.span("call", **{CUSTOMER_KEY: "globex", STEP_KEY: "search"})

        assert agent.attribution() == {"call": ("globex", "search")}

    def test_explicit_parent_context_decides_not_the_current_one(self, agent: Agent) -> None:
        globex_context = baggage.set_baggage(CUSTOMER_KEY, "globex")
        with customer("acme"):
            agent.tracer.start_span("explicit globex", context=globex_context).end()
            agent.tracer.start_span("explicit empty", context=Context()).end()
            agent.tracer.start_span("current").end()

        assert agent.attribution() == {
            "explicit globex": ("globex", None),
            "explicit empty": (None, None),
            "current": ("acme", None),
        }


# --- asyncio -----------------------------------------------------------------------------


class TestAsyncio:
    def test_tasks_created_inside_inherit_even_if_they_run_after_the_block(
        self, agent: Agent
    ) -> None:
        async def child(name: str) -> None:
            await asyncio.sleep(0)
            agent.span(name)

        async def main() -> None:
            with customer("acme"):
                late = asyncio.create_task(child("task awaited after the block"))
                await asyncio.create_task(child("task"))
                await asyncio.gather(child("gathered 1"), child("gathered 2"))
            agent.span("after")
            await late
            await asyncio.create_task(child("task created after"))

        asyncio.run(main())

        assert agent.attribution() == {
            "task": ("acme", None),
            "gathered 1": ("acme", None),
            "gathered 2": ("acme", None),
            "task awaited after the block": ("acme", None),
            "after": (None, None),
            "task created after": (None, None),
        }

    def test_task_created_before_the_block_does_not_inherit(self, agent: Agent) -> None:
        async def main() -> None:
            go = asyncio.Event()

            async def earlier() -> None:
                await go.wait()
                agent.span("earlier task")

            task = asyncio.create_task(earlier())
            with customer("acme"):
                go.set()
                await task
                agent.span("block")

        asyncio.run(main())

        assert agent.attribution() == {"earlier task": (None, None), "block": ("acme", None)}

    def test_concurrent_tasks_of_different_customers_never_mix(self, agent: Agent) -> None:
        async def conversation(customer_id: str, n: int) -> None:
            with customer(customer_id):
                for turn in range(5):
                    await asyncio.sleep(0)  # hand over to the other customers' tasks
                    with step(f"turn {turn}"):
                        agent.span(f"{customer_id} {n} {turn}", expected=customer_id)

        async def main() -> None:
            await asyncio.gather(
                *(conversation(c, n) for n in range(20) for c in ("acme", "globex", "initech"))
            )

        asyncio.run(main())

        spans = agent.spans()
        assert len(spans) == 3 * 20 * 5
        for span in spans:
            attributes = span.attributes or {}
            turn = span.name.rsplit(" ", 1)[1]
            assert attribution(span) == (attributes["expected"], f"turn {turn}"), span.name

    def test_to_thread_inherits_and_run_in_executor_does_not(self, agent: Agent) -> None:
        async def main() -> None:
            with customer("acme"):
                await asyncio.to_thread(agent.span, "to_thread")
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, agent.span, "run_in_executor")
                handover = contextvars.copy_context()
                await loop.run_in_executor(None, handover.run, agent.span, "handed over")

        asyncio.run(main())

        assert agent.attribution() == {
            "to_thread": ("acme", None),
            "run_in_executor": (None, None),
            "handed over": ("acme", None),
        }

    def test_one_scope_object_shared_by_concurrent_tasks(
        self, agent: Agent, detach_errors: DetachErrors
    ) -> None:
        acme = customer("acme")

        async def request(n: int, hold: float) -> None:
            with acme:
                await asyncio.sleep(hold)
                agent.span(f"inside {n}")
            agent.span(f"after {n}")

        async def main() -> None:
            # Task 0 leaves the block while task 1 is still inside it.
            await asyncio.gather(request(0, 0.01), request(1, 0.05))

        asyncio.run(main())

        assert agent.attribution() == {
            "inside 0": ("acme", None),
            "inside 1": ("acme", None),
            "after 0": (None, None),
            "after 1": (None, None),
        }
        assert detach_errors() == []


# --- threads -----------------------------------------------------------------------------


def run_in_thread(target: Callable[[], object]) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert errors == []


class TestThreads:
    def test_a_new_thread_starts_without_the_customer(self, agent: Agent) -> None:
        with customer("acme"):
            run_in_thread(lambda: agent.span("new thread"))
            agent.span("this thread")

        assert agent.attribution() == {"new thread": (None, None), "this thread": ("acme", None)}

    def test_copy_context_run_hands_the_customer_over(self, agent: Agent) -> None:
        with customer("acme"), step("plan"):
            handover = contextvars.copy_context()
            run_in_thread(lambda: handover.run(agent.span, "handed over"))
        run_in_thread(lambda: handover.run(agent.span, "handed over after the block"))

        assert agent.attribution() == {
            "handed over": ("acme", "plan"),
            # The copy was taken inside the block: it keeps the customer.
            "handed over after the block": ("acme", "plan"),
        }

    def test_thread_pool_needs_the_handover_too(self, agent: Agent) -> None:
        with ThreadPoolExecutor(max_workers=2) as pool, customer("acme"):
            pool.submit(agent.span, "submitted").result(timeout=30)
            handover = contextvars.copy_context()
            pool.submit(handover.run, agent.span, "submitted with handover").result(timeout=30)

        assert agent.attribution() == {
            "submitted": (None, None),
            "submitted with handover": ("acme", None),
        }

    def test_own_block_in_each_thread(self, agent: Agent) -> None:
        def work() -> None:
            with customer("globex"):
                agent.span("worker")

        with customer("acme"):
            run_in_thread(work)
            agent.span("main")

        assert agent.attribution() == {"worker": ("globex", None), "main": ("acme", None)}

    def test_two_customers_in_two_threads_concurrently_never_mix(
        self, agent: Agent, detach_errors: DetachErrors
    ) -> None:
        spans_per_thread = 300
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def conversation(customer_id: str) -> None:
            try:
                barrier.wait(timeout=10)
                with customer(customer_id):
                    for n in range(spans_per_thread):
                        # Lock-step: both threads are inside their blocks, span after span.
                        barrier.wait(timeout=10)
                        with step(f"step {n % 3}"):
                            agent.span(f"{customer_id} {n}", expected=customer_id)
                barrier.wait(timeout=10)
                agent.span(f"{customer_id} after")
            except BaseException as error:
                errors.append(error)
                barrier.abort()

        threads = [threading.Thread(target=conversation, args=(c,)) for c in ("acme", "globex")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []

        found = agent.attribution()
        assert len(found) == 2 * spans_per_thread + 2
        for customer_id in ("acme", "globex"):
            for n in range(spans_per_thread):
                assert found[f"{customer_id} {n}"] == (customer_id, f"step {n % 3}")
            assert found[f"{customer_id} after"] == (None, None)
        assert detach_errors() == []


# --- Real instrumentation libraries around the real openai client -------------------------


class _CompletionsHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._answer(404, {"error": {"message": f"no route {self.path}"}})
            return
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self._answer(
            200,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Done."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
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


@pytest.fixture
def provider_url() -> Iterator[str]:
    """The base URL of an OpenAI-compatible chat completions server on port 0."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CompletionsHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class Instrumentor(Protocol):
    def instrument(self, **kwargs: Any) -> None: ...
    def uninstrument(self, **kwargs: Any) -> None: ...


@dataclass(frozen=True)
class Library:
    """An instrumentation library, and the attribute its LLM spans name the model in."""

    make: Callable[[], Instrumentor]
    model_attribute: str
    semconv_opt_in: str | None = None


LIBRARIES = [
    pytest.param(
        Library(OpenAIV2Instrumentor, "gen_ai.request.model"), id="openai-v2-default-semconv"
    ),
    pytest.param(
        Library(OpenAIV2Instrumentor, "gen_ai.request.model", "gen_ai_latest_experimental"),
        id="openai-v2-latest-semconv",
    ),
    pytest.param(Library(OpenInferenceInstrumentor, "llm.model_name"), id="openinference"),
]


@pytest.fixture(params=LIBRARIES)
def library(
    request: pytest.FixtureRequest, agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Library]:
    """The library, instrumenting `openai` for `agent`'s provider; uninstrumented after."""
    chosen: Library = request.param
    if chosen.semconv_opt_in is None:
        monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    else:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", chosen.semconv_opt_in)
    # openai-v2 reads the opt-in once per process: forget it (restored at teardown).
    stability = _OpenTelemetrySemanticConventionStability
    monkeypatch.setattr(stability, "_initialized", False)
    monkeypatch.setattr(stability, "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", {})
    instrumentor = chosen.make()
    instrumentor.instrument(tracer_provider=agent.provider)
    try:
        yield chosen
    finally:
        instrumentor.uninstrument()


def llm_spans(agent: Agent) -> list[ReadableSpan]:
    """Spans made by the instrumentation library, not by the test's own tracer."""
    return [
        span
        for span in agent.spans()
        if span.instrumentation_scope is None or span.instrumentation_scope.name != TRACER_NAME
    ]


MESSAGES: Any = [{"role": "user", "content": "Summarize the ticket."}]


class TestInstrumentationLibraries:
    def test_llm_spans_inside_the_block_carry_the_customer(
        self, agent: Agent, library: Library, provider_url: str
    ) -> None:
        client = openai.OpenAI(base_url=provider_url, api_key="sk-test", max_retries=0)
        client.chat.completions.create(model="before", messages=MESSAGES)
        with customer("acme"):
            client.chat.completions.create(model="acme-plain", messages=MESSAGES)
            with step("draft"):
                client.chat.completions.create(model="acme-draft", messages=MESSAGES)
        client.chat.completions.create(model="after", messages=MESSAGES)
        client.close()

        stamped = {
            (span.attributes or {})[library.model_attribute]: attribution(span)
            for span in llm_spans(agent)
        }
        assert stamped == {
            "before": (None, None),
            "acme-plain": ("acme", None),
            "acme-draft": ("acme", "draft"),
            "after": (None, None),
        }

    def test_async_client_in_concurrent_tasks_of_two_customers(
        self, agent: Agent, library: Library, provider_url: str
    ) -> None:
        async def conversation(client: openai.AsyncOpenAI, customer_id: str) -> None:
            with customer(customer_id):
                for turn in range(3):
                    with step(f"turn {turn}"):
                        await client.chat.completions.create(
                            model=f"{customer_id}-{turn}", messages=MESSAGES
                        )

        async def main() -> None:
            client = openai.AsyncOpenAI(base_url=provider_url, api_key="sk-test", max_retries=0)
            await asyncio.gather(*(conversation(client, c) for c in ("acme", "globex")))
            await client.close()

        asyncio.run(main())

        stamped = {
            (span.attributes or {})[library.model_attribute]: attribution(span)
            for span in llm_spans(agent)
        }
        assert stamped == {
            f"{c}-{turn}": (c, f"turn {turn}") for c in ("acme", "globex") for turn in range(3)
        }

    def test_sync_client_in_two_threads_of_two_customers(
        self, agent: Agent, library: Library, provider_url: str
    ) -> None:
        client = openai.OpenAI(base_url=provider_url, api_key="sk-test", max_retries=0)
        barrier = threading.Barrier(2)

        def conversation(customer_id: str) -> None:
            with customer(customer_id):
                for turn in range(5):
                    barrier.wait(timeout=10)
                    client.chat.completions.create(model=f"{customer_id}-{turn}", messages=MESSAGES)

        with ThreadPoolExecutor(max_workers=2) as pool:
            for done in [pool.submit(conversation, c) for c in ("acme", "globex")]:
                done.result(timeout=60)
        client.close()

        stamped = {
            (span.attributes or {})[library.model_attribute]: attribution(span)
            for span in llm_spans(agent)
        }
        assert stamped == {
            f"{c}-{turn}": (c, None) for c in ("acme", "globex") for turn in range(5)
        }
