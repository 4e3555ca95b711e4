"""OTLP/HTTP `POST /v1/traces` against a running `agentmeter serve`, on SQLite and PostgreSQL.

Requests are built by hand (protobuf messages and hand-written OTLP/JSON) and sent raw with
httpx, so every refusal can be provoked; what was stored is read back through the usage API
and with SQL on the server's database.
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import psutil
import pytest
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
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

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
CUSTOMER = "agentmeter.customer.id"
END = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
SMALL_LIMIT = 64 * 1024

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


def gzipped(body: bytes) -> bytes:
    return gzip.compress(body)


def gzip_of_zeros(size: int) -> bytes:
    """`size` zero bytes, gzip-compressed about a thousandfold, built a MiB at a time."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(size >> 20)]
    parts.append(compressor.flush())
    return b"".join(parts)


# --- Talking to the server -----------------------------------------------------------------


def post(
    server: RunningServer,
    body: bytes,
    *,
    content_type: str = PROTOBUF,
    headers: Mapping[str, str] | None = None,
    encoding: str | None = None,
) -> httpx.Response:
    sent = dict(server.ingest_headers if headers is None else headers)
    if content_type:
        sent["content-type"] = content_type
    if encoding:
        sent["content-encoding"] = encoding
    return httpx.post(server.traces_url, content=body, headers=sent, timeout=30)


def export_response(response: httpx.Response) -> ExportTraceServiceResponse:
    """The body of a 200 answer, decoded in the answer's own content type."""
    assert response.status_code == 200, response.content
    if response.headers["content-type"] == JSON:
        return json_format.Parse(response.content, ExportTraceServiceResponse())
    assert response.headers["content-type"] == PROTOBUF
    message = ExportTraceServiceResponse()
    message.ParseFromString(response.content)
    return message


def refusal(response: httpx.Response, as_json: bool = False) -> status_pb2.Status:
    """The `google.rpc.Status` body of a refused export."""
    status = status_pb2.Status()
    if as_json:
        assert response.headers["content-type"] == JSON
        return json_format.Parse(response.content, status)
    assert response.headers["content-type"] == PROTOBUF
    status.ParseFromString(response.content)
    return status


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


# --- Tests ---------------------------------------------------------------------------------


class TestProtobuf:
    def test_stores_usage_and_answers_in_protobuf(
        self, server: RunningServer, engine: Engine
    ) -> None:
        body = export_request(
            span(1, 1, llm(100, 20, customer="acme")),
            span(1, 2, llm(7, 3, customer="acme")),
            span(2, 1, {"agentmeter.usage.sandbox_seconds": 12.5, CUSTOMER: "globex"}),
        )

        response = post(server, body)

        assert export_response(response) == ExportTraceServiceResponse()
        assert not export_response(response).HasField("partial_success")
        assert usage(server) == {
            ("acme", "input_tokens"): "107",
            ("acme", "output_tokens"): "23",
            ("globex", "sandbox_seconds"): "12.5",
        }
        assert stored_rows(engine) == 5

    def test_content_type_parameters_are_ignored(self, server: RunningServer) -> None:
        body = export_request(span(1, 1, llm(5, 1, customer="acme")))

        response = post(server, body, content_type=f"{PROTOBUF}; charset=binary")

        assert response.headers["content-type"] == PROTOBUF
        assert export_response(response) == ExportTraceServiceResponse()
        assert usage(server)[("acme", "input_tokens")] == "5"


# Hand-written OTLP/JSON: hex ids, 64-bit integers as strings, camelCase keys.
JSON_EXPORT = {
    "resourceSpans": [
        {
            "resource": {
                "attributes": [
                    {"key": "service.name", "value": {"stringValue": "support-agent"}},
                    {"key": "customer.id", "value": {"stringValue": "acme"}},
                ]
            },
            "scopeSpans": [
                {
                    "scope": {"name": "openai.instrumentation", "version": "1.0"},
                    "spans": [
                        {
                            "traceId": "5b8efff798038103d269b633813fc60c",
                            "spanId": "eee19b7ec3c1b174",
                            "parentSpanId": "eee19b7ec3c1b173",
                            "name": "chat gpt-4o",
                            "kind": 3,
                            "startTimeUnixNano": "1767225599000000000",
                            "endTimeUnixNano": "1767225600000000000",
                            "attributes": [
                                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                                {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
                                {
                                    "key": "gen_ai.response.model",
                                    "value": {"stringValue": "gpt-4o-2024-08-06"},
                                },
                                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1200"}},
                                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 300}},
                                {
                                    "key": "agentmeter.usage.web_searches",
                                    "value": {"doubleValue": 2.0},
                                },
                            ],
                            "status": {},
                        }
                    ],
                }
            ],
        }
    ]
}


