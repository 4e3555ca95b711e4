"""OTLP/gRPC `TraceService/Export` against a running `agentmeter serve`, on SQLite and
PostgreSQL.

Calls go through a raw grpcio channel with no (de)serializers, so the tests can send any
bytes; what was stored is read back through the usage API and with SQL.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import httpx
import psutil
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from sqlalchemy import Engine, create_engine, func, make_url, select, text
from sqlalchemy.pool import NullPool

from agentmeter.db import make_engine, migrate
from agentmeter.settings import Settings
from agentmeter.tables import UsageRow
from agentmeter.tenants import create_tenant, issue_keys, revoke_key
from tests.conftest import POSTGRES_URL_ENV, RunningServer

CUSTOMER = "agentmeter.customer.id"
END = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
SMALL_LIMIT = 64 * 1024
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

Attributes = Mapping[str, str | int | float | bool]


# --- Building requests ---------------------------------------------------------------------


def any_value(value: str | int | float | bool) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


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
        attributes=[
            KeyValue(key=key, value=any_value(value))  # type: ignore[arg-type]
            for key, value in attributes.items()
        ],
    )


def export_request(*spans: Span, resource: Attributes | None = None) -> bytes:
    resource_attributes = {"service.name": "support-agent", **(resource or {})}
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[
                        KeyValue(key=k, value=any_value(v)) for k, v in resource_attributes.items()
                    ]
                ),
                scope_spans=[ScopeSpans(spans=list(spans))],
            )
        ]
    )
    return request.SerializeToString()


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


def usage(server: RunningServer) -> dict[tuple[str, str], str]:
    """`{(customer_id, meter): quantity}` from the usage API."""
    response = httpx.get(f"{server.api_url}/api/v1/usage", headers=server.admin_headers, timeout=30)
    assert response.status_code == 200, response.text
    return {(row["customer_id"], row["meter"]): row["quantity"] for row in response.json()["rows"]}


def stored_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        count: int = connection.execute(select(func.count()).select_from(UsageRow)).scalar_one()
        return count


def healthy(server: RunningServer) -> bool:
    return httpx.get(f"{server.api_url}/healthz", timeout=10).status_code == 200


OK = Answer(code=grpc.StatusCode.OK, response=ExportTraceServiceResponse())


@pytest.fixture
def small_server(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    """A server refusing requests over 64 KiB (after decompression)."""
    running = RunningServer(
        database_url=database_url,
        tenant=create_tenant(engine, "small limits"),
        log_path=tmp_path / "small-server.log",
        env={"AGENTMETER_MAX_REQUEST_BYTES": str(SMALL_LIMIT)},
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


class TestExport:
    def test_stores_usage_and_answers_an_export_response(
        self, server: RunningServer, engine: Engine
    ) -> None:
        body = export_request(
            span(1, 1, llm(100, 20, customer="acme")),
            span(1, 2, llm(7, 3, customer="acme")),
            span(2, 1, {"agentmeter.usage.sandbox_seconds": 12.5, CUSTOMER: "globex"}),
        )

        answer = send(server, body)

        assert answer == OK
        assert answer.response is not None
        assert not answer.response.HasField("partial_success")
        assert usage(server) == {
            ("acme", "input_tokens"): "107",
            ("acme", "output_tokens"): "23",
            ("globex", "sandbox_seconds"): "12.5",
        }
        assert stored_rows(engine) == 5

    def test_gzip_compressed_request_is_stored(self, server: RunningServer) -> None:
        body = export_request(span(1, 1, llm(100, 20, customer="acme")))

        assert send(server, body, compression=grpc.Compression.Gzip) == OK

        assert usage(server) == {("acme", "input_tokens"): "100", ("acme", "output_tokens"): "20"}

    def test_empty_request_is_answered(self, server: RunningServer, engine: Engine) -> None:
        assert send(server, b"") == OK
        assert stored_rows(engine) == 0


class TestRetriedExport:
    def test_same_batch_twice_is_stored_once(self, server: RunningServer, engine: Engine) -> None:
        body = export_request(
            span(1, 1, llm(100, 20, customer="acme")),
            span(1, 2, {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}),
        )
        assert send(server, body) == OK
        before = usage(server)

        assert send(server, body) == OK
        assert send(server, body, compression=grpc.Compression.Gzip) == OK

        assert (
            usage(server)
            == before
            == {
                ("acme", "input_tokens"): "100",
                ("acme", "output_tokens"): "20",
                ("acme", "tool_calls"): "1",
            }
        )
        assert stored_rows(engine) == 3


class TestAuthentication:
    def test_refuses_missing_unknown_revoked_and_admin_keys(
        self, server: RunningServer, engine: Engine
    ) -> None:
        body = export_request(span(1, 1, llm(customer="acme")))
        revoked = issue_keys(engine, server.tenant.tenant_id).ingest_key
        assert revoke_key(engine, revoked)
        refused_metadata: dict[str, tuple[tuple[str, str], ...]] = {
            "missing": (),
            "no token": (("authorization", "Bearer"),),
            "basic scheme": (("authorization", f"Basic {server.tenant.ingest_key}"),),
            "unknown": bearer("am_ingest_not-a-real-key"),
            "revoked": bearer(revoked),
            "admin key": bearer(server.tenant.admin_key),
        }

        codes = {
            name: call(server.grpc_target, body, metadata).code
            for name, metadata in refused_metadata.items()
        }

        assert codes == dict.fromkeys(refused_metadata, grpc.StatusCode.UNAUTHENTICATED)
        assert stored_rows(engine) == 0
        assert send(server, body) == OK
        assert stored_rows(engine) == 2

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
        assert stored_rows(engine) == 0
        assert healthy(server)


class TestRequestSize:
    def test_message_over_the_limit_is_resource_exhausted(
        self, small_server: RunningServer, engine: Engine
    ) -> None:
        padding = "x" * 200
        big = export_request(
            *(span(1, n, llm(customer="acme", padding=padding)) for n in range(1, 400))
        )
        assert len(big) > SMALL_LIMIT

        plain = send(small_server, big)
        compressed = send(small_server, big, compression=grpc.Compression.Gzip)

        assert plain.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert compressed.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stored_rows(engine) == 0
        assert send(small_server, export_request(span(1, 1, llm()))) == OK

    def test_compressed_bomb_is_refused_without_inflating_it(
        self, server: RunningServer, engine: Engine
    ) -> None:
        assert server.process is not None
        process = psutil.Process(server.process.pid)

        # 100 MiB of zeros travel as about 100 KB of gzip.
        answer = send(server, bytes(100 << 20), compression=grpc.Compression.Gzip)

        assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert healthy(server)
        assert process.memory_info().rss < 300 * 1024 * 1024
        assert stored_rows(engine) == 0
        assert send(server, export_request(span(1, 1, llm()))) == OK


class TestPartialSuccess:
    def test_bad_spans_are_counted_and_good_ones_stored(
        self, server: RunningServer, engine: Engine
    ) -> None:
        body = export_request(
            span(1, 1, llm(100, 20, customer="acme")),
            span(1, 2, llm(customer="acme"), span_id=b"\x01\x02\x03\x04"),
            span(1, 3, llm(-5, 20, customer="acme")),
            span(1, 4, {"agentmeter.usage.web_searches": "lots", CUSTOMER: "acme"}),
            span(1, 5, {"agentmeter.usage.web_searches": 3, CUSTOMER: "acme"}),
        )

        answer = send(server, body)

        assert answer.code == grpc.StatusCode.OK
        assert answer.response is not None
        assert answer.response.partial_success.rejected_spans == 3
        message = answer.response.partial_success.error_message
        assert "span id must be 8" in message
        assert "gen_ai.usage.input_tokens must not be negative" in message
        assert "agentmeter.usage.web_searches must be a number" in message
        assert usage(server) == {
            ("acme", "input_tokens"): "100",
            ("acme", "output_tokens"): "20",
            ("acme", "web_searches"): "3",
        }
        assert stored_rows(engine) == 3


class TestStoreUnavailable:
    def test_locked_sqlite_is_unavailable_then_the_retry_succeeds(self, tmp_path: Path) -> None:
        path = tmp_path / "locked.db"
        url = f"sqlite:///{path}"
        engine = make_engine(Settings(database_url=url))
        migrate(engine)
        running = RunningServer(
            database_url=url,
            tenant=create_tenant(engine, "locked"),
            log_path=tmp_path / "locked-server.log",
            env={"AGENTMETER_SQLITE_BUSY_TIMEOUT_SECONDS": "0.5"},
        )
        running.start()
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            body = export_request(span(1, 1, llm(100, 20, customer="acme")))
            holder.execute("BEGIN EXCLUSIVE")
            refused = send(running, body)
            holder.execute("ROLLBACK")

            assert refused.code == grpc.StatusCode.UNAVAILABLE
            assert stored_rows(engine) == 0

            assert send(running, body) == OK
            assert usage(running) == {
                ("acme", "input_tokens"): "100",
                ("acme", "output_tokens"): "20",
            }
        finally:
            holder.close()
            running.stop()
            engine.dispose()

    @pytest.mark.postgres
    @pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
    def test_unreachable_postgresql_is_unavailable_then_the_retry_succeeds(
        self, server: RunningServer, engine: Engine, database_url: str
    ) -> None:
        body = export_request(span(1, 1, llm(100, 20, customer="acme")))
        database = make_url(database_url).database
        admin = create_engine(
            os.environ[POSTGRES_URL_ENV], isolation_level="AUTOCOMMIT", poolclass=NullPool
        )
        try:
            with admin.connect() as connection:
                # No one may connect, and the server's pooled connections are cut.
                connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :database AND pid <> pg_backend_pid()"
                    ),
                    {"database": database},
                )
            try:
                refused = send(server, body)
            finally:
                with admin.connect() as connection:
                    connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        finally:
            admin.dispose()

        assert refused.code == grpc.StatusCode.UNAVAILABLE
        assert stored_rows(engine) == 0
        assert send(server, body) == OK
        assert usage(server) == {("acme", "input_tokens"): "100", ("acme", "output_tokens"): "20"}


class TestCustomerInheritance:
    def test_across_two_requests_in_either_order(self, server: RunningServer) -> None:
        agent_span = {"gen_ai.operation.name": "invoke_agent", CUSTOMER: "acme"}
        # Trace 1: the span naming the customer arrives first; trace 2: it arrives last.
        assert send(server, export_request(span(1, 1, agent_span))) == OK
        assert send(server, export_request(span(1, 2, llm(100, 20)))) == OK
        assert send(server, export_request(span(2, 2, llm(7, 3)))) == OK
        assert usage(server)[("", "input_tokens")] == "7"

        assert send(server, export_request(span(2, 1, agent_span))) == OK

        assert usage(server) == {("acme", "input_tokens"): "107", ("acme", "output_tokens"): "23"}

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

        assert usage(server) == {("acme", "input_tokens"): "100", ("acme", "output_tokens"): "20"}
