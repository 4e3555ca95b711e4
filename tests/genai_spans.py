"""Span attributes in the OpenTelemetry GenAI conventions, as agents' SDKs set them, and the
leaf spans of a sample support-agent run that several suites send through AgentMeter."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.util.types import AttributeValue

CUSTOMER = "agentmeter.customer.id"
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
AGENT_NAME = "gen_ai.agent.name"
TOOL_NAME = "gen_ai.tool.name"
INPUT = "gen_ai.usage.input_tokens"
OUTPUT = "gen_ai.usage.output_tokens"
CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE = "gen_ai.usage.cache_creation.input_tokens"
REASONING = "gen_ai.usage.reasoning.output_tokens"
SERVICE = "support-agent"

Attributes = dict[str, AttributeValue]


def chat_attributes(
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    response_model: str | None = None,
    usage: Mapping[str, AttributeValue] | None = None,
) -> Attributes:
    """A `chat` call to `model`, with its token counts and any further `usage`."""
    attributes: Attributes = {OPERATION: "chat", PROVIDER: provider, REQUEST_MODEL: model}
    if response_model is not None:
        attributes[RESPONSE_MODEL] = response_model
    return {**attributes, INPUT: input_tokens, OUTPUT: output_tokens, **(usage or {})}


def tool_attributes(tool: str, usage: Mapping[str, AttributeValue]) -> Attributes:
    """An `execute_tool` span of `tool`, with the custom meters in `usage`."""
    return {OPERATION: "execute_tool", TOOL_NAME: tool, **usage}


# The sample run. For acme: a gpt-4o call with cached and reasoning tokens, a web search,
# a claude call with cache writes. For globex: a gpt-4o-mini call, then code runs.
GPT4O_CALL = chat_attributes(
    "openai",
    "gpt-4o",
    1200,
    300,
    response_model="gpt-4o-2024-08-06",
    usage={CACHE_READ: 200, REASONING: 50},
)
WEB_SEARCH_CALL = tool_attributes("web_search", {"agentmeter.usage.web_searches": 3})
CLAUDE_CALL = chat_attributes("anthropic", "claude-sonnet-4", 800, 150, usage={CACHE_WRITE: 100})
GPT4O_MINI_CALL = chat_attributes("openai", "gpt-4o-mini", 64, 16)


def code_run_call(seconds: float) -> Attributes:
    return tool_attributes("run_code", {"agentmeter.usage.sandbox_seconds": seconds})
