"""`span_usage`: one span's attributes → canonical usage records, convention by convention.

Every table is `pytest.param(attributes, resource_attributes, expected, id=…)` unless the
concern needs the span name or ids too. Attribute names are spelled out here rather than
read from `otel_processor.conventions`, so a renamed or reordered convention fails a test
instead of silently changing what gets billed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_processor import conventions as conv
from otel_processor.conventions import DEFAULT_CUSTOMER_KEYS
from otel_processor.spans import RejectReason, SpanRejectedError, SpanUsage, span_usage
from otel_processor.usage import MAX_QUANTITY, Quantity, UsageRecord

Attrs = dict[str, object]

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
END_TIME = 1_767_225_600_123_456_789
SPAN_NAME = "chat gpt-4o"
# A minimal leaf inference span: tests of dimensions add this to get one record to inspect.
LLM_CALL: Attrs = {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 10}

PROVIDER_NAMES = (
    "gen_ai.provider.name",
    "gen_ai.system",
    "llm.provider",
    "llm.system",
    "ai.model.provider",
)
MODEL_NAMES = (
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.response.model_name",
    "llm.model_name",
    "embedding.model_name",
    "ai.response.model",
    "ai.model.id",
)
INPUT_NAMES = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "ai.usage.inputTokens",
    "ai.usage.promptTokens",
    "ai.usage.tokens",
)
OUTPUT_NAMES = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "ai.usage.outputTokens",
    "ai.usage.completionTokens",
)
CACHE_READ_NAMES = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
    "ai.usage.inputTokenDetails.cacheReadTokens",
    "ai.usage.cachedInputTokens",
    "gen_ai.usage.details.cache_read_tokens",
)
CACHE_WRITE_NAMES = (
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
    "ai.usage.inputTokenDetails.cacheWriteTokens",
    "gen_ai.usage.details.cache_write_tokens",
)
REASONING_NAMES = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
    "ai.usage.outputTokenDetails.reasoningTokens",
    "ai.usage.reasoningTokens",
    "gen_ai.usage.details.reasoning_tokens",
)
TOKEN_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("input_tokens", INPUT_NAMES),
    ("cache_read_tokens", CACHE_READ_NAMES),
    ("cache_write_tokens", CACHE_WRITE_NAMES),
    ("output_tokens", OUTPUT_NAMES),
    ("output_reasoning_tokens", REASONING_NAMES),
)
CANONICAL = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "output_reasoning_tokens",
    "tool_calls",
)


def usage(
    attributes: Attrs,
    resource_attributes: Attrs | None = None,
    *,
    name: str = SPAN_NAME,
    customer_keys: tuple[str, ...] | None = None,
    trace_id: bytes = TRACE_ID,
    span_id: bytes = SPAN_ID,
    end_time_unix_nano: int = END_TIME,
) -> SpanUsage:
    """`span_usage` with a valid span around the attributes under test."""
    return span_usage(
        trace_id=trace_id,
        span_id=span_id,
        name=name,
        end_time_unix_nano=end_time_unix_nano,
        attributes=attributes,
        resource_attributes=resource_attributes or {},
        customer_keys=DEFAULT_CUSTOMER_KEYS if customer_keys is None else customer_keys,
    )


def quantities(result: SpanUsage) -> dict[str, Quantity]:
    """Meter → quantity, after checking no meter appears twice."""
    meters = [record.meter for record in result.records]
    assert len(meters) == len(set(meters)), f"duplicate meters: {meters}"
    return {record.meter: record.quantity for record in result.records}


def only_record(result: SpanUsage) -> UsageRecord:
    assert len(result.records) == 1, result.records
    return result.records[0]


def exact(quantity: Quantity) -> tuple[str, str]:
    """A quantity with its type: `1 == Decimal(1) == 1.0`, but only one is what we store."""
    return type(quantity).__name__, str(quantity)


class TestConventionLists:
    """The tests below cover every name, in this order; a new name needs a new row."""

    @pytest.mark.parametrize(
        ("actual", "expected"),
        [
            pytest.param(conv.PROVIDER, PROVIDER_NAMES, id="provider"),
            pytest.param(conv.MODEL, MODEL_NAMES, id="model"),
            pytest.param(conv.INPUT_TOKENS, INPUT_NAMES, id="input"),
            pytest.param(conv.OUTPUT_TOKENS, OUTPUT_NAMES, id="output"),
            pytest.param(conv.CACHE_READ_TOKENS, CACHE_READ_NAMES, id="cache-read"),
            pytest.param(conv.CACHE_WRITE_TOKENS, CACHE_WRITE_NAMES, id="cache-write"),
            pytest.param(conv.REASONING_TOKENS, REASONING_NAMES, id="reasoning"),
            pytest.param(
                conv.OPERATION,
                ("gen_ai.operation.name", "llm.request.type", "ai.operationId"),
                id="operation",
            ),
            pytest.param(conv.AGENT_NAME, ("gen_ai.agent.name", "agent.name"), id="agent"),
            pytest.param(
                conv.RESPONSE_ID,
                ("gen_ai.response.id", "llm.response.id", "ai.response.id"),
                id="response-id",
            ),
            pytest.param(
                conv.TOOL_NAME, ("gen_ai.tool.name", "tool.name", "ai.toolCall.name"), id="tool"
            ),
            pytest.param(
                conv.DEFAULT_CUSTOMER_KEYS,
                ("agentmeter.customer.id", "customer.id"),
                id="customer",
            ),
        ],
    )
    def test_names_and_order(self, actual: tuple[str, ...], expected: tuple[str, ...]) -> None:
        assert actual == expected


class TestProvider:
    @pytest.mark.parametrize(
        ("attributes", "resource_attributes", "expected"),
        [
            pytest.param({"gen_ai.provider.name": "openai"}, {}, "openai", id="gen_ai.provider"),
            pytest.param({"gen_ai.system": "anthropic"}, {}, "anthropic", id="gen_ai.system"),
            pytest.param({"llm.provider": "openai"}, {}, "openai", id="openinference-provider"),
            pytest.param({"llm.system": "anthropic"}, {}, "anthropic", id="openinference-system"),
            pytest.param(
                {"ai.model.provider": "openai.chat"}, {}, "openai.chat", id="vercel-provider"
            ),
            pytest.param(
                {"gen_ai.provider.name": "azure.ai.openai", "gen_ai.system": "openai"},
                {},
                "azure.ai.openai",
                id="current-name-before-deprecated",
            ),
            pytest.param(
                {"gen_ai.system": "openai", "llm.provider": "azure"},
                {},
                "openai",
                id="gen_ai-before-openinference",
            ),
            pytest.param(
                {"llm.provider": "azure", "llm.system": "openai"},
                {},
                "azure",
                id="llm.provider-before-llm.system",
            ),
            pytest.param(
                {"llm.system": "openai", "ai.model.provider": "openai.chat"},
                {},
                "openai",
                id="openinference-before-vercel",
            ),
            pytest.param({"gen_ai.system": "  openai "}, {}, "openai", id="stripped"),
            pytest.param({}, {"gen_ai.provider.name": "openai"}, "", id="resource-not-read"),
            pytest.param({}, {}, "", id="absent"),
        ],
    )
    def test_provider(self, attributes: Attrs, resource_attributes: Attrs, expected: str) -> None:
        record = only_record(usage({**LLM_CALL, **attributes}, resource_attributes))
        assert record.provider == expected


class TestModel:
    @pytest.mark.parametrize(
        ("attributes", "resource_attributes", "expected"),
        [
            pytest.param(
                {"gen_ai.response.model": "gpt-4o-2024-08-06"},
                {},
                "gpt-4o-2024-08-06",
                id="gen_ai.response.model",
            ),
            pytest.param(
                {"gen_ai.request.model": "gpt-4o"}, {}, "gpt-4o", id="gen_ai.request.model"
            ),
            pytest.param(
                {"gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.request.model": "gpt-4o"},
                {},
                "gpt-4o-2024-08-06",
                id="response-preferred-over-request",
            ),
            pytest.param(
                {"llm.response.model_name": "claude-sonnet-4-5-20250929"},
                {},
                "claude-sonnet-4-5-20250929",
                id="llm.response.model_name",
            ),
            pytest.param({"llm.model_name": "gpt-4o-mini"}, {}, "gpt-4o-mini", id="llm.model_name"),
            pytest.param(
                {"llm.response.model_name": "gpt-4o-mini-2024-07-18", "llm.model_name": "x"},
                {},
                "gpt-4o-mini-2024-07-18",
                id="openinference-response-preferred",
            ),
            pytest.param(
                {"embedding.model_name": "text-embedding-3-small"},
                {},
                "text-embedding-3-small",
                id="embedding.model_name",
            ),
            pytest.param(
                {"ai.response.model": "gpt-4o-2024-08-06"},
                {},
                "gpt-4o-2024-08-06",
                id="ai.response.model",
            ),
            pytest.param({"ai.model.id": "gpt-4o"}, {}, "gpt-4o", id="ai.model.id"),
            pytest.param(
                {"ai.response.model": "gpt-4o-2024-08-06", "ai.model.id": "gpt-4o"},
                {},
                "gpt-4o-2024-08-06",
                id="vercel-response-preferred",
            ),
            pytest.param(
                {"gen_ai.request.model": "gpt-4o", "llm.response.model_name": "other"},
                {},
                "gpt-4o",
                id="gen_ai-request-before-openinference-response",
            ),
            pytest.param(
                {"llm.model_name": "gpt-4o", "embedding.model_name": "other"},
                {},
                "gpt-4o",
                id="llm.model_name-before-embedding",
            ),
            pytest.param(
                {"embedding.model_name": "text-embedding-3-small", "ai.response.model": "x"},
                {},
                "text-embedding-3-small",
                id="embedding-before-vercel",
            ),
            pytest.param({}, {"gen_ai.request.model": "gpt-4o"}, "", id="resource-not-read"),
            pytest.param({}, {}, "", id="absent"),
        ],
    )
    def test_model(self, attributes: Attrs, resource_attributes: Attrs, expected: str) -> None:
        record = only_record(usage({**LLM_CALL, **attributes}, resource_attributes))
        assert record.model == expected

    @pytest.mark.parametrize(
        "empty", [pytest.param("", id="empty"), pytest.param("  ", id="blank")]
    )
    def test_empty_response_model_falls_back_to_request_model(self, empty: str) -> None:
        attributes = {**LLM_CALL, "gen_ai.response.model": empty, "gen_ai.request.model": "gpt-4o"}
        assert only_record(usage(attributes)).model == "gpt-4o"


def _priority_cases() -> list[Any]:
    """For each field and each name, that name beats every later name of the same field."""
    cases: list[Any] = []
    for meter, names in TOKEN_FIELDS:
        for index, first in enumerate(names[:-1]):
            attributes: Attrs = {name: 7 + position for position, name in enumerate(names)}
            # Drop earlier names so `first` is the best one present.
            for earlier in names[:index]:
                del attributes[earlier]
            expected = {meter: 7 + index}
            # Subsets need their total: a larger one, under the first name of that field.
            total = {"cache_read_tokens": "input_tokens", "cache_write_tokens": "input_tokens"}
            total["output_reasoning_tokens"] = "output_tokens"
            if meter in total:
                attributes[dict(TOKEN_FIELDS)[total[meter]][0]] = 1000
                expected[total[meter]] = 1000
            cases.append(pytest.param(attributes, {}, expected, id=f"{meter}:{first}"))
    return cases


class TestTokenConventions:
    @pytest.mark.parametrize(
        ("attributes", "resource_attributes", "expected"),
        [
            # input
            pytest.param(
                {"gen_ai.usage.input_tokens": 1200},
                {},
                {"input_tokens": 1200},
                id="otel-input",
            ),
            pytest.param(
                {"gen_ai.usage.prompt_tokens": 1200},
                {},
                {"input_tokens": 1200},
                id="otel-deprecated-prompt-tokens",
            ),
            pytest.param(
                {"llm.token_count.prompt": 1200},
                {},
                {"input_tokens": 1200},
                id="openinference-prompt",
            ),
            pytest.param(
                {"ai.usage.inputTokens": 1200},
                {},
                {"input_tokens": 1200},
                id="vercel-v5-input",
            ),
            pytest.param(
                {"ai.usage.promptTokens": 1200},
                {},
                {"input_tokens": 1200},
                id="vercel-v4-prompt",
            ),
            # output
            pytest.param(
                {"gen_ai.usage.output_tokens": 300},
                {},
                {"output_tokens": 300},
                id="otel-output",
            ),
            pytest.param(
                {"gen_ai.usage.completion_tokens": 300},
                {},
                {"output_tokens": 300},
                id="otel-deprecated-completion-tokens",
            ),
            pytest.param(
                {"llm.token_count.completion": 300},
                {},
                {"output_tokens": 300},
                id="openinference-completion",
            ),
            pytest.param(
                {"ai.usage.outputTokens": 300},
                {},
                {"output_tokens": 300},
                id="vercel-v5-output",
            ),
            pytest.param(
                {"ai.usage.completionTokens": 300},
                {},
                {"output_tokens": 300},
                id="vercel-v4-completion",
            ),
            # cache read
            pytest.param(
                {"gen_ai.usage.input_tokens": 1200, "gen_ai.usage.cache_read.input_tokens": 1000},
                {},
                {"input_tokens": 1200, "cache_read_tokens": 1000},
                id="otel-cache-read",
            ),
            pytest.param(
                {"gen_ai.usage.prompt_tokens": 1200, "gen_ai.usage.cache_read_input_tokens": 1000},
                {},
                {"input_tokens": 1200, "cache_read_tokens": 1000},
                id="openllmetry-cache-read",
            ),
            pytest.param(
                {
                    "llm.token_count.prompt": 1200,
                    "llm.token_count.prompt_details.cache_read": 1000,
                },
                {},
                {"input_tokens": 1200, "cache_read_tokens": 1000},
                id="openinference-cache-read",
            ),
            pytest.param(
                {"ai.usage.inputTokens": 1200, "ai.usage.cachedInputTokens": 1000},
                {},
                {"input_tokens": 1200, "cache_read_tokens": 1000},
                id="vercel-cached-input",
            ),
            # cache write
            pytest.param(
                {"gen_ai.usage.input_tokens": 1200, "gen_ai.usage.cache_write.input_tokens": 800},
                {},
                {"input_tokens": 1200, "cache_write_tokens": 800},
                id="otel-cache-write",
            ),
            pytest.param(
                {
                    "gen_ai.usage.input_tokens": 1200,
                    "gen_ai.usage.cache_creation.input_tokens": 800,
                },
                {},
                {"input_tokens": 1200, "cache_write_tokens": 800},
                id="otel-cache-creation",
            ),
            pytest.param(
                {
                    "gen_ai.usage.prompt_tokens": 1200,
                    "gen_ai.usage.cache_creation_input_tokens": 800,
                },
                {},
                {"input_tokens": 1200, "cache_write_tokens": 800},
                id="openllmetry-cache-creation",
            ),
            pytest.param(
                {
                    "llm.token_count.prompt": 1200,
                    "llm.token_count.prompt_details.cache_write": 800,
                },
                {},
                {"input_tokens": 1200, "cache_write_tokens": 800},
                id="openinference-cache-write",
            ),
            # reasoning
            pytest.param(
                {"gen_ai.usage.output_tokens": 300, "gen_ai.usage.reasoning.output_tokens": 250},
                {},
                {"output_tokens": 300, "output_reasoning_tokens": 250},
                id="otel-reasoning",
            ),
            pytest.param(
                {"gen_ai.usage.completion_tokens": 300, "gen_ai.usage.reasoning_tokens": 250},
                {},
                {"output_tokens": 300, "output_reasoning_tokens": 250},
                id="openllmetry-reasoning",
            ),
            pytest.param(
                {
                    "llm.token_count.completion": 300,
                    "llm.token_count.completion_details.reasoning": 250,
                },
                {},
                {"output_tokens": 300, "output_reasoning_tokens": 250},
                id="openinference-reasoning",
            ),
            pytest.param(
                {"ai.usage.outputTokens": 300, "ai.usage.reasoningTokens": 250},
                {},
                {"output_tokens": 300, "output_reasoning_tokens": 250},
                id="vercel-reasoning",
            ),
            # the subset checks are inclusive: everything cached, everything reasoning
            pytest.param(
                {
                    "gen_ai.usage.input_tokens": 1000,
                    "gen_ai.usage.cache_read.input_tokens": 600,
                    "gen_ai.usage.cache_write.input_tokens": 400,
                    "gen_ai.usage.output_tokens": 50,
                    "gen_ai.usage.reasoning.output_tokens": 50,
                },
                {},
                {
                    "input_tokens": 1000,
                    "cache_read_tokens": 600,
                    "cache_write_tokens": 400,
                    "output_tokens": 50,
                    "output_reasoning_tokens": 50,
                },
                id="subsets-equal-to-totals",
            ),
            pytest.param(
                {"gen_ai.usage.input_tokens": 0, "gen_ai.usage.output_tokens": 0},
                {},
                {"input_tokens": 0, "output_tokens": 0},
                id="zero-is-a-quantity",
            ),
            pytest.param(
                {"gen_ai.usage.input_tokens": MAX_QUANTITY},
                {},
                {"input_tokens": 10**9},
                id="at-the-bound",
            ),
            pytest.param(
                {"gen_ai.usage.input_tokens": "1200", "gen_ai.usage.output_tokens": " 300 "},
                {},
                {"input_tokens": 1200, "output_tokens": 300},
                id="numeric-strings",
            ),
            pytest.param(
                {"gen_ai.usage.input_tokens": 1200.0, "gen_ai.usage.output_tokens": "3e2"},
                {},
                {"input_tokens": 1200, "output_tokens": 300},
                id="whole-float-and-exponent",
            ),
            pytest.param(
                {"gen_ai.usage.input_tokens": 1200},
                {"gen_ai.usage.output_tokens": 300},
                {"input_tokens": 1200},
                id="resource-tokens-not-read",
            ),
            pytest.param({"llm.usage.total_tokens": 1500}, {}, {}, id="total-not-billed"),
            *_priority_cases(),
        ],
    )
    def test_tokens(
        self, attributes: Attrs, resource_attributes: Attrs, expected: dict[str, int]
    ) -> None:
        result = usage(attributes, resource_attributes)
        assert quantities(result) == expected
        for record in result.records:
            assert type(record.quantity) is int
            assert record.source == "llm"

    @pytest.mark.parametrize(
        ("attributes", "resource_attributes", "expected"),
        [
            pytest.param(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "anthropic",
                    "gen_ai.request.model": "claude-sonnet-4-5",
                    "gen_ai.response.model": "claude-sonnet-4-5-20250929",
                    "gen_ai.usage.input_tokens": 5200,
                    "gen_ai.usage.cache_read.input_tokens": 4000,
                    "gen_ai.usage.cache_creation.input_tokens": 1000,
                    "gen_ai.usage.output_tokens": 640,
                    "gen_ai.usage.reasoning.output_tokens": 512,
                },
                {},
                (
                    {
                        "input_tokens": 5200,
                        "cache_read_tokens": 4000,
                        "cache_write_tokens": 1000,
                        "output_tokens": 640,
                        "output_reasoning_tokens": 512,
                    },
                    ("anthropic", "claude-sonnet-4-5-20250929", "chat"),
                ),
                id="otel-genai-current",
            ),
            pytest.param(
                {
                    "gen_ai.system": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.prompt_tokens": 900,
                    "gen_ai.usage.completion_tokens": 120,
                    "llm.request.type": "chat",
                    "llm.usage.total_tokens": 1020,
                },
                {},
                (
                    {"input_tokens": 900, "output_tokens": 120},
                    ("openai", "gpt-4o", "chat"),
                ),
                id="openllmetry-deprecated-names",
            ),
            pytest.param(
                {
                    "openinference.span.kind": "LLM",
                    "llm.provider": "openai",
                    "llm.system": "openai",
                    "llm.model_name": "gpt-4o-mini-2024-07-18",
                    "llm.token_count.prompt": 2048,
                    "llm.token_count.prompt_details.cache_read": 1024,
                    "llm.token_count.completion": 256,
                    "llm.token_count.completion_details.reasoning": 128,
                    "llm.token_count.total": 2304,
                },
                {},
                (
                    {
                        "input_tokens": 2048,
                        "cache_read_tokens": 1024,
                        "output_tokens": 256,
                        "output_reasoning_tokens": 128,
                    },
                    ("openai", "gpt-4o-mini-2024-07-18", ""),
                ),
                id="openinference-llm",
            ),
            pytest.param(
                {
                    "openinference.span.kind": "EMBEDDING",
                    "embedding.model_name": "text-embedding-3-small",
                    "llm.token_count.prompt": 42,
                },
                {},
                ({"input_tokens": 42}, ("", "text-embedding-3-small", "")),
                id="openinference-embedding",
            ),
            pytest.param(
                {
                    "ai.operationId": "ai.generateText.doGenerate",
                    "ai.model.provider": "openai.responses",
                    "ai.model.id": "gpt-4o",
                    "ai.response.model": "gpt-4o-2024-08-06",
                    "ai.usage.inputTokens": 700,
                    "ai.usage.cachedInputTokens": 500,
                    "ai.usage.outputTokens": 90,
                    "ai.usage.reasoningTokens": 40,
                    "ai.usage.totalTokens": 790,
                },
                {},
                (
                    {
                        "input_tokens": 700,
                        "cache_read_tokens": 500,
                        "output_tokens": 90,
                        "output_reasoning_tokens": 40,
                    },
                    ("openai.responses", "gpt-4o-2024-08-06", "ai.generateText.doGenerate"),
                ),
                id="vercel-v5-do-generate",
            ),
            pytest.param(
                {
                    "ai.operationId": "ai.generateText.doGenerate",
                    "ai.model.provider": "openai.chat",
                    "ai.model.id": "gpt-4o",
                    "ai.usage.promptTokens": 700,
                    "ai.usage.completionTokens": 90,
                    # Vercel also writes the GenAI names on doGenerate spans: first match wins.
                    "gen_ai.system": "openai.chat",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.response.model": "gpt-4o-2024-08-06",
                    "gen_ai.usage.input_tokens": 700,
                    "gen_ai.usage.output_tokens": 90,
                },
                {},
                (
                    {"input_tokens": 700, "output_tokens": 90},
                    ("openai.chat", "gpt-4o-2024-08-06", "ai.generateText.doGenerate"),
                ),
                id="vercel-v4-do-generate-with-genai-names",
            ),
        ],
    )
    def test_realistic_spans(
        self,
        attributes: Attrs,
        resource_attributes: Attrs,
        expected: tuple[dict[str, int], tuple[str, str, str]],
    ) -> None:
        counts, (provider, model, operation) = expected
        result = usage(attributes, resource_attributes)
        assert quantities(result) == counts
        assert {(r.provider, r.model, r.operation, r.source) for r in result.records} == {
            (provider, model, operation, "llm")
        }


VERCEL_TOTALS: Attrs = {
    "ai.usage.promptTokens": 700,
    "ai.usage.completionTokens": 90,
    "ai.usage.inputTokens": 700,
    "ai.usage.outputTokens": 90,
}


class TestVercelSpans:
    """`ai.X` wraps `ai.X.doY` (the real call): only the leaf is billed."""

    @pytest.mark.parametrize(
        ("attributes", "name", "expected"),
        [
            pytest.param(
                {"ai.operationId": "ai.generateText"},
                "ai.generateText",
                {},
                id="generateText-wrapper",
            ),
            pytest.param(
                {"ai.operationId": "ai.generateText.doGenerate"},
                "ai.generateText.doGenerate",
                {"input_tokens": 700, "output_tokens": 90},
                id="generateText-doGenerate-leaf",
            ),
            pytest.param(
                {"ai.operationId": "ai.streamText"}, "ai.streamText", {}, id="streamText-wrapper"
            ),
            pytest.param(
                {"ai.operationId": "ai.streamText.doStream"},
                "ai.streamText.doStream",
                {"input_tokens": 700, "output_tokens": 90},
                id="streamText-doStream-leaf",
            ),
            pytest.param(
                {"ai.operationId": "ai.generateObject"},
                "ai.generateObject",
                {},
                id="generateObject-wrapper",
            ),
            pytest.param(
                {"ai.operationId": "ai.streamObject.doStream"},
                "ai.streamObject.doStream",
                {"input_tokens": 700, "output_tokens": 90},
                id="streamObject-doStream-leaf",
            ),
            pytest.param({"ai.operationId": "ai.embed"}, "ai.embed", {}, id="embed-wrapper"),
            pytest.param(
                {"ai.operationId": "ai.embed.doEmbed"},
                "ai.embed.doEmbed",
                {"input_tokens": 700, "output_tokens": 90},
                id="embed-doEmbed-leaf",
            ),
            pytest.param(
                {"ai.operationId": "ai.embedMany"}, "ai.embedMany", {}, id="embedMany-wrapper"
            ),
            pytest.param(
                {"ai.operationId": "ai.embedMany.doEmbed"},
                "ai.embedMany.doEmbed",
                {"input_tokens": 700, "output_tokens": 90},
                id="embedMany-doEmbed-leaf",
            ),
            pytest.param(
                {"ai.operationId": "ai.generateText"},
                "my-function",
                {},
                id="wrapper-by-operation-id-whatever-the-name",
            ),
            pytest.param(
                {"ai.operationId": "ai.generateText.doGenerate"},
                "ai.generateText",
                {"input_tokens": 700, "output_tokens": 90},
                id="operation-id-beats-span-name",
            ),
            # Only `ai.operationId` (always set by the SDK) marks a Vercel wrapper: a span that
            # merely has such a name is not taken for one.
            pytest.param(
                {},
                "ai.generateText",
                {"input_tokens": 700, "output_tokens": 90},
                id="span-name-alone-is-not-a-wrapper",
            ),
            pytest.param(
                {},
                "ai.generateText.doGenerate",
                {"input_tokens": 700, "output_tokens": 90},
                id="leaf-by-span-name",
            ),
            pytest.param(
                {"ai.operationId": "ai.toolCall"},
                "ai.toolCall",
                {"input_tokens": 700, "output_tokens": 90, "tool_calls": 1},
                id="toolCall-is-a-tool-call-not-a-wrapper",
            ),
        ],
    )
    def test_wrapper_or_leaf(self, attributes: Attrs, name: str, expected: dict[str, int]) -> None:
        assert quantities(usage({**VERCEL_TOTALS, **attributes}, name=name)) == expected

    def test_vercel_embedding_tokens_are_billed(self) -> None:
        attributes: Attrs = {
            "ai.operationId": "ai.embed.doEmbed",
            "ai.model.provider": "openai.embedding",
            "ai.model.id": "text-embedding-3-small",
            "ai.usage.tokens": 12,
        }
        assert quantities(usage(attributes, name="ai.embed.doEmbed")) == {"input_tokens": 12}


AGGREGATE_TOTALS: Attrs = {
    "gen_ai.usage.input_tokens": 52_000,
    "gen_ai.usage.output_tokens": 6_400,
    "gen_ai.usage.cache_read.input_tokens": 40_000,
    "gen_ai.usage.reasoning.output_tokens": 3_000,
    "llm.token_count.prompt": 52_000,
    "llm.token_count.completion": 6_400,
    "ai.usage.inputTokens": 52_000,
    "ai.usage.outputTokens": 6_400,
    "agentmeter.customer.id": "acme",
    "agentmeter.usage.web_searches": 3,
    "agentmeter.usage.sandbox_seconds": 12.5,
}


class TestNoDoubleCounting:
    """Agent, workflow and wrapper spans repeat their children's totals: no token records,
    but their own custom meters count and the customer they name is returned."""

    @pytest.mark.parametrize(
        ("attributes", "name"),
        [
            pytest.param(
                {"gen_ai.operation.name": "invoke_agent"},
                "invoke_agent triage",
                id="otel-invoke-agent",
            ),
            pytest.param(
                {"gen_ai.operation.name": "invoke_workflow"},
                "invoke_workflow refund",
                id="otel-invoke-workflow",
            ),
            pytest.param(
                {"gen_ai.operation.name": "create_agent"}, "create_agent", id="otel-create-agent"
            ),
            pytest.param(
                {"gen_ai.operation.name": "agent_step"}, "step 1", id="vercel-ai-7-agent-step"
            ),
            pytest.param({"openinference.span.kind": "AGENT"}, "Agent", id="openinference-agent"),
            pytest.param({"openinference.span.kind": "CHAIN"}, "Chain", id="openinference-chain"),
            pytest.param(
                {"traceloop.span.kind": "workflow"}, "refund.workflow", id="traceloop-workflow"
            ),
            pytest.param({"traceloop.span.kind": "agent"}, "triage.agent", id="traceloop-agent"),
            pytest.param({"traceloop.span.kind": "task"}, "lookup.task", id="traceloop-task"),
            pytest.param(
                {"ai.operationId": "ai.generateText"}, "ai.generateText", id="vercel-generateText"
            ),
            pytest.param(
                {"ai.operationId": "ai.streamText"}, "ai.streamText", id="vercel-streamText"
            ),
            pytest.param({"ai.operationId": "ai.embed"}, "ai.embed", id="vercel-embed"),
            pytest.param(
                # An agent span that also says "chat" in a lower-priority operation key.
                {"gen_ai.operation.name": "invoke_agent", "llm.request.type": "chat"},
                "invoke_agent",
                id="operation-name-decides",
            ),
        ],
    )
    def test_aggregate_span(self, attributes: Attrs, name: str) -> None:
        result = usage({**AGGREGATE_TOTALS, **attributes}, name=name)
        assert {r.meter: exact(r.quantity) for r in result.records} == {
            "web_searches": ("int", "3"),
            "sandbox_seconds": ("Decimal", "12.5"),
        }
        assert {r.source for r in result.records} == {"custom"}
        assert {r.customer_id for r in result.records} == {"acme"}
        assert result.customer_id == "acme"

    @pytest.mark.parametrize(
        ("attributes", "resource_attributes", "expected"),
        [
            pytest.param(
                {"openinference.span.kind": "LLM"},
                {},
                {"input_tokens": 52_000},
                id="openinference-llm",
            ),
            pytest.param(
                {"openinference.span.kind": "EMBEDDING"},
                {},
                {"input_tokens": 52_000},
                id="openinference-embedding",
            ),
            pytest.param(
                {"openinference.span.kind": "RETRIEVER"},
                {},
                {"input_tokens": 52_000},
                id="openinference-retriever",
            ),
            pytest.param(
                {"gen_ai.operation.name": "chat"}, {}, {"input_tokens": 52_000}, id="otel-chat"
            ),
            pytest.param(
                {"gen_ai.operation.name": "embeddings"},
                {},
                {"input_tokens": 52_000},
                id="otel-embeddings",
            ),
            pytest.param(
                {"traceloop.span.kind": "llm"}, {}, {"input_tokens": 52_000}, id="traceloop-llm"
            ),
            pytest.param(
                {"gen_ai.operation.name": "chat"},
                {"openinference.span.kind": "AGENT"},
                {"input_tokens": 52_000},
                id="resource-kind-not-read",
            ),
        ],
    )
    def test_leaf_span_counts_tokens(
        self, attributes: Attrs, resource_attributes: Attrs, expected: dict[str, int]
    ) -> None:
        result = usage({"gen_ai.usage.input_tokens": 52_000, **attributes}, resource_attributes)
        assert quantities(result) == expected

    @pytest.mark.parametrize(
        ("attributes", "resource_attributes", "expected"),
        [
            pytest.param(
                {"gen_ai.usage.input_tokens": -1, "gen_ai.usage.output_tokens": "lots"},
                {},
                {"web_searches": 1},
                id="bad-totals",
            ),
            pytest.param(
                {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.cache_read.input_tokens": 99},
                {},
                {"web_searches": 1},
                id="inconsistent-totals",
            ),
        ],
    )
    def test_aggregate_token_totals_are_not_validated(
        self, attributes: Attrs, resource_attributes: Attrs, expected: dict[str, int]
    ) -> None:
        """Totals that are never billed cannot reject the span's own meters."""
        span = {"gen_ai.operation.name": "invoke_agent", "agentmeter.usage.web_searches": 1}
        assert quantities(usage({**span, **attributes}, resource_attributes)) == expected


