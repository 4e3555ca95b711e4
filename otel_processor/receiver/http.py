"""OTLP/HTTP `POST /v1/traces` as a small ASGI application.

Accepts `application/x-protobuf` and `application/json`, optionally gzip-compressed, and
answers in the request's content type. The body is inflated incrementally with a hard
limit, so a gzip bomb is refused before it can exhaust memory.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_processor.otlp import (
    InvalidRequestError,
    decode_json,
    decode_protobuf,
    encode_response,
    export_response,
    extract_usage,
    retry_status,
)
from otel_processor.receiver.service import RateLimitedError, UnauthenticatedError, UsageIngest
from otel_processor.usage import StoreUnavailableError

logger = logging.getLogger("agentmeter.ingest")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRACES_PATH = "/v1/traces"


class RequestTooLargeError(Exception):
    """The body, once inflated, is larger than the receiver accepts."""


class _Refusal(Exception):
    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        headers: dict[str, str],
        body: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers
        self.body = body or status_pb2.Status(code=code, message=message)


class OtlpHttpApp:
    """ASGI app for OTLP/HTTP trace export; every answer is sent after the commit."""

    def __init__(self, ingest: UsageIngest, *, max_request_bytes: int, retry_after: int) -> None:
        self._ingest = ingest
        self._max = max_request_bytes
        self._retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        as_json = content_type == JSON
        try:
            response = await self._handle(scope, receive, headers, content_type)
        except _Refusal as refusal:
            await _respond(send, refusal.status, refusal.body, as_json, refusal.headers)
            return
        await _respond(send, 200, response, as_json, {})

    async def _handle(
        self, scope: Scope, receive: Receive, headers: dict[str, str], content_type: str
    ) -> ExportTraceServiceResponse:
        if scope["path"] != TRACES_PATH:
            raise _Refusal(404, code_pb2.NOT_FOUND, f"no such path; POST to {TRACES_PATH}", {})
        if scope["method"] != "POST":
            raise _Refusal(405, code_pb2.UNIMPLEMENTED, "use POST", {"allow": "POST"})
        if content_type not in (PROTOBUF, JSON):
            raise _Refusal(
                415, code_pb2.INVALID_ARGUMENT, f"content type must be {PROTOBUF} or {JSON}", {}
            )
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("gzip", "identity"):
            raise _Refusal(415, code_pb2.INVALID_ARGUMENT, "content encoding must be gzip", {})
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max:
            raise self._too_large()
        try:
            body = await _read_body(receive, self._max, gzip=encoding == "gzip")
        except RequestTooLargeError:
            raise self._too_large() from None
        except InvalidRequestError as error:
            raise _Refusal(400, code_pb2.INVALID_ARGUMENT, str(error), {}) from None
        except zlib.error as error:
            raise _Refusal(400, code_pb2.INVALID_ARGUMENT, f"bad gzip body: {error}", {}) from None
        decode = decode_json if content_type == JSON else decode_protobuf
        try:
            outcome = await self._ingest.export(
                "http", headers.get("authorization"), lambda keys: extract_usage(decode(body), keys)
            )
        except UnauthenticatedError as error:
            raise _Refusal(401, code_pb2.UNAUTHENTICATED, str(error), {}) from None
        except RateLimitedError as error:
            raise _Refusal(
                429,
                code_pb2.RESOURCE_EXHAUSTED,
                str(error),
                {"retry-after": str(error.retry_after)},
                retry_status(code_pb2.RESOURCE_EXHAUSTED, str(error), error.retry_after),
            ) from None
        except InvalidRequestError as error:
            raise _Refusal(400, code_pb2.INVALID_ARGUMENT, str(error), {}) from None
        except StoreUnavailableError as error:
            logger.warning("export refused, store unavailable: %s", error)
            raise _Refusal(
                503,
                code_pb2.UNAVAILABLE,
                "usage store unavailable; retry",
                {"retry-after": str(self._retry_after)},
            ) from None
        except Exception:
            # A bug (in the code or the store's schema), not a reason to retry: OTLP/HTTP
            # exporters retry 503 but not 500. Log it, tell nothing.
            logger.exception("export failed")
            raise _Refusal(
                500, code_pb2.INTERNAL, "internal error; see the server log", {}
            ) from None
        return export_response(outcome.rejected, outcome.error_message)

    def _too_large(self) -> _Refusal:
        self._ingest.refused("http", "too_large")
        return _Refusal(
            413, code_pb2.RESOURCE_EXHAUSTED, f"request larger than {self._max} bytes", {}
        )


async def _read_body(receive: Receive, limit: int, *, gzip: bool) -> bytes:
    """The whole request body, inflated if gzip, refusing more than `limit` bytes.

    A gzip body may hold several members (RFC 1952 allows concatenated streams): every
    member is inflated, each counting against the same limit.
    """
    inflater = _GzipInflater() if gzip else None
    chunks: list[bytes] = []
    size = received = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequestError("client disconnected before the body was complete")
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        received += len(chunk)
        if received > limit:
            raise RequestTooLargeError
        if inflater is not None:
            chunk = inflater.inflate(chunk, limit - size)
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError
        chunks.append(chunk)
    if inflater is not None:
        inflater.finish()
    return b"".join(chunks)


class _GzipInflater:
    """Inflates a stream of gzip members, never holding more than the limit allows."""

    def __init__(self) -> None:
        self._member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._started = False  # some byte of the current member has been read
        self._members = 0  # members read to their end

    def inflate(self, data: bytes, room: int) -> bytes:
        """Inflate `data`; raise `RequestTooLargeError` past `room` more bytes."""
        out: list[bytes] = []
        while data:
            self._started = True
            # Inflate at most one byte past the room left: enough to know it is too large.
            piece = self._member.decompress(data, room + 1)
            if self._member.unconsumed_tail:
                raise RequestTooLargeError
            room -= len(piece)
            if room < 0:
                raise RequestTooLargeError
            out.append(piece)
            data = b""
            if self._member.eof:
                # The next member (if any) starts in the bytes after this one's trailer.
                data = self._member.unused_data
                self._member = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._started = False
                self._members += 1
        return b"".join(out)

    def finish(self) -> None:
        """Refuse a body whose last member was cut short."""
        if self._started or not self._members:
            raise zlib.error("truncated gzip stream")


async def _respond(
    send: Send, status: int, message: Message, as_json: bool, headers: dict[str, str]
) -> None:
    body = encode_response(message, as_json=as_json)
    raw_headers = [
        (b"content-type", (JSON if as_json else PROTOBUF).encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
