"""gRPC ingest on grpc.aio: OTLP `TraceService/Export`, and the plumbing other services
(AgentMeter's own `UsageService`) share.

Requests arrive as raw bytes and are decoded in `UsageIngest`'s worker thread, so an
undecodable message is answered INVALID_ARGUMENT (not INTERNAL) and decoding runs off the
event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeAlias

import grpc
from google.rpc import code_pb2

from otel_processor.otlp import (
    Extraction,
    InvalidRequestError,
    decode_protobuf,
    export_response,
    extract_usage,
    retry_info,
    retry_status,
)
from otel_processor.receiver.service import (
    ExportOutcome,
    RateLimitedError,
    UnauthenticatedError,
    UsageIngest,
)
from otel_processor.usage import StoreUnavailableError

logger = logging.getLogger("agentmeter.ingest")

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
# grpc's classes are generic only to the type checker, so these aliases are strings.
Context: TypeAlias = "grpc.aio.ServicerContext[bytes, bytes]"
Handler: TypeAlias = "grpc.GenericRpcHandler[bytes, bytes]"


def metadata_value(context: Context, key: str) -> str | None:
    """One invocation metadata value (keys are lowercase in gRPC)."""
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value.decode() if isinstance(value, bytes) else value
    return None


def export_handler(
    ingest: UsageIngest,
    service: str,
    transport: str,
    extract: Callable[[bytes, Sequence[str]], Extraction],
    respond: Callable[[ExportOutcome], bytes],
) -> Handler:
    """A unary `Export` method of `service`: bytes in, `extract`, commit, `respond` out.

    Refusals map to UNAUTHENTICATED, INVALID_ARGUMENT, RESOURCE_EXHAUSTED with `RetryInfo`
    (rate limit) and UNAVAILABLE (retry).
    """

    async def export(request: bytes, context: Context) -> bytes:
        authorization = metadata_value(context, "authorization")
        try:
            outcome = await ingest.export(
                transport, authorization, lambda keys: extract(request, keys)
            )
        except UnauthenticatedError as error:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))
        except RateLimitedError as error:
            status = retry_status(code_pb2.RESOURCE_EXHAUSTED, str(error), error.retry_after)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                str(error),
                trailing_metadata=(
                    ("grpc-status-details-bin", status.SerializeToString()),
                    # What OTLP exporters (the OTel SDKs, the Collector) read the delay from.
                    ("google.rpc.retryinfo-bin", retry_info(error.retry_after).SerializeToString()),
                ),
            )
        except InvalidRequestError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except StoreUnavailableError as error:
            logger.warning("export refused, store unavailable: %s", error)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "usage store unavailable; retry")
        except Exception:
            # grpc would answer UNKNOWN with the exception's text: log it, tell nothing.
            logger.exception("export failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        return respond(outcome)

    return grpc.method_handlers_generic_handler(
        service,
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                export, request_deserializer=None, response_serializer=None
            )
        },
    )


def _otlp_response(outcome: ExportOutcome) -> bytes:
    encoded: bytes = export_response(outcome.rejected, outcome.error_message).SerializeToString()
    return encoded


def trace_service_handler(ingest: UsageIngest) -> Handler:
    """The generic handler that serves OTLP `TraceService/Export` through `ingest`."""
    return export_handler(
        ingest,
        TRACE_SERVICE,
        "grpc",
        lambda body, keys: extract_usage(decode_protobuf(body), keys),
        _otlp_response,
    )


def make_server(handlers: Sequence[Handler], *, max_request_bytes: int) -> grpc.aio.Server:
    """A grpc.aio server with `handlers`, refusing messages over `max_request_bytes`."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers(tuple(handlers))
    return server