class TestToolCalls:
    @pytest.mark.parametrize(
        ("attributes", "resource_attributes", "expected"),
        [
            pytest.param(
                {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "web_search"},
                {},
                [("tool_calls", 1, "tool", "web_search")],
                id="otel-execute-tool",
            ),
            pytest.param(
                {"openinference.span.kind": "TOOL", "tool.name": "get_weather"},
                {},
                [("tool_calls", 1, "tool", "get_weather")],
                id="openinference-tool",
            ),
            pytest.param(
                {"traceloop.span.kind": "tool", "gen_ai.tool.name": "lookup_order"},
                {},
                [("tool_calls", 1, "tool", "lookup_order")],
                id="traceloop-tool",
            ),
            pytest.param(
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "web_search",
                    "tool.name": "other",
                },
                {},
                [("tool_calls", 1, "tool", "web_search")],
                id="gen_ai.tool.name-before-tool.name",
            ),
            pytest.param(
                {"gen_ai.operation.name": "execute_tool"},
                {},
                [("tool_calls", 1, "tool", "")],
                id="unnamed-tool",
            ),
            pytest.param(
                {
                    "gen_ai.operation.name": "execute_tool",
                    "openinference.span.kind": "TOOL",
                    "traceloop.span.kind": "tool",
                    "gen_ai.tool.name": "web_search",
                },
                {},
                [("tool_calls", 1, "tool", "web_search")],
                id="every-convention-still-one-call",
            ),
            pytest.param(
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "web_search",
                    "agentmeter.usage.web_searches": 4,
                },
                {},
                [
                    ("tool_calls", 1, "tool", "web_search"),
                    ("web_searches", 4, "custom", "web_search"),
                ],
                id="with-custom-meter",
            ),
            pytest.param(
                {"gen_ai.operation.name": "chat", "gen_ai.tool.name": "web_search"},
                {},
                [],
                id="tool-name-alone-is-not-a-call",
            ),
            pytest.param(
                {"gen_ai.tool.name": "web_search"},
                {"gen_ai.operation.name": "execute_tool"},
                [],
                id="resource-operation-not-read",
            ),
        ],
    )
    def test_tool_call(
        self,
        attributes: Attrs,
        resource_attributes: Attrs,
        expected: list[tuple[str, int, str, str]],
    ) -> None:
        result = usage(attributes, resource_attributes, name="execute_tool web_search")
        quantities(result)  # unique meters
        assert [(r.meter, r.quantity, r.source, r.tool) for r in result.records] == expected
        for record in result.records:
            assert type(record.quantity) is int


