"""Usage that arrives after its period's invoice was finalized, on SQLite and PostgreSQL.

October is billed and finalized; then more October usage is written (the SQL usage sink
stamps the time it was received); then November is billed. With the default policy
`adjust_next`, November's draft carries a prior-period line for the difference between
October re-rated with everything now known and what October's invoices already billed, and
a late_usage warning; re-running does not bill it twice. With `exception_only`, nothing is
billed and the October invoice gets an exception instead.

Prices (USD): input_tokens 3.00 per 10^6, output_tokens 12.00 per 10^6, platform 49.00.

Hand-worked amounts (cents, each line rounded once, half up):
- October as finalized: input 1 000 000 → 3.00 → 300; output 100 400 → 1.2048 → 120;
  platform 4900. Subtotal 5320.
- Late October span: 250 000 input, 400 output. October re-rated: input 1 250 000 →
  3.75 → 375; output 100 800 → 1.2096 → 121; platform 4900: 5396. Adjustment
  5396 − 5320 = 76. (Rating the late span alone would give 75 + 0.0048 → 0 = 75: the
  difference of the re-rated period is what the customer owes.)
- November: input 500 000 → 1.50 → 150; output 50 000 → 0.60 → 60; platform 4900: 5110;
  with the adjustment 5186.
- A second late October span (100 000 input) after November was finalized: October now
  input 1 350 000 → 4.05 → 405; output 121; platform 4900: 5426. Already billed 5320 + 76
  = 5396, so December adjusts 30: December = platform 4900 + 30 = 4930.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from itertools import count
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agentmeter.tables import (
    BillingException,
    Customer,
    Invoice,
    InvoiceLine,
    PriceBook,
    PriceComponent,
    PriceVersion,
    Tenant,
    to_unix_nano,
)
from agentmeter.tenants import create_tenant
from billing_api.invoicing import repository
from billing_api.invoicing.finalize import finalize_invoice
from billing_api.invoicing.runs import execute_run, start_run
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord
from tests.billing_api.callers import staff

_spans = count(1)
# When runs are started: December 2026 (billed here) must have begun.
BILLED_AT = datetime(2026, 12, 15, tzinfo=UTC)

COMPONENTS: list[dict[str, Any]] = [
    {
        "name": "input",
        "meter": "input_tokens",
        "charge": "per_unit",
        "unit_price": Decimal("3.00"),
        "per_units": 1_000_000,
    },
    {
        "name": "output",
        "meter": "output_tokens",
        "charge": "per_unit",
        "unit_price": Decimal("12.00"),
        "per_units": 1_000_000,
    },
    {"name": "platform", "charge": "flat_fee", "amount": Decimal("49.00")},
]


def setup_tenant(engine: Engine, components: Sequence[dict[str, Any]] = COMPONENTS) -> str:
    """A tenant with the price book above (or `components`) and one customer, acme."""
    tenant_id = create_tenant(engine, "late usage").tenant_id
    book_id, version_id = uuid.uuid4().hex, uuid.uuid4().hex
    with Session(engine) as session, session.begin():
        session.add(
            PriceBook(
                id=book_id, tenant_id=tenant_id, name="standard", currency="USD", is_default=True
            )
        )
        session.add(Customer(tenant_id=tenant_id, id="acme", name="Acme Inc"))
        session.flush()
        session.add(
            PriceVersion(
                id=version_id,
                book_id=book_id,
                number=1,
                effective_from=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )
        session.flush()
        session.add_all(
            PriceComponent(
                id=uuid.uuid4().hex, version_id=version_id, position=p, filters={}, **fields
            )
            for p, fields in enumerate(components)
        )
    return tenant_id


def write_span(
    engine: Engine,
    tenant_id: str,
    at: datetime,
    input_tokens: int,
    output_tokens: int = 0,
    customer: str = "acme",
) -> None:
    """One chat span of a customer's (acme's unless told), through the SQL usage sink
    (which stamps received time)."""
    n = next(_spans)
    trace, span = uuid.uuid4().hex, f"{n:016x}"
    common = {"provider": "openai", "model": "gpt-4o", "operation": "chat"}
    records = [
        UsageRecord(trace, span, "input_tokens", input_tokens, customer, to_unix_nano(at), **common)
    ]
    if output_tokens:
        records.append(
            UsageRecord(
                trace, span, "output_tokens", output_tokens, customer, to_unix_nano(at), **common
            )
        )
    SqlUsageSink(engine).write(tenant_id, UsageBatch(records))


def run(engine: Engine, tenant_id: str, period: str) -> None:
    """Run billing for `period`."""
    with Session(engine) as session, session.begin():
        run_id = start_run(session, staff(tenant_id), period, now=BILLED_AT).id
    assert execute_run(engine, tenant_id, run_id).status == "completed"


def bill(engine: Engine, tenant_id: str, period: str) -> Invoice:
    """Run billing for `period` and return acme's invoice of it."""
    run(engine, tenant_id, period)
    return invoice_of(engine, tenant_id, period)


