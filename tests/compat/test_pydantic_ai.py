"""pydantic-ai (`Agent.instrument_all()`) against fake providers and a real `agentmeter
serve`: OpenAI (Chat Completions and Responses) and Anthropic models (with the anthropic
SDK's own spans on and off: on, its span is a child of pydantic-ai's), a tool loop, run and
streamed. Every meter the provider reported is billed once, to the agent's customer and
name, and the tool call is counted.

pydantic-ai reports reasoning as `gen_ai.usage.details.reasoning_tokens` and cache writes
as `gen_ai.usage.cache_creation.input_tokens` (plus `details.*` copies).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import anthropic
import openai
import pytest
from opentelemetry import baggage, context
from pydantic_ai import Agent, InstrumentationSettings
from pydantic_ai.models import Model
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider

from otel_processor import CustomerSpanProcessor
from tests.compat.conftest import Telemetry
from tests.compat.fake_anthropic import FakeAnthropic
from tests.compat.fake_openai_api import FakeOpenAIAPI, fake_openai_api_serving
from tests.conftest import RunningServer
from tests.usage_queries import usage_table

CUSTOMER = "acme"
AGENT = "support"


@pytest.fixture(scope="module")
def fake_openai_module() -> Iterator[FakeOpenAIAPI]:
    with fake_openai_api_serving() as provider:
        yield provider


@pytest.fixture
def openai_provider(fake_openai_module: FakeOpenAIAPI) -> FakeOpenAIAPI:
    fake_openai_module.clear()
    return fake_openai_module


def weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


def run_agent(model: Model, telemetry: Telemetry, *, streamed: bool) -> None:
    """The agent run as an application runs it, naming its customer in baggage."""
    telemetry.add_span_processor(CustomerSpanProcessor())
    Agent.instrument_all(InstrumentationSettings(tracer_provider=telemetry.provider))
    agent = Agent(model, name=AGENT, tools=[weather])

    async def run() -> None:
        if streamed:
            async with agent.run_stream("Weather in Paris?") as result:
                await result.get_output()
        else:
            await agent.run("Weather in Paris?")

    token = context.attach(baggage.set_baggage("agentmeter.customer.id", CUSTOMER))
    try:
        asyncio.run(run())
    finally:
        context.detach(token)
        Agent.instrument_all(False)


def billed(server: RunningServer, provider: str) -> dict[str, int]:
    """Meter → quantity; token meters of `provider`, the tool call of `weather`, all of
    the customer and the agent."""
    table = usage_table(server, "provider", "agent_name", "tool")
    for customer, meter, row_provider, agent, tool in table:
        assert (customer, agent) == (CUSTOMER, AGENT), table
        expected = ("", "weather") if meter == "tool_calls" else (provider, "")
        assert (row_provider, tool) == expected, table
    return {meter: int(quantity) for (_, meter, *_), quantity in table.items()}


STREAMED = [pytest.param(False, id="run"), pytest.param(True, id="run_stream")]


@pytest.mark.parametrize("streamed", STREAMED)
@pytest.mark.parametrize(
    "model_class",
    [pytest.param(OpenAIChatModel, id="chat"), pytest.param(OpenAIResponsesModel, id="responses")],
)
def test_openai_models(
    agentmeter: RunningServer,
    telemetry: Telemetry,
    openai_provider: FakeOpenAIAPI,
    model_class: type[OpenAIChatModel] | type[OpenAIResponsesModel],
    streamed: bool,
) -> None:
    client = openai.AsyncOpenAI(base_url=openai_provider.base_url, api_key="sk-test", max_retries=0)
    run_agent(
        model_class("gpt-5", provider=OpenAIProvider(openai_client=client)),
        telemetry,
        streamed=streamed,
    )

    calls = openai_provider.calls
    assert [c.tool_call for c in calls] == [True, False]
    assert billed(agentmeter, "openai") == {
        "input_tokens": sum(c.usage.input_tokens for c in calls),
        "cache_read_tokens": sum(c.usage.cached_tokens for c in calls),
        "output_tokens": sum(c.usage.output_tokens for c in calls),
        "output_reasoning_tokens": sum(c.usage.reasoning_tokens for c in calls),
        "tool_calls": 1,
    }


@pytest.mark.parametrize("streamed", STREAMED)
@pytest.mark.parametrize(
    "sdk_spans", [pytest.param(True, id="sdk-spans-on"), pytest.param(False, id="sdk-spans-off")]
)
def test_anthropic_model(
    agentmeter: RunningServer,
    telemetry: Telemetry,
    anthropic_provider: FakeAnthropic,
    sdk_spans: bool,
    streamed: bool,
) -> None:
    client = anthropic.AsyncAnthropic(
        base_url=anthropic_provider.base_url,
        api_key="sk-ant-test",
        max_retries=0,
        open_telemetry={"tracer_provider": telemetry.provider, "traces": sdk_spans},
    )
    model = AnthropicModel("claude-opus-4-6", provider=AnthropicProvider(anthropic_client=client))
    run_agent(model, telemetry, streamed=streamed)

    calls = anthropic_provider.calls
    assert len(calls) == 2
    names = telemetry.span_names()
    assert names.count("anthropic.messages.create") == (2 if sdk_spans else 0)
    assert billed(agentmeter, "anthropic") == {
        "input_tokens": sum(c.usage.input_tokens for c in calls),
        "cache_read_tokens": sum(c.usage.cache_read_tokens for c in calls),
        "cache_write_tokens": sum(c.usage.cache_write_tokens for c in calls),
        "output_tokens": sum(c.usage.output_tokens for c in calls),
        "tool_calls": 1,
    }
