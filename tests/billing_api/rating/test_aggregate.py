"""Rating sums the span tables directly (`aggregate_usage`), not the `usage_records` view:
its groups must be exactly what the view's billed records add up to, whatever the records
(superseded duplicates and aggregates, several token meters, tool calls, custom meters with
fractions, unknown costs, copies of a span at two end times, another tenant's usage)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from agentmeter.tables import UsageRow, to_unix_nano
from billing_api.pricing.components import FILTER_DIMENSIONS
from billing_api.rating.repository import aggregate_usage
from exporter.provider_costs import ProviderCostCatalog
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)
WHEN = to_unix_nano(datetime(2026, 3, 10, tzinfo=UTC))


def call(
    span: int, parent: int = 0, *, response: str = "", provider: str = "openai", **meters: int
) -> list[UsageRecord]:
    """An LLM span's token records (customer acme, trace 1)."""
    return [
        UsageRecord(
            trace_id=f"{1:032x}",
            span_id=f"{span:016x}",
            meter=meter,
            quantity=quantity,
            customer_id="acme",
            time_unix_nano=WHEN + span,
            provider=provider,
            model="gpt-4o" if provider == "openai" else "house-model",
            operation="chat",
            step="answer",
            parent_span_id=f"{parent:016x}" if parent else "",
            response_id=response,
        )
        for meter, quantity in meters.items()
    ]


def records() -> list[UsageRecord]:
    sdk = call(2, 1, response="resp-1", input_tokens=100, output_tokens=20, cache_read_tokens=5)
    instrumentation = call(3, 1, response="resp-1", input_tokens=100, output_tokens=21)
    aggregate = call(1, input_tokens=100, output_tokens=20)  # the agent's parent: superseded
    unpriced = call(4, response="resp-2", provider="house", input_tokens=7)
    tool = UsageRecord(
        trace_id=f"{1:032x}",
        span_id=f"{5:016x}",
        meter="tool_calls",
        quantity=1,
        customer_id="acme",
        time_unix_nano=WHEN + 5,
        tool="search",
        source="tool",
    )
    pages = tool._replace(meter="pages", quantity=Decimal("2.5"), source="custom")
    copy = call(2, 1, response="resp-1", input_tokens=100)[0]._replace(time_unix_nano=WHEN + 99)
    globex = call(6, input_tokens=50)[0]._replace(trace_id=f"{2:032x}", customer_id="globex")
    return [*sdk, *instrumentation, *aggregate, *unpriced, tool, pages, copy, globex]


def from_view(engine: Engine, tenant: str) -> dict[tuple[str, str, tuple[str, ...]], list[int]]:
    """(customer, meter, dimensions) → [quantity micros, known cost, unknown-cost records],
    summed over the view's billed records."""
    dims = [UsageRow.__table__.c[name] for name in FILTER_DIMENSIONS]
    query = (
        select(
            UsageRow.customer_id,
            UsageRow.meter,
            *dims,
            func.sum(UsageRow.quantity_micros),
            func.coalesce(func.sum(UsageRow.provider_cost_pico), 0),
            func.count() - func.count(UsageRow.provider_cost_pico),
        )
        .where(UsageRow.tenant_id == tenant, UsageRow.billed())
        .group_by(UsageRow.customer_id, UsageRow.meter, *dims)
    )
    with engine.connect() as connection:
        return {
            (customer, meter, tuple(values[:-3])): [int(v) for v in values[-3:]]
            for customer, meter, *values in connection.execute(query)
        }


def test_rating_sums_what_the_views_billed_records_add_up_to(engine: Engine) -> None:
    sink = SqlUsageSink(engine, ProviderCostCatalog())
    for tenant in ("tenant-a", "tenant-b"):
        for record in records():  # one record an export: every copy meets a stored one
            sink.write(tenant, UsageBatch(records=[record]))

    with Session(engine) as session:
        groups = aggregate_usage(session, "tenant-a", START, END, None)
    summed: dict[tuple[str, str, tuple[str, ...]], list[int]] = defaultdict(lambda: [0, 0, 0])
    for customer, group in groups:
        key = (customer, group.meter, tuple(value for _, value in group.dims))
        totals = (group.quantity_micros, group.cost_pico, group.unknown_cost_records)
        summed[key] = [a + b for a, b in zip(summed[key], totals, strict=True)]

    expected = from_view(engine, "tenant-a")
    assert dict(summed) == expected
    # The duplicate call and the aggregate parent are not billed; the unpriced call is.
    acme: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for (customer, meter, _), values in expected.items():
        if customer == "acme":
            acme[meter] = [a + b for a, b in zip(acme[meter], values, strict=True)]
    assert acme["input_tokens"][0] == (100 + 100 + 7) * 10**6  # span 2, its copy, span 4
    assert acme["input_tokens"][2] == 1  # the house model has no known cost
    assert acme["pages"][0] == 2_500_000
    assert acme["tool_calls"][0] == 10**6
    with Session(engine) as session:
        only_globex = aggregate_usage(session, "tenant-a", START, END, ["globex"])
    assert [(c, g.meter, g.quantity_micros) for c, g in only_globex] == [
        ("globex", "input_tokens", 50 * 10**6)
    ]
