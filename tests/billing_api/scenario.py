"""One tenant with two customers, prices, a negotiated provider cost and usage, built
through the services themselves: the ground the caller rules are checked on."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.tables import to_unix_nano
from agentmeter.tenants import create_tenant
from billing_api.customers import service as customers
from billing_api.jobs.kinds import job_registry
from billing_api.jobs.worker import run_due_jobs
from billing_api.pricing import service as pricing
from billing_api.pricing.components import ChargeModel, Component
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord
from tests.billing_api.callers import staff

NOW = datetime(2026, 11, 15, 12, tzinfo=UTC)
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
MILLION = 1_000_000
INPUT = Component(
    name="input",
    meter="input_tokens",
    charge=ChargeModel.PER_UNIT,
    unit_price=Decimal("10"),
    per_units=MILLION,
)


@dataclass(frozen=True)
class Scenario:
    tenant_id: str
    book_id: str
    cost_id: str


def record(customer_id: str, tokens: int, at: datetime = NOW, trace_id: str = "") -> UsageRecord:
    """`tokens` input tokens of gpt-4o for `customer_id` ("" for unattributed) at `at`, in
    a trace of its own unless `trace_id` is given."""
    return UsageRecord(
        trace_id=trace_id or uuid.uuid4().hex,
        span_id=uuid.uuid4().hex[:16],
        meter="input_tokens",
        quantity=tokens,
        customer_id=customer_id,
        time_unix_nano=to_unix_nano(at),
        provider="openai",
        model="gpt-4o",
        operation="chat",
    )


def usage(engine: Engine, tenant_id: str, customer_id: str, tokens: int) -> None:
    """`record(customer_id, tokens)`, stored through the sink."""
    SqlUsageSink(engine).write(tenant_id, UsageBatch([record(customer_id, tokens)]))


def build(engine: Engine) -> Scenario:
    """acme and globex on one book, acme with an override, and a provider cost."""
    tenant_id = create_tenant(engine, "services").tenant_id
    admin = staff(tenant_id)
    usage(engine, tenant_id, "acme", 2_000_000)
    usage(engine, tenant_id, "globex", 5_000_000)
    usage(engine, tenant_id, "", 7_000)
    with Session(engine) as session, session.begin():
        customers.create_customer(session, admin, "acme", "Acme Inc")
        customers.create_customer(session, admin, "globex", "Globex Corp")
        book = pricing.create_price_book(session, admin, "list", "USD")
        pricing.create_version(session, admin, book.id, SINCE, [INPUT])
        pricing.create_override(session, admin, "acme", SINCE, [INPUT], note="contract")
        cost = pricing.create_provider_cost(
            session,
            admin,
            provider="openai",
            model="gpt-4o",
            meter="input_tokens",
            unit_cost_usd=Decimal("2"),
            per_units=MILLION,
            effective_from=SINCE,
        )
        scenario = Scenario(tenant_id, book.id, cost.id)
    # The negotiated cost reaches stored usage through its recost job.
    run_due_jobs(engine, job_registry())
    return scenario
