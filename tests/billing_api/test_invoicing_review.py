"""Review follow-ups on both backends: an adjustment that usage has outgrown blocks
finalizing; registering an unregistered id settles the run's exception; budgets only
compare in their own currency.

Prices and the helpers are those of test_late_usage.py (input 3.00 per 10^6 tokens).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import Budget, to_unix_nano
from billing_api.errors import ConflictError
from billing_api.invoicing import repository, review
from billing_api.invoicing.finalize import finalize_invoice
from billing_api.invoicing.states import ExceptionKind
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord
from tests.billing_api.callers import staff
from tests.billing_api.test_late_usage import bill, setup_tenant, write_span

NOV = datetime(2026, 11, 10, tzinfo=UTC)


def _open_types(engine: Engine, tenant_id: str, invoice_id: str) -> list[str]:
    with Session(engine) as session:
        found = repository.list_exceptions(session, tenant_id, invoice_id=invoice_id)
        return sorted(e.type for e in found if e.status == "open")


class TestOutdatedAdjustment:
    def test_usage_growing_under_an_adjustment_blocks_until_confirmed(self, engine: Engine) -> None:
        tenant_id = setup_tenant(engine)
        write_span(engine, tenant_id, NOV, 1_000_000)  # input line 300 cents
        invoice = bill(engine, tenant_id, "2026-11")
        with Session(engine) as session, session.begin():
            (line,) = [x for x in repository.lines(session, invoice.id) if x.meter]
            review.adjust_line(
                session, staff(tenant_id, actor="amy"), invoice.id, line.id, amount=Decimal("2.50"),
                reason="goodwill",
            )  # fmt: skip
        # The same usage re-rated: the adjustment stands, nothing to confirm.
        invoice = bill(engine, tenant_id, "2026-11")
        assert ExceptionKind.ADJUSTMENT_OUTDATED not in _open_types(engine, tenant_id, invoice.id)
        assert invoice.subtotal_minor == 250 + 4900

        write_span(engine, tenant_id, NOV, 1_000_000)  # now rates 600
        invoice = bill(engine, tenant_id, "2026-11")
        assert ExceptionKind.ADJUSTMENT_OUTDATED in _open_types(engine, tenant_id, invoice.id)
        assert invoice.subtotal_minor == 250 + 4900  # kept, but flagged
        with Session(engine) as session, session.begin(), pytest.raises(ConflictError):
            finalize_invoice(session, staff(tenant_id, actor="amy"), invoice.id, now=utcnow())


class TestRegisterFromRun:
    def test_registering_settles_the_runs_exception(self, engine: Engine) -> None:
        tenant_id = setup_tenant(engine)
        record = UsageRecord(uuid.uuid4().hex, "1" * 16, "input_tokens", 1000, "hooli", 1)
        SqlUsageSink(engine).write(
            tenant_id, UsageBatch([record._replace(time_unix_nano=to_unix_nano(NOV))])
        )
        bill(engine, tenant_id, "2026-11")
        assert _run_exceptions(engine, tenant_id) == {("unregistered_customer", "open")}
        with Session(engine) as session, session.begin():
            invoice = review.register_customer(
                session, staff(tenant_id, actor="amy"), "2026-11", customer_id="hooli",
                name="Hooli", email=None,
            )  # fmt: skip
            assert invoice is not None and invoice.customer_id == "hooli"
        assert _run_exceptions(engine, tenant_id) == {("unregistered_customer", "resolved")}


def _run_exceptions(engine: Engine, tenant_id: str) -> set[tuple[str, str]]:
    with Session(engine) as session:
        found = repository.exceptions_in_scope(session, tenant_id, "run:2026-11")
        return {(e.type, e.status) for e in found}


class TestBudgetCurrency:
    def test_a_budget_in_another_currency_is_not_compared(self, engine: Engine) -> None:
        tenant_id = setup_tenant(engine)
        write_span(engine, tenant_id, NOV, 1_000_000)
        with Session(engine) as session, session.begin():
            session.add(
                Budget(
                    tenant_id=tenant_id, customer_id="acme", currency="EUR", limit_minor=100,
                    thresholds=[100],
                )
            )  # fmt: skip
        invoice = bill(engine, tenant_id, "2026-11")
        assert "budget_exceeded" not in _open_types(engine, tenant_id, invoice.id)
        with Session(engine) as session, session.begin():
            budget = session.get(Budget, (tenant_id, "acme"))
            assert budget is not None
            budget.currency = "USD"
        invoice = bill(engine, tenant_id, "2026-11")
        assert "budget_exceeded" in _open_types(engine, tenant_id, invoice.id)