def invoices_of(
    engine: Engine, tenant_id: str, period: str, customer: str = "acme"
) -> Sequence[Invoice]:
    with Session(engine) as session:
        return repository.list_invoices(session, tenant_id, period=period, customer_id=customer)


def invoice_of(engine: Engine, tenant_id: str, period: str, customer: str = "acme") -> Invoice:
    (found,) = invoices_of(engine, tenant_id, period, customer)
    return found


def finalize(engine: Engine, tenant_id: str, invoice_id: str) -> Invoice:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        return finalize_invoice(
            session,
            staff(tenant_id),
            invoice_id,
            now=datetime.now(UTC),
            early_reason="test: finalized while the wall clock is still in the period",
        )


def lines(engine: Engine, invoice_id: str) -> list[InvoiceLine]:
    with Session(engine) as session:
        return repository.lines(session, invoice_id)


def amounts(found: Sequence[InvoiceLine]) -> list[tuple[str, str, int]]:
    return [(line.kind, line.description.split(" · ")[0], line.amount_minor) for line in found]


def exceptions(
    engine: Engine, tenant_id: str, invoice_id: str, kind: str = "late_usage"
) -> list[BillingException]:
    with Session(engine) as session:
        return [
            e
            for e in repository.list_exceptions(session, tenant_id, invoice_id=invoice_id)
            if e.type == kind
        ]


def billed_october(engine: Engine) -> tuple[str, Invoice]:
    """A tenant whose October (5320) is finalized."""
    tenant_id = setup_tenant(engine)
    write_span(engine, tenant_id, datetime(2026, 10, 5, tzinfo=UTC), 600_000, 60_000)
    write_span(engine, tenant_id, datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC), 400_000, 40_400)
    october = bill(engine, tenant_id, "2026-10")
    # input 1 000 000 → 300; output 100 400 → 1.2048 → 120; platform 4900.
    assert october.subtotal_minor == 5320
    final = finalize(engine, tenant_id, october.id)
    assert final.number is not None
    return tenant_id, final


def set_policy(engine: Engine, tenant_id: str, policy: str) -> None:
    with Session(engine) as session, session.begin():
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        tenant.late_usage_policy = policy


def november_usage(engine: Engine, tenant_id: str) -> None:
    write_span(engine, tenant_id, datetime(2026, 11, 1, tzinfo=UTC), 200_000, 20_000)
    write_span(engine, tenant_id, datetime(2026, 11, 20, tzinfo=UTC), 300_000, 30_000)


