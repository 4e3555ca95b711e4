"""`InMemoryUsageSink`: the reference `UsageSink`, deduplication and trace attribution."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel_processor import InMemoryUsageSink, UsageBatch, UsageRecord, UsageSink, WriteResult
from otel_processor.otlp import extract_usage

TENANT = "tenant-1"
OTHER_TENANT = "tenant-2"
TRACE = "5b8efff798038103d269b633813fc60c"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
END = 1_767_225_600_000_000_000


def record(
    span: str = "0000000000000001",
    meter: str = "input_tokens",
    quantity: int = 10,
    customer: str = "",
    trace: str = TRACE,
) -> UsageRecord:
    return UsageRecord(
        trace_id=trace,
        span_id=span,
        meter=meter,
        quantity=quantity,
        customer_id=customer,
        time_unix_nano=END,
    )


def batch(*records: UsageRecord, **trace_customers: str) -> UsageBatch:
    """A batch; keyword arguments map trace ids (given as `t_<trace id>`) to customers."""
    return UsageBatch(
        records=list(records),
        trace_customers={key.removeprefix("t_"): value for key, value in trace_customers.items()},
    )


def customers(sink: InMemoryUsageSink, tenant: str = TENANT) -> list[tuple[str, str, str]]:
    return [(r.span_id[-2:], r.meter, r.customer_id) for r in sink.records(tenant)]


def test_is_a_usage_sink() -> None:
    sink: UsageSink = InMemoryUsageSink()
    assert sink.write(TENANT, batch()) == WriteResult(inserted=0, duplicates=0)


class TestDeduplication:
    @pytest.mark.parametrize(
        ("batches", "expected_results", "stored"),
        [
            pytest.param(
                [[record(), record(meter="output_tokens")]],
                [(2, 0)],
                2,
                id="new-records",
            ),
            pytest.param(
                [[record(), record(meter="output_tokens")]] * 2,
                [(2, 0), (0, 2)],
                2,
                id="exporter-retry",
            ),
            pytest.param(
                [[record()], [record(), record(span="0000000000000002")]],
                [(1, 0), (1, 1)],
                2,
                id="partial-overlap",
            ),
            pytest.param([[record(), record()]], [(1, 1)], 1, id="duplicate-within-a-batch"),
            pytest.param(
                [[record(quantity=10)], [record(quantity=99, customer="acme")]],
                [(1, 0), (0, 1)],
                1,
                id="identity-ignores-quantity-and-customer",
            ),
            pytest.param(
                [[record(), record(span="0000000000000002"), record(trace=OTHER_TRACE)]],
                [(3, 0)],
                3,
                id="identity-includes-trace-and-span",
            ),
            pytest.param([[]], [(0, 0)], 0, id="empty-batch"),
        ],
    )
    def test_write_counts(
        self,
        batches: Sequence[Sequence[UsageRecord]],
        expected_results: Sequence[tuple[int, int]],
        stored: int,
    ) -> None:
        sink = InMemoryUsageSink()
        results = [sink.write(TENANT, batch(*records)) for records in batches]
        assert [(r.inserted, r.duplicates) for r in results] == list(expected_results)
        assert len(sink.records(TENANT)) == stored

    def test_first_copy_is_kept(self) -> None:
        sink = InMemoryUsageSink()
        sink.write(TENANT, batch(record(quantity=10)))
        sink.write(TENANT, batch(record(quantity=99)))
        assert [r.quantity for r in sink.records(TENANT)] == [10]

    def test_tenants_are_separate(self) -> None:
        sink = InMemoryUsageSink()
        assert sink.write(TENANT, batch(record())) == WriteResult(inserted=1, duplicates=0)
        assert sink.write(OTHER_TENANT, batch(record())) == WriteResult(inserted=1, duplicates=0)
        assert len(sink.records(TENANT)) == len(sink.records(OTHER_TENANT)) == 1
        assert sink.records("nobody") == []

    def test_records_in_insertion_order(self) -> None:
        sink = InMemoryUsageSink()
        spans = ["0000000000000003", "0000000000000001", "0000000000000002"]
        for span in spans:
            sink.write(TENANT, batch(record(span=span)))
        assert [r.span_id for r in sink.records(TENANT)] == spans

    def test_concurrent_retries_insert_each_record_once(self) -> None:
        sink = InMemoryUsageSink()
        records = [record(span=f"{n:016x}") for n in range(1, 201)]
        results: list[WriteResult] = []
        lock = threading.Lock()

        def export() -> None:
            result = sink.write(TENANT, batch(*records))
            with lock:
                results.append(result)

        threads = [threading.Thread(target=export) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(r.inserted for r in results) == 200
        assert sum(r.duplicates for r in results) == 7 * 200
        assert len(sink.records(TENANT)) == 200


class TestTraceAttribution:
    """A customer-less record inherits its trace's customer, whichever arrives first."""

    @pytest.mark.parametrize(
        ("batches", "expected"),
        [
            pytest.param(
                [
                    batch(record("0000000000000001", customer="acme")),
                ],
                [("01", "input_tokens", "acme")],
                id="own-customer",
            ),
            pytest.param(
                [
                    batch(**{f"t_{TRACE}": "acme"}),
                    batch(record("0000000000000002")),
                ],
                [("02", "input_tokens", "acme")],
                id="customer-first",
            ),
            pytest.param(
                [
                    batch(record("0000000000000002")),
                    batch(**{f"t_{TRACE}": "acme"}),
                ],
                [("02", "input_tokens", "acme")],
                id="usage-first",
            ),
            pytest.param(
                [
                    batch(record("0000000000000002"), **{f"t_{TRACE}": "acme"}),
                ],
                [("02", "input_tokens", "acme")],
                id="same-batch",
            ),
            pytest.param(
                [
                    batch(record("0000000000000001"), **{f"t_{TRACE}": "acme"}),
                    batch(record("0000000000000002"), **{f"t_{TRACE}": "globex"}),
                ],
                [("01", "input_tokens", "acme"), ("02", "input_tokens", "acme")],
                id="first-customer-wins",
            ),
            pytest.param(
                [
                    batch(**{f"t_{TRACE}": "acme"}),
                    batch(record("0000000000000002", customer="globex")),
                ],
                [("02", "input_tokens", "globex")],
                id="own-customer-beats-trace",
            ),
            pytest.param(
                [
                    batch(record("0000000000000002", trace=OTHER_TRACE)),
                    batch(**{f"t_{TRACE}": "acme"}),
                ],
                [("02", "input_tokens", "")],
                id="other-trace-stays-unattributed",
            ),
            pytest.param(
                [batch(record("0000000000000002"))],
                [("02", "input_tokens", "")],
                id="unattributed-is-kept",
            ),
        ],
    )
    def test_inheritance(
        self, batches: Sequence[UsageBatch], expected: list[tuple[str, str, str]]
    ) -> None:
        sink = InMemoryUsageSink()
        for item in batches:
            sink.write(TENANT, item)
        assert customers(sink) == expected

    def test_duplicate_does_not_attribute(self) -> None:
        """A retried record that now names a customer is still a duplicate."""
        sink = InMemoryUsageSink()
        sink.write(TENANT, batch(record()))
        result = sink.write(TENANT, batch(record(customer="acme")))
        assert result == WriteResult(inserted=0, duplicates=1)
        assert customers(sink) == [("01", "input_tokens", "")]

    def test_trace_customer_is_per_tenant(self) -> None:
        sink = InMemoryUsageSink()
        sink.write(OTHER_TENANT, batch(**{f"t_{TRACE}": "acme"}))
        sink.write(TENANT, batch(record()))
        sink.write(OTHER_TENANT, batch(record()))
        assert customers(sink, TENANT) == [("01", "input_tokens", "")]
        assert customers(sink, OTHER_TENANT) == [("01", "input_tokens", "acme")]

    def test_only_customer_less_records_change(self) -> None:
        sink = InMemoryUsageSink()
        mine = record("0000000000000001", customer="globex")
        orphan = record("0000000000000002")
        sink.write(TENANT, batch(mine, orphan))
        sink.write(TENANT, batch(**{f"t_{TRACE}": "acme"}))
        assert sink.records(TENANT) == [mine, orphan._replace(customer_id="acme")]


