"""Draft invoices for bench/dashboard.py: one per customer for the period the billing page
shows by default (the last closed one), as a billing run leaves them, so the page is timed
with a full review queue (10,000 drafts at 10,000 customers). Inserted directly: how fast a
run drafts them is bench/invoicing.py's subject, not this one's."""

from __future__ import annotations

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import Customer, Invoice
from billing_api.invoicing.repository import new_id
from billing_api.invoicing.states import InvoiceStatus
from billing_api.periods import period_containing, previous_periods


def add_drafts(engine: Engine, tenant_id: str) -> int:
    """A draft of the last closed period for every customer of the tenant; how many."""
    period = previous_periods(period_containing(utcnow()), 1)[0]
    with Session(engine) as session, session.begin():
        customers = session.scalars(select(Customer.id).where(Customer.tenant_id == tenant_id))
        rows = [
            {"id": new_id(), "tenant_id": tenant_id, "customer_id": customer_id,
             "period": period.label, "period_start": period.start, "period_end": period.end,
             "status": InvoiceStatus.DRAFT, "currency": "USD", "subtotal_minor": 1000 + n,
             "total_minor": 1000 + n, "provider_cost_minor": 400, "margin_minor": 600 + n}
            for n, customer_id in enumerate(customers)
        ]  # fmt: skip
        if rows:
            session.execute(insert(Invoice), rows)
    return len(rows)
