"""The `anthropic` SDK against a fake Anthropic and a real `agentmeter serve`: its own spans
on and off, alone and with each instrumentor (OpenLLMetry's
`opentelemetry-instrumentation-anthropic`, `openinference-instrumentation-anthropic`),
streamed and not. Every provider call is billed once, with the figures the provider
reported, to the customer and agent named on the enclosing agent span.

Where an instrumentation itself misreports a figure, the expected table says so (and
docs/compatibility.md): OpenLLMetry emits no reasoning count, and for a streamed answer
counts `message_start`'s output token again (42 for 41). With the SDK's own spans on, the
SDK's span bills the call and both gaps close.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

import anthropic
import pytest
from anthropic.types import MessageParam, ThinkingConfigEnabledParam, ToolParam
from openinference.instrumentation.anthropic import (
    AnthropicInstrumentor as OpenInferenceAnthropic,
)
from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor as OpenLLMetryAnthropic
from opentelemetry.sdk.trace import TracerProvider

from tests.compat.conftest import Telemetry
from tests.compat.fake_anthropic import AnthropicUsage, FakeAnthropic
from tests.conftest import RunningServer
from tests.usage_queries import usage_table

MODEL = "claude-opus-4-6"
CUSTOMER = "acme"
AGENT = "support"


class Instrumentor(Enum):
    NONE = "none"
    OPENLLMETRY = "openllmetry"
    OPENINFERENCE = "openinference"


@contextmanager
def instrumented(which: Instrumentor, provider: TracerProvider) -> Iterator[None]:
    instrumentor = {
        Instrumentor.NONE: None,
        Instrumentor.OPENLLMETRY: OpenLLMetryAnthropic(),
        Instrumentor.OPENINFERENCE: OpenInferenceAnthropic(),
    }[which]
    if instrumentor is None:
        yield
        return
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def client(fake: FakeAnthropic, telemetry: Telemetry, sdk_spans: bool) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=fake.base_url,
        api_key="sk-ant-test",
        max_retries=0,
        open_telemetry={"tracer_provider": telemetry.provider, "traces": sdk_spans},
    )


def provider_figures(usage: AnthropicUsage) -> dict[str, int]:
    """Meter → what the provider reported, as AgentMeter stores it (inclusive input)."""
    figures = {
        "input_tokens": usage.input_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
    }
    if usage.thinking_tokens is not None:
        figures["output_reasoning_tokens"] = usage.thinking_tokens
    return figures


def billed(server: RunningServer) -> dict[str, int]:
    """Meter → quantity billed, every row attributed to the customer, provider and agent."""
    table = usage_table(server, "provider", "agent_name")
    assert {key[:1] + key[2:] for key in table} <= {(CUSTOMER, "anthropic", AGENT)}, table
    return {meter: int(quantity) for (_, meter, _, _), quantity in table.items()}


def expected_figures(
    usage: AnthropicUsage, which: Instrumentor, sdk_spans: bool, streamed: bool
) -> dict[str, int]:
    figures = provider_figures(usage)
    if sdk_spans:
        return figures
    if which is Instrumentor.NONE:
        return {}  # nothing emits a span
    if which is Instrumentor.OPENLLMETRY:
        figures.pop("output_reasoning_tokens")  # not emitted by OpenLLMetry
        if streamed:
            figures["output_tokens"] += 1  # OpenLLMetry adds message_start's output token
    return figures


@pytest.mark.parametrize(
    "streamed", [pytest.param(False, id="create"), pytest.param(True, id="stream")]
)
@pytest.mark.parametrize("which", list(Instrumentor), ids=lambda i: i.value)
@pytest.mark.parametrize(
    "sdk_spans", [pytest.param(True, id="sdk-spans-on"), pytest.param(False, id="sdk-spans-off")]
)
def test_each_call_billed_once_with_the_providers_figures(
    agentmeter: RunningServer,
    telemetry: Telemetry,
    anthropic_provider: FakeAnthropic,
    sdk_spans: bool,
    which: Instrumentor,
    streamed: bool,
) -> None:
    tracer = telemetry.provider.get_tracer("agent")
    messages: list[MessageParam] = [{"role": "user", "content": "What is the weather?"}]
    thinking: ThinkingConfigEnabledParam = {"type": "enabled", "budget_tokens": 500}
    with instrumented(which, telemetry.provider):
        sdk = client(anthropic_provider, telemetry, sdk_spans)
        with tracer.start_as_current_span(
            f"invoke_agent {AGENT}",
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": AGENT,
                "agentmeter.customer.id": CUSTOMER,
            },
        ):
            if streamed:
                with sdk.messages.stream(
                    model=MODEL, max_tokens=1000, messages=messages, thinking=thinking
                ) as stream:
                    stream.until_done()
            else:
                sdk.messages.create(
                    model=MODEL, max_tokens=1000, messages=messages, thinking=thinking
                )

    [call] = anthropic_provider.calls
    assert call.streamed is streamed
    assert billed(agentmeter) == expected_figures(call.usage, which, sdk_spans, streamed)


def test_tool_loop_bills_each_call(
    agentmeter: RunningServer, telemetry: Telemetry, anthropic_provider: FakeAnthropic
) -> None:
    """A tool call and its answer: two provider calls, each billed once (SDK spans and
    OpenLLMetry's siblings)."""
    tools: list[ToolParam] = [
        {
            "name": "weather",
            "description": "Weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    question: MessageParam = {"role": "user", "content": "Weather in Paris?"}
    tracer = telemetry.provider.get_tracer("agent")
    with instrumented(Instrumentor.OPENLLMETRY, telemetry.provider):
        sdk = client(anthropic_provider, telemetry, sdk_spans=True)
        with tracer.start_as_current_span(
            f"invoke_agent {AGENT}",
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": AGENT,
                "agentmeter.customer.id": CUSTOMER,
            },
        ):
            first = sdk.messages.create(
                model=MODEL,
                max_tokens=500,
                messages=[question],
                tools=tools,
            )
            [tool_use] = [block for block in first.content if block.type == "tool_use"]
            sdk.messages.create(
                model=MODEL,
                max_tokens=500,
                tools=tools,
                messages=[
                    question,
                    {"role": "assistant", "content": first.content},
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": tool_use.id, "content": "Sunny"}
                        ],
                    },
                ],
            )

    assert len(anthropic_provider.calls) == 2
    totals: dict[str, int] = {}
    for call in anthropic_provider.calls:
        for meter, quantity in provider_figures(call.usage).items():
            totals[meter] = totals.get(meter, 0) + quantity
    assert billed(agentmeter) == totals
