"""OTLP/gRPC `TraceService/Export` against a running `agentmeter serve`, on SQLite and
PostgreSQL.

Calls go through a raw grpcio channel with no (de)serializers, so the tests can send any
bytes; what was stored is read back through the usage API and with SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import httpx
import psutil
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from sqlalchemy import Engine

from tests import receiver_scenarios as scenarios
from tests.conftest import RunningServer
from tests.otlp_builders import CUSTOMER, export_request, llm, span
from tests.store_outages import lockable_sqlite_server, postgresql_refusing_connections
from tests.usage_queries import stored_row_count, usage_table

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


# --- Talking to the server -----------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """The outcome of one Export call: a status code, and the response or error details."""

    code: grpc.StatusCode
    response: ExportTraceServiceResponse | None = None
    details: str = ""


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def call(
    target: str,
    body: bytes,
    metadata: Sequence[tuple[str, str]],
    *,
    compression: grpc.Compression | None = None,
) -> Answer:
    """One raw `Export` call with `body` as the request bytes."""
    with grpc.insecure_channel(target) as channel:
        export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        try:
            raw = export(body, metadata=tuple(metadata), timeout=30, compression=compression)
        except grpc.RpcError as error:
            failed = cast(grpc.Call, error)
            return Answer(code=failed.code(), details=failed.details() or "")
    response = ExportTraceServiceResponse()
    response.ParseFromString(cast(bytes, raw))
    return Answer(code=grpc.StatusCode.OK, response=response)


def send(
    server: RunningServer, body: bytes, *, compression: grpc.Compression | None = None
) -> Answer:
    """`body` exported with the server's ingest key."""
    return call(server.grpc_target, body, bearer(server.tenant.ingest_key), compression=compression)


OK = Answer(code=grpc.StatusCode.OK, response=ExportTraceServiceResponse())


class TestExport:
    def test_stores_usage_and_answers_an_export_response(
        self, server: RunningServer, engine: Engine
    ) -> None:
        answer = send(server, scenarios.TWO_CUSTOMERS.body)

        assert answer == OK
        assert answer.response is not None
        assert not answer.response.HasField("partial_success")
        assert usage_table(server) == scenarios.TWO_CUSTOMERS.usage
        assert stored_row_count(engine) == scenarios.TWO_CUSTOMERS.rows

    def test_gzip_compressed_request_is_stored(self, server: RunningServer) -> None:
        assert send(server, scenarios.ONE_CHAT.body, compression=grpc.Compression.Gzip) == OK

        assert usage_table(server) == scenarios.ONE_CHAT.usage

    def test_empty_request_is_answered(self, server: RunningServer, engine: Engine) -> None:
        assert send(server, b"") == OK
        assert stored_row_count(engine) == 0


class TestRetriedExport:
    def test_same_batch_twice_is_stored_once(self, server: RunningServer, engine: Engine) -> None:
        assert send(server, scenarios.CHAT_AND_TOOL) == OK
        before = usage_table(server)

        assert send(server, scenarios.CHAT_AND_TOOL) == OK
        assert send(server, scenarios.CHAT_AND_TOOL, compression=grpc.Compression.Gzip) == OK

        assert (
            usage_table(server)
            == before
            == {
                ("acme", "input_tokens"): "100",
                ("acme", "output_tokens"): "20",
                ("acme", "tool_calls"): "1",
            }
        )
        assert stored_row_count(engine) == 3


class TestAuthentication:
    def test_refuses_missing_unknown_revoked_and_admin_keys(
        self, server: RunningServer, engine: Engine
    ) -> None:
        revoked = scenarios.revoked_ingest_key(engine, server)
        refused_metadata: dict[str, tuple[tuple[str, str], ...]] = {
            "missing": (),
            "no token": (("authorization", "Bearer"),),
            "basic scheme": (("authorization", f"Basic {server.tenant.ingest_key}"),),
            "unknown": bearer("am_ingest_not-a-real-key"),
            "revoked": bearer(revoked),
            "admin key": bearer(server.tenant.admin_key),
        }

        codes = {
            name: call(server.grpc_target, scenarios.ONE_CHAT.body, metadata).code
            for name, metadata in refused_metadata.items()
        }

        assert codes == dict.fromkeys(refused_metadata, grpc.StatusCode.UNAUTHENTICATED)
        assert stored_row_count(engine) == 0
        assert send(server, scenarios.ONE_CHAT.body) == OK
        assert stored_row_count(engine) == scenarios.ONE_CHAT.rows

    def test_garbage_without_a_key_is_unauthenticated_not_invalid(
        self, server: RunningServer
    ) -> None:
        # Authentication comes first: an unauthenticated caller learns nothing about the body.
        assert call(server.grpc_target, b"\xff\xff", ()).code == grpc.StatusCode.UNAUTHENTICATED


UNDECODABLE = {
    "truncated length": b"\x0a\xff\xff\xff\xff\x0f",
    "bad tag": b"\xff\xff\xff\xff",
    "truncated nested message": b"\x0a\x03\x0a\x01",
    "text": b"hello, this is not protobuf",
}


class TestBadRequests:
    def test_undecodable_body_is_invalid_argument(
        self, server: RunningServer, engine: Engine
    ) -> None:
        answers = {name: send(server, body) for name, body in UNDECODABLE.items()}

        assert {name: a.code for name, a in answers.items()} == dict.fromkeys(
            UNDECODABLE, grpc.StatusCode.INVALID_ARGUMENT
        )
        assert all("protobuf" in a.details for a in answers.values())
        assert stored_row_count(engine) == 0
        assert scenarios.healthy(server)


