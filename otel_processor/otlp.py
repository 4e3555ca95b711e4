"""OTLP trace requests: decoding (protobuf and OTLP/JSON) and request → usage batch.

Pure functions: bytes in, messages out; a request in, a `UsageBatch` and the rejected
spans out. The receivers (`otel_processor.receiver`) add transport, auth and storage.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import Counter
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    json_format,
    message_factory,
    text_format,
)
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_processor.conventions import CUSTOM_METER_PREFIX, DEFAULT_CUSTOMER_KEYS, READ_KEYS
from otel_processor.spans import Attributes, RejectReason, SpanRejectedError, span_usage
from otel_processor.usage import AgentSpan, UsageBatch, UsageRecord

logger = logging.getLogger("agentmeter.ingest")

MAX_REJECTION_MESSAGES = 5
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
_M = TypeVar("_M", bound=Message)


class InvalidRequestError(ValueError):
    """The request body cannot be decoded as an OTLP trace export; nothing is stored."""


@dataclass(frozen=True, slots=True)
class DecodedExport:
    """A decoded trace export, and why each span that could not be decoded was left out.

    Spans are decoded one by one, so a span that breaks the wire format (invalid UTF-8, a
    JSON field of the wrong type) is refused alone while its neighbours are billed.
    """

    request: ExportTraceServiceRequest
    undecodable: list[str] = field(default_factory=list)


def _lazy_request_class() -> type[Message]:
    """A wire-compatible twin of `ExportTraceServiceRequest` whose spans stay raw bytes.

    Resource and scope are decoded with the request (every span of the resource shares
    them); each span's bytes are decoded on their own by `decode_protobuf`.
    """
    file = text_format.Parse(
        """
        name: "agentmeter/otlp_lazy_spans.proto"
        package: "agentmeter.otlp_lazy"
        syntax: "proto3"
        dependency: "opentelemetry/proto/common/v1/common.proto"
        dependency: "opentelemetry/proto/resource/v1/resource.proto"
        message_type {
          name: "ScopeSpans"
          field { name: "scope" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
                  type_name: ".opentelemetry.proto.common.v1.InstrumentationScope" }
          field { name: "spans" number: 2 label: LABEL_REPEATED type: TYPE_BYTES }
        }
        message_type {
          name: "ResourceSpans"
          field { name: "resource" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
                  type_name: ".opentelemetry.proto.resource.v1.Resource" }
          field { name: "scope_spans" number: 2 label: LABEL_REPEATED type: TYPE_MESSAGE
                  type_name: ".agentmeter.otlp_lazy.ScopeSpans" }
        }
        message_type {
          name: "Request"
          field { name: "resource_spans" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
                  type_name: ".agentmeter.otlp_lazy.ResourceSpans" }
        }
        """,
        descriptor_pb2.FileDescriptorProto(),
    )
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(file.name)
    except KeyError:
        pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("agentmeter.otlp_lazy.Request")
    )


_LazyRequest = _lazy_request_class()


def decode_protobuf(body: bytes) -> DecodedExport:
    """Decode an `application/x-protobuf` OTLP trace export, each span on its own."""
    try:
        # Almost every export decodes whole, in one call into the protobuf runtime; each
        # span decoded on its own would be the same spans (a repeated field's elements are
        # decoded independently), only dearer.
        return DecodedExport(ExportTraceServiceRequest.FromString(body))
    except DecodeError:
        pass  # an undecodable span, or no export at all: tell which below
    lazy = _LazyRequest()
    try:
        lazy.ParseFromString(body)
    except DecodeError as error:
        raise InvalidRequestError(f"body is not a protobuf OTLP trace export: {error}") from None
    decoded = DecodedExport(ExportTraceServiceRequest())
    for lazy_resource in lazy.resource_spans:  # type: ignore[attr-defined]
        resource_spans = decoded.request.resource_spans.add()
        resource_spans.resource.CopyFrom(lazy_resource.resource)
        for lazy_scope in lazy_resource.scope_spans:
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.CopyFrom(lazy_scope.scope)
            for raw in lazy_scope.spans:
                try:
                    scope_spans.spans.add().MergeFromString(raw)
                except DecodeError:
                    del scope_spans.spans[-1]
                    decoded.undecodable.append("span is not a protobuf OTLP span")
    return decoded


def decode_json(body: bytes) -> DecodedExport:
    """Decode an OTLP/JSON trace export, each span on its own.

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
    # The request without its spans must decode; then each span decodes into its place.
    spans_by_scope: list[list[Any]] = []
    for resource_object in _objects(document.get("resourceSpans")):
        for scope_object in _objects(resource_object.get("scopeSpans")):
            spans = scope_object.get("spans")
            if isinstance(spans, list):  # anything else is left for ParseDict to refuse
                scope_object["spans"] = []
            spans_by_scope.append(spans if isinstance(spans, list) else [])
    decoded = DecodedExport(_parse_json(document, ExportTraceServiceRequest()))
    scopes = [scope for r in decoded.request.resource_spans for scope in r.scope_spans]
    for scope_spans, spans in zip(scopes, spans_by_scope, strict=True):
        for span in spans:
            try:
                _parse_json_span(span, scope_spans.spans.add())
            except InvalidRequestError as error:
                del scope_spans.spans[-1]
                decoded.undecodable.append(str(error))
    return decoded


