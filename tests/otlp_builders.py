"""OTLP trace export requests built by hand: from opentelemetry-proto messages, and one
OTLP/JSON export written out.

Shared by the OTLP decoding tests and the OTLP/gRPC and OTLP/HTTP receiver tests, which send
the serialized requests raw so that any bytes can be provoked.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

CUSTOMER = "agentmeter.customer.id"
END = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

Attributes = Mapping[str, str | int | float | bool]


def any_value(value: object) -> AnyValue:
    """An OTLP AnyValue the way the OTel SDK encodes a Python attribute value."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(item) for item in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=key_values(value)))
    raise TypeError(type(value))


def key_values(attributes: Mapping[str, object]) -> list[KeyValue]:
    return [KeyValue(key=key, value=any_value(value)) for key, value in attributes.items()]


def llm(
    input_tokens: int = 100, output_tokens: int = 20, *, customer: str = "", **extra: str
) -> dict[str, object]:
    """Attributes of a leaf chat span (OTel GenAI conventions), naming `customer` if any."""
    attributes: dict[str, object] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        **extra,
    }
    if customer:
        attributes[CUSTOMER] = customer
    return attributes


def span(trace: int, span_number: int, attributes: Mapping[str, object], **fields: bytes) -> Span:
    """A finished span; `span_id=`/`trace_id=` override the ids built from the numbers."""
    return Span(
        trace_id=fields.get("trace_id", trace.to_bytes(16, "big")),
        span_id=fields.get("span_id", span_number.to_bytes(8, "big")),
        name="chat gpt-4o",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=END - 1_000_000,
        end_time_unix_nano=END,
        attributes=key_values(attributes),
    )


def export_request(*spans: Span, resource: Attributes | None = None) -> bytes:
    """The serialized export of `spans` from the `support-agent` service."""
    resource_attributes = {"service.name": "support-agent", **(resource or {})}
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=key_values(resource_attributes)),
                scope_spans=[ScopeSpans(spans=list(spans))],
            )
        ]
    )
    return request.SerializeToString()


# An OTLP/JSON export as an OTLP/HTTP exporter sends it, with fields this version of the
# proto does not know (they must be ignored), ids in hex (one in upper case), int64 both as
# a string and as a number, and the span kind as an integer.
OTLP_JSON = b"""
{
  "resourceSpans": [
    {
      "resource": {
        "attributes": [
          {"key": "service.name", "value": {"stringValue": "support-agent"}},
          {"key": "agentmeter.customer.id", "value": {"stringValue": "acme"}},
          {"key": "host.cores", "value": {"intValue": 8}}
        ],
        "droppedAttributesCount": 0,
        "entityRefs": [{"type": "service", "idKeys": ["service.name"]}]
      },
      "scopeSpans": [
        {
          "scope": {"name": "opentelemetry.instrumentation.openai_v2", "version": "2.4b0"},
          "spans": [
            {
              "traceId": "5b8efff798038103d269b633813fc60c",
              "spanId": "0000000000000001",
              "parentSpanId": "",
              "name": "chat gpt-4o",
              "kind": 3,
              "startTimeUnixNano": "1767225599000000000",
              "endTimeUnixNano": "1767225600000000000",
              "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
                {"key": "gen_ai.response.model", "value": {"stringValue": "gpt-4o-2024-08-06"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1500"}},
                {"key": "gen_ai.usage.cache_read.input_tokens", "value": {"intValue": 1024}},
                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 200}},
                {"key": "agentmeter.usage.sandbox_seconds", "value": {"doubleValue": 12.5}}
              ],
              "events": [{"timeUnixNano": "1767225599500000000", "name": "first_token"}],
              "status": {"code": 1},
              "flags": 257,
              "someFutureField": {"nested": [1, 2, 3]}
            },
            {
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "0000000000000002",
              "parentSpanId": "0000000000000001",
              "name": "execute_tool web_search",
              "kind": 1,
              "startTimeUnixNano": 1767225599000000000,
              "endTimeUnixNano": "1767225600000000000",
              "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}},
                {"key": "gen_ai.tool.name", "value": {"stringValue": "web_search"}},
                {"key": "agentmeter.usage.web_searches", "value": {"intValue": "1"}}
              ]
            }
          ],
          "schemaUrl": "https://opentelemetry.io/schemas/1.37.0"
        }
      ]
    }
  ],
  "someFutureTopLevelField": true
}
"""