class TestJson:
    def test_stores_usage_and_answers_in_json(self, server: RunningServer, engine: Engine) -> None:
        response = post(server, json.dumps(JSON_EXPORT).encode(), content_type=JSON)

        assert response.headers["content-type"] == JSON
        assert export_response(response) == ExportTraceServiceResponse()
        assert usage(server) == {
            ("acme", "input_tokens"): "1200",
            ("acme", "output_tokens"): "300",
            ("acme", "web_searches"): "2",
        }
        with engine.connect() as connection:
            ids = connection.execute(select(UsageRow.trace_id, UsageRow.span_id)).all()
        assert set(ids) == {("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")}

    def test_partial_success_is_answered_in_json(self, server: RunningServer) -> None:
        document = json.loads(json.dumps(JSON_EXPORT))
        spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
        spans.append({**spans[0], "spanId": "not-hex"})

        response = post(server, json.dumps(document).encode(), content_type=JSON)

        answer = export_response(response)
        assert response.headers["content-type"] == JSON
        assert answer.partial_success.rejected_spans == 1
        assert "span id" in answer.partial_success.error_message
        assert usage(server)[("acme", "input_tokens")] == "1200"


class TestGzip:
    def test_gzip_protobuf_and_json_are_inflated(self, server: RunningServer) -> None:
        body = export_request(span(1, 1, llm(100, 20, customer="acme")))

        protobuf = post(server, gzipped(body), encoding="gzip")
        as_json = post(
            server, gzipped(json.dumps(JSON_EXPORT).encode()), content_type=JSON, encoding="gzip"
        )

        assert export_response(protobuf) == ExportTraceServiceResponse()
        assert export_response(as_json) == ExportTraceServiceResponse()
        assert usage(server) == {
            ("acme", "input_tokens"): "1300",
            ("acme", "output_tokens"): "320",
            ("acme", "web_searches"): "2",
        }

    def test_truncated_gzip_is_refused(self, server: RunningServer, engine: Engine) -> None:
        body = gzipped(export_request(span(1, 1, llm(customer="acme"))))

        response = post(server, body[: len(body) // 2], encoding="gzip")

        assert response.status_code == 400
        assert refusal(response).code == code_pb2.INVALID_ARGUMENT
        assert stored_rows(engine) == 0


class TestRetriedExport:
    def test_same_batch_twice_is_stored_once(self, server: RunningServer, engine: Engine) -> None:
        body = export_request(
            span(1, 1, llm(100, 20, customer="acme")),
            span(1, 2, {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}),
        )
        as_json = json.dumps(JSON_EXPORT).encode()
        assert post(server, body).status_code == 200
        assert post(server, as_json, content_type=JSON).status_code == 200
        before = usage(server)

        assert export_response(post(server, body)) == ExportTraceServiceResponse()
        assert export_response(post(server, as_json, content_type=JSON)) == (
            ExportTraceServiceResponse()
        )

        assert (
            usage(server)
            == before
            == {
                ("acme", "input_tokens"): "1300",
                ("acme", "output_tokens"): "320",
                ("acme", "tool_calls"): "1",
                ("acme", "web_searches"): "2",
            }
        )
        assert stored_rows(engine) == 6


class TestAuthentication:
    def test_refuses_missing_unknown_revoked_and_admin_keys(
        self, server: RunningServer, engine: Engine
    ) -> None:
        body = export_request(span(1, 1, llm(customer="acme")))
        revoked = issue_keys(engine, server.tenant.tenant_id).ingest_key
        assert revoke_key(engine, revoked)
        refused_headers = {
            "missing": {},
            "no token": {"authorization": "Bearer"},
            "basic scheme": {"authorization": f"Basic {server.tenant.ingest_key}"},
            "unknown": {"authorization": "Bearer am_ingest_not-a-real-key"},
            "revoked": {"authorization": f"Bearer {revoked}"},
            "admin key": server.admin_headers,
        }

        answers = {name: post(server, body, headers=h) for name, h in refused_headers.items()}

        assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(
            refused_headers, 401
        )
        assert {refusal(r).code for r in answers.values()} == {code_pb2.UNAUTHENTICATED}
        assert stored_rows(engine) == 0
        # The same body with the real key goes through.
        assert post(server, body).status_code == 200
        assert stored_rows(engine) == 2

    def test_json_request_is_refused_in_json(self, server: RunningServer) -> None:
        response = post(server, json.dumps(JSON_EXPORT).encode(), content_type=JSON, headers={})

        assert response.status_code == 401
        assert refusal(response, as_json=True).code == code_pb2.UNAUTHENTICATED

    def test_key_revoked_while_running_is_refused(
        self, server: RunningServer, engine: Engine
    ) -> None:
        body = export_request(span(1, 1, llm(customer="acme")))
        assert post(server, body).status_code == 200

        assert revoke_key(engine, server.tenant.ingest_key)

        assert post(server, export_request(span(2, 1, llm()))).status_code == 401
        assert stored_rows(engine) == 2


# name → (body, content type, content encoding, expected status)
BAD_REQUESTS: dict[str, tuple[bytes, str, str | None, int]] = {
    "truncated protobuf": (b"\x0a\xff\xff\xff\xff\x0f", PROTOBUF, None, 400),
    "bad protobuf tag": (b"\xff\xff\xff\xff", PROTOBUF, None, 400),
    "not json": (b"{not json", JSON, None, 400),
    "not utf-8": (b"\xff\xfe", JSON, None, 400),
    "json array": (b"[1, 2]", JSON, None, 400),
    "json of the wrong shape": (b'{"resourceSpans": 7}', JSON, None, 400),
    "not gzip": (b"not gzip at all", PROTOBUF, "gzip", 400),
    "text/plain": (b"{}", "text/plain", None, 415),
    "no content type": (b"{}", "", None, 415),
    "ndjson": (b"{}", "application/x-ndjson", None, 415),
    "brotli": (b"{}", JSON, "br", 415),
}


class TestBadRequests:
    def test_refused_and_nothing_stored(self, server: RunningServer, engine: Engine) -> None:
        answers = {
            name: post(server, body, content_type=content_type, encoding=encoding)
            for name, (body, content_type, encoding, _) in BAD_REQUESTS.items()
        }

        assert {name: r.status_code for name, r in answers.items()} == {
            name: status for name, (*_, status) in BAD_REQUESTS.items()
        }
        codes = {
            name: refusal(answers[name], as_json=content_type == JSON).code
            for name, (_, content_type, *_) in BAD_REQUESTS.items()
        }
        assert set(codes.values()) == {code_pb2.INVALID_ARGUMENT}
        assert stored_rows(engine) == 0
        assert healthy(server)

    def test_wrong_path_and_method(self, server: RunningServer) -> None:
        base = server.traces_url.removesuffix("/v1/traces")

        assert httpx.post(f"{base}/v1/metrics", headers=server.ingest_headers).status_code == 404
        wrong_method = httpx.get(server.traces_url, headers=server.ingest_headers)
        assert wrong_method.status_code == 405
        assert wrong_method.headers["allow"] == "POST"


class TestRequestSize:
    def test_body_over_the_limit_is_refused(
        self, small_server: RunningServer, engine: Engine
    ) -> None:
        padding = "x" * 200
        big = export_request(
            *(span(1, n, llm(customer="acme", padding=padding)) for n in range(1, 400))
        )
        assert len(big) > SMALL_LIMIT

        declared = post(small_server, big)
        chunked = httpx.post(
            small_server.traces_url,
            content=iter([big[i : i + 8192] for i in range(0, len(big), 8192)]),
            headers={**small_server.ingest_headers, "content-type": PROTOBUF},
            timeout=30,
        )
        inflated = post(small_server, gzipped(big), encoding="gzip")

        assert len(gzipped(big)) < SMALL_LIMIT
        for response in (declared, chunked, inflated):
            assert response.status_code == 413
            assert refusal(response).code == code_pb2.RESOURCE_EXHAUSTED
        assert stored_rows(engine) == 0
        # Under the limit goes through.
        assert post(small_server, export_request(span(1, 1, llm()))).status_code == 200

    def test_gzip_bomb_is_refused_without_inflating_it(
        self, server: RunningServer, engine: Engine
    ) -> None:
        assert server.process is not None
        process = psutil.Process(server.process.pid)
        bomb = gzip_of_zeros(100 << 20)
        assert len(bomb) < 200_000

        response = post(server, bomb, encoding="gzip")

        assert response.status_code == 413
        assert refusal(response).code == code_pb2.RESOURCE_EXHAUSTED
        assert healthy(server)
        assert process.memory_info().rss < 300 * 1024 * 1024
        assert stored_rows(engine) == 0
        assert post(server, export_request(span(1, 1, llm()))).status_code == 200


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

        answer = export_response(post(server, body))

        assert answer.partial_success.rejected_spans == 3
        message = answer.partial_success.error_message
        assert "span id must be 8" in message
        assert "gen_ai.usage.input_tokens must not be negative" in message
        assert "agentmeter.usage.web_searches must be a number" in message
        assert usage(server) == {
            ("acme", "input_tokens"): "100",
            ("acme", "output_tokens"): "20",
            ("acme", "web_searches"): "3",
        }
        assert stored_rows(engine) == 3

    def test_all_spans_bad_is_still_a_partial_success(
        self, server: RunningServer, engine: Engine
    ) -> None:
        body = export_request(span(1, 1, llm(customer="acme"), trace_id=bytes(16)))

        answer = export_response(post(server, body))

        assert answer.partial_success.rejected_spans == 1
        assert "trace id" in answer.partial_success.error_message
        assert stored_rows(engine) == 0


class TestStoreUnavailable:
    def test_locked_sqlite_answers_503_then_the_retry_succeeds(self, tmp_path: Path) -> None:
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
            refused = post(running, body)
            holder.execute("ROLLBACK")

            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) > 0
            assert refusal(refused).code == code_pb2.UNAVAILABLE
            assert stored_rows(engine) == 0

            assert export_response(post(running, body)) == ExportTraceServiceResponse()
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
    def test_unreachable_postgresql_answers_503_then_the_retry_succeeds(
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
                refused = post(server, body)
            finally:
                with admin.connect() as connection:
                    connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        finally:
            admin.dispose()

        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) > 0
        assert refusal(refused).code == code_pb2.UNAVAILABLE
        assert stored_rows(engine) == 0
        assert export_response(post(server, body)) == ExportTraceServiceResponse()
        assert usage(server) == {("acme", "input_tokens"): "100", ("acme", "output_tokens"): "20"}


class TestCustomerInheritance:
    def test_across_two_requests_in_either_order(self, server: RunningServer) -> None:
        agent_span = {"gen_ai.operation.name": "invoke_agent", CUSTOMER: "acme"}
        # Trace 1: the span naming the customer arrives first; trace 2: it arrives last.
        assert post(server, export_request(span(1, 1, agent_span))).status_code == 200
        assert post(server, export_request(span(1, 2, llm(100, 20)))).status_code == 200
        assert post(server, export_request(span(2, 2, llm(7, 3)))).status_code == 200
        assert usage(server)[("", "input_tokens")] == "7"

        assert post(server, export_request(span(2, 1, agent_span))).status_code == 200

        assert usage(server) == {("acme", "input_tokens"): "107", ("acme", "output_tokens"): "23"}

    def test_first_customer_of_a_trace_wins(self, server: RunningServer) -> None:
        for number, customer in ((1, "acme"), (2, "bob")):
            named = span(1, number, {"gen_ai.operation.name": "invoke_agent", CUSTOMER: customer})
            assert post(server, export_request(named)).status_code == 200

        assert post(server, export_request(span(1, 3, llm(10, 1)))).status_code == 200

        assert usage(server) == {("acme", "input_tokens"): "10", ("acme", "output_tokens"): "1"}