class TestCustomMeters:
    @pytest.mark.parametrize(
        ("attributes", "resource_attributes", "expected"),
        [
            pytest.param(
                {"agentmeter.usage.web_searches": 1},
                {},
                {"web_searches": 1},
                id="web-searches-int",
            ),
            pytest.param(
                {"agentmeter.usage.sandbox_seconds": 12.5},
                {},
                {"sandbox_seconds": Decimal("12.5")},
                id="sandbox-seconds-float",
            ),
            pytest.param(
                {"agentmeter.usage.sandbox_seconds": "12.5"},
                {},
                {"sandbox_seconds": Decimal("12.5")},
                id="numeric-string-fraction",
            ),
            pytest.param(
                {"agentmeter.usage.pages": "3"}, {}, {"pages": 3}, id="numeric-string-whole"
            ),
            pytest.param({"agentmeter.usage.pages": 3.0}, {}, {"pages": 3}, id="whole-float"),
            pytest.param(
                {"agentmeter.usage.gb_hours": 0.1},
                {},
                {"gb_hours": Decimal("0.1")},
                id="float-shortest-repr-not-binary-expansion",
            ),
            pytest.param(
                {"agentmeter.usage.gb_hours": 0.000001},
                {},
                {"gb_hours": Decimal("0.000001")},
                id="six-places",
            ),
            pytest.param(
                {"agentmeter.usage.gb_hours": "2.50"},
                {},
                {"gb_hours": Decimal("2.5")},
                id="trailing-zero-normalized",
            ),
            pytest.param({"agentmeter.usage.pages": "1e3"}, {}, {"pages": 1000}, id="exponent"),
            pytest.param({"agentmeter.usage.pages": 0}, {}, {"pages": 0}, id="zero"),
            pytest.param(
                {"agentmeter.usage.pages": MAX_QUANTITY}, {}, {"pages": 10**9}, id="at-the-bound"
            ),
            pytest.param(
                {"agentmeter.usage.gpu.h100_seconds": 30},
                {},
                {"gpu.h100_seconds": 30},
                id="dots-and-digits-in-name",
            ),
            pytest.param(
                {"agentmeter.usage.web_searches": 2, "agentmeter.usage.emails_sent": 5},
                {},
                {"web_searches": 2, "emails_sent": 5},
                id="several",
            ),
            pytest.param(
                {"agentmeter.usage.web_searches": 2, **LLM_CALL},
                {},
                {"web_searches": 2, "input_tokens": 10},
                id="beside-tokens",
            ),
            pytest.param({}, {"agentmeter.usage.web_searches": 2}, {}, id="resource-not-read"),
            pytest.param({"agentmeter.usagex": 2}, {}, {}, id="prefix-needs-the-dot"),
        ],
    )
    def test_custom_meter(
        self, attributes: Attrs, resource_attributes: Attrs, expected: dict[str, Quantity]
    ) -> None:
        result = usage(attributes, resource_attributes)
        assert {meter: exact(q) for meter, q in quantities(result).items()} == {
            meter: exact(q) for meter, q in expected.items()
        }
        for record in result.records:
            assert record.source == ("llm" if record.meter in CANONICAL else "custom")

    def test_meter_name_with_trailing_newline_is_rejected(self) -> None:
        with pytest.raises(SpanRejectedError, match="meter name"):
            usage({"agentmeter.usage.web_searches\n": 1})