class TestAdjustNext:
    def test_late_usage_billed_once_on_the_next_invoice(self, engine: Engine) -> None:
        tenant_id, october = billed_october(engine)
        november_usage(engine, tenant_id)
        # Late: one October span, received after October was finalized.
        write_span(engine, tenant_id, datetime(2026, 10, 20, tzinfo=UTC), 250_000, 400)

        for _ in range(2):  # the second run must not bill the difference again
            november = bill(engine, tenant_id, "2026-11")
            assert amounts(lines(engine, november.id)) == [
                ("rated", "input", 150),
                ("rated", "output", 60),
                ("rated", "platform", 4900),
                ("prior_period", "Adjustment for 2026-10 (usage received late)", 76),
            ]
            prior = lines(engine, november.id)[-1]
            assert prior.adjusts_period == "2026-10"
            assert november.subtotal_minor == 5110 + 76  # 5186
            assert november.total_minor == 5186
            (warning,) = exceptions(engine, tenant_id, november.id)
            assert (warning.severity, warning.status) == ("warning", "open")
            assert warning.evidence == {
                "invoice": october.number,
                "period": "2026-10",
                "late_records": 2,
                "late_spans": 1,
                "invoiced_minor": 5320,
                "rerated_minor": 5396,
                "adjustment_minor": 76,
            }
        # October itself never changes.
        again = invoice_of(engine, tenant_id, "2026-10")
        assert (again.status, again.number, again.subtotal_minor) == (
            "finalized",
            october.number,
            5320,
        )
        assert exceptions(engine, tenant_id, october.id) == []

        # November is finalized with the adjustment; more October usage then arrives:
        # December bills only what is still owed (5426 − 5320 − 76 = 30).
        finalize(engine, tenant_id, november.id)
        write_span(engine, tenant_id, datetime(2026, 10, 21, tzinfo=UTC), 100_000)
        for _ in range(2):
            december = bill(engine, tenant_id, "2026-12")
            assert amounts(lines(engine, december.id)) == [
                ("rated", "platform", 4900),
                ("prior_period", "Adjustment for 2026-10 (usage received late)", 30),
            ]
            assert december.subtotal_minor == 4930
            (warning,) = exceptions(engine, tenant_id, december.id)
            assert warning.evidence["invoiced_minor"] == 5320 + 76
            assert warning.evidence["rerated_minor"] == 5426
            assert warning.evidence["adjustment_minor"] == 30
            assert (warning.evidence["late_records"], warning.evidence["late_spans"]) == (3, 2)

    def test_late_usage_owing_nothing_is_reported_on_the_finalized_invoice(
        self, engine: Engine
    ) -> None:
        """One late October output token: output 100 401 → 1.204812 → 120, October still
        5320. Nothing to bill: November (5110) has no adjustment and no warning; the
        exception is on October's invoice, the same one on every run (not a new warning
        on each later draft)."""
        tenant_id, october = billed_october(engine)
        november_usage(engine, tenant_id)
        write_span(engine, tenant_id, datetime(2026, 10, 20, tzinfo=UTC), 0, 1)
        raised_ids = set()
        for period in ("2026-11", "2026-11", "2026-12"):
            later = bill(engine, tenant_id, period)
            assert [line.kind for line in lines(engine, later.id)] == ["rated"] * (
                3 if period == "2026-11" else 1
            )
            assert exceptions(engine, tenant_id, later.id) == []
            (raised,) = exceptions(engine, tenant_id, october.id)
            assert raised.evidence == {"late_records": 2, "late_spans": 1}
            raised_ids.add(raised.id)
        assert len(raised_ids) == 1
        assert invoice_of(engine, tenant_id, "2026-11").subtotal_minor == 5110

    def test_no_late_usage_no_line(self, engine: Engine) -> None:
        tenant_id, october = billed_october(engine)
        november_usage(engine, tenant_id)
        november = bill(engine, tenant_id, "2026-11")
        assert [line.kind for line in lines(engine, november.id)] == ["rated"] * 3
        assert november.subtotal_minor == 5110
        assert exceptions(engine, tenant_id, november.id) == []
        assert exceptions(engine, tenant_id, october.id) == []


