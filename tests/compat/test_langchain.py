"""LangChain/LangGraph (`langchain-openai`, `langgraph`'s prebuilt ReAct agent) against a fake
OpenAI and a real `agentmeter serve`, with `openinference-instrumentation-langchain` and
with OpenLLMetry's `opentelemetry-instrumentation-langchain`, invoked and streamed.

What the spans carry (docs/compatibility.md): OpenInference emits every figure the provider
reported; OpenLLMetry emits no reasoning count. The agent name is what each instrumentation
calls the enclosing agent: OpenInference marks LangGraph's `agent` node as the AGENT span
(the graph itself is a CHAIN), OpenLLMetry names the graph (`support`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.prebuilt import create_react_agent
from openinference.instrumentation.langchain import LangChainInstrumentor as OpenInferenceLC
from opentelemetry.instrumentation.langchain import LangchainInstrumentor as OpenLLMetryLC
from pydantic import SecretStr

from tests.compat.conftest import Telemetry
from tests.compat.fake_openai_api import FakeOpenAIAPI, fake_openai_api_serving
from tests.conftest import RunningServer
from tests.usage_queries import usage_table

CUSTOMER = "acme"

# One backend. After both LangChain instrumentations have been instrumented and
# uninstrumented in a process, a later round (the other backend's) stores a second set of
# OpenInference-shaped spans per call that shares no response id or parent with the first:
# instrumentation state outlives `uninstrument()` (not isolated further). The store's rules
# are the same on both backends (tests/exporter/test_provider_calls.py).
pytestmark = pytest.mark.parametrize(
    "shared_server", [pytest.param("sqlite", id="sqlite")], indirect=True
)

ALL = ("input_tokens", "cache_read_tokens", "output_tokens", "output_reasoning_tokens")
# instrumentation → (token meters its LLM spans carry, agent name of the LLM usage,
# (provider, agent name) of the tool call).
EXPECTED: dict[str, tuple[tuple[str, ...], str, tuple[str, str]]] = {
    "openinference": (ALL, "agent", ("", "")),
    "openllmetry": (
        ("input_tokens", "cache_read_tokens", "output_tokens"),
        "support",
        ("langgraph", "support"),
    ),
}


@pytest.fixture(scope="module")
def fake_openai_module() -> Iterator[FakeOpenAIAPI]:
    with fake_openai_api_serving() as provider:
        yield provider


@pytest.fixture
def openai_provider(fake_openai_module: FakeOpenAIAPI) -> FakeOpenAIAPI:
    fake_openai_module.clear()
    return fake_openai_module


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


@pytest.mark.parametrize(
    "streamed", [pytest.param(False, id="invoke"), pytest.param(True, id="stream")]
)
@pytest.mark.parametrize("instrumentation", ["openinference", "openllmetry"])
def test_react_agent_billed_as_the_provider_reported(
    agentmeter: RunningServer,
    telemetry: Telemetry,
    openai_provider: FakeOpenAIAPI,
    instrumentation: str,
    streamed: bool,
) -> None:
    instrumentor = OpenInferenceLC() if instrumentation == "openinference" else OpenLLMetryLC()
    instrumentor.instrument(tracer_provider=telemetry.provider)
    try:
        llm = ChatOpenAI(
            model="gpt-5",
            base_url=openai_provider.base_url,
            api_key=SecretStr("sk-test"),
            max_retries=0,
            streaming=streamed,
            stream_usage=True,
        )
        agent = create_react_agent(llm, [weather], name="support")
        tracer = telemetry.provider.get_tracer("app")
        with tracer.start_as_current_span("request", attributes={"customer.id": CUSTOMER}):
            agent.invoke({"messages": [("user", "Weather in Paris?")]})
    finally:
        instrumentor.uninstrument()

    calls = openai_provider.calls
    assert [(c.api, c.streamed, c.tool_call) for c in calls] == [
        ("chat", streamed, True),
        ("chat", streamed, False),
    ]
    meters, agent_name, (tool_provider, tool_agent) = EXPECTED[instrumentation]
    figures = {
        "input_tokens": sum(c.usage.input_tokens for c in calls),
        "cache_read_tokens": sum(c.usage.cached_tokens for c in calls),
        "output_tokens": sum(c.usage.output_tokens for c in calls),
        "output_reasoning_tokens": sum(c.usage.reasoning_tokens for c in calls),
    }
    assert usage_table(agentmeter, "provider", "agent_name", "tool") == {
        **{(CUSTOMER, m, "openai", agent_name, ""): str(figures[m]) for m in meters},
        (CUSTOMER, "tool_calls", tool_provider, tool_agent, "weather"): "1",
    }