class TestDimensions:
    @pytest.mark.parametrize(
        ("attributes", "resource_attributes", "expected"),
        [
            pytest.param(
                {"agentmeter.step": "plan", "gen_ai.agent.name": "triage"},
                {},
                "plan",
                id="agentmeter.step-first",
            ),
            pytest.param({"gen_ai.agent.name": "triage"}, {}, "triage", id="else-agent-name"),
            pytest.param({"agent.name": "triage"}, {}, "triage", id="else-legacy-agent-name"),
            pytest.param({}, {}, SPAN_NAME, id="else-span-name"),
            pytest.param(
                {"agentmeter.step": "", "gen_ai.agent.name": "triage"},
                {},
                "triage",
                id="empty-step-falls-through",
            ),
            pytest.param(
                {"agentmeter.step": "  ", "gen_ai.agent.name": ""},
                {},
                SPAN_NAME,
                id="blank-step-and-agent-fall-through",
            ),
            pytest.param({"agentmeter.step": 3}, {}, "3", id="int-step"),
            pytest.param({"agentmeter.step": " plan "}, {}, "plan", id="stripped"),
            pytest.param({"agentmeter.step": "x" * 256}, {}, "x" * 256, id="at-the-bound"),
            pytest.param({}, {"agentmeter.step": "plan"}, SPAN_NAME, id="resource-not-read"),
        ],
    )
    def test_step(self, attributes: Attrs, resource_attributes: Attrs, expected: str) -> None:
        assert only_record(usage({**LLM_CALL, **attributes}, resource_attributes)).step == expected

    @pytest.mark.parametrize(
        ("attributes", "resource_attributes", "expected"),
        [
            pytest.param({}, {"service.name": "support-agent"}, "support-agent", id="resource"),
            pytest.param({"service.name": "span-level"}, {}, "", id="span-attribute-not-read"),
            pytest.param({}, {}, "", id="absent"),
        ],
    )
    def test_service_name(
        self, attributes: Attrs, resource_attributes: Attrs, expected: str
    ) -> None:
        record = only_record(usage({**LLM_CALL, **attributes}, resource_attributes))
        assert record.service_name == expected

    @pytest.mark.parametrize(
        ("attributes", "resource_attributes", "expected"),
        [
            pytest.param({"gen_ai.operation.name": "chat"}, {}, "chat", id="gen_ai"),
            pytest.param({"llm.request.type": "completion"}, {}, "completion", id="openllmetry"),
            pytest.param(
                {"ai.operationId": "ai.streamText.doStream"},
                {},
                "ai.streamText.doStream",
                id="vercel",
            ),
            pytest.param(
                {"gen_ai.operation.name": "chat", "llm.request.type": "completion"},
                {},
                "chat",
                id="gen_ai-first",
            ),
            pytest.param(
                {"llm.request.type": "chat", "ai.operationId": "ai.generateText.doGenerate"},
                {},
                "chat",
                id="openllmetry-before-vercel",
            ),
            pytest.param({}, {}, "", id="absent"),
        ],
    )
    def test_operation(self, attributes: Attrs, resource_attributes: Attrs, expected: str) -> None:
        span = {"gen_ai.usage.input_tokens": 10, **attributes}
        assert only_record(usage(span, resource_attributes)).operation == expected

    @pytest.mark.parametrize(
        ("attributes", "resource_attributes", "expected"),
        [
            pytest.param({"gen_ai.agent.name": "triage"}, {}, "triage", id="gen_ai"),
            pytest.param({"agent.name": "triage"}, {}, "triage", id="legacy"),
            pytest.param(
                {"gen_ai.agent.name": "triage", "agent.name": "other"}, {}, "triage", id="order"
            ),
            pytest.param({}, {"gen_ai.agent.name": "triage"}, "", id="resource-not-read"),
        ],
    )
    def test_agent_name(self, attributes: Attrs, resource_attributes: Attrs, expected: str) -> None:
        record = only_record(usage({**LLM_CALL, **attributes}, resource_attributes))
        assert record.agent_name == expected

    def test_every_record_carries_the_span_dimensions(self) -> None:
        attributes: Attrs = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "code_interpreter",
            "gen_ai.agent.name": "analyst",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 30,
            "agentmeter.usage.sandbox_seconds": 12.5,
            "agentmeter.customer.id": "acme",
        }
        result = usage(attributes, {"service.name": "analytics-agent"})
        assert [(r.meter, r.source) for r in result.records] == [
            ("input_tokens", "llm"),
            ("tool_calls", "tool"),
            ("sandbox_seconds", "custom"),
        ]
        for record in result.records:
            assert record.trace_id == "5b8efff798038103d269b633813fc60c"
            assert record.span_id == "eee19b7ec3c1b174"
            assert record.time_unix_nano == END_TIME
            assert record.customer_id == "acme"
            assert record.provider == "openai"
            assert record.model == "gpt-4o"
            assert record.operation == "execute_tool"
            assert record.agent_name == "analyst"
            assert record.step == "analyst"
            assert record.tool == "code_interpreter"
            assert record.service_name == "analytics-agent"


