"""OTLP trace exports → usage: protobuf and OTLP/JSON decoding, and `extract_usage`.

Requests are real `ExportTraceServiceRequest` messages (opentelemetry-proto); the JSON
bodies are written by hand the way OTLP/JSON exporters write them (hex ids, lowerCamelCase,
int64 as strings).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel_processor.otlp import (
    MAX_REJECTION_MESSAGES,
    Extraction,
    InvalidRequestError,
    decode_json,
    decode_protobuf,
    encode_response,
    export_response,
    extract_usage,
)
from otel_processor.usage import MAX_QUANTITY, Quantity, UsageRecord
from tests.otlp_builders import OTLP_JSON, key_values

TRACE_A = bytes.fromhex("5b8efff798038103d269b633813fc60c")
TRACE_B = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
TRACE_C = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
START = 1_767_225_599_000_000_000
END = 1_767_225_600_000_000_000


def span_id(n: int) -> bytes:
    return n.to_bytes(8, "big")


def span(
    trace_id: bytes,
    number: int,
    name: str,
    attributes: Mapping[str, object],
    *,
    end: int = END,
    parent: int = 0,
) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=span_id(number) if number else b"",
        parent_span_id=span_id(parent) if parent else b"",
        name=name,
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=START,
        end_time_unix_nano=end,
        attributes=key_values(attributes),
    )


def resource_spans(
    resource_attributes: Mapping[str, object], *scopes: tuple[str, Sequence[Span]]
) -> ResourceSpans:
    return ResourceSpans(
        resource=Resource(attributes=key_values(resource_attributes)),
        scope_spans=[
            ScopeSpans(scope=InstrumentationScope(name=scope), spans=spans)
            for scope, spans in scopes
        ],
    )


def export(*resources: ResourceSpans) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=resources)


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """The OTLP/JSON body of `request`: proto3 JSON, except ids are hex rather than base64."""
    document: dict[str, Any] = json_format.MessageToDict(request)
    for resource in document.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for item in scope.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in item:
                        item[key] = base64.b64decode(item[key]).hex()
    return json.dumps(document).encode()


def summary(records: Sequence[UsageRecord]) -> list[tuple[str, str, str, object, str, str]]:
    """(trace, span, meter, quantity, customer, service) per record, in order."""
    return [
        (r.trace_id[:4], r.span_id[-2:], r.meter, r.quantity, r.customer_id, r.service_name)
        for r in records
    ]


def agent_session() -> ExportTraceServiceRequest:
    """Two services, three scopes, three traces, a mix of billable, aggregate and bad spans.

    Trace A: an agent span names customer acme; its chat and tool children carry none.
    Trace B: a search agent whose resource names globex.
    Trace C: no customer anywhere.
    """
    support = resource_spans(
        {"service.name": "support-agent", "telemetry.sdk.language": "python"},
        (
            "opentelemetry.instrumentation.openai_agents",
            [
                span(
                    TRACE_A,
                    1,
                    "invoke_agent triage",
                    {
                        "gen_ai.operation.name": "invoke_agent",
                        "gen_ai.agent.name": "triage",
                        "agentmeter.customer.id": "acme",
                        # totals of the children below: never billed
                        "gen_ai.usage.input_tokens": 1500,
                        "gen_ai.usage.output_tokens": 200,
                    },
                ),
                span(
                    TRACE_A,
                    2,
                    "execute_tool web_search",
                    {
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": "web_search",
                        "agentmeter.usage.web_searches": 1,
                    },
                    parent=1,
                ),
            ],
        ),
        (
            "opentelemetry.instrumentation.openai_v2",
            [
                span(
                    TRACE_A,
                    3,
                    "chat gpt-4o",
                    {
                        "gen_ai.operation.name": "chat",
                        "gen_ai.provider.name": "openai",
                        "gen_ai.response.model": "gpt-4o-2024-08-06",
                        "gen_ai.usage.input_tokens": 1500,
                        "gen_ai.usage.cache_read.input_tokens": 1024,
                        "gen_ai.usage.output_tokens": 200,
                    },
                    parent=1,
                ),
                # rejected: reasoning > output
                span(
                    TRACE_A,
                    4,
                    "chat o3",
                    {"gen_ai.usage.output_tokens": 10, "gen_ai.usage.reasoning_tokens": 11},
                    parent=1,
                ),
            ],
        ),
    )
    search = resource_spans(
        {"service.name": "search-agent", "customer.id": "globex"},
        (
            "openinference.instrumentation.openai",
            [
                span(
                    TRACE_B,
                    5,
                    "ChatCompletion",
                    {
                        "openinference.span.kind": "LLM",
                        "llm.model_name": "gpt-4o-mini",
                        "llm.token_count.prompt": 300,
                        "llm.token_count.completion": 40,
                    },
                ),
                span(
                    TRACE_C,
                    6,
                    "sandbox",
                    {"agentmeter.usage.sandbox_seconds": 12.5, "customer.id": ""},
                ),
                # rejected: no end time
                span(TRACE_C, 7, "unfinished", {"llm.token_count.prompt": 1}, end=0),
            ],
        ),
    )
    return export(support, search)


class TestExtractUsage:
    def test_every_valid_record_of_every_resource_and_scope(self) -> None:
        extraction = extract_usage(agent_session())
        assert summary(extraction.batch.records) == [
            ("5b8e", "02", "tool_calls", 1, "", "support-agent"),
            ("5b8e", "02", "web_searches", 1, "", "support-agent"),
            ("5b8e", "03", "input_tokens", 1500, "", "support-agent"),
            ("5b8e", "03", "cache_read_tokens", 1024, "", "support-agent"),
            ("5b8e", "03", "output_tokens", 200, "", "support-agent"),
            ("0af7", "05", "input_tokens", 300, "globex", "search-agent"),
            ("0af7", "05", "output_tokens", 40, "globex", "search-agent"),
            ("4bf9", "06", "sandbox_seconds", Decimal("12.5"), "globex", "search-agent"),
        ]
        assert extraction.spans == 7
        assert extraction.rejected == 2

    def test_trace_customers_map_each_trace_to_its_first_customer(self) -> None:
        extraction = extract_usage(agent_session())
        assert extraction.batch.trace_customers == {
            # named only by the agent span, which has no usage of its own
            TRACE_A.hex(): "acme",
            TRACE_B.hex(): "globex",
            # the resource's customer, since the span's own value is empty
            TRACE_C.hex(): "globex",
        }

    @pytest.mark.parametrize(
        ("customers", "expected"),
        [
            pytest.param(["acme", "globex"], "acme", id="first-of-two"),
            pytest.param(["", "globex", "acme"], "globex", id="first-non-empty"),
            pytest.param(["", "  "], None, id="none"),
        ],
    )
    def test_first_customer_seen_wins(self, customers: list[str], expected: str | None) -> None:
        spans = [
            span(TRACE_A, n, "step", {"agentmeter.customer.id": customer})
            for n, customer in enumerate(customers, start=1)
        ]
        extraction = extract_usage(export(resource_spans({}, ("scope", spans))))
        assert extraction.batch.trace_customers.get(TRACE_A.hex()) == expected
        assert extraction.batch.records == []

    def test_customer_keys_are_passed_through(self) -> None:
        request = export(
            resource_spans(
                {"enduser.id": "u-17"},
                ("scope", [span(TRACE_A, 1, "chat", {"gen_ai.usage.input_tokens": 5})]),
            )
        )
        assert extract_usage(request).batch.trace_customers == {}
        extraction = extract_usage(request, customer_keys=("enduser.id",))
        assert extraction.batch.trace_customers == {TRACE_A.hex(): "u-17"}
        assert [r.customer_id for r in extraction.batch.records] == ["u-17"]

    def test_only_read_attributes_are_decoded_tenant_customer_keys_among_them(self) -> None:
        attributes = {
            "gen_ai.usage.input_tokens": 5,
            "enduser.id": "u-18",
            "gen_ai.prompt.0.content": "a long prompt " * 1000,
            "agentmeter.usage.pages": 2,
        }
        request = export(resource_spans({}, ("scope", [span(TRACE_A, 1, "chat", attributes)])))
        extraction = extract_usage(request, customer_keys=("enduser.id",))
        assert extraction.rejected == 0
        assert sorted((r.meter, r.quantity, r.customer_id) for r in extraction.batch.records) == [
            ("input_tokens", 5, "u-18"),
            ("pages", 2, "u-18"),
        ]

    @pytest.mark.parametrize(
        ("attributes", "expected"),
        [
            pytest.param({"agentmeter.usage.pages": 3}, ("pages", 3), id="int-value"),
            pytest.param(
                {"agentmeter.usage.sandbox_seconds": 12.5},
                ("sandbox_seconds", Decimal("12.5")),
                id="double-value",
            ),
            pytest.param({"agentmeter.usage.pages": "3"}, ("pages", 3), id="string-value"),
            pytest.param(
                {"gen_ai.usage.input_tokens": 10**9}, ("input_tokens", 10**9), id="int-at-bound"
            ),
        ],
    )
    def test_attribute_value_types(
        self, attributes: Mapping[str, object], expected: tuple[str, object]
    ) -> None:
        request = export(resource_spans({}, ("scope", [span(TRACE_A, 1, "chat", attributes)])))
        records = extract_usage(request).batch.records
        assert [(r.meter, r.quantity) for r in records] == [expected]
        assert type(records[0].quantity) is type(expected[1])

    @pytest.mark.parametrize(
        ("attributes", "fragment"),
        [
            pytest.param(
                {"agentmeter.usage.pages": True}, "must be a number, got a boolean", id="bool-meter"
            ),
            pytest.param(
                {"gen_ai.usage.input_tokens": [1, 2]},
                "must be a number, got ArrayValue",
                id="array-tokens",
            ),
            pytest.param(
                {"gen_ai.usage.input_tokens": b"\x05"},
                "must be a number, got bytes",
                id="bytes-tokens",
            ),
            pytest.param(
                {"gen_ai.usage.input_tokens": 2**40}, "absurdly large", id="int64-too-large"
            ),
            pytest.param(
                {"agentmeter.customer.id": ["acme"]},
                "must be a string, got ArrayValue",
                id="array-customer",
            ),
        ],
    )
    def test_wrongly_typed_values_reject_the_span(
        self, attributes: Mapping[str, object], fragment: str
    ) -> None:
        request = export(resource_spans({}, ("scope", [span(TRACE_A, 1, "chat", attributes)])))
        extraction = extract_usage(request)
        assert (extraction.spans, extraction.rejected, extraction.batch.records) == (1, 1, [])
        [message] = extraction.messages
        assert message.startswith("span 0000000000000001: ")
        assert fragment in message

    def test_unset_value_reads_as_empty_string(self) -> None:
        request = export(
            resource_spans(
                {},
                (
                    "scope",
                    [
                        Span(
                            trace_id=TRACE_A,
                            span_id=span_id(1),
                            end_time_unix_nano=END,
                            attributes=[KeyValue(key="gen_ai.usage.input_tokens")],
                        )
                    ],
                ),
            )
        )
        extraction = extract_usage(request)
        assert extraction.rejected == 1
        assert "gen_ai.usage.input_tokens must be a number, got ''" in extraction.messages[0]

    def test_empty_request(self) -> None:
        extraction = extract_usage(ExportTraceServiceRequest())
        assert (extraction.spans, extraction.rejected, extraction.messages) == (0, 0, [])
        assert (extraction.batch.records, extraction.batch.trace_customers) == ([], {})
        assert extraction.error_message() == ""

    def test_array_span_kind_rejects_only_that_span(self) -> None:
        request = export(
            resource_spans(
                {},
                (
                    "scope",
                    [
                        span(TRACE_A, 1, "chat", {"gen_ai.usage.input_tokens": 5}),
                        span(TRACE_A, 2, "agent", {"openinference.span.kind": ["AGENT"]}),
                    ],
                ),
            )
        )
        extraction = extract_usage(request)
        assert (extraction.spans, extraction.rejected) == (2, 1)
        assert [r.meter for r in extraction.batch.records] == ["input_tokens"]


class TestRejectionMessages:
    @pytest.mark.parametrize(
        ("bad_spans", "expected_messages", "suffix"),
        [
            pytest.param(0, 0, "", id="none"),
            pytest.param(1, 1, "", id="one"),
            pytest.param(MAX_REJECTION_MESSAGES, 5, "", id="five"),
            pytest.param(6, 5, "; and 1 more", id="six"),
            pytest.param(12, 5, "; and 7 more", id="twelve"),
        ],
    )
    def test_at_most_five_messages_and_a_count(
        self, bad_spans: int, expected_messages: int, suffix: str
    ) -> None:
        good = [span(TRACE_A, 100, "chat", {"gen_ai.usage.input_tokens": 5})]
        bad = [
            span(TRACE_A, n, "chat", {"gen_ai.usage.input_tokens": -n})
            for n in range(1, bad_spans + 1)
        ]
        extraction = extract_usage(export(resource_spans({}, ("scope", [*bad, *good]))))
        assert (extraction.spans, extraction.rejected) == (bad_spans + 1, bad_spans)
        assert len(extraction.batch.records) == 1
        assert extraction.messages == [
            f"span {span_id(n).hex()}: gen_ai.usage.input_tokens must not be negative, got {-n}"
            for n in range(1, expected_messages + 1)
        ]
        assert extraction.error_message() == "; ".join(extraction.messages) + suffix

    def test_rejections_are_counted_by_reason(self) -> None:
        spans = [
            span(TRACE_A, 1, "a", {"gen_ai.usage.input_tokens": -1}),
            span(TRACE_A, 2, "b", {"agentmeter.usage.pages": "lots"}),
            span(TRACE_A, 3, "c", {}, end=0),
            span(bytes(16), 4, "d", {}),
            span(TRACE_A, 0, "e", {}),
            span(TRACE_A, 6, "f", {"agentmeter.usage.Pages": 1}),
            span(TRACE_A, 7, "g", {"gen_ai.usage.cache_read_input_tokens": 1}),
            span(TRACE_A, 8, "h", {"gen_ai.agent.name": 1.5}),
        ]
        extraction = extract_usage(export(resource_spans({}, ("scope", spans))))
        assert dict(extraction.rejected_by_reason) == {
            "invalid_quantity": 2,
            "missing_time": 1,
            "invalid_id": 2,
            "invalid_meter": 1,
            "inconsistent_tokens": 1,
            "invalid_dimension": 1,
        }
        assert extraction.rejected == sum(extraction.rejected_by_reason.values())

    def test_error_message_of_a_hand_made_extraction(self) -> None:
        extraction = extract_usage(export())
        extraction.rejected = 9
        extraction.messages.extend(["span 01: x", "span 02: y"])
        assert extraction.error_message() == "span 01: x; span 02: y; and 7 more"


def otlp_json_as_proto() -> ExportTraceServiceRequest:
    """`OTLP_JSON`, built as a protobuf message."""
    return export(
        resource_spans(
            {"service.name": "support-agent", "agentmeter.customer.id": "acme", "host.cores": 8},
            (
                "opentelemetry.instrumentation.openai_v2",
                [
                    span(
                        TRACE_A,
                        1,
                        "chat gpt-4o",
                        {
                            "gen_ai.operation.name": "chat",
                            "gen_ai.provider.name": "openai",
                            "gen_ai.response.model": "gpt-4o-2024-08-06",
                            "gen_ai.usage.input_tokens": 1500,
                            "gen_ai.usage.cache_read.input_tokens": 1024,
                            "gen_ai.usage.output_tokens": 200,
                            "agentmeter.usage.sandbox_seconds": 12.5,
                        },
                    ),
                    span(
                        TRACE_A,
                        2,
                        "execute_tool web_search",
                        {
                            "gen_ai.operation.name": "execute_tool",
                            "gen_ai.tool.name": "web_search",
                            "agentmeter.usage.web_searches": 1,
                        },
                        parent=1,
                    ),
                ],
            ),
        )
    )


def json_span(**fields: Any) -> bytes:
    """An OTLP/JSON export of one otherwise valid, billable span."""
    item: dict[str, Any] = {
        "traceId": TRACE_A.hex(),
        "spanId": span_id(1).hex(),
        "name": "chat",
        "endTimeUnixNano": str(END),
        "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "5"}}],
    }
    item.update(fields)
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [item]}]}]}).encode()


class TestDecodeJson:
    def test_hand_written_export(self) -> None:
        request = decode_json(OTLP_JSON).request
        chat, tool = request.resource_spans[0].scope_spans[0].spans
        assert (chat.trace_id, chat.span_id, chat.parent_span_id) == (TRACE_A, span_id(1), b"")
        assert (tool.trace_id, tool.parent_span_id) == (TRACE_A, span_id(1))
        assert (chat.kind, tool.kind) == (Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_INTERNAL)
        assert tool.start_time_unix_nano == START

        extraction = extract_usage(request)
        assert (extraction.spans, extraction.rejected) == (2, 0)
        assert [
            (r.span_id[-1], r.meter, r.quantity, r.customer_id, r.service_name, r.model)
            for r in extraction.batch.records
        ] == [
            ("1", "input_tokens", 1500, "acme", "support-agent", "gpt-4o-2024-08-06"),
            ("1", "cache_read_tokens", 1024, "acme", "support-agent", "gpt-4o-2024-08-06"),
            ("1", "output_tokens", 200, "acme", "support-agent", "gpt-4o-2024-08-06"),
            ("1", "sandbox_seconds", Decimal("12.5"), "acme", "support-agent", "gpt-4o-2024-08-06"),
            ("2", "tool_calls", 1, "acme", "support-agent", ""),
            ("2", "web_searches", 1, "acme", "support-agent", ""),
        ]
        assert {r.time_unix_nano for r in extraction.batch.records} == {END}
        assert extraction.batch.trace_customers == {TRACE_A.hex(): "acme"}

    def test_same_records_as_protobuf(self) -> None:
        from_json = extract_usage(decode_json(OTLP_JSON))
        body = otlp_json_as_proto().SerializeToString()
        from_protobuf = extract_usage(decode_protobuf(body))
        assert from_json.batch.records == from_protobuf.batch.records
        assert from_json.batch.trace_customers == from_protobuf.batch.trace_customers
        assert len(from_json.batch.records) == 6

    def test_session_same_records_over_json_and_protobuf(self) -> None:
        request = agent_session()
        from_json = extract_usage(decode_json(otlp_json(request)))
        from_protobuf = extract_usage(decode_protobuf(request.SerializeToString()))
        assert from_json.batch.records == from_protobuf.batch.records
        assert from_json.batch.trace_customers == from_protobuf.batch.trace_customers
        assert (from_json.spans, from_json.rejected, from_json.messages) == (
            from_protobuf.spans,
            from_protobuf.rejected,
            from_protobuf.messages,
        )

    @pytest.mark.parametrize(
        ("fields", "fragment"),
        [
            pytest.param({"spanId": "not-hex!"}, "span id must be 8", id="span-id-not-hex"),
            pytest.param({"spanId": "00000000000000zz"}, "span id", id="span-id-bad-digit"),
            pytest.param({"spanId": "000000000000001"}, "span id", id="span-id-odd-length"),
            pytest.param({"spanId": 1}, "span id", id="span-id-number"),
            pytest.param({"traceId": "xyz"}, "trace id must be 16", id="trace-id-not-hex"),
            pytest.param({"traceId": ["ab"]}, "trace id", id="trace-id-array"),
            pytest.param(
                {"traceId": base64.b64encode(TRACE_A).decode()},
                "trace id",
                id="trace-id-base64-not-hex",
            ),
            pytest.param({"spanId": "00" * 8}, "non-zero", id="span-id-zero"),
            pytest.param({"spanId": "01" * 9}, "got 9", id="span-id-too-long"),
        ],
    )
    def test_bad_id_rejects_only_that_span(self, fields: dict[str, Any], fragment: str) -> None:
        good = json.loads(json_span(spanId="00000000000000aa"))
        bad = json.loads(json_span(**fields))
        good["resourceSpans"][0]["scopeSpans"][0]["spans"].extend(
            bad["resourceSpans"][0]["scopeSpans"][0]["spans"]
        )
        extraction = extract_usage(decode_json(json.dumps(good).encode()))
        assert (extraction.spans, extraction.rejected) == (2, 1)
        assert [(r.span_id, r.meter) for r in extraction.batch.records] == [
            ("00000000000000aa", "input_tokens")
        ]
        assert fragment in extraction.messages[0]

    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            pytest.param({}, 5, id="baseline"),
            pytest.param(
                {"attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": 7}}]},
                7,
                id="int64-as-number",
            ),
            pytest.param({"kind": "SPAN_KIND_CLIENT"}, 5, id="kind-as-enum-name"),
            pytest.param({"kind": 99}, 5, id="kind-unknown-number"),
            pytest.param({"traceId": TRACE_A.hex().upper()}, 5, id="upper-case-hex"),
            pytest.param({"parentSpanId": ""}, 5, id="empty-parent"),
            pytest.param({"links": [{"traceId": "zz", "spanId": "zz"}]}, 5, id="bad-link-ids"),
            pytest.param({"endTimeUnixNano": int(END)}, 5, id="end-time-as-number"),
            pytest.param({"droppedEventsCount": 3, "extra": {"a": [None]}}, 5, id="unknown"),
        ],
    )
    def test_accepted_variations(self, fields: dict[str, Any], expected: int) -> None:
        extraction = extract_usage(decode_json(json_span(**fields)))
        assert (extraction.spans, extraction.rejected) == (1, 0)
        assert [(r.meter, r.quantity) for r in extraction.batch.records] == [
            ("input_tokens", expected)
        ]

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            pytest.param(b"", "not JSON", id="empty-body"),
            pytest.param(b"not json", "not JSON", id="not-json"),
            pytest.param(b'{"resourceSpans": [', "not JSON", id="truncated"),
            pytest.param(b"\xff\xfe\xfa", "not JSON", id="not-utf8"),
            pytest.param(b"[]", "JSON object", id="array"),
            pytest.param(b'"resourceSpans"', "JSON object", id="string"),
            pytest.param(b"42", "JSON object", id="number"),
            pytest.param(b"null", "JSON object", id="null"),
            pytest.param(b'{"resourceSpans": "x"}', "not an OTLP/JSON", id="spans-not-a-list"),
            pytest.param(b'{"resourceSpans": {}}', "not an OTLP/JSON", id="spans-an-object"),
        ],
    )
    def test_invalid_body(self, body: bytes, fragment: str) -> None:
        with pytest.raises(InvalidRequestError, match=fragment):
            decode_json(body)

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b"{}", id="empty-object"),
            pytest.param(b'{"resourceSpans": []}', id="no-resources"),
            pytest.param(b'{"resourceSpans": null}', id="null-resources"),
            pytest.param(b'{"resourceSpans": [{}]}', id="empty-resource"),
        ],
    )
    def test_empty_exports(self, body: bytes) -> None:
        extraction = extract_usage(decode_json(body))
        assert (extraction.spans, extraction.rejected, extraction.batch.records) == (0, 0, [])

    @pytest.mark.parametrize(
        "fields",
        [
            pytest.param({"name": 5}, id="name-a-number"),
            pytest.param({"endTimeUnixNano": -1}, id="negative-time"),
            pytest.param({"endTimeUnixNano": "soon"}, id="time-text"),
            pytest.param({"attributes": {"a": 1}}, id="attrs-object"),
            pytest.param(
                {"attributes": [{"key": "n", "value": {"intValue": "many"}}]}, id="int-value-text"
            ),
            pytest.param(
                {"attributes": [{"key": "n", "value": {"intValue": 1.5}}]}, id="int-value-fraction"
            ),
            pytest.param(
                {"attributes": [{"key": "n", "value": {"intValue": str(2**63)}}]},
                id="int-value-overflow",
            ),
            pytest.param(
                {"attributes": [{"key": "n", "value": {"intValue": 1, "stringValue": "x"}}]},
                id="two-values",
            ),
            pytest.param({"name": "\ud800"}, id="lone-surrogate"),
            pytest.param({"kind": "\ud800"}, id="enum-name-lone-surrogate"),
        ],
    )
    def test_undecodable_span_is_rejected_alone(self, fields: dict[str, Any]) -> None:
        good = json.loads(json_span(spanId="00000000000000aa"))
        bad = json.loads(json_span(**fields))
        spans = good["resourceSpans"][0]["scopeSpans"][0]["spans"]
        spans[:0] = bad["resourceSpans"][0]["scopeSpans"][0]["spans"]
        spans.append(7)  # not even an object

        extraction = extract_usage(decode_json(json.dumps(good).encode()))

        assert (extraction.spans, extraction.rejected) == (3, 2)
        assert [(r.span_id, r.meter) for r in extraction.batch.records] == [
            ("00000000000000aa", "input_tokens")
        ]
        assert "span is not an OTLP/JSON span" in extraction.messages[0]
        assert "span is not a JSON object" in extraction.messages[1]
        assert extraction.rejected_by_reason == {"unreadable": 2}

    def test_spans_not_a_list_is_invalid(self) -> None:
        body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": "x"}]}]}).encode()
        with pytest.raises(InvalidRequestError, match="not an OTLP/JSON"):
            decode_json(body)

    def test_deeply_nested_json_is_invalid(self) -> None:
        with pytest.raises(InvalidRequestError):
            decode_json(b"[" * 5_000 + b"]" * 5_000)  # 10 KB


class TestDecodeProtobuf:
    def test_span_that_breaks_the_wire_format_is_rejected_alone(self) -> None:
        # Protobuf strings must be UTF-8: a span whose name is not cannot be decoded, but
        # its neighbours can (issue 8: content never fails the whole request).
        tokens = {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 9}
        request = export(
            resource_spans(
                {},
                ("scope", [span(TRACE_A, 1, "BADNAME!", tokens), span(TRACE_A, 2, "ok", tokens)]),
            )
        )
        body = request.SerializeToString().replace(b"BADNAME!", b"\xff\xfe" * 4)

        extraction = extract_usage(decode_protobuf(body))

        assert (extraction.spans, extraction.rejected) == (2, 1)
        assert extraction.rejected_by_reason == {"unreadable": 1}
        assert "span is not a protobuf OTLP span" in extraction.error_message()
        assert [(r.span_id, r.quantity) for r in extraction.batch.records] == [
            (span_id(2).hex(), 9)
        ]

    def test_end_time_past_int64_rejects_only_that_span(self) -> None:
        tokens = {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 9}
        spans = [span(TRACE_A, 1, "far", tokens, end=2**64 - 1), span(TRACE_A, 2, "ok", tokens)]
        body = export(resource_spans({}, ("scope", spans))).SerializeToString()

        extraction = extract_usage(decode_protobuf(body))

        assert (extraction.spans, extraction.rejected) == (2, 1)
        assert "past year 2262" in extraction.error_message()
        assert [r.span_id for r in extraction.batch.records] == [span_id(2).hex()]

    def test_round_trip(self) -> None:
        request = agent_session()
        assert decode_protobuf(request.SerializeToString()).request == request

    def test_one_bad_span_leaves_every_other_part_as_decoded_whole(self) -> None:
        # A valid export decodes in one call; one bad span sends it span by span. Both ways
        # must give the same resources, scopes and spans (but for the bad span).
        request = agent_session()
        bad_scope = request.resource_spans[1].scope_spans[0]
        bad_scope.spans.add().CopyFrom(span(TRACE_A, 99, "BADNAME!", {}))
        body = request.SerializeToString().replace(b"BADNAME!", b"\xff\xfe" * 4)

        decoded = decode_protobuf(body)

        del bad_scope.spans[-1]
        assert decoded.request == request
        assert decoded.undecodable == ["span is not a protobuf OTLP span"]

    def test_empty_body_is_an_empty_export(self) -> None:
        assert decode_protobuf(b"").request == ExportTraceServiceRequest()

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b"\xff\xff\xff", id="bad-varint"),
            pytest.param(b"garbage", id="text"),
            pytest.param(b'{"resourceSpans": []}', id="json-sent-as-protobuf"),
            pytest.param(b"\x0a\x05abc", id="length-past-end"),
            pytest.param(agent_session().SerializeToString()[:-3], id="truncated"),
            pytest.param(b"\x0a\x02\x12\x00\xff", id="trailing-garbage"),
        ],
    )
    def test_garbage(self, body: bytes) -> None:
        with pytest.raises(InvalidRequestError, match="not a protobuf OTLP trace export"):
            decode_protobuf(body)


# --- Properties: whatever arrives, the boundary holds -----------------------------------------

# The one span every generated request carries somewhere: it must always be billed exactly so.
GOOD_SPAN_ID = bytes.fromhex("600d600d600d600d")
GOOD_TRACE_ID = bytes.fromhex("600d" * 8)
GOOD_ATTRIBUTES = {
    "gen_ai.operation.name": "chat",
    "gen_ai.usage.input_tokens": 40,
    "gen_ai.usage.output_tokens": 2,
    "agentmeter.customer.id": "acme",
}
GOOD_RECORDS = [("input_tokens", 40), ("output_tokens", 2)]

ATTRIBUTE_KEYS = st.sampled_from(
    [
        "gen_ai.operation.name",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.response.model",
        "gen_ai.provider.name",
        "gen_ai.agent.name",
        "gen_ai.tool.name",
        "agentmeter.customer.id",
        "agentmeter.usage.web_searches",
        "agentmeter.usage.INVALID",
        "openinference.span.kind",
        "ai.operationId",
        "service.name",
    ]
) | st.text(max_size=12)
SCALARS = (
    st.text()
    | st.text(alphabet="0123456789.eE+-_ ", max_size=12)
    | st.sampled_from(["NaN", "inf", "-0", "1e-7", "1.0000001", "\x00", "1e999999999"])
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.booleans()
    | st.binary(max_size=8)
)
ANY_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)

# JSON can carry what protobuf cannot: lone surrogates ("\ud800" escapes) among them.
JSON_TEXT = st.text() | st.sampled_from(["\ud800", "a\udfffb", "\x00", "18446744073709551615"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | JSON_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(JSON_TEXT, inner, max_size=3),
    max_leaves=6,
)
# Attribute lists as OTLP/JSON writes them, holding any value: the fields spans read most.
JSON_ATTRIBUTES = st.lists(
    st.fixed_dictionaries(
        {
            "key": ATTRIBUTE_KEYS | JSON_TEXT,
            "value": st.dictionaries(
                st.sampled_from(["stringValue", "intValue", "doubleValue", "boolValue"]),
                JSON_VALUES,
                max_size=2,
            ),
        }
    ),
    max_size=4,
)


@st.composite
def arbitrary_spans(draw: st.DrawFn) -> Span:
    """A span with any ids, any end time a fixed64 holds, and attributes of any type."""
    return Span(
        trace_id=draw(st.binary(max_size=18) | st.just(GOOD_TRACE_ID)),
        span_id=draw(st.binary(max_size=10) | st.just(GOOD_SPAN_ID)),
        name=draw(st.text(max_size=300)),
        end_time_unix_nano=draw(st.integers(min_value=0, max_value=2**64 - 1)),
        attributes=key_values(draw(st.dictionaries(ATTRIBUTE_KEYS, ANY_VALUES, max_size=6))),
    )


def good_span() -> Span:
    return Span(
        trace_id=GOOD_TRACE_ID,
        span_id=GOOD_SPAN_ID,
        name="chat",
        end_time_unix_nano=END,
        attributes=key_values(GOOD_ATTRIBUTES),
    )


@st.composite
def requests_with_one_good_span(draw: st.DrawFn) -> ExportTraceServiceRequest:
    """Arbitrary spans around one valid span, and a resource of arbitrary attributes with
    more arbitrary spans (the good span's own resource is its context, so it stays sane)."""

    def neighbours() -> list[Span]:
        drawn = draw(st.lists(arbitrary_spans(), max_size=4))
        return [s for s in drawn if (s.trace_id, s.span_id) != (GOOD_TRACE_ID, GOOD_SPAN_ID)]

    around = neighbours()
    position = draw(st.integers(min_value=0, max_value=len(around)))
    spans = [*around[:position], good_span(), *around[position:]]
    own = resource_spans({"service.name": "support-agent"}, ("scope", spans))
    other_resource = draw(st.dictionaries(ATTRIBUTE_KEYS, ANY_VALUES, max_size=3))
    other = resource_spans(other_resource, ("scope", neighbours()))
    return export(*([own, other] if draw(st.booleans()) else [other, own]))


def span_count(request: ExportTraceServiceRequest) -> int:
    return sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)


