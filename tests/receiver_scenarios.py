"""Exports that the OTLP/gRPC and OTLP/HTTP receiver tests both send, each with the usage a
running `agentmeter serve` must store for it, whichever transport carried it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from sqlalchemy import Engine

from agentmeter.tenants import issue_keys, revoke_key
from tests.conftest import RunningServer
from tests.otlp_builders import CUSTOMER, export_request, llm, span
from tests.usage_queries import UsageTable, usage_table

SMALL_LIMIT = 64 * 1024  # the request size limit of the `small_server` fixture
INGEST_LIMIT = 2  # exports per ingest key and minute of the `limited_server` fixture


@dataclass(frozen=True)
class Export:
    """A serialized export request, and what storing it adds."""

    body: bytes
    usage: UsageTable  # `usage_table(server)`, if nothing else was stored
    rows: int  # rows of `usage_records`


ONE_CHAT = Export(
    export_request(span(1, 1, llm(100, 20, customer="acme"))),
    {("acme", "input_tokens"): "100", ("acme", "output_tokens"): "20"},
    rows=2,
)

TWO_CUSTOMERS = Export(
    export_request(
        span(1, 1, llm(100, 20, customer="acme")),
        span(1, 2, llm(7, 3, customer="acme")),
        span(2, 1, {"agentmeter.usage.sandbox_seconds": 12.5, CUSTOMER: "globex"}),
    ),
    {
        ("acme", "input_tokens"): "107",
        ("acme", "output_tokens"): "23",
        ("globex", "sandbox_seconds"): "12.5",
    },
    rows=5,
)

# A chat and a tool call of one trace: a batch to send more than once.
CHAT_AND_TOOL = export_request(
    span(1, 1, llm(100, 20, customer="acme")),
    span(1, 2, {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}),
)

# Five spans, three of them bad: a bad span id, negative tokens, a meter that is no number.
PARTLY_BAD = Export(
    export_request(
        span(1, 1, llm(100, 20, customer="acme")),
        span(1, 2, llm(customer="acme"), span_id=b"\x01\x02\x03\x04"),
        span(1, 3, llm(-5, 20, customer="acme")),
        span(1, 4, {"agentmeter.usage.web_searches": "lots", CUSTOMER: "acme"}),
        span(1, 5, {"agentmeter.usage.web_searches": 3, CUSTOMER: "acme"}),
    ),
    {
        ("acme", "input_tokens"): "100",
        ("acme", "output_tokens"): "20",
        ("acme", "web_searches"): "3",
    },
    rows=3,
)
PARTLY_BAD_REJECTED = 3
PARTLY_BAD_REASONS = (
    "span id must be 8",
    "gen_ai.usage.input_tokens must not be negative",
    "agentmeter.usage.web_searches must be a number",
)


def _far_future_chat() -> Span:
    far = span(1, 2, llm(50, 5, customer="acme"))
    far.end_time_unix_nano = 2**63  # a legal fixed64 that no int64 column holds
    return far


# Issue 8, defect 1: one span ending past 2^63 ns is refused alone; its neighbour is stored.
FAR_FUTURE = Export(
    export_request(span(1, 1, llm(100, 20, customer="acme")), _far_future_chat()),
    ONE_CHAT.usage,
    rows=2,
)


def oversized_export() -> bytes:
    """An export over `SMALL_LIMIT` that gzip squeezes under it."""
    padding = "x" * 200
    return export_request(
        *(span(1, n, llm(customer="acme", padding=padding)) for n in range(1, 400))
    )


def healthy(server: RunningServer) -> bool:
    return httpx.get(f"{server.api_url}/healthz", timeout=10).status_code == 200


def revoked_ingest_key(engine: Engine, server: RunningServer) -> str:
    """A new ingest key of `server`'s tenant, already revoked."""
    key = issue_keys(engine, server.tenant.tenant_id).ingest_key
    assert revoke_key(engine, key)
    return key


def check_customer_inherited_in_either_order(
    server: RunningServer, export: Callable[[bytes], None]
) -> None:
    """The span naming a trace's customer bills the trace's other spans, whether it arrives
    in a request before theirs (trace 1) or after (trace 2). `export` sends one request and
    checks it was accepted."""
    agent_span = {"gen_ai.operation.name": "invoke_agent", CUSTOMER: "acme"}
    export(export_request(span(1, 1, agent_span)))
    export(export_request(span(1, 2, llm(100, 20))))
    export(export_request(span(2, 2, llm(7, 3))))
    assert usage_table(server)[("", "input_tokens")] == "7"

    export(export_request(span(2, 1, agent_span)))

    assert usage_table(server) == {("acme", "input_tokens"): "107", ("acme", "output_tokens"): "23"}