class TestCustomerAttribution:
    @pytest.mark.parametrize(
        ("attributes", "resource_attributes", "customer_keys", "expected"),
        [
            pytest.param({"agentmeter.customer.id": "acme"}, {}, None, "acme", id="span"),
            pytest.param({}, {"agentmeter.customer.id": "acme"}, None, "acme", id="resource"),
            pytest.param(
                {"agentmeter.customer.id": "acme"},
                {"agentmeter.customer.id": "globex"},
                None,
                "acme",
                id="span-before-resource",
            ),
            pytest.param(
                {"agentmeter.customer.id": "acme", "customer.id": "globex"},
                {},
                None,
                "acme",
                id="agentmeter-key-before-customer.id",
            ),
            pytest.param({"customer.id": "globex"}, {}, None, "globex", id="customer.id"),
            pytest.param(
                {},
                {"customer.id": "globex", "agentmeter.customer.id": "acme"},
                None,
                "acme",
                id="key-order-on-resource",
            ),
            pytest.param(
                {"customer.id": "globex"},
                {"agentmeter.customer.id": "acme"},
                None,
                "globex",
                id="any-span-key-before-any-resource-key",
            ),
            pytest.param(
                {"agentmeter.customer.id": ""},
                {"customer.id": "globex"},
                None,
                "globex",
                id="empty-span-value-falls-through",
            ),
            pytest.param(
                {"agentmeter.customer.id": "   "}, {}, None, "", id="whitespace-unattributed"
            ),
            pytest.param({"agentmeter.customer.id": ""}, {}, None, "", id="empty-unattributed"),
            pytest.param({}, {}, None, "", id="absent-unattributed"),
            pytest.param({"agentmeter.customer.id": " acme "}, {}, None, "acme", id="stripped"),
            pytest.param({"agentmeter.customer.id": 4217}, {}, None, "4217", id="int-to-string"),
            pytest.param({}, {"customer.id": 0}, None, "0", id="int-zero-is-a-customer"),
            pytest.param(
                {"enduser.id": "u-17", "agentmeter.customer.id": "acme"},
                {},
                ("enduser.id",),
                "u-17",
                id="custom-keys",
            ),
            pytest.param(
                {"agentmeter.customer.id": "acme"},
                {},
                ("enduser.id",),
                "",
                id="custom-keys-replace-defaults",
            ),
            pytest.param(
                {"org.id": "org-9"},
                {"enduser.id": "u-17"},
                ("enduser.id", "org.id"),
                "org-9",
                id="custom-keys-span-before-resource",
            ),
            pytest.param({"agentmeter.customer.id": "acme"}, {}, (), "", id="no-keys-no-customer"),
        ],
    )
    def test_customer(
        self,
        attributes: Attrs,
        resource_attributes: Attrs,
        customer_keys: tuple[str, ...] | None,
        expected: str,
    ) -> None:
        result = usage({**LLM_CALL, **attributes}, resource_attributes, customer_keys=customer_keys)
        assert result.customer_id == expected
        assert only_record(result).customer_id == expected

    @pytest.mark.parametrize(
        ("attributes", "resource_attributes", "expected"),
        [
            pytest.param(
                {"gen_ai.operation.name": "invoke_agent", "agentmeter.customer.id": "acme"},
                {},
                "acme",
                id="agent-span-without-usage",
            ),
            pytest.param({}, {"customer.id": "acme"}, "acme", id="plain-span-resource-customer"),
        ],
    )
    def test_customer_without_usage(
        self, attributes: Attrs, resource_attributes: Attrs, expected: str
    ) -> None:
        result = usage(attributes, resource_attributes, name="invoke_agent triage")
        assert result.records == []
        assert result.customer_id == expected


