"""Attribute names AgentMeter reads, per field, first match wins.

OTel GenAI (current and deprecated names), OpenInference, OpenLLMetry and the Vercel AI SDK.
"""

from __future__ import annotations

from agentmeter.attribution import DEFAULT_CUSTOMER_KEYS as DEFAULT_CUSTOMER_KEYS

PROVIDER = (
    "gen_ai.provider.name",
    "gen_ai.system",
    "llm.provider",
    "llm.system",
    "ai.model.provider",
)
MODEL = (
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.response.model_name",
    "llm.model_name",
    "embedding.model_name",
    "ai.response.model",
    "ai.model.id",
)
INPUT_TOKENS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "ai.usage.inputTokens",
    "ai.usage.promptTokens",
    # Vercel AI SDK embedding spans (`ai.embed.doEmbed`) report only this count.
    "ai.usage.tokens",
)
OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "ai.usage.outputTokens",
    "ai.usage.completionTokens",
)
CACHE_READ_TOKENS = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
    # Vercel AI SDK 6 (`inputTokenDetails`) before its older flat name.
    "ai.usage.inputTokenDetails.cacheReadTokens",
    "ai.usage.cachedInputTokens",
    # pydantic-ai
    "gen_ai.usage.details.cache_read_tokens",
)
CACHE_WRITE_TOKENS = (
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
    "ai.usage.inputTokenDetails.cacheWriteTokens",
    "gen_ai.usage.details.cache_write_tokens",
)
REASONING_TOKENS = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
    "ai.usage.outputTokenDetails.reasoningTokens",
    "ai.usage.reasoningTokens",
    "gen_ai.usage.details.reasoning_tokens",
)

OPERATION = ("gen_ai.operation.name", "llm.request.type", "ai.operationId")
AGENT_NAME = ("gen_ai.agent.name", "agent.name")
# The provider's id of the response: one provider call, however many spans describe it.
RESPONSE_ID = ("gen_ai.response.id", "llm.response.id", "ai.response.id")
# OpenInference has no response-id attribute: the id leads the JSON response it records.
OPENINFERENCE_OUTPUT = "output.value"
OPENINFERENCE_OUTPUT_TYPE = "output.mime_type"
OPENINFERENCE_LLM_KIND = "LLM"
TOOL_NAME = ("gen_ai.tool.name", "tool.name", "ai.toolCall.name")
STEP = "agentmeter.step"
CUSTOM_METER_PREFIX = "agentmeter.usage."
SERVICE_NAME = "service.name"

# Span kinds that repeat the totals of their children: their token counts are never billed.
OPENINFERENCE_KIND = "openinference.span.kind"
OPENLLMETRY_KIND = "traceloop.span.kind"
VERCEL_OPERATION = "ai.operationId"
VERCEL_TOOL_CALL = "toolCall"
# `agent_step`: a Vercel AI SDK 7 step, wrapping one model call and its tool calls.
AGGREGATE_OPERATIONS = frozenset({"invoke_agent", "invoke_workflow", "create_agent", "agent_step"})
OPENINFERENCE_AGENT_KIND = "AGENT"
AGGREGATE_OPENINFERENCE_KINDS = frozenset({OPENINFERENCE_AGENT_KIND, "CHAIN"})
AGGREGATE_OPENLLMETRY_KINDS = frozenset({"workflow", "agent", "task"})

TOOL_OPERATION = "execute_tool"
TOOL_OPENINFERENCE_KIND = "TOOL"
TOOL_OPENLLMETRY_KIND = "tool"

# Every attribute key read from a span or its resource, besides the tenant's customer keys
# and the `agentmeter.usage.` custom meters: the receiver decodes only these.
READ_KEYS = frozenset(
    {
        *PROVIDER,
        *MODEL,
        *INPUT_TOKENS,
        *OUTPUT_TOKENS,
        *CACHE_READ_TOKENS,
        *CACHE_WRITE_TOKENS,
        *REASONING_TOKENS,
        *OPERATION,
        *AGENT_NAME,
        *RESPONSE_ID,
        *TOOL_NAME,
        OPENINFERENCE_OUTPUT,
        OPENINFERENCE_OUTPUT_TYPE,
        STEP,
        SERVICE_NAME,
        OPENINFERENCE_KIND,
        OPENLLMETRY_KIND,
        VERCEL_OPERATION,
    }
)
