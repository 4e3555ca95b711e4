"""OTLP/HTTP `POST /v1/traces` against a running `agentmeter serve`, on SQLite and PostgreSQL.

Requests are built by hand (protobuf messages and hand-written OTLP/JSON) and sent raw with
httpx, so every refusal can be provoked; what was stored is read back through the usage API
and with SQL on the server's database.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Mapping
from pathlib import Path

import httpx
import psutil
import pytest
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from sqlalchemy import Engine, select

from agentmeter.tables import UsageRow
from agentmeter.tenants import create_tenant, revoke_key
from tests import receiver_scenarios as scenarios
from tests.conftest import RunningServer
from tests.otlp_builders import CUSTOMER, OTLP_JSON, export_request, llm, span
from tests.store_outages import lockable_sqlite_server, postgresql_refusing_connections
from tests.usage_queries import stored_row_count, usage_table

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


# --- Building requests ---------------------------------------------------------------------


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


# --- Tests ---------------------------------------------------------------------------------


class TestProtobuf:
    def test_stores_usage_and_answers_in_protobuf(
        self, server: RunningServer, engine: Engine
    ) -> None:
        response = post(server, scenarios.TWO_CUSTOMERS.body)

        assert export_response(response) == ExportTraceServiceResponse()
        assert not export_response(response).HasField("partial_success")
        assert usage_table(server) == scenarios.TWO_CUSTOMERS.usage
        assert stored_row_count(engine) == scenarios.TWO_CUSTOMERS.rows

    def test_content_type_parameters_are_ignored(self, server: RunningServer) -> None:
        body = export_request(span(1, 1, llm(5, 1, customer="acme")))

        response = post(server, body, content_type=f"{PROTOBUF}; charset=binary")

        assert response.headers["content-type"] == PROTOBUF
        assert export_response(response) == ExportTraceServiceResponse()
        assert usage_table(server)[("acme", "input_tokens")] == "5"


# What `OTLP_JSON` (hand-written OTLP/JSON: a chat and a tool call of acme) stores.
JSON_USAGE = {
    ("acme", "input_tokens"): "1500",
    ("acme", "cache_read_tokens"): "1024",
    ("acme", "output_tokens"): "200",
    ("acme", "sandbox_seconds"): "12.5",
    ("acme", "tool_calls"): "1",
    ("acme", "web_searches"): "1",
}


class TestJson:
    def test_stores_usage_and_answers_in_json(self, server: RunningServer, engine: Engine) -> None:
        response = post(server, OTLP_JSON, content_type=JSON)

        assert response.headers["content-type"] == JSON
        assert export_response(response) == ExportTraceServiceResponse()
        assert usage_table(server) == JSON_USAGE
        with engine.connect() as connection:
            ids = connection.execute(select(UsageRow.trace_id, UsageRow.span_id)).all()
        # Hex ids are stored in lower case, whatever case they were sent in.
        assert set(ids) == {
            ("5b8efff798038103d269b633813fc60c", "0000000000000001"),
            ("5b8efff798038103d269b633813fc60c", "0000000000000002"),
        }

    def test_partial_success_is_answered_in_json(self, server: RunningServer) -> None:
        document = json.loads(OTLP_JSON)
        spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
        spans.append({**spans[0], "spanId": "not-hex"})

        response = post(server, json.dumps(document).encode(), content_type=JSON)

        answer = export_response(response)
        assert response.headers["content-type"] == JSON
        assert answer.partial_success.rejected_spans == 1
        assert "span id" in answer.partial_success.error_message
        assert usage_table(server)[("acme", "input_tokens")] == "1500"


class TestGzip:
    def test_gzip_protobuf_and_json_are_inflated(self, server: RunningServer) -> None:
        protobuf = post(server, gzipped(scenarios.ONE_CHAT.body), encoding="gzip")
        as_json = post(server, gzipped(OTLP_JSON), content_type=JSON, encoding="gzip")

        assert export_response(protobuf) == ExportTraceServiceResponse()
        assert export_response(as_json) == ExportTraceServiceResponse()
        assert usage_table(server) == {
            **JSON_USAGE,
            ("acme", "input_tokens"): "1600",
            ("acme", "output_tokens"): "220",
        }

    def test_every_member_of_a_multi_member_body_is_inflated(
        self, server: RunningServer, engine: Engine
    ) -> None:
        # Issue 8, defect 2: concatenated gzip streams are one legal body (RFC 1952); two
        # serialized exports concatenated are one export holding both (protobuf merge).
        body = gzipped(export_request(span(1, 1, llm(100, 20, customer="acme")))) + gzipped(
            export_request(span(1, 2, llm(7, 3, customer="acme")))
        )

        assert export_response(post(server, body, encoding="gzip")) == (
            ExportTraceServiceResponse()
        )
        assert usage_table(server) == {
            ("acme", "input_tokens"): "107",
            ("acme", "output_tokens"): "23",
        }
        assert stored_row_count(engine) == 4

    def test_members_together_over_the_limit_are_refused(
        self, small_server: RunningServer, engine: Engine
    ) -> None:
        member = gzipped(bytes(scenarios.SMALL_LIMIT // 2 + 1))

        response = post(small_server, member * 2, encoding="gzip")

        assert response.status_code == 413
        assert stored_row_count(engine) == 0

    def test_garbage_after_a_member_is_refused(self, server: RunningServer, engine: Engine) -> None:
        body = gzipped(export_request(span(1, 1, llm(customer="acme")))) + b"not gzip"

        response = post(server, body, encoding="gzip")

        assert response.status_code == 400
        assert refusal(response).code == code_pb2.INVALID_ARGUMENT
        assert stored_row_count(engine) == 0

    def test_truncated_gzip_is_refused(self, server: RunningServer, engine: Engine) -> None:
        body = gzipped(export_request(span(1, 1, llm(customer="acme"))))

        response = post(server, body[: len(body) // 2], encoding="gzip")

        assert response.status_code == 400
        assert refusal(response).code == code_pb2.INVALID_ARGUMENT
        assert stored_row_count(engine) == 0


class TestRetriedExport:
    def test_same_batch_twice_is_stored_once(self, server: RunningServer, engine: Engine) -> None:
        assert post(server, scenarios.CHAT_AND_TOOL).status_code == 200
        assert post(server, OTLP_JSON, content_type=JSON).status_code == 200
        before = usage_table(server)

        assert (
            export_response(post(server, scenarios.CHAT_AND_TOOL)) == ExportTraceServiceResponse()
        )
        assert export_response(post(server, OTLP_JSON, content_type=JSON)) == (
            ExportTraceServiceResponse()
        )

        assert (
            usage_table(server)
            == before
            == {
                **JSON_USAGE,
                ("acme", "input_tokens"): "1600",
                ("acme", "output_tokens"): "220",
                ("acme", "tool_calls"): "2",
            }
        )
        assert stored_row_count(engine) == 3 + 6


class TestAuthentication:
    def test_refuses_missing_unknown_revoked_and_admin_keys(
        self, server: RunningServer, engine: Engine
    ) -> None:
        revoked = scenarios.revoked_ingest_key(engine, server)
        refused_headers = {
            "missing": {},
            "no token": {"authorization": "Bearer"},
            "basic scheme": {"authorization": f"Basic {server.tenant.ingest_key}"},
            "unknown": {"authorization": "Bearer am_ingest_not-a-real-key"},
            "revoked": {"authorization": f"Bearer {revoked}"},
            "admin key": server.admin_headers,
        }

        answers = {
            name: post(server, scenarios.ONE_CHAT.body, headers=h)
            for name, h in refused_headers.items()
        }

        assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(
            refused_headers, 401
        )
        assert {refusal(r).code for r in answers.values()} == {code_pb2.UNAUTHENTICATED}
        assert stored_row_count(engine) == 0
        # The same body with the real key goes through.
        assert post(server, scenarios.ONE_CHAT.body).status_code == 200
        assert stored_row_count(engine) == scenarios.ONE_CHAT.rows

    def test_json_request_is_refused_in_json(self, server: RunningServer) -> None:
        response = post(server, OTLP_JSON, content_type=JSON, headers={})

        assert response.status_code == 401
        assert refusal(response, as_json=True).code == code_pb2.UNAUTHENTICATED

    def test_key_revoked_while_running_is_refused(
        self, server: RunningServer, engine: Engine
    ) -> None:
        body = export_request(span(1, 1, llm(customer="acme")))
        assert post(server, body).status_code == 200

        assert revoke_key(engine, server.tenant.ingest_key)

        assert post(server, export_request(span(2, 1, llm()))).status_code == 401
        assert stored_row_count(engine) == 2


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
        assert stored_row_count(engine) == 0
        assert scenarios.healthy(server)

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
        big = scenarios.oversized_export()
        assert len(big) > scenarios.SMALL_LIMIT

        declared = post(small_server, big)
        chunked = httpx.post(
            small_server.traces_url,
            content=iter([big[i : i + 8192] for i in range(0, len(big), 8192)]),
            headers={**small_server.ingest_headers, "content-type": PROTOBUF},
            timeout=30,
        )
        inflated = post(small_server, gzipped(big), encoding="gzip")

        assert len(gzipped(big)) < scenarios.SMALL_LIMIT
        for response in (declared, chunked, inflated):
            assert response.status_code == 413
            assert refusal(response).code == code_pb2.RESOURCE_EXHAUSTED
        assert stored_row_count(engine) == 0
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
        assert scenarios.healthy(server)
        assert process.memory_info().rss < 300 * 1024 * 1024
        assert stored_row_count(engine) == 0
        assert post(server, export_request(span(1, 1, llm()))).status_code == 200


class TestPartialSuccess:
    def test_bad_spans_are_counted_and_good_ones_stored(
        self, server: RunningServer, engine: Engine
    ) -> None:
        answer = export_response(post(server, scenarios.PARTLY_BAD.body))

        assert answer.partial_success.rejected_spans == scenarios.PARTLY_BAD_REJECTED
        message = answer.partial_success.error_message
        for reason in scenarios.PARTLY_BAD_REASONS:
            assert reason in message
        assert usage_table(server) == scenarios.PARTLY_BAD.usage
        assert stored_row_count(engine) == scenarios.PARTLY_BAD.rows

    def test_end_time_past_int64_is_refused_alone(
        self, server: RunningServer, engine: Engine
    ) -> None:
        answer = export_response(post(server, scenarios.FAR_FUTURE.body))

        assert answer.partial_success.rejected_spans == 1
        assert "past year 2262" in answer.partial_success.error_message
        assert usage_table(server) == scenarios.FAR_FUTURE.usage
        assert stored_row_count(engine) == scenarios.FAR_FUTURE.rows

    def test_json_span_of_the_wrong_shape_is_refused_alone(
        self, server: RunningServer, engine: Engine
    ) -> None:
        document = json.loads(OTLP_JSON)
        spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
        spans.append({**spans[0], "spanId": "00000000000000ff", "endTimeUnixNano": "soon"})
        spans.append({**spans[0], "spanId": "00000000000000fe", "endTimeUnixNano": str(2**64 - 1)})
        # Lone surrogates: the protobuf runtime raised SystemError on this enum name.
        spans.append({**spans[0], "spanId": "00000000000000fd", "kind": "\ud800"})

        response = post(server, json.dumps(document).encode(), content_type=JSON)

        answer = export_response(response)
        assert answer.partial_success.rejected_spans == 3
        assert "OverflowError" not in answer.partial_success.error_message
        assert usage_table(server) == JSON_USAGE

    def test_all_spans_bad_is_still_a_partial_success(
        self, server: RunningServer, engine: Engine
    ) -> None:
        body = export_request(span(1, 1, llm(customer="acme"), trace_id=bytes(16)))

        answer = export_response(post(server, body))

        assert answer.partial_success.rejected_spans == 1
        assert "trace id" in answer.partial_success.error_message
        assert stored_row_count(engine) == 0


class TestStoreUnavailable:
    def test_locked_sqlite_answers_503_then_the_retry_succeeds(self, tmp_path: Path) -> None:
        with lockable_sqlite_server(tmp_path) as sqlite:
            with sqlite.locked():
                refused = post(sqlite.server, scenarios.ONE_CHAT.body)

            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) > 0
            assert refusal(refused).code == code_pb2.UNAVAILABLE
            assert stored_row_count(sqlite.engine) == 0

            assert export_response(post(sqlite.server, scenarios.ONE_CHAT.body)) == (
                ExportTraceServiceResponse()
            )
            assert usage_table(sqlite.server) == scenarios.ONE_CHAT.usage

    @pytest.mark.postgres
    @pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
    def test_unreachable_postgresql_answers_503_then_the_retry_succeeds(
        self, server: RunningServer, engine: Engine, database_url: str
    ) -> None:
        with postgresql_refusing_connections(database_url):
            refused = post(server, scenarios.ONE_CHAT.body)

        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) > 0
        assert refusal(refused).code == code_pb2.UNAVAILABLE
        assert stored_row_count(engine) == 0
        assert (
            export_response(post(server, scenarios.ONE_CHAT.body)) == ExportTraceServiceResponse()
        )
        assert usage_table(server) == scenarios.ONE_CHAT.usage


class TestCustomerInheritance:
    def test_across_two_requests_in_either_order(self, server: RunningServer) -> None:
        def export(body: bytes) -> None:
            assert post(server, body).status_code == 200

        scenarios.check_customer_inherited_in_either_order(server, export)

    def test_first_customer_of_a_trace_wins(self, server: RunningServer) -> None:
        for number, customer in ((1, "acme"), (2, "bob")):
            named = span(1, number, {"gen_ai.operation.name": "invoke_agent", CUSTOMER: customer})
            assert post(server, export_request(named)).status_code == 200

        assert post(server, export_request(span(1, 3, llm(10, 1)))).status_code == 200

        assert usage_table(server) == {
            ("acme", "input_tokens"): "10",
            ("acme", "output_tokens"): "1",
        }


class TestRateLimit:
    def test_past_the_limit_is_429_with_retry_after_and_nothing_stored(
        self, limited_server: RunningServer, engine: Engine
    ) -> None:
        for number in range(1, scenarios.INGEST_LIMIT + 1):
            assert post(limited_server, export_request(span(1, number, llm()))).status_code == 200

        refused = post(limited_server, export_request(span(2, 1, llm())))

        assert refused.status_code == 429
        wait = int(refused.headers["retry-after"])
        assert 0 < wait <= 60
        status = refusal(refused)
        assert status.code == code_pb2.RESOURCE_EXHAUSTED
        info = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(info)
        assert info.retry_delay.seconds == wait
        assert stored_row_count(engine) == 2 * scenarios.INGEST_LIMIT

    def test_the_limit_is_per_key(self, limited_server: RunningServer, engine: Engine) -> None:
        for number in range(1, scenarios.INGEST_LIMIT + 2):
            post(limited_server, export_request(span(1, number, llm())))
        other = create_tenant(engine, "another tenant")

        response = post(
            limited_server,
            export_request(span(3, 1, llm())),
            headers={"authorization": f"Bearer {other.ingest_key}"},
        )

        assert response.status_code == 200

    def test_refused_in_json_for_a_json_request(self, limited_server: RunningServer) -> None:
        for _ in range(scenarios.INGEST_LIMIT):
            post(limited_server, OTLP_JSON, content_type=JSON)

        refused = post(limited_server, OTLP_JSON, content_type=JSON)

        assert refused.status_code == 429
        assert refusal(refused, as_json=True).code == code_pb2.RESOURCE_EXHAUSTED