def _parse_json(
    document: dict[str, Any], message: _M, what: str = "body is not an OTLP/JSON trace export"
) -> _M:
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except Exception as error:  # untrusted input into the protobuf runtime
        # Besides ParseError, the runtime raises RecursionError, UnicodeError and even
        # SystemError (an enum name with a lone surrogate) on some inputs.
        reason = _shortened(str(error)) if isinstance(error, json_format.ParseError) else ""
        raise InvalidRequestError(f"{what}: {reason}") from None
    return message


def _parse_json_span(span: object, message: Span) -> None:
    if not isinstance(span, dict):
        raise InvalidRequestError("span is not a JSON object")
    _hex_ids_to_base64(span)
    for link in _objects(span.get("links")):
        _hex_ids_to_base64(link)
    _parse_json(span, message, "span is not an OTLP/JSON span")


def _shortened(text: str, limit: int = 200) -> str:
    """An error message cut to `limit` characters: it may quote the offending value."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def export_response(rejected: int, error_message: str) -> ExportTraceServiceResponse:
    """The OTLP answer to an accepted export; `partial_success` names refused spans."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=rejected, error_message=error_message)
        )
    return response


def retry_status(code: int, message: str, retry_after: int) -> status_pb2.Status:
    """A `google.rpc.Status` refusing an export, with `RetryInfo` saying when to retry."""
    status = status_pb2.Status(code=code, message=message)
    status.details.add().Pack(retry_info(retry_after))
    return status


def retry_info(retry_after: int) -> error_details_pb2.RetryInfo:
    """The `RetryInfo` OTLP exporters honour before retrying a throttled export."""
    return error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after))


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
        except Exception:  # a rule no one wrote yet: refuse this span, keep its neighbours
            logger.exception("span usage extraction failed")
            self.reject(
                f"span {span_id.hex()}",
                SpanRejectedError("span could not be read", RejectReason.UNREADABLE),
            )
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
            # Messages may quote what the client sent: keep them short and valid UTF-8
            # (a lone surrogate from OTLP/JSON would make the answer itself unencodable).
            message = _shortened(f"{what}: {error}", 300)
            self.messages.append(message.encode("utf-8", "backslashreplace").decode())

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


def _attributes(key_values: Sequence[KeyValue], wanted: Container[str]) -> dict[str, object]:
    """The attributes usage is read from, in one pass over the span's: only `wanted` keys and
    custom meters are decoded (a span's prompts and completions never are)."""
    # Unset values read as "" (the proto default); arrays and maps stay messages, which
    # every field that AgentMeter reads refuses with a clear message.
    found: dict[str, object] = {}
    for kv in key_values:
        key = kv.key
        if key in wanted or key.startswith(CUSTOM_METER_PREFIX):
            value = kv.value
            found[key] = getattr(value, value.WhichOneof("value") or "string_value")
    return found


def extract_usage(
    request: DecodedExport | ExportTraceServiceRequest,
    customer_keys: Sequence[str] = DEFAULT_CUSTOMER_KEYS,
) -> Extraction:
    """Turn every span of `request` into usage; bad spans are counted, not fatal.

    A bare `ExportTraceServiceRequest` (encoded in-process) has no undecodable spans.
    """
    extraction = Extraction()
    if isinstance(request, DecodedExport):
        for message in request.undecodable:
            extraction.spans += 1
            extraction.reject("span", SpanRejectedError(message, RejectReason.UNREADABLE))
        request = request.request
    wanted = READ_KEYS.union(customer_keys)
    for resource_spans in request.resource_spans:
        resource_attributes = _attributes(resource_spans.resource.attributes, wanted)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                extraction.add_span(
                    trace_id=span.trace_id,
                    span_id=span.span_id,
                    name=span.name,
                    end_time_unix_nano=span.end_time_unix_nano,
                    attributes=_attributes(span.attributes, wanted),
                    resource_attributes=resource_attributes,
                    customer_keys=customer_keys,
                    parent_span_id=span.parent_span_id,
                )
    return extraction
