"""OTLP trace requests: decoding (protobuf and OTLP/JSON) and request → usage batch.

Pure functions: bytes in, messages out; a request in, a `UsageBatch` and the rejected
spans out. The receivers (`otel_processor.receiver`) add transport, auth and storage.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from otel_processor.conventions import DEFAULT_CUSTOMER_KEYS
from otel_processor.spans import Attributes, SpanRejectedError, span_usage
from otel_processor.usage import AgentSpan, UsageBatch, UsageRecord

MAX_REJECTION_MESSAGES = 5
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


class InvalidRequestError(ValueError):
    """The request body cannot be decoded as an OTLP trace export; nothing is stored."""


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """Decode an `application/x-protobuf` OTLP trace export."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as error:
        raise InvalidRequestError(f"body is not a protobuf OTLP trace export: {error}") from None
    return request


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    """Decode an OTLP/JSON trace export.

    OTLP/JSON differs from proto3's JSON mapping in that trace and span ids are hex, not
    base64. An id that is not valid hex becomes empty, so that span alone is rejected later.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRequestError(f"body is not JSON: {error}") from None
    except RecursionError:
        raise InvalidRequestError("body is not an OTLP/JSON export: nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidRequestError("body must be a JSON object with resourceSpans")
    for resource_spans in _objects(document.get("resourceSpans")):
        for scope_spans in _objects(resource_spans.get("scopeSpans")):
            for span in _objects(scope_spans.get("spans")):
                _hex_ids_to_base64(span)
                for link in _objects(span.get("links")):
                    _hex_ids_to_base64(link)
    try:
        return json_format.ParseDict(
            document, ExportTraceServiceRequest(), ignore_unknown_fields=True
        )
    except json_format.ParseError as error:
        raise InvalidRequestError(f"body is not an OTLP/JSON trace export: {error}") from None


def export_response(rejected: int, error_message: str) -> ExportTraceServiceResponse:
    """The OTLP answer to an accepted export; `partial_success` names refused spans."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=rejected, error_message=error_message)
        )
    return response


def encode_response(response: Message, *, as_json: bool) -> bytes:
    """Encode an export response (or error status) in the request's content type."""
    if as_json:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


def _objects(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _hex_ids_to_base64(obj: dict[str, Any]) -> None:
    for key in _ID_FIELDS:
        value = obj.get(key)
        if isinstance(value, str):
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                obj[key] = ""
        elif value is not None:
            obj[key] = ""


@dataclass(slots=True)
class Extraction:
    """Usage extracted from one request, and what was refused."""

    records: list[UsageRecord] = field(default_factory=list)
    trace_customers: dict[str, str] = field(default_factory=dict)
    agent_spans: list[AgentSpan] = field(default_factory=list)
    spans: int = 0
    rejected: int = 0
    messages: list[str] = field(default_factory=list)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)

    def add_span(
        self,
        *,
        trace_id: bytes,
        span_id: bytes,
        name: str,
        end_time_unix_nano: int,
        attributes: Attributes,
        resource_attributes: Attributes,
        customer_keys: Sequence[str],
        parent_span_id: bytes = b"",
    ) -> None:
        """Extract one span's usage into the batch, or count it as rejected."""
        self.spans += 1
        try:
            usage = span_usage(
                trace_id=trace_id,
                span_id=span_id,
                name=name,
                end_time_unix_nano=end_time_unix_nano,
                attributes=attributes,
                resource_attributes=resource_attributes,
                customer_keys=customer_keys,
                parent_span_id=parent_span_id,
            )
        except SpanRejectedError as error:
            self.reject(f"span {span_id.hex()}", error)
            return
        self.records.extend(usage.records)
        if usage.customer_id:
            self.trace_customers.setdefault(trace_id.hex(), usage.customer_id)
        if usage.aggregate:
            parent = parent_span_id.hex() if any(parent_span_id) else ""
            self.agent_spans.append(
                AgentSpan(trace_id.hex(), span_id.hex(), parent, usage.agent_name)
            )

    def reject(self, what: str, error: SpanRejectedError) -> None:
        """Count one refused span (or record) and keep the first reasons."""
        self.rejected += 1
        self.rejected_by_reason[error.reason] += 1
        if len(self.messages) < MAX_REJECTION_MESSAGES:
            self.messages.append(f"{what}: {error}")

    @property
    def batch(self) -> UsageBatch:
        """What goes to the sink."""
        return UsageBatch(
            records=self.records,
            trace_customers=self.trace_customers,
            agent_spans=self.agent_spans,
        )

    def error_message(self) -> str:
        """The first rejection reasons, for OTLP `partial_success.error_message`."""
        more = self.rejected - len(self.messages)
        suffix = f"; and {more} more" if more > 0 else ""
        return "; ".join(self.messages) + suffix


def _attributes(key_values: Sequence[KeyValue]) -> dict[str, object]:
    # Unset values read as "" (the proto default); arrays and maps stay messages, which
    # every field that AgentMeter reads refuses with a clear message.
    return {
        kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
        for kv in key_values
    }


def extract_usage(
    request: ExportTraceServiceRequest,
    customer_keys: Sequence[str] = DEFAULT_CUSTOMER_KEYS,
) -> Extraction:
    """Turn every span of `request` into usage; bad spans are counted, not fatal."""
    extraction = Extraction()
    for resource_spans in request.resource_spans:
        resource_attributes = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                extraction.add_span(
                    trace_id=span.trace_id,
                    span_id=span.span_id,
                    name=span.name,
                    end_time_unix_nano=span.end_time_unix_nano,
                    attributes=_attributes(span.attributes),
                    resource_attributes=resource_attributes,
                    customer_keys=customer_keys,
                    parent_span_id=span.parent_span_id,
                )
    return extraction