class TestRejections:
    """A span with untrustworthy usage is refused whole, with a message that says why."""

    @pytest.mark.parametrize(
        ("span", "fragment", "reason"),
        [
            pytest.param(
                {"trace_id": TRACE_ID[:15]}, "trace id must be 16", "invalid_id", id="trace-short"
            ),
            pytest.param({"trace_id": TRACE_ID + b"\x01"}, "got 17", "invalid_id", id="trace-long"),
            pytest.param({"trace_id": b""}, "trace id", "invalid_id", id="trace-empty"),
            pytest.param({"trace_id": bytes(16)}, "non-zero", "invalid_id", id="trace-all-zero"),
            pytest.param(
                {"span_id": SPAN_ID[:7]}, "span id must be 8", "invalid_id", id="span-short"
            ),
            pytest.param({"span_id": SPAN_ID + b"\x01"}, "got 9", "invalid_id", id="span-long"),
            pytest.param({"span_id": bytes(8)}, "non-zero", "invalid_id", id="span-all-zero"),
            pytest.param(
                {"end_time_unix_nano": 0}, "no end time", "missing_time", id="no-end-time"
            ),
            pytest.param(
                {"attributes": {"gen_ai.usage.input_tokens": -1}},
                "gen_ai.usage.input_tokens must not be negative",
                "invalid_quantity",
                id="negative-tokens",
            ),
            pytest.param(
                {"attributes": {"llm.token_count.completion": "-5"}},
                "must not be negative",
                "invalid_quantity",
                id="negative-token-string",
            ),
            pytest.param(
                {"attributes": {"gen_ai.usage.input_tokens": 12.5}},
                "must be a whole number of tokens",
                "invalid_quantity",
                id="fractional-tokens",
            ),
            pytest.param(
                {"attributes": {"ai.usage.inputTokens": "12.5"}},
                "ai.usage.inputTokens must be a whole number",
                "invalid_quantity",
                id="fractional-token-string",
            ),
            pytest.param(
                {"attributes": {"gen_ai.usage.output_tokens": MAX_QUANTITY + 1}},
                "absurdly large",
                "invalid_quantity",
                id="absurd-tokens",
            ),
            pytest.param(
                {"attributes": {"agentmeter.usage.pages": "1e10"}},
                "absurdly large",
                "invalid_quantity",
                id="absurd-custom",
            ),
            pytest.param(
                {"attributes": {"gen_ai.usage.input_tokens": True}},
                "got a boolean",
                "invalid_quantity",
                id="bool-tokens",
            ),
            pytest.param(
                {"attributes": {"agentmeter.usage.web_searches": False}},
                "got a boolean",
                "invalid_quantity",
                id="bool-custom",
            ),
            pytest.param(
                {"attributes": {"agentmeter.usage.web_searches": "lots"}},
                "agentmeter.usage.web_searches must be a number, got 'lots'",
                "invalid_quantity",
                id="non-numeric-custom",
            ),
            pytest.param(
                {"attributes": {"gen_ai.usage.input_tokens": ""}},
                "must be a number",
                "invalid_quantity",
                id="empty-string-tokens",
            ),
            pytest.param(
                {"attributes": {"gen_ai.usage.input_tokens": [1, 2]}},
                "must be a number, got list",
                "invalid_quantity",
                id="array-tokens",
            ),
            pytest.param(
                {"attributes": {"agentmeter.usage.sandbox_seconds": float("nan")}},
                "finite",
                "invalid_quantity",
                id="nan-float",
            ),
            pytest.param(
                {"attributes": {"agentmeter.usage.sandbox_seconds": float("inf")}},
                "finite",
                "invalid_quantity",
                id="inf-float",
            ),
            pytest.param(
                {"attributes": {"agentmeter.usage.sandbox_seconds": "NaN"}},
                "finite",
                "invalid_quantity",
                id="nan-string",
            ),
            pytest.param(
                {"attributes": {"gen_ai.usage.input_tokens": "-Infinity"}},
                "finite",
                "invalid_quantity",
                id="minus-inf-string",
            ),
            pytest.param(
                {"attributes": {"agentmeter.usage.input_tokens": 5}},
                "input_tokens is a canonical meter",
                "invalid_meter",
                id="custom-named-input-tokens",
            ),
            pytest.param(
                {"attributes": {"agentmeter.usage.tool_calls": 1}},
                "canonical meter",
                "invalid_meter",
                id="custom-named-tool-calls",
            ),
            pytest.param(
                {"attributes": {"agentmeter.usage.output_reasoning_tokens": 1}},
                "canonical meter",
                "invalid_meter",
                id="custom-named-reasoning",
            ),
            pytest.param(
                {"attributes": {"agentmeter.usage.WebSearches": 1}},
                "meter name must match",
                "invalid_meter",
                id="uppercase-meter",
            ),
            pytest.param(
                {"attributes": {"agentmeter.usage.web-searches": 1}},
                "meter name must match",
                "invalid_meter",
                id="dash-in-meter",
            ),
            pytest.param(
                {"attributes": {"agentmeter.usage.9lives": 1}},
                "meter name must match",
                "invalid_meter",
                id="leading-digit",
            ),
            pytest.param(
                {"attributes": {"agentmeter.usage.": 1}},
                "meter name must match",
                "invalid_meter",
                id="empty-meter-name",
            ),
            pytest.param(
                {"attributes": {"agentmeter.usage." + "m" * 129: 1}},
                "meter name must match",
                "invalid_meter",
                id="meter-name-too-long",
            ),
            pytest.param(
                {
                    "attributes": {
                        "gen_ai.usage.input_tokens": 100,
                        "gen_ai.usage.cache_read.input_tokens": 80,
                        "gen_ai.usage.cache_write.input_tokens": 30,
                    }
                },
                "cache read + write tokens (110) exceed input tokens (100)",
                "inconsistent_tokens",
                id="cache-exceeds-input",
            ),
            pytest.param(
                {"attributes": {"gen_ai.usage.cache_read.input_tokens": 5}},
                "exceed input tokens (0)",
                "inconsistent_tokens",
                id="cache-without-input",
            ),
            pytest.param(
                {
                    "attributes": {
                        "gen_ai.usage.output_tokens": 100,
                        "gen_ai.usage.reasoning.output_tokens": 101,
                    }
                },
                "reasoning tokens (101) exceed output tokens (100)",
                "inconsistent_tokens",
                id="reasoning-exceeds-output",
            ),
            pytest.param(
                {"attributes": {"agentmeter.step": "s" * 257}},
                "agentmeter.step is longer than 256 characters",
                "invalid_dimension",
                id="long-step",
            ),
            pytest.param(
                {"attributes": {"gen_ai.request.model": "m" * 257}},
                "gen_ai.request.model is longer than 256",
                "invalid_dimension",
                id="long-model",
            ),
            pytest.param(
                {"attributes": {"agentmeter.customer.id": "c" * 257}},
                "agentmeter.customer.id is longer than 256",
                "invalid_dimension",
                id="long-customer",
            ),
            pytest.param(
                {"resource_attributes": {"service.name": "s" * 257}},
                "service.name is longer than 256",
                "invalid_dimension",
                id="long-service-name",
            ),
            pytest.param(
                {"attributes": {"gen_ai.provider.name": 1.5}},
                "gen_ai.provider.name must be a string, got float",
                "invalid_dimension",
                id="float-dimension",
            ),
            pytest.param(
                {"attributes": {"agentmeter.customer.id": True}},
                "agentmeter.customer.id must be a string, got bool",
                "invalid_dimension",
                id="bool-customer",
            ),
            pytest.param(
                {"attributes": {"agentmeter.customer.id": b"acme"}},
                "must be a string, got bytes",
                "invalid_dimension",
                id="bytes-customer",
            ),
            # Issue 8, defect 1: a legal fixed64 end time that no int64 column can hold.
            pytest.param(
                {"end_time_unix_nano": 2**63}, "past year 2262", "invalid_time", id="end-2-63"
            ),
            pytest.param(
                {"end_time_unix_nano": 2**64 - 1},
                "past year 2262",
                "invalid_time",
                id="end-max-fixed64",
            ),
            # Issue 8, defect 8: fractional strings are refused, not rounded to 1 and 0.
            pytest.param(
                {"attributes": {"gen_ai.usage.input_tokens": "1.0000001"}},
                "more than 6 decimal places",
                "invalid_quantity",
                id="tokens-1.0000001",
            ),
            pytest.param(
                {"attributes": {"gen_ai.usage.input_tokens": "1e-7"}},
                "more than 6 decimal places",
                "invalid_quantity",
                id="tokens-1e-7",
            ),
            pytest.param(
                {
                    "attributes": {
                        "gen_ai.usage.output_tokens": 1e-7,
                        "gen_ai.usage.input_tokens": 1,
                    }
                },
                "more than 6 decimal places",
                "invalid_quantity",
                id="tokens-float-1e-7",
            ),
            pytest.param(
                {"attributes": {"gen_ai.usage.input_tokens": "2.000001"}},
                "whole number of tokens",
                "invalid_quantity",
                id="tokens-one-micro-over",
            ),
            # Text no store can hold: NUL (PostgreSQL) and lone surrogates (UTF-8).
            pytest.param(
                {"attributes": {"agentmeter.customer.id": "ac\x00me"}},
                "NUL or an unpaired surrogate",
                "invalid_dimension",
                id="customer-with-nul",
            ),
            pytest.param(
                {"attributes": {"gen_ai.request.model": "gpt\ud800"}},
                "NUL or an unpaired surrogate",
                "invalid_dimension",
                id="model-with-lone-surrogate",
            ),
        ],
    )
    def test_rejected(self, span: dict[str, Any], fragment: str, reason: str) -> None:
        arguments: dict[str, Any] = {"attributes": dict(LLM_CALL), **span}
        with pytest.raises(SpanRejectedError) as caught:
            usage(**arguments)
        assert fragment in str(caught.value)
        assert caught.value.reason == RejectReason(reason)

    def test_one_bad_meter_rejects_the_whole_span(self) -> None:
        attributes: Attrs = {
            **LLM_CALL,
            "gen_ai.usage.output_tokens": 300,
            "agentmeter.usage.web_searches": 1,
            "agentmeter.usage.sandbox_seconds": "lots",
        }
        with pytest.raises(SpanRejectedError, match="sandbox_seconds"):
            usage(attributes)

    @pytest.mark.parametrize(
        "kind_key",
        [
            pytest.param("openinference.span.kind", id="openinference"),
            pytest.param("traceloop.span.kind", id="traceloop"),
        ],
    )
    def test_unhashable_span_kind_is_rejected(self, kind_key: str) -> None:
        with pytest.raises(SpanRejectedError):
            usage({**LLM_CALL, kind_key: ["AGENT"]})