def assert_storable(record: UsageRecord) -> None:
    """What every store takes: hex ids, an int64 time, an exact bounded quantity, text that
    encodes as UTF-8 without NUL and fits its column."""
    assert len(record.trace_id) == 32 and int(record.trace_id, 16)
    assert len(record.span_id) == 16 and int(record.span_id, 16)
    assert 0 < record.time_unix_nano < 2**63
    assert isinstance(record.quantity, int | Decimal)
    assert 0 <= record.quantity <= MAX_QUANTITY
    assert Decimal(record.quantity).as_tuple().exponent >= -6  # type: ignore[operator]
    for text in (record.meter, *record[4:5], *record[6:]):
        assert isinstance(text, str) and len(text) <= 256 and "\x00" not in text
        text.encode()  # no lone surrogate


def assert_spec_answer(extraction: Extraction) -> None:
    """The OTLP answer encodes in both content types and counts exactly the refused spans."""
    response = export_response(extraction.rejected, extraction.error_message())
    assert response.partial_success.rejected_spans == extraction.rejected
    assert bool(response.partial_success.error_message) == bool(extraction.rejected)
    assert ExportTraceServiceResponse.FromString(encode_response(response, as_json=False)) == (
        response
    )
    assert json_format.Parse(encode_response(response, as_json=True), type(response)()) == (
        response
    )
    assert "Traceback" not in extraction.error_message()
    assert 0 <= extraction.rejected <= extraction.spans


