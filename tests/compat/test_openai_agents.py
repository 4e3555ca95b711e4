"""The OpenAI Agents SDK (`openai-agents`) against a fake OpenAI and a real `agentmeter
serve`, with `openinference-instrumentation-openai-agents` and with OpenLLMetry's
`opentelemetry-instrumentation-openai-agents`, on the Responses and Chat Completions
models, run and streamed, with a tool loop.

Billed usage equals what the provider reported wherever the instrumentation emits it; the
`EMITTED` table lists the meters each instrumentation carries (docs/compatibility.md):
OpenInference emits no cache or reasoning figure for Chat Completions; OpenLLMetry emits no
usage at all for Chat Completions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_trace_processors,
)
from agents.models.interface import Model
from openinference.instrumentation.openai_agents import (
    OpenAIAgentsInstrumentor as OpenInferenceAgents,
)
from opentelemetry.instrumentation.openai_agents import (
    OpenAIAgentsInstrumentor as OpenLLMetryAgents,
)

from tests.compat.conftest import Telemetry
from tests.compat.fake_openai_api import FakeOpenAIAPI, OpenAICall, fake_openai_api_serving
from tests.conftest import RunningServer
from tests.usage_queries import usage_table

CUSTOMER = "acme"
AGENT = "support"

ALL = ("input_tokens", "cache_read_tokens", "output_tokens", "output_reasoning_tokens")
# (instrumentation, API) → the token meters its spans carry.
EMITTED: dict[tuple[str, str], tuple[str, ...]] = {
    ("openinference", "responses"): ALL,
    ("openinference", "chat"): ("input_tokens", "output_tokens"),
    ("openllmetry", "responses"): ALL,
    ("openllmetry", "chat"): (),
}


@pytest.fixture(scope="module")
def fake_openai_module() -> Iterator[FakeOpenAIAPI]:
    with fake_openai_api_serving() as provider:
        yield provider


@pytest.fixture
def openai_provider(fake_openai_module: FakeOpenAIAPI) -> FakeOpenAIAPI:
    fake_openai_module.clear()
    return fake_openai_module


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


def provider_figure(call: OpenAICall, meter: str) -> int:
    return {
        "input_tokens": call.usage.input_tokens,
        "cache_read_tokens": call.usage.cached_tokens,
        "output_tokens": call.usage.output_tokens,
        "output_reasoning_tokens": call.usage.reasoning_tokens,
    }[meter]


@pytest.mark.parametrize(
    "streamed", [pytest.param(False, id="run"), pytest.param(True, id="streamed")]
)
@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize("instrumentation", ["openinference", "openllmetry"])
def test_agent_run_billed_as_the_provider_reported(
    agentmeter: RunningServer,
    telemetry: Telemetry,
    openai_provider: FakeOpenAIAPI,
    instrumentation: str,
    api: str,
    streamed: bool,
) -> None:
    client = openai.AsyncOpenAI(base_url=openai_provider.base_url, api_key="sk-test", max_retries=0)
    model: Model = (
        OpenAIResponsesModel("gpt-5", client)
        if api == "responses"
        else OpenAIChatCompletionsModel("gpt-5", client)
    )
    agent = Agent(
        name=AGENT,
        model=model,
        tools=[weather],
        # Chat Completions streams report usage only when asked to.
        model_settings=ModelSettings(include_usage=True),
    )
    instrumentor = (
        OpenInferenceAgents() if instrumentation == "openinference" else OpenLLMetryAgents()
    )
    set_trace_processors([])  # no export to OpenAI's own trace backend
    instrumentor.instrument(tracer_provider=telemetry.provider)
    tracer = telemetry.provider.get_tracer("app")

    async def run() -> None:
        if streamed:
            result = Runner.run_streamed(agent, "Weather in Paris?")
            async for _ in result.stream_events():
                pass
        else:
            await Runner.run(agent, "Weather in Paris?")

    try:
        # The application names its customer on a span around the run.
        with tracer.start_as_current_span("request", attributes={"customer.id": CUSTOMER}):
            asyncio.run(run())
    finally:
        instrumentor.uninstrument()
        set_trace_processors([])

    calls = openai_provider.calls
    assert [(c.api, c.streamed, c.tool_call) for c in calls] == [
        (api, streamed, True),
        (api, streamed, False),
    ]
    expected = {
        meter: sum(provider_figure(call, meter) for call in calls)
        for meter in EMITTED[instrumentation, api]
    }
    table = usage_table(agentmeter, "provider", "agent_name", "tool")
    assert table == {
        **{(CUSTOMER, meter, "openai", AGENT, ""): str(n) for meter, n in expected.items()},
        (CUSTOMER, "tool_calls", tool_provider(instrumentation), AGENT, "weather"): "1",
    }


def tool_provider(instrumentation: str) -> str:
    """OpenLLMetry puts `gen_ai.provider.name` on the tool span too."""
    return "openai" if instrumentation == "openllmetry" else ""