class TestExceptionOnly:
    def test_late_usage_raised_on_the_finalized_invoice(self, engine: Engine) -> None:
        tenant_id, october = billed_october(engine)
        set_policy(engine, tenant_id, "exception_only")
        november_usage(engine, tenant_id)
        write_span(engine, tenant_id, datetime(2026, 10, 20, tzinfo=UTC), 250_000, 400)

        first_id = None
        for _ in range(2):
            november = bill(engine, tenant_id, "2026-11")
            assert [line.kind for line in lines(engine, november.id)] == ["rated"] * 3
            assert november.subtotal_minor == 5110  # nothing billed for October
            assert exceptions(engine, tenant_id, november.id) == []
            (raised,) = exceptions(engine, tenant_id, october.id)
            first_id = first_id or raised.id
            assert raised.id == first_id  # the same exception on a re-run, not a new one
            assert (raised.severity, raised.status) == ("warning", "open")
            assert (raised.period, raised.customer_id) == ("2026-10", "acme")
            assert raised.evidence == {"late_records": 2, "late_spans": 1}
            assert october.number is not None and october.number in raised.message
        again = invoice_of(engine, tenant_id, "2026-10")
        assert (again.status, again.subtotal_minor) == ("finalized", 5320)
        with Session(engine) as session:
            scopes = session.scalars(
                select(BillingException.scope).where(BillingException.type == "late_usage")
            ).all()
        assert scopes == [f"late:{october.id}"]


# Usage only, no platform fee: a customer without usage has nothing to bill.
USAGE_ONLY = [c for c in COMPONENTS if c["name"] != "platform"]


def churned_in_october(engine: Engine, policy: str) -> tuple[str, Invoice]:
    """acme, on a book without fees, uses October (420) and nothing after; a registered
    customer, idle, never uses anything.

    October as finalized: input 1 000 000 → 300; output 100 400 → 1.2048 → 120: 420.
    """
    tenant_id = setup_tenant(engine, USAGE_ONLY)
    set_policy(engine, tenant_id, policy)
    with Session(engine) as session, session.begin():
        session.add(Customer(tenant_id=tenant_id, id="idle", name="Idle Ltd"))
    write_span(engine, tenant_id, datetime(2026, 10, 5, tzinfo=UTC), 600_000, 60_000)
    write_span(engine, tenant_id, datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC), 400_000, 40_400)
    october = bill(engine, tenant_id, "2026-10")
    assert october.subtotal_minor == 420
    assert invoices_of(engine, tenant_id, "2026-10", "idle") == []  # nothing to bill
    return tenant_id, finalize(engine, tenant_id, october.id)