class TestRequestSize:
    def test_message_over_the_limit_is_resource_exhausted(
        self, small_server: RunningServer, engine: Engine
    ) -> None:
        big = scenarios.oversized_export()
        assert len(big) > scenarios.SMALL_LIMIT

        plain = send(small_server, big)
        compressed = send(small_server, big, compression=grpc.Compression.Gzip)

        assert plain.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert compressed.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stored_row_count(engine) == 0
        assert send(small_server, export_request(span(1, 1, llm()))) == OK

    def test_compressed_bomb_is_refused_without_inflating_it(
        self, server: RunningServer, engine: Engine
    ) -> None:
        assert server.process is not None
        process = psutil.Process(server.process.pid)

        # 100 MiB of zeros travel as about 100 KB of gzip.
        answer = send(server, bytes(100 << 20), compression=grpc.Compression.Gzip)

        assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert scenarios.healthy(server)
        assert process.memory_info().rss < 300 * 1024 * 1024
        assert stored_row_count(engine) == 0
        assert send(server, export_request(span(1, 1, llm()))) == OK


class TestPartialSuccess:
    def test_bad_spans_are_counted_and_good_ones_stored(
        self, server: RunningServer, engine: Engine
    ) -> None:
        answer = send(server, scenarios.PARTLY_BAD.body)

        assert answer.code == grpc.StatusCode.OK
        assert answer.response is not None
        assert answer.response.partial_success.rejected_spans == scenarios.PARTLY_BAD_REJECTED
        message = answer.response.partial_success.error_message
        for reason in scenarios.PARTLY_BAD_REASONS:
            assert reason in message
        assert usage_table(server) == scenarios.PARTLY_BAD.usage
        assert stored_row_count(engine) == scenarios.PARTLY_BAD.rows

    def test_end_time_past_int64_is_refused_alone(
        self, server: RunningServer, engine: Engine
    ) -> None:
        # Issue 8, defect 1: was UNKNOWN with "OverflowError: Python int too large" leaked.
        answer = send(server, scenarios.FAR_FUTURE.body)

        assert answer.code is grpc.StatusCode.OK, answer.details
        assert answer.response is not None
        assert answer.response.partial_success.rejected_spans == 1
        assert "past year 2262" in answer.response.partial_success.error_message
        assert usage_table(server) == scenarios.FAR_FUTURE.usage
        assert stored_row_count(engine) == scenarios.FAR_FUTURE.rows


class TestStoreUnavailable:
    def test_locked_sqlite_is_unavailable_then_the_retry_succeeds(self, tmp_path: Path) -> None:
        with lockable_sqlite_server(tmp_path) as sqlite:
            with sqlite.locked():
                refused = send(sqlite.server, scenarios.ONE_CHAT.body)

            assert refused.code == grpc.StatusCode.UNAVAILABLE
            assert stored_row_count(sqlite.engine) == 0

            assert send(sqlite.server, scenarios.ONE_CHAT.body) == OK
            assert usage_table(sqlite.server) == scenarios.ONE_CHAT.usage

    @pytest.mark.postgres
    @pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
    def test_unreachable_postgresql_is_unavailable_then_the_retry_succeeds(
        self, server: RunningServer, engine: Engine, database_url: str
    ) -> None:
        with postgresql_refusing_connections(database_url):
            refused = send(server, scenarios.ONE_CHAT.body)

        assert refused.code == grpc.StatusCode.UNAVAILABLE
        assert stored_row_count(engine) == 0
        assert send(server, scenarios.ONE_CHAT.body) == OK
        assert usage_table(server) == scenarios.ONE_CHAT.usage


class TestCustomerInheritance:
    def test_across_two_requests_in_either_order(self, server: RunningServer) -> None:
        def export(body: bytes) -> None:
            assert send(server, body) == OK

        scenarios.check_customer_inherited_in_either_order(server, export)

    def test_across_transports(self, server: RunningServer) -> None:
        agent_span = {"gen_ai.operation.name": "invoke_agent", CUSTOMER: "acme"}
        over_http = httpx.post(
            server.traces_url,
            content=export_request(span(1, 1, agent_span)),
            headers={**server.ingest_headers, "content-type": "application/x-protobuf"},
            timeout=30,
        )
        assert over_http.status_code == 200

        assert send(server, export_request(span(1, 2, llm(100, 20)))) == OK

        assert usage_table(server) == {
            ("acme", "input_tokens"): "100",
            ("acme", "output_tokens"): "20",
        }


class TestRateLimit:
    def test_past_the_limit_is_resource_exhausted_with_retry_info(
        self, limited_server: RunningServer, engine: Engine
    ) -> None:
        for number in range(1, scenarios.INGEST_LIMIT + 1):
            assert send(limited_server, export_request(span(1, number, llm()))) == OK

        with grpc.insecure_channel(limited_server.grpc_target) as channel:
            export = channel.unary_unary(
                EXPORT, request_serializer=None, response_deserializer=None
            )
            with pytest.raises(grpc.RpcError) as caught:
                export(
                    export_request(span(2, 1, llm())),
                    metadata=bearer(limited_server.tenant.ingest_key),
                    timeout=30,
                )
        failed = cast(grpc.Call, caught.value)

        assert failed.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(failed.trailing_metadata() or ())
        info = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        assert 0 < info.retry_delay.seconds <= 60
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        assert status.code == code_pb2.RESOURCE_EXHAUSTED
        assert stored_row_count(engine) == 2 * scenarios.INGEST_LIMIT