def good_records(extraction: Extraction) -> list[tuple[str, Quantity]]:
    return [
        (r.meter, r.quantity)
        for r in extraction.batch.records
        if (r.trace_id, r.span_id) == (GOOD_TRACE_ID.hex(), GOOD_SPAN_ID.hex())
    ]


class TestBoundaryProperties:
    @given(st.binary(max_size=2_000))
    def test_any_bytes_as_protobuf_are_decoded_or_refused_as_invalid(self, body: bytes) -> None:
        try:
            decoded = decode_protobuf(body)
        except InvalidRequestError:
            return
        extraction = extract_usage(decoded)
        for record in extraction.batch.records:
            assert_storable(record)
        assert_spec_answer(extraction)

    @given(st.binary(max_size=2_000) | st.text(max_size=500).map(str.encode))
    def test_any_bytes_as_json_are_decoded_or_refused_as_invalid(self, body: bytes) -> None:
        try:
            decoded = decode_json(body)
        except InvalidRequestError:
            return
        assert_spec_answer(extract_usage(decoded))

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(requests_with_one_good_span())
    def test_protobuf_valid_span_is_billed_whatever_its_neighbours_hold(
        self, request: ExportTraceServiceRequest
    ) -> None:
        extraction = extract_usage(decode_protobuf(request.SerializeToString()))

        assert good_records(extraction) == GOOD_RECORDS
        for record in extraction.batch.records:
            assert_storable(record)
        assert extraction.spans == span_count(request)
        assert_spec_answer(extraction)

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(
        requests_with_one_good_span(),
        st.lists(
            st.tuples(st.text(max_size=20), JSON_VALUES)
            | st.tuples(st.just("attributes"), JSON_ATTRIBUTES)
            | st.tuples(
                st.sampled_from(["traceId", "spanId", "endTimeUnixNano", "name", "kind", "links"]),
                JSON_VALUES,
            )
        ),
    )
    def test_json_valid_span_is_billed_whatever_its_neighbours_hold(
        self, request: ExportTraceServiceRequest, mutations: list[tuple[str, object]]
    ) -> None:
        document = json.loads(otlp_json(request))
        spans = [
            item
            for resource in document["resourceSpans"]
            for scope in resource["scopeSpans"]
            for item in scope.get("spans", [])
        ]
        neighbours = [s for s in spans if s.get("spanId") != GOOD_SPAN_ID.hex()]
        # Any field of a neighbour may hold any JSON: unknown names, wrong types, garbage.
        for index, (key, value) in enumerate(mutations):
            if neighbours:
                neighbours[index % len(neighbours)][key] = value

        extraction = extract_usage(decode_json(json.dumps(document).encode()))

        assert good_records(extraction) == GOOD_RECORDS
        for record in extraction.batch.records:
            assert_storable(record)
        assert extraction.spans == len(spans)
        assert_spec_answer(extraction)

    @given(st.lists(arbitrary_spans(), max_size=4), st.integers(min_value=0, max_value=2_000))
    def test_protobuf_span_cut_short_is_refused_alone(
        self, neighbours: list[Span], cut: int
    ) -> None:
        # Build the request by hand so one neighbour's bytes can be made undecodable.
        broken = Span(name="BROKEN!!", span_id=b"\x01" * 8).SerializeToString()
        raw_spans = [
            s.SerializeToString()
            for s in neighbours
            if (s.trace_id, s.span_id) != (GOOD_TRACE_ID, GOOD_SPAN_ID)
        ]
        raw_spans.insert(min(cut, len(raw_spans)), good_span().SerializeToString())
        raw_spans.append(broken.replace(b"BROKEN!!", b"\xc0" * 8))
        scope = b"".join(b"\x12" + _varint(len(raw)) + raw for raw in raw_spans)
        resource = b"\x12" + _varint(len(scope)) + scope
        body = b"\x0a" + _varint(len(resource)) + resource

        extraction = extract_usage(decode_protobuf(body))

        assert good_records(extraction) == GOOD_RECORDS
        assert extraction.rejected_by_reason["unreadable"] >= 1
        assert extraction.spans == len(raw_spans)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