@st.composite
def token_spans(draw: st.DrawFn) -> tuple[Attrs, dict[str, int]]:
    """A leaf span with consistent token counts, under random conventions and encodings.

    A total that is absent counts as 0, so its subsets are 0 (present or not).
    """
    has_input, has_output = draw(st.booleans()), draw(st.booleans())
    input_tokens = draw(st.integers(0, MAX_QUANTITY)) if has_input else 0
    cache_read = draw(st.integers(0, input_tokens))
    cache_write = draw(st.integers(0, input_tokens - cache_read))
    output_tokens = draw(st.integers(0, MAX_QUANTITY)) if has_output else 0
    reasoning = draw(st.integers(0, output_tokens))
    drawn = {
        "input_tokens": (has_input, input_tokens),
        "cache_read_tokens": (draw(st.booleans()), cache_read),
        "cache_write_tokens": (draw(st.booleans()), cache_write),
        "output_tokens": (has_output, output_tokens),
        "output_reasoning_tokens": (draw(st.booleans()), reasoning),
    }
    attributes: Attrs = {}
    expected: dict[str, int] = {}
    for meter, names in TOKEN_FIELDS:
        present, count = drawn[meter]
        if present:
            encode = draw(st.sampled_from([int, str, float]))  # float is exact below 2**53
            attributes[draw(st.sampled_from(names))] = encode(count)
            expected[meter] = count
    operation = draw(st.sampled_from(["chat", "text_completion", "embeddings", "execute_tool"]))
    attributes["gen_ai.operation.name"] = operation
    if operation == "execute_tool":
        expected["tool_calls"] = 1
    return attributes, expected


class TestProperties:
    @given(token_spans())
    def test_quantities_equal_the_span_counts(self, case: tuple[Attrs, dict[str, int]]) -> None:
        attributes, expected = case
        result = usage(attributes)
        assert quantities(result) == expected
        assert all(type(record.quantity) is int for record in result.records)

    @given(
        attributes=st.dictionaries(
            keys=st.sampled_from(
                [
                    *INPUT_NAMES,
                    *OUTPUT_NAMES,
                    *CACHE_READ_NAMES,
                    *CACHE_WRITE_NAMES,
                    *REASONING_NAMES,
                    "gen_ai.operation.name",
                    "openinference.span.kind",
                    "traceloop.span.kind",
                    "ai.operationId",
                    *(f"agentmeter.usage.{meter}" for meter in CANONICAL),
                    "agentmeter.usage.web_searches",
                    "agentmeter.usage.sandbox_seconds",
                    "agentmeter.usage.gpu.seconds",
                ]
            ),
            values=st.one_of(
                st.integers(-5, 2 * MAX_QUANTITY),
                st.floats(allow_nan=True, allow_infinity=True),
                st.decimals(allow_nan=False, places=7).map(str),
                st.sampled_from(
                    [
                        "execute_tool",
                        "invoke_agent",
                        "chat",
                        "AGENT",
                        "TOOL",
                        "LLM",
                        "tool",
                        "workflow",
                        "ai.generateText",
                        "ai.generateText.doGenerate",
                    ]
                ),
            ),
        ),
        name=st.sampled_from(["chat", "ai.streamText", "ai.streamText.doStream"]),
    )
    def test_a_span_never_yields_a_meter_twice(self, attributes: Attrs, name: str) -> None:
        try:
            result = usage(attributes, name=name)
        except SpanRejectedError:
            return
        meters = [record.meter for record in result.records]
        assert len(meters) == len(set(meters))
        for record in result.records:
            assert record.quantity >= 0
            assert record.source == {"tool_calls": "tool"}.get(
                record.meter, "llm" if record.meter in CANONICAL else "custom"
            )

    @given(st.decimals(min_value=0, max_value=MAX_QUANTITY, places=6, allow_nan=False))
    def test_custom_quantities_with_six_places_are_exact(self, value: Decimal) -> None:
        record = only_record(usage({"agentmeter.usage.sandbox_seconds": str(value)}))
        assert record.quantity == value
        if value == value.to_integral_value():
            assert type(record.quantity) is int
        else:
            assert isinstance(record.quantity, Decimal)