class TestChurnedCustomer:
    """Late October usage of a customer with no usage, fees or commitments in November is
    billed or reported all the same (it used to be billed nowhere, silently).

    Late span: 250 000 input, 400 output. October re-rated: input 1 250 000 → 375;
    output 100 800 → 1.2096 → 121: 496. Adjustment 496 − 420 = 76.
    """

    def test_adjust_next_drafts_the_adjustment_alone(self, engine: Engine) -> None:
        tenant_id, october = churned_in_october(engine, "adjust_next")
        write_span(engine, tenant_id, datetime(2026, 10, 20, tzinfo=UTC), 250_000, 400)
        for _ in range(2):  # a re-run converges on the same draft
            november = bill(engine, tenant_id, "2026-11")
            assert amounts(lines(engine, november.id)) == [
                ("prior_period", "Adjustment for 2026-10 (usage received late)", 76),
            ]
            assert (november.subtotal_minor, november.total_minor) == (76, 76)
            (warning,) = exceptions(engine, tenant_id, november.id)
            assert warning.evidence["adjustment_minor"] == 76
            assert (warning.evidence["invoiced_minor"], warning.evidence["rerated_minor"]) == (
                420,
                496,
            )
        assert invoices_of(engine, tenant_id, "2026-11", "idle") == []
        assert exceptions(engine, tenant_id, october.id) == []

        # Once November is finalized the late usage is settled: December has nothing for
        # acme (no draft, no exception), and November's adjustment is not billed again.
        finalize(engine, tenant_id, november.id)
        run(engine, tenant_id, "2026-12")
        assert invoices_of(engine, tenant_id, "2026-12") == []
        assert exceptions(engine, tenant_id, october.id) == []

        # More October usage after that (100 000 input: 1 350 000 → 405; 405 + 121 = 526,
        # billed 420 + 76 = 496): December drafts the 30 still owed.
        write_span(engine, tenant_id, datetime(2026, 10, 21, tzinfo=UTC), 100_000)
        december = bill(engine, tenant_id, "2026-12")
        assert amounts(lines(engine, december.id)) == [
            ("prior_period", "Adjustment for 2026-10 (usage received late)", 30),
        ]

    def test_adjust_next_without_a_difference_reports_on_the_finalized_invoice(
        self, engine: Engine
    ) -> None:
        # One late output token: output 100 401 → 1.204812 → 120, October still 420. No
        # adjustment to bill, so no empty draft; the exception goes on October's invoice.
        tenant_id, october = churned_in_october(engine, "adjust_next")
        write_span(engine, tenant_id, datetime(2026, 10, 20, tzinfo=UTC), 0, 1)
        run(engine, tenant_id, "2026-11")
        assert invoices_of(engine, tenant_id, "2026-11") == []
        (raised,) = exceptions(engine, tenant_id, october.id)
        assert raised.evidence == {"late_records": 2, "late_spans": 1}

    def test_exception_only_reports_on_the_finalized_invoice(self, engine: Engine) -> None:
        tenant_id, october = churned_in_october(engine, "exception_only")
        write_span(engine, tenant_id, datetime(2026, 10, 20, tzinfo=UTC), 250_000, 400)
        first_id = None
        for _ in range(2):
            run(engine, tenant_id, "2026-11")
            assert invoices_of(engine, tenant_id, "2026-11") == []  # nothing billed
            (raised,) = exceptions(engine, tenant_id, october.id)
            first_id = first_id or raised.id
            assert raised.id == first_id
            assert (raised.status, raised.customer_id, raised.period) == ("open", "acme", "2026-10")
            assert raised.evidence == {"late_records": 2, "late_spans": 1}
        assert (invoice_of(engine, tenant_id, "2026-10").subtotal_minor) == 420

    def test_unregistered_id_idle_next_month(self, engine: Engine) -> None:
        """Usage under an id nobody registered, finalized in October, then late October
        usage and nothing in November: drafted with the adjustment and flagged on the run.

        ghost's October: input 100 000 → 0.30 → 30. Late: 100 000 more → 200 000 → 60:
        adjustment 30."""
        tenant_id = setup_tenant(engine, USAGE_ONLY)
        write_span(engine, tenant_id, datetime(2026, 10, 5, tzinfo=UTC), 100_000, customer="ghost")
        run(engine, tenant_id, "2026-10")
        october = invoice_of(engine, tenant_id, "2026-10", "ghost")
        assert october.subtotal_minor == 30
        finalize(engine, tenant_id, october.id)
        write_span(engine, tenant_id, datetime(2026, 10, 6, tzinfo=UTC), 100_000, customer="ghost")
        run(engine, tenant_id, "2026-11")
        november = invoice_of(engine, tenant_id, "2026-11", "ghost")
        assert amounts(lines(engine, november.id)) == [
            ("prior_period", "Adjustment for 2026-10 (usage received late)", 30),
        ]
        with Session(engine) as session:
            flagged = repository.exceptions_in_scope(session, tenant_id, "run:2026-11")
        assert [(e.type, e.fingerprint) for e in flagged] == [("unregistered_customer", "ghost")]
