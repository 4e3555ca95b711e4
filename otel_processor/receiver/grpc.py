"""OTLP/gRPC `TraceService/Export` on grpc.aio.

The request arrives as raw bytes and is decoded in `UsageIngest`'s worker thread, so an undecodable
message is answered INVALID_ARGUMENT (not INTERNAL) and decoding runs off the event loop.
Other services (AgentMeter's own `UsageService`) can be added to the same server.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from otel_processor.otlp import InvalidRequestError, decode_protobuf, extract_usage
from otel_processor.receiver.service import UnauthenticatedError, UsageIngest
from otel_processor.usage import StoreUnavailableError

logger = logging.getLogger("agentmeter.ingest")

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def metadata_value(context: grpc.aio.ServicerContext[bytes, bytes], key: str) -> str | None:
    """One invocation metadata value (keys are lowercase in gRPC)."""
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value.decode() if isinstance(value, bytes) else value
    return None


def trace_service_handler(ingest: UsageIngest) -> grpc.GenericRpcHandler[bytes, bytes]:
    """The generic handler that serves OTLP `TraceService/Export` through `ingest`."""

    async def export(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        authorization = metadata_value(context, "authorization")
        try:
            outcome = await ingest.export(
                "grpc", authorization, lambda keys: extract_usage(decode_protobuf(request), keys)
            )
        except UnauthenticatedError as error:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))
        except InvalidRequestError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except StoreUnavailableError as error:
            logger.warning("export refused, store unavailable: %s", error)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "usage store unavailable; retry")
        response = ExportTraceServiceResponse()
        if outcome.rejected:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(
                    rejected_spans=outcome.rejected, error_message=outcome.error_message
                )
            )
        return response.SerializeToString()

    return grpc.method_handlers_generic_handler(
        TRACE_SERVICE,
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                export, request_deserializer=None, response_serializer=None
            )
        },
    )


def make_server(
    handlers: Sequence[grpc.GenericRpcHandler[bytes, bytes]], *, max_request_bytes: int
) -> grpc.aio.Server:
    """A grpc.aio server with `handlers`, refusing messages over `max_request_bytes`."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers(tuple(handlers))
    return server