class TestLongSpanName:
    def test_step_from_a_long_span_name_is_cut_not_refused(self) -> None:
        result = usage({"gen_ai.usage.input_tokens": 5}, name="n" * 300)
        assert [r.step for r in result.records] == ["n" * 256]

    def test_step_from_a_span_name_drops_characters_no_store_holds(self) -> None:
        result = usage({"gen_ai.usage.input_tokens": 5}, name="ch\x00at\udc80")
        assert [r.step for r in result.records] == ["chat"]


class TestProviderCallIdentity:
    """What the store needs to bill each provider call once (exporter.provider_calls)."""

    def test_token_records_carry_parent_and_response_id(self) -> None:
        result = span_usage(
            trace_id=TRACE_ID,
            span_id=SPAN_ID,
            name="anthropic.messages.create",
            end_time_unix_nano=END_TIME,
            attributes={
                "gen_ai.provider.name": "anthropic",
                "gen_ai.response.id": "msg_01",
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 2,
            },
            resource_attributes={},
            parent_span_id=bytes.fromhex("00000000000000aa"),
        )

        assert {(r.parent_span_id, r.response_id) for r in result.records} == {
            ("00000000000000aa", "msg_01")
        }
        assert result.agent_name == ""

    def test_root_span_has_no_parent(self) -> None:
        record = only_record(usage({"gen_ai.usage.input_tokens": 1}))

        assert (record.parent_span_id, record.response_id) == ("", "")

    @pytest.mark.parametrize(
        ("name", "attributes", "expected"),
        [
            pytest.param(
                "invoke_agent support",
                {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"},
                "support",
                id="otel-invoke-agent",
            ),
            pytest.param(
                "Triage", {"openinference.span.kind": "AGENT"}, "Triage", id="openinference"
            ),
            pytest.param(
                "Triage.agent",
                {"traceloop.span.kind": "agent", "gen_ai.agent.name": "Triage"},
                "Triage",
                id="openllmetry",
            ),
            pytest.param("LangGraph", {"openinference.span.kind": "CHAIN"}, "", id="chain"),
            pytest.param(
                "chat gpt-4o",
                {"gen_ai.operation.name": "chat", "gen_ai.agent.name": "support"},
                "",
                id="llm-span-is-not-an-agent-span",
            ),
        ],
    )
    def test_agent_spans(self, name: str, attributes: Attrs, expected: str) -> None:
        result = usage(attributes, name=name)

        assert result.agent_name == expected
        assert result.aggregate is (name != "chat gpt-4o")

    @pytest.mark.parametrize(
        ("attributes", "expected"),
        [
            pytest.param(
                {"output.mime_type": "application/json", "output.value": '{"id":"msg_01","x":1}'},
                "msg_01",
                id="openinference-json-output",
            ),
            pytest.param(
                {"output.mime_type": "text/plain", "output.value": '{"id":"msg_01"}'},
                "",
                id="not-json",
            ),
            pytest.param(
                {"output.mime_type": "application/json", "output.value": '{"model":"m","id":"x"}'},
                "",
                id="id-not-leading",
            ),
            pytest.param(
                {
                    "output.mime_type": "application/json",
                    "output.value": '{"id":"msg_01"}',
                    "llm.response.id": "msg_02",
                },
                "msg_02",
                id="attribute-first",
            ),
        ],
    )
    def test_openinference_response_id(self, attributes: Attrs, expected: str) -> None:
        base: Attrs = {"openinference.span.kind": "LLM", "llm.token_count.prompt": 5}
        record = only_record(usage({**base, **attributes}))

        assert record.response_id == expected

    def test_output_of_other_kinds_is_not_read(self) -> None:
        record = only_record(
            usage(
                {
                    "llm.token_count.prompt": 5,
                    "output.mime_type": "application/json",
                    "output.value": '{"id":"msg_01"}',
                }
            )
        )

        assert record.response_id == ""


class TestOnePassOverAttributes:
    """Attributes are read in one pass, so their order in the span must not matter:
    precedence among a field's names decides, as with one look-up per name."""

    def test_earlier_name_wins_when_it_comes_last(self) -> None:
        attributes: Attrs = {
            "ai.model.provider": "vercel",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "ai.model.id": "other",
            "gen_ai.usage.prompt_tokens": 99,
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.provider.name": "anthropic",
        }
        record = only_record(usage(attributes))
        assert (record.provider, record.model, record.quantity) == ("anthropic", "gpt-4o", 10)

    def test_blank_earlier_name_falls_through_whatever_the_order(self) -> None:
        attributes: Attrs = {**LLM_CALL, "gen_ai.system": "openai", "gen_ai.provider.name": " "}
        assert only_record(usage(attributes)).provider == "openai"

    def test_a_later_name_of_the_wrong_type_is_not_read_once_an_earlier_one_is_found(
        self,
    ) -> None:
        attributes: Attrs = {**LLM_CALL, "gen_ai.system": 1.5, "gen_ai.provider.name": "openai"}
        assert only_record(usage(attributes)).provider == "openai"
        tokens: Attrs = {"gen_ai.usage.prompt_tokens": "many", **LLM_CALL}
        assert only_record(usage(tokens)).quantity == 10

    def test_an_earlier_name_of_the_wrong_type_refuses_the_span_whatever_the_order(
        self,
    ) -> None:
        attributes: Attrs = {**LLM_CALL, "gen_ai.system": "openai", "gen_ai.provider.name": 1.5}
        with pytest.raises(SpanRejectedError) as refused:
            usage(attributes)
        assert refused.value.reason == RejectReason.INVALID_DIMENSION


class TestReadingPlanPerKeySet:
    """How a span is read is worked out once per set of attribute keys and reused: spans
    with the same keys must still each be read from their own values."""

    def test_same_keys_other_values_are_read_afresh(self) -> None:
        first: Attrs = {**LLM_CALL, "gen_ai.provider.name": "openai", "gen_ai.system": "x"}
        second: Attrs = {**LLM_CALL, "gen_ai.provider.name": " ", "gen_ai.system": "anthropic"}
        assert only_record(usage(first)).provider == "openai"
        assert only_record(usage(second)).provider == "anthropic"
        assert only_record(usage(first)).provider == "openai"

    def test_same_keys_in_another_order_read_alike(self) -> None:
        attributes: Attrs = {**LLM_CALL, "gen_ai.system": "openai", "agentmeter.usage.pages": 2}
        backwards = dict(reversed(list(attributes.items())))
        assert usage(backwards).records == usage(attributes).records

    def test_span_kind_decides_with_the_same_keys(self) -> None:
        # One key set, three kinds: a leaf call billed, an agent skipped, a tool counted.
        def kind(value: str) -> Attrs:
            return {**LLM_CALL, "openinference.span.kind": value}

        assert set(quantities(usage(kind("LLM")))) == {"input_tokens"}
        assert usage(kind("AGENT")).records == []
        assert set(quantities(usage(kind("TOOL")))) == {"input_tokens", "tool_calls"}

    def test_a_kind_of_the_wrong_type_is_refused_with_the_same_keys_as_a_good_one(
        self,
    ) -> None:
        assert usage({**LLM_CALL, "traceloop.span.kind": "task"}).records == []
        with pytest.raises(SpanRejectedError) as refused:
            usage({**LLM_CALL, "traceloop.span.kind": 3})
        assert refused.value.reason == RejectReason.INVALID_DIMENSION

    def test_custom_meter_set_to_none_is_skipped(self) -> None:
        # In-process spans (the SDK exporter) are mappings that may hold None.
        attributes: Attrs = {**LLM_CALL, "agentmeter.usage.pages": None}
        assert set(quantities(usage(attributes))) == {"input_tokens"}
        assert set(quantities(usage({**LLM_CALL, "agentmeter.usage.pages": 3}))) == {
            "input_tokens",
            "pages",
        }