def _otlp_span(number: int, attributes: dict[str, str | int]) -> ExportTraceServiceRequest:
    key_values = [
        KeyValue(
            key=key,
            value=AnyValue(string_value=value)
            if isinstance(value, str)
            else AnyValue(int_value=value),
        )
        for key, value in attributes.items()
    ]
    span = Span(
        trace_id=bytes.fromhex(TRACE),
        span_id=number.to_bytes(8, "big"),
        name="span",
        end_time_unix_nano=END,
        attributes=key_values,
    )
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )


AGENT_SPAN = _otlp_span(
    1, {"gen_ai.operation.name": "invoke_agent", "agentmeter.customer.id": "acme"}
)
CHAT_SPAN = _otlp_span(2, {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 1500})


class TestExportsEndToEnd:
    """Two OTLP exports of one trace: the agent span names the customer, the chat span bills."""

    @pytest.mark.parametrize(
        "exports",
        [
            pytest.param([AGENT_SPAN, CHAT_SPAN], id="agent-span-first"),
            pytest.param([CHAT_SPAN, AGENT_SPAN], id="chat-span-first"),
            pytest.param([CHAT_SPAN, AGENT_SPAN, CHAT_SPAN, AGENT_SPAN], id="with-retries"),
        ],
    )
    def test_either_arrival_order(self, exports: Sequence[ExportTraceServiceRequest]) -> None:
        sink = InMemoryUsageSink()
        for request in exports:
            sink.write(TENANT, extract_usage(request).batch)
        assert customers(sink) == [("02", "input_tokens", "acme")]
        assert [r.quantity for r in sink.records(TENANT)] == [1500]
