"""AgentMeter's own `UsageService` (proto/agentmeter/v1/usage.proto): server and client.

The server takes usage records already extracted in an agent's process
(`UsageSpanExporter`), validates them with the same rules as spans, and commits them
through the same `UsageIngest` as OTLP: same auth, same dedup, same answer-after-commit.
The client is a `UsageSink` that sends a batch to a remote AgentMeter.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import grpc
from google.protobuf.message import DecodeError

from otel_processor.otlp import Extraction, InvalidRequestError
from otel_processor.receiver.grpc import Handler, export_handler
from otel_processor.receiver.service import ExportOutcome, UsageIngest
from otel_processor.spans import (
    RejectReason,
    SpanRejectedError,
    checked_agent_span,
    checked_record,
    checked_trace_customer,
    parse_quantity,
    span_consistent,
)
from otel_processor.usage import (
    AgentSpan,
    StoreUnavailableError,
    UsageBatch,
    UsageRecord,
    WriteResult,
)
from proto.agentmeter.v1 import usage_pb2

logger = logging.getLogger("agentmeter.exporter")

USAGE_SERVICE = "agentmeter.v1.UsageService"
# usage.proto: an exact decimal, no sign, exponent or separators.
_WIRE_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?")
_EXPORT_METHOD = f"/{USAGE_SERVICE}/Export"
_TEXT_FIELDS = tuple(name for name in UsageRecord._fields if name != "quantity")
# Failures worth retrying: the server or the network, not the request.
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


class UsageRefusedError(Exception):
    """The remote AgentMeter refused the batch for good (bad key, undecodable request)."""


def record_to_proto(record: UsageRecord) -> usage_pb2.UsageRecord:
    """A usage record on the wire; the quantity as an exact decimal string."""
    message = usage_pb2.UsageRecord(quantity=str(record.quantity))
    for name in _TEXT_FIELDS:
        setattr(message, name, getattr(record, name))
    return message


def record_from_proto(message: usage_pb2.UsageRecord) -> UsageRecord:
    """A validated usage record from the wire; raises `SpanRejectedError`."""
    values = {name: getattr(message, name) for name in _TEXT_FIELDS}
    if not _WIRE_QUANTITY.fullmatch(message.quantity):
        raise SpanRejectedError(
            f"quantity must be digits with an optional fraction, got {message.quantity!r}",
            RejectReason.INVALID_QUANTITY,
        )
    quantity = parse_quantity("quantity", message.quantity)
    return checked_record(UsageRecord(quantity=quantity, **values))


def request_from_batch(batch: UsageBatch) -> usage_pb2.ExportUsageRequest:
    return usage_pb2.ExportUsageRequest(
        records=[record_to_proto(r) for r in batch.records],
        trace_customers=[
            usage_pb2.TraceCustomer(trace_id=trace, customer_id=customer)
            for trace, customer in batch.trace_customers.items()
        ],
        agent_spans=[usage_pb2.AgentSpan(**span._asdict()) for span in batch.agent_spans],
    )


def extract_usage_request(body: bytes, _customer_keys: Sequence[str]) -> Extraction:
    """Decode and validate an `ExportUsageRequest`; invalid records are counted, not fatal.

    Customer keys do not apply: the records were attributed in the agent's process.
    """
    request = usage_pb2.ExportUsageRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as error:
        raise InvalidRequestError(f"body is not an ExportUsageRequest: {error}") from None
    extraction = Extraction()
    records: list[UsageRecord] = []
    for message in request.records:
        extraction.spans += 1
        try:
            records.append(record_from_proto(message))
        except SpanRejectedError as error:
            extraction.reject(f"record {message.span_id}/{message.meter}", error)
    for record, outcome in zip(records, span_consistent(records), strict=True):
        if isinstance(outcome, SpanRejectedError):
            extraction.reject(f"record {record.span_id}/{record.meter}", outcome)
        else:
            extraction.records.append(outcome)
    for pair in request.trace_customers:
        try:
            checked_trace_customer(pair.trace_id, pair.customer_id)
        except SpanRejectedError as error:
            extraction.reject(f"trace customer {pair.trace_id}", error)
            continue
        if pair.customer_id:
            extraction.trace_customers.setdefault(pair.trace_id, pair.customer_id)
    for span in request.agent_spans:
        agent = AgentSpan(span.trace_id, span.span_id, span.parent_span_id, span.agent_name)
        try:
            checked_agent_span(agent)
        except SpanRejectedError as error:
            extraction.reject(f"agent span {span.span_id}", error)
            continue
        extraction.agent_spans.append(agent)
    return extraction


def _respond(outcome: ExportOutcome) -> bytes:
    response = usage_pb2.ExportUsageResponse(
        inserted=outcome.inserted,
        duplicates=outcome.duplicates,
        rejected=outcome.rejected,
        error_message=outcome.error_message,
    )
    encoded: bytes = response.SerializeToString()
    return encoded


def usage_service_handler(ingest: UsageIngest) -> Handler:
    """The generic handler serving `UsageService/Export` through `ingest`."""
    return export_handler(ingest, USAGE_SERVICE, "usage_service", extract_usage_request, _respond)


class UsageServiceClient:
    """A `UsageSink` that sends batches to a remote AgentMeter over gRPC.

    The tenant is the ingest key's: the `tenant_id` argument of `write` is not sent.
    `write` blocks for at most `timeout` seconds; a retryable failure raises
    `StoreUnavailableError`, a permanent one `UsageRefusedError`. Thread-safe.
    """

    def __init__(
        self,
        target: str,
        ingest_key: str,
        *,
        timeout: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._channel = (
            grpc.secure_channel(target, credentials)
            if credentials is not None
            else grpc.insecure_channel(target)
        )
        self._export = self._channel.unary_unary(
            _EXPORT_METHOD,
            request_serializer=usage_pb2.ExportUsageRequest.SerializeToString,
            response_deserializer=usage_pb2.ExportUsageResponse.FromString,
        )
        self._metadata = (("authorization", f"Bearer {ingest_key}"),)
        self._timeout = timeout

    def write(self, tenant_id: str, batch: UsageBatch) -> WriteResult:
        try:
            response = self._export(
                request_from_batch(batch), metadata=self._metadata, timeout=self._timeout
            )
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            if code in _RETRYABLE:
                raise StoreUnavailableError(f"{code.name}: {details}") from None
            raise UsageRefusedError(f"{code.name}: {details}") from None
        if response.rejected:
            # The valid records are stored; resending the invalid ones would not help.
            logger.warning(
                "usage records refused by AgentMeter",
                extra={"rejected": response.rejected, "reason": response.error_message},
            )
        return WriteResult(inserted=response.inserted, duplicates=response.duplicates)

    def close(self) -> None:
        self._channel.close()
