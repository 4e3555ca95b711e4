"""Each provider call billed once, on SQLite and PostgreSQL, in every arrival order, through
several sinks at once; agent names from the nearest enclosing agent span; canonical providers.

The spans are the shapes real clients emit (see tests/compat for the clients themselves):
the `anthropic` SDK's own span beside OpenLLMetry's (siblings, one response id), and under
OpenInference's or pydantic-ai's LLM span (parent and child).
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from agentmeter.tables import UsageRow
from billing_api.rating.repository import aggregate_usage as rating_usage
from billing_api.usage.repository import aggregate_usage
from billing_api.usage.service import UsageSelection
from exporter.provider_calls import CallRecord, supersessions
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import AgentSpan, UsageBatch, UsageRecord, to_micros

TENANT = "tenant-a"
END_TIME = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
CUSTOMER = "acme"


def trace_id(n: int) -> str:
    return f"{n:032x}"


def span_id(n: int) -> str:
    return f"{n:016x}"


def llm_span(
    trace: int,
    span: int,
    meters: dict[str, int],
    *,
    parent: int = 0,
    response_id: str = "",
    provider: str = "anthropic",
    agent_name: str = "",
) -> list[UsageRecord]:
    return [
        UsageRecord(
            trace_id=trace_id(trace),
            span_id=span_id(span),
            meter=meter,
            quantity=quantity,
            customer_id=CUSTOMER,
            time_unix_nano=END_TIME,
            provider=provider,
            model="claude-sonnet-4-5",
            operation="chat",
            agent_name=agent_name,
            parent_span_id=span_id(parent) if parent else "",
            response_id=response_id,
        )
        for meter, quantity in meters.items()
    ]


CALL = {
    "input_tokens": 1200,
    "cache_read_tokens": 800,
    "cache_write_tokens": 300,
    "output_tokens": 90,
}


def billed(engine: Engine, tenant: str = TENANT) -> dict[str, int]:
    """meter → billed quantity, read through the usage API's own query."""
    with Session(engine) as session:
        rows = aggregate_usage(session, tenant, UsageSelection())
    return {row["meter"]: row["quantity_micros"] // 10**6 for row in rows}


def superseded(engine: Engine) -> dict[tuple[str, str], str]:
    """(span, meter) → superseded_by, of every stored record."""
    with Session(engine) as session:
        rows = session.execute(
            select(UsageRow.span_id, UsageRow.meter, UsageRow.superseded_by).where(
                UsageRow.tenant_id == TENANT
            )
        )
        return {(span, meter): by for span, meter, by in rows}


def write_in_order(
    sink: SqlUsageSink, batches: Sequence[Sequence[UsageRecord]], tenant: str = TENANT
) -> None:
    for records in batches:
        sink.write(tenant, UsageBatch(records=list(records)))


# The anthropic SDK's own span and OpenLLMetry's, siblings under one agent span (9):
# OpenLLMetry says "Anthropic" and omits cache writes.
SDK_SPAN = llm_span(1, 2, CALL, parent=9, response_id="msg_01", provider="anthropic")
OPENLLMETRY_SPAN = llm_span(
    1,
    3,
    {"input_tokens": 1200, "cache_read_tokens": 800, "output_tokens": 90},
    parent=9,
    response_id="msg_01",
    provider="Anthropic",
)
# OpenInference's LLM span (4) around the SDK's own span (5); it has no reasoning child.
OPENINFERENCE_PARENT = llm_span(2, 4, {**CALL, "output_reasoning_tokens": 0}, parent=9)
SDK_CHILD = llm_span(2, 5, CALL, parent=4, response_id="msg_02")


class TestSiblingsWithOneResponseId:
    @pytest.mark.parametrize(
        "order",
        [
            pytest.param([SDK_SPAN + OPENLLMETRY_SPAN], id="one-batch"),
            pytest.param([SDK_SPAN, OPENLLMETRY_SPAN], id="sdk-first"),
            pytest.param([OPENLLMETRY_SPAN, SDK_SPAN], id="instrumentor-first"),
            pytest.param([OPENLLMETRY_SPAN, SDK_SPAN, SDK_SPAN], id="retried"),
        ],
    )
    def test_billed_once(self, engine: Engine, order: list[list[UsageRecord]]) -> None:
        write_in_order(SqlUsageSink(engine), order)

        assert billed(engine) == CALL
        # Both spans are kept; the loser of each meter names the span that bills it.
        assert superseded(engine) == {
            (span_id(2), "input_tokens"): "",
            (span_id(2), "cache_read_tokens"): "",
            (span_id(2), "cache_write_tokens"): "",
            (span_id(2), "output_tokens"): "",
            (span_id(3), "input_tokens"): span_id(2),
            (span_id(3), "cache_read_tokens"): span_id(2),
            (span_id(3), "output_tokens"): span_id(2),
        }

    def test_other_response_ids_are_other_calls(self, engine: Engine) -> None:
        sink = SqlUsageSink(engine)
        write_in_order(sink, [SDK_SPAN, llm_span(1, 3, CALL, parent=9, response_id="msg_99")])

        assert billed(engine) == {meter: 2 * n for meter, n in CALL.items()}

    def test_same_response_id_of_other_providers_are_other_calls(self, engine: Engine) -> None:
        sink = SqlUsageSink(engine)
        other = llm_span(1, 3, CALL, parent=9, response_id="msg_01", provider="openai")
        write_in_order(sink, [SDK_SPAN, other])

        assert billed(engine) == {meter: 2 * n for meter, n in CALL.items()}


class TestParentAndChild:
    @pytest.mark.parametrize(
        "order",
        [
            pytest.param([OPENINFERENCE_PARENT + SDK_CHILD], id="one-batch"),
            pytest.param([OPENINFERENCE_PARENT, SDK_CHILD], id="parent-first"),
            pytest.param([SDK_CHILD, OPENINFERENCE_PARENT], id="child-first"),
        ],
    )
    def test_parent_is_an_aggregate(self, engine: Engine, order: list[list[UsageRecord]]) -> None:
        write_in_order(SqlUsageSink(engine), order)

        # The parent's reasoning count (0) has no child record: it stays billed.
        assert billed(engine) == {**CALL, "output_reasoning_tokens": 0}
        states = superseded(engine)
        assert {m: states[(span_id(4), m)] for m in CALL} == dict.fromkeys(CALL, span_id(5))
        assert states[(span_id(4), "output_reasoning_tokens")] == ""
        assert {m: states[(span_id(5), m)] for m in CALL} == dict.fromkeys(CALL, "")

    @pytest.mark.parametrize("order", [pytest.param("parent-first"), pytest.param("child-first")])
    def test_unlinked_parent_is_an_aggregate(self, engine: Engine, order: str) -> None:
        # A root LLM span with neither a parent nor a response id, over one SDK call: the
        # batch holding only the parent has no link of its own, yet its stored child
        # supersedes it (regression guard for settlement's unlinked-batch shortcut).
        parent = llm_span(5, 12, CALL)
        child = llm_span(5, 13, CALL, parent=12)
        batches = [parent, child] if order == "parent-first" else [child, parent]
        write_in_order(SqlUsageSink(engine), batches)

        assert billed(engine) == CALL
        assert superseded(engine)[(span_id(12), "input_tokens")] == span_id(13)

    def test_unlinked_leaves_bill_everything(self, engine: Engine) -> None:
        write_in_order(SqlUsageSink(engine), [llm_span(6, 14, CALL), llm_span(6, 15, CALL)])

        assert billed(engine) == {meter: 2 * quantity for meter, quantity in CALL.items()}

    def test_parent_of_two_calls_is_superseded_by_both(self, engine: Engine) -> None:
        sink = SqlUsageSink(engine)
        calls = [
            llm_span(3, 6, {"input_tokens": 100, "output_tokens": 10}, parent=9),
            llm_span(3, 7, {"input_tokens": 40, "output_tokens": 4}, parent=6, response_id="a"),
            llm_span(3, 8, {"input_tokens": 60, "output_tokens": 6}, parent=6, response_id="b"),
        ]
        write_in_order(sink, calls)

        assert billed(engine) == {"input_tokens": 100, "output_tokens": 10}

    def test_child_with_another_response_id_after_its_parent(self, engine: Engine) -> None:
        # The stored parent's response id is not in the child's batch: settlement locks it
        # too on PostgreSQL (regression: on SQLite it ran PostgreSQL's lock function).
        parent = llm_span(7, 16, CALL, response_id="msg_parent")
        child = llm_span(7, 17, CALL, parent=16, response_id="msg_child")
        write_in_order(SqlUsageSink(engine), [parent, child])

        assert billed(engine) == CALL
        assert superseded(engine)[(span_id(16), "input_tokens")] == span_id(17)

    def test_pydantic_ai_shape_parent_and_child_share_the_response_id(self, engine: Engine) -> None:
        # pydantic-ai's chat span and the SDK's span below it both carry the response id.
        parent = llm_span(4, 10, CALL, parent=9, response_id="msg_03", agent_name="support")
        child = llm_span(4, 11, CALL, parent=10, response_id="msg_03")
        write_in_order(SqlUsageSink(engine), [child, parent])

        assert billed(engine) == CALL
        assert superseded(engine)[(span_id(10), "input_tokens")] == span_id(11)


class TestCopiesOfARecord:
    def test_copy_with_another_end_time_is_superseded_too(self, engine: Engine) -> None:
        # OpenLLMetry's span exported again with another end time: a second stored copy of
        # each of its records (the identity includes the time). Both copies are superseded,
        # however the first copy's state was read.
        sink = SqlUsageSink(engine)
        write_in_order(sink, [SDK_SPAN, OPENLLMETRY_SPAN])
        again = [r._replace(time_unix_nano=END_TIME + 1) for r in OPENLLMETRY_SPAN]
        write_in_order(sink, [again])

        with Session(engine) as session:
            states = session.execute(
                select(UsageRow.time_unix_nano, UsageRow.superseded_by).where(
                    UsageRow.tenant_id == TENANT, UsageRow.span_id == span_id(3)
                )
            ).all()
        assert sorted(states) == [(END_TIME, span_id(2))] * 3 + [(END_TIME + 1, span_id(2))] * 3
        assert billed(engine) == CALL


class TestSettlementSeeksByTrace:
    def test_no_query_reads_the_whole_tenant(self, engine: Engine) -> None:
        """Settlement's queries on SQLite seek by trace or response id, never on the tenant
        alone (regression: `(trace_id, span_id) IN (VALUES …)` read every record of the
        tenant, per batch: settlement cost grew with the store)."""
        if engine.dialect.name != "sqlite":
            pytest.skip("SQLite's query plans")
        sink = SqlUsageSink(engine)
        write_in_order(sink, [OPENINFERENCE_PARENT, SDK_SPAN])
        statements: list[tuple[str, Any]] = []

        def record(_conn: object, _cursor: object, sql: str, params: Any, *_: object) -> None:
            if sql.lstrip().startswith(("SELECT", "WITH")) and "usage_spans" in sql:
                statements.append((sql, params))

        event.listen(engine, "before_cursor_execute", record)
        try:
            # A child of a stored parent, with a stored duplicate: every settlement query.
            write_in_order(sink, [SDK_CHILD, OPENLLMETRY_SPAN])
        finally:
            event.remove(engine, "before_cursor_execute", record)

        assert len(statements) >= 4
        with engine.connect() as connection:
            for sql, params in statements:
                plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
                steps = [step[3] for step in plan if re.search(r"\b(s|usage_spans)\b", step[3])]
                assert steps, sql
                for step in steps:
                    assert step.startswith("SEARCH"), (step, sql)
                    assert not step.endswith("(tenant_key=?)"), (step, sql)


class TestEveryArrivalOrder:
    def test_every_permutation_bills_each_call_once(self, engine: Engine) -> None:
        spans = [SDK_SPAN, OPENLLMETRY_SPAN, OPENINFERENCE_PARENT, SDK_CHILD]
        expected = {meter: 2 * n for meter, n in CALL.items()} | {"output_reasoning_tokens": 0}
        first: dict[str, str] | None = None
        for n, order in enumerate(itertools.permutations(spans)):
            tenant = f"perm-{n}"
            sink = SqlUsageSink(engine)
            for records in order:
                sink.write(tenant, UsageBatch(records=records))
            assert billed(engine, tenant) == expected, order
            with Session(engine) as session:
                rows = session.execute(
                    select(UsageRow.span_id + "/" + UsageRow.meter, UsageRow.superseded_by).where(
                        UsageRow.tenant_id == tenant
                    )
                )
                states: dict[str, str] = {key: by for key, by in rows}
            first = first or states
            assert states == first  # the same records bill, whatever the order


class TestReceiversAtOnce:
    def test_concurrent_sinks_bill_each_call_once(self, engine: Engine) -> None:
        """Three sinks (three receivers) each write one span of the same call at the same
        moment (a barrier per call): the SDK span, its OpenLLMetry sibling and an
        OpenInference parent. Every call is billed once."""
        calls = 30
        spans = [
            [
                llm_span(100 + call, 2, CALL, parent=1, response_id=f"m{call}"),
                llm_span(100 + call, 3, CALL, parent=1, response_id=f"m{call}"),
                llm_span(100 + call, 1, CALL, parent=9),
            ]
            for call in range(calls)
        ]
        barrier = threading.Barrier(3)
        errors: list[BaseException] = []

        def receiver(which: int) -> None:
            sink = SqlUsageSink(engine)
            try:
                for call in range(calls):
                    barrier.wait()
                    sink.write(TENANT, UsageBatch(records=spans[call][which]))
            except BaseException as error:  # surfaced below
                errors.append(error)
                barrier.abort()

        threads = [threading.Thread(target=receiver, args=(which,)) for which in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert errors == []
        assert billed(engine) == {meter: calls * n for meter, n in CALL.items()}


class TestBillingQueriesSkipSuperseded:
    def test_rating_reads_each_call_once(self, engine: Engine) -> None:
        write_in_order(SqlUsageSink(engine), [SDK_SPAN, OPENLLMETRY_SPAN])

        with Session(engine) as session:
            groups = rating_usage(
                session,
                TENANT,
                datetime(2025, 12, 1, tzinfo=UTC),
                datetime(2026, 2, 1, tzinfo=UTC),
                None,
            )
        totals: dict[str, int] = {}
        for customer, group in groups:
            assert customer == CUSTOMER
            totals[group.meter] = totals.get(group.meter, 0) + group.quantity_micros
        assert totals == {meter: to_micros(n) for meter, n in CALL.items()}


class TestCanonicalProvider:
    @pytest.mark.parametrize(
        ("raw", "stored"),
        [
            pytest.param("openai.responses", "openai", id="vercel-openai-responses"),
            pytest.param("openai.chat", "openai", id="vercel-openai-chat"),
            pytest.param("anthropic.messages", "anthropic", id="vercel-anthropic"),
            pytest.param("Anthropic", "anthropic", id="openllmetry-anthropic"),
            pytest.param("gcp.vertex_ai", "google", id="otel-vertex"),
            pytest.param("in-house-llm", "in-house-llm", id="unknown-kept"),
        ],
    )
    def test_stored_by_canonical_id(self, engine: Engine, raw: str, stored: str) -> None:
        SqlUsageSink(engine).write(TENANT, UsageBatch(records=llm_span(1, 2, CALL, provider=raw)))

        with Session(engine) as session:
            providers = set(session.scalars(select(UsageRow.provider)))
        assert providers == {stored}


def agent_names(engine: Engine) -> dict[str, str]:
    with Session(engine) as session:
        rows = session.execute(
            select(UsageRow.span_id, UsageRow.agent_name).where(UsageRow.tenant_id == TENANT)
        )
        return dict(rows.all())


# A triage agent (span 1) hands off to a billing agent (span 2); LLM calls 3 and 4 sit under
# them, call 5 sits under the SDK-span parent 4 (no agent name of its own), call 8 under a
# nameless chain span (6, a "turn") of the billing agent.
AGENTS = [
    AgentSpan(trace_id(7), span_id(1), "", "triage"),
    AgentSpan(trace_id(7), span_id(2), span_id(1), "billing"),
    AgentSpan(trace_id(7), span_id(6), span_id(2), ""),
]
CALLS = [
    llm_span(7, 3, {"input_tokens": 10}, parent=1),
    llm_span(7, 4, {"input_tokens": 20}, parent=2),
    llm_span(7, 5, {"input_tokens": 20}, parent=4),
    llm_span(7, 8, {"input_tokens": 20}, parent=6),
]


class TestAgentNameInheritance:
    @pytest.mark.parametrize(
        "agents_first",
        [pytest.param(True, id="agents-first"), pytest.param(False, id="calls-first")],
    )
    def test_nearest_enclosing_agent(self, engine: Engine, agents_first: bool) -> None:
        sink = SqlUsageSink(engine)
        agents = UsageBatch(records=[], agent_spans=AGENTS)
        calls = [UsageBatch(records=records) for records in CALLS]
        for batch in [agents, *calls] if agents_first else [*calls, agents]:
            sink.write(TENANT, batch)

        assert agent_names(engine) == {
            span_id(3): "triage",
            span_id(4): "billing",
            span_id(5): "billing",
            span_id(8): "billing",
        }

    def test_many_traces_in_one_batch(self, engine: Engine) -> None:
        # One batch, three traces: the agent spans of two, calls of all three (the third
        # has no agent span); each call takes the name of its own trace's agent.
        sink = SqlUsageSink(engine)
        sink.write(
            TENANT,
            UsageBatch(
                records=[
                    *llm_span(10, 3, {"input_tokens": 1}, parent=1),
                    *llm_span(11, 3, {"input_tokens": 1}, parent=1),
                    *llm_span(12, 3, {"input_tokens": 1}, parent=1),
                ],
                agent_spans=[
                    AgentSpan(trace_id(10), span_id(1), "", "triage"),
                    AgentSpan(trace_id(11), span_id(1), "", "billing"),
                ],
            ),
        )

        with Session(engine) as session:
            rows = session.execute(
                select(UsageRow.trace_id, UsageRow.agent_name).where(UsageRow.tenant_id == TENANT)
            )
            names = dict(rows.all())
        assert names == {trace_id(10): "triage", trace_id(11): "billing", trace_id(12): ""}

    def test_own_agent_name_is_kept(self, engine: Engine) -> None:
        sink = SqlUsageSink(engine)
        sink.write(
            TENANT,
            UsageBatch(records=llm_span(7, 3, {"input_tokens": 1}, parent=2, agent_name="own")),
        )
        sink.write(TENANT, UsageBatch(records=[], agent_spans=AGENTS))

        assert agent_names(engine) == {span_id(3): "own"}

    def test_usage_without_agent_ancestor_stays_nameless(self, engine: Engine) -> None:
        sink = SqlUsageSink(engine)
        sink.write(TENANT, UsageBatch(records=[], agent_spans=AGENTS))
        sink.write(TENANT, UsageBatch(records=llm_span(7, 3, {"input_tokens": 1}, parent=42)))

        assert agent_names(engine) == {span_id(3): ""}


class TestSupersessionsRule:
    """The pure rule, on hand-made records."""

    def test_span_with_more_meters_then_smaller_span_wins(self) -> None:
        def record(span: int, meter: str) -> CallRecord:
            return CallRecord("t", span_id(span), meter, "anthropic", "", "m", "")

        # Span 3 reports two meters, spans 1 and 2 one each: 3 bills input_tokens; of
        # output_tokens only 3 and 1 report, 3 wins; cache reads only 2 reports.
        a = record(1, "output_tokens")
        b = record(2, "cache_read_tokens")
        c = record(3, "input_tokens")
        d = record(3, "output_tokens")
        e = record(4, "input_tokens")
        for records in itertools.permutations([a, b, c, d, e]):
            assert supersessions(records, {}) == {
                a.key: span_id(3),
                b.key: "",
                c.key: "",
                d.key: "",
                e.key: span_id(3),
            }

    def test_equal_spans_smaller_span_wins(self) -> None:
        first = CallRecord("t", span_id(5), "input_tokens", "openai", "", "r", "")
        second = CallRecord("t", span_id(6), "input_tokens", "openai", "", "r", "")

        assert supersessions([second, first], {}) == {first.key: "", second.key: span_id(5)}
