"""Exception rules: `checks.invoice_findings` as a pure function, and how `sync_exceptions`
keeps a scope's exceptions in step with the findings of each re-run (on SQLite and
PostgreSQL), plus the rules going through real billing runs: a review threshold and its
waiver, a spike against the trailing periods, a margin from stored provider costs, a
budget."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.tables import (
    BillingException,
    Budget,
    Customer,
    PriceBook,
    PriceComponent,
    PriceVersion,
    Tenant,
    to_unix_nano,
)
from agentmeter.tenants import create_tenant
from billing_api.errors import ConflictError
from billing_api.invoicing import repository
from billing_api.invoicing.checks import Finding, ReviewRules, invoice_findings
from billing_api.invoicing.exceptions import set_exception_status, sync_exceptions
from billing_api.invoicing.finalize import finalize_invoice
from billing_api.invoicing.runs import execute_run, start_run
from billing_api.invoicing.states import ExceptionKind, ExceptionStatus, Severity
from billing_api.periods import month_period
from billing_api.rating.engine import PricedLine, RatedPeriod, UnpricedUsage
from exporter.provider_costs import ProviderCostCatalog
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord
from tests.billing_api.callers import staff

D = Decimal
NOVEMBER = month_period("2026-11")
RULES = ReviewRules()  # spike factor 3, margin floor 0 %, no review threshold


# --- Building rated periods ------------------------------------------------------------


def usage_line(
    name: str,
    amount: str,
    cost: str | None,
    *,
    meter: str = "input_tokens",
    unknown: int = 0,
) -> PricedLine:
    """A rated usage line: `amount` and provider `cost` in USD (None: cost unknown)."""
    return PricedLine(
        currency="USD",
        component_id=f"id-{name}",
        component_name=name,
        charge="per_unit",
        meter=meter,
        version_id="v1",
        version_number=1,
        override_id=None,
        quantity=D(1000),
        unit_price=D("0.01"),
        amount=D(amount),
        provider_cost=D(cost or 0),
        unknown_cost_records=unknown if cost is None else 0,
    )


def flat_fee(amount: str) -> PricedLine:
    return PricedLine(
        currency="USD",
        component_id="id-platform",
        component_name="platform",
        charge="flat_fee",
        meter=None,
        version_id="v1",
        version_number=1,
        override_id=None,
        quantity=D(1),
        unit_price=D(amount),
        amount=D(amount),
    )


def rated(*lines: PricedLine, unpriced: Sequence[UnpricedUsage] = ()) -> RatedPeriod:
    return RatedPeriod(
        customer_id="acme",
        period=NOVEMBER,
        currency="USD",
        book_id="book",
        lines=list(lines),
        unpriced=list(unpriced),
        versions=[1],
    )


def findings(
    period: RatedPeriod,
    *,
    rules: ReviewRules = RULES,
    trailing: Mapping[str, list[int]] | None = None,
    usage: Mapping[str, int] | None = None,
    total_minor: int | None = None,
    budget: int | None = None,
) -> list[Finding]:
    return invoice_findings(
        period,
        rules=rules,
        trailing_usage=trailing or {},
        period_usage=usage or {},
        total_minor=period.subtotal_minor if total_minor is None else total_minor,
        budget_limit_minor=budget,
    )


def kinds(found: Sequence[Finding]) -> list[tuple[str, str, str]]:
    return [(f.type, f.severity, f.fingerprint) for f in found]


# --- invoice_findings ------------------------------------------------------------------


class TestNothingToSay:
    def test_a_clean_draft_has_no_findings(self) -> None:
        # 10.00 billed for 5.00 of cost, a flat fee, usage as usual, no budget.
        period = rated(usage_line("input", "10.00", "5.00"), flat_fee("49.00"))
        assert findings(period, trailing={"input_tokens": [100, 100, 100]}, usage={}) == []


class TestUnpricedUsage:
    def test_blocking_with_a_fingerprint_of_meter_and_dimensions(self) -> None:
        unpriced = UnpricedUsage(
            "output_tokens",
            (("model", "gpt-4o-mini"), ("provider", "openai"), ("tool", "")),
            D(5000),
            NOVEMBER.start,
            NOVEMBER.end,
        )
        (finding,) = findings(rated(flat_fee("49.00"), unpriced=[unpriced]))
        assert (finding.type, finding.severity) == (ExceptionKind.UNPRICED_USAGE, Severity.BLOCKING)
        # Empty dimensions are left out of the fingerprint.
        assert finding.fingerprint == "output_tokens|model=gpt-4o-mini,provider=openai"
        assert finding.evidence == {
            "meter": "output_tokens",
            "dimensions": {"model": "gpt-4o-mini", "provider": "openai", "tool": ""},
            "quantity": "5000",
        }


class TestUnknownProviderCost:
    def test_warning_per_line_and_no_margin_findings(self) -> None:
        period = rated(usage_line("house", "1.11", None, unknown=2), flat_fee("49.00"))
        # Margin unknown: neither the line nor the invoice is judged against the floor.
        rules = ReviewRules(margin_floor_percent=D(50))
        assert kinds(findings(period, rules=rules)) == [
            (ExceptionKind.UNKNOWN_PROVIDER_COST, Severity.WARNING, "id-house")
        ]
        (finding,) = findings(period)
        assert finding.evidence == {"component": "house", "records": 2}


class TestUsageSpike:
    @pytest.mark.parametrize(
        ("history", "quantity", "spikes"),
        [
            pytest.param([100, 100, 100], 301, True, id="above-3x-average"),
            pytest.param([100, 100, 100], 300, False, id="exactly-3x-is-not-a-spike"),
            pytest.param([50, 100, 150], 301, True, id="average-of-uneven-history"),
            pytest.param([], 10**12, False, id="no-history-is-new-not-spiking"),
            # One billed period of history: its own usage is the average (300, not
            # 300 / 3 = 100 as a fixed divisor gave): 3 × 300 = 900.
            pytest.param([300], 901, True, id="one-period-of-history"),
            pytest.param([300], 900, False, id="one-period-of-history-at-3x"),
            pytest.param([300], 301, False, id="one-period-of-history-steady"),
            # Two billed periods, the meter unused in one: (0 + 300) / 2 = 150; 3× = 450.
            pytest.param([0, 300], 451, True, id="unused-billed-period-counts-zero"),
            pytest.param([0, 300], 450, False, id="unused-billed-period-at-3x"),
            # Billed but never used: a zero average, the meter is new, not spiking.
            pytest.param([0, 0], 10**12, False, id="billed-without-usage-is-new"),
        ],
    )
    def test_factor_times_average_of_billed_periods(
        self, history: list[int], quantity: int, spikes: bool
    ) -> None:
        found = findings(
            rated(flat_fee("49.00")),
            trailing={"input_tokens": history} if history else {},
            usage={"input_tokens": quantity},
        )
        expected = [(ExceptionKind.USAGE_SPIKE, Severity.WARNING, "input_tokens")] if spikes else []
        assert kinds(found) == expected

    def test_factor_is_the_tenants(self) -> None:
        rules = ReviewRules(spike_factor=D("1.5"))
        trailing = {"input_tokens": [100, 100, 100]}
        assert findings(rated(), rules=rules, trailing=trailing, usage={"input_tokens": 150}) == []
        (spike,) = findings(rated(), rules=rules, trailing=trailing, usage={"input_tokens": 151})
        assert spike.evidence == {
            "meter": "input_tokens",
            "quantity_micros": 151,
            "trailing_micros": [100, 100, 100],
            "factor": "1.5",
        }
        assert "1.5×" in spike.message

    def test_each_meter_against_its_own_history(self) -> None:
        found = findings(
            rated(),
            trailing={"input_tokens": [100, 100, 100], "output_tokens": [10, 10, 10]},
            usage={"input_tokens": 200, "output_tokens": 31, "tool_calls": 99},
        )
        assert kinds(found) == [(ExceptionKind.USAGE_SPIKE, Severity.WARNING, "output_tokens")]


class TestMarginFloor:
    def test_line_below_the_floor(self) -> None:
        # input: 10.00 billed, 9.50 cost: margin 50 on 1000 = 5 % < 10 %. The flat fee
        # lifts the invoice: (1000 + 4900 − 950) / 5900 = 84 %, above the floor.
        period = rated(usage_line("input", "10.00", "9.50"), flat_fee("49.00"))
        rules = ReviewRules(margin_floor_percent=D(10))
        (finding,) = findings(period, rules=rules)
        assert (finding.type, finding.severity, finding.fingerprint) == (
            ExceptionKind.LOW_MARGIN,
            Severity.WARNING,
            "line:id-input",
        )
        assert finding.evidence == {
            "component": "input",
            "amount_minor": 1000,
            "provider_cost_minor": 950,
            "margin_minor": 50,
        }

    def test_at_the_floor_is_not_below(self) -> None:
        # 10.00 billed, 9.00 cost: exactly 10 %.
        period = rated(usage_line("input", "10.00", "9.00"))
        assert findings(period, rules=ReviewRules(margin_floor_percent=D(10))) == []

    def test_line_and_invoice_below(self) -> None:
        # input 10 %, output 50 %; invoice (2000 − 900 − 500) / 2000 = 30 % < 40 %.
        period = rated(
            usage_line("input", "10.00", "9.00"),
            usage_line("output", "10.00", "5.00", meter="output_tokens"),
        )
        found = findings(period, rules=ReviewRules(margin_floor_percent=D(40)))
        assert kinds(found) == [
            (ExceptionKind.LOW_MARGIN, Severity.WARNING, "line:id-input"),
            (ExceptionKind.LOW_MARGIN, Severity.WARNING, "invoice"),
        ]
        assert found[1].evidence == {"subtotal_minor": 2000, "margin_minor": 600}

    def test_selling_below_cost_is_flagged_with_the_default_floor(self) -> None:
        # 1.00 billed for 1.20 of cost: margin −20 on the line and on the invoice.
        period = rated(usage_line("input", "1.00", "1.20"))
        assert kinds(findings(period)) == [
            (ExceptionKind.LOW_MARGIN, Severity.WARNING, "line:id-input"),
            (ExceptionKind.LOW_MARGIN, Severity.WARNING, "invoice"),
        ]

    def test_a_negative_floor_accepts_a_smaller_loss(self) -> None:
        # 10.00 billed for 10.50 of cost: −5 %, above a floor of −10 %.
        period = rated(usage_line("input", "10.00", "10.50"))
        assert findings(period, rules=ReviewRules(margin_floor_percent=D(-10))) == []


class TestBudget:
    @pytest.mark.parametrize(
        ("limit", "exceeded"),
        [
            pytest.param(5000, True, id="over"),
            pytest.param(5900, False, id="at-the-limit"),
            pytest.param(None, False, id="no-budget"),
        ],
    )
    def test_subtotal_against_the_limit(self, limit: int | None, exceeded: bool) -> None:
        period = rated(usage_line("input", "10.00", "5.00"), flat_fee("49.00"))  # 5900
        found = findings(period, budget=limit)
        if not exceeded:
            assert found == []
            return
        (finding,) = found
        assert (finding.type, finding.severity) == (ExceptionKind.BUDGET_EXCEEDED, Severity.WARNING)
        assert finding.evidence == {"subtotal_minor": 5900, "limit_minor": 5000}


class TestReviewThreshold:
    @pytest.mark.parametrize(
        ("threshold", "total", "blocks"),
        [
            pytest.param(10_000, 10_001, True, id="above"),
            pytest.param(10_000, 10_000, False, id="at"),
            pytest.param(None, 10**9, False, id="no-threshold"),
            pytest.param(0, 1, True, id="zero-threshold-reviews-everything"),
        ],
    )
    def test_total_above_the_threshold_blocks(
        self, threshold: int | None, total: int, blocks: bool
    ) -> None:
        rules = ReviewRules(review_threshold_minor=threshold)
        found = findings(rated(flat_fee("49.00")), rules=rules, total_minor=total)
        expected = (
            [(ExceptionKind.TOTAL_ABOVE_REVIEW_THRESHOLD, Severity.BLOCKING, "total")]
            if blocks
            else []
        )
        assert kinds(found) == expected


# --- sync_exceptions -------------------------------------------------------------------


# Two kinds, in sort order.
FIRST, SECOND = ExceptionKind.LOW_MARGIN, ExceptionKind.USAGE_SPIKE


def finding(kind: ExceptionKind, fingerprint: str, **evidence: Any) -> Finding:
    return Finding(
        kind, Severity.WARNING, fingerprint, f"{kind} {fingerprint} {evidence}", evidence
    )


def sync(
    engine: Engine, tenant_id: str, found: Sequence[Finding], scope: str = "invoice:x"
) -> None:
    with Session(engine) as session, session.begin():
        sync_exceptions(
            session,
            tenant_id,
            scope=scope,
            period="2026-11",
            customer_id="acme",
            invoice_id="x",
            findings=found,
        )


def state(engine: Engine, tenant_id: str, scope: str = "invoice:x") -> dict[str, BillingException]:
    """The scope's exceptions by fingerprint."""
    with Session(engine) as session:
        return {e.fingerprint: e for e in repository.exceptions_in_scope(session, tenant_id, scope)}


def set_status(engine: Engine, tenant_id: str, exception_id: str, status: ExceptionStatus) -> None:
    with Session(engine) as session, session.begin():
        set_exception_status(
            session,
            staff(tenant_id, actor="reviewer"),
            exception_id,
            status=status,
            note=f"{status} by a reviewer",
            now=datetime.now(UTC),
        )


class TestSyncExceptions:
    def test_lifecycle_across_reruns(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "sync").tenant_id
        sync(engine, tenant, [finding(FIRST, "1", n=1), finding(SECOND, "2", n=1)])
        first = state(engine, tenant)
        assert {k: e.status for k, e in first.items()} == {"1": "open", "2": "open"}
        set_status(engine, tenant, first["1"].id, ExceptionStatus.WAIVED)

        # Re-run with both again: the waiver stays, the evidence is fresh, no new rows.
        sync(engine, tenant, [finding(FIRST, "1", n=2), finding(SECOND, "2", n=2)])
        second = state(engine, tenant)
        assert {k: (e.id, e.status) for k, e in second.items()} == {
            "1": (first["1"].id, "waived"),
            "2": (first["2"].id, "open"),
        }
        assert second["1"].evidence == {"n": 2} and "2" in second["1"].message
        assert second["1"].resolved_by == "reviewer"

        # "2" is gone: resolved by the system. The waived "1" is gone too: still waived.
        sync(engine, tenant, [])
        gone = state(engine, tenant)
        assert (gone["2"].status, gone["2"].resolved_by) == ("resolved", "system")
        assert gone["2"].resolved_at is not None
        assert gone["2"].note == "no longer applies after re-rating"
        assert (gone["1"].status, gone["1"].resolved_by) == ("waived", "reviewer")

        # "2" comes back: reopened, the same exception.
        sync(engine, tenant, [finding(FIRST, "1", n=3), finding(SECOND, "2", n=3)])
        back = state(engine, tenant)
        assert (back["2"].id, back["2"].status) == (first["2"].id, "open")
        assert (back["2"].resolved_by, back["2"].resolved_at) == ("", None)
        assert back["1"].status == "waived"

    def test_a_reviewers_resolution_is_not_undone_by_a_rerun(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "sync resolved").tenant_id
        sync(engine, tenant, [finding(FIRST, "1")])
        set_status(engine, tenant, state(engine, tenant)["1"].id, ExceptionStatus.RESOLVED)
        sync(engine, tenant, [])
        sync(engine, tenant, [finding(FIRST, "1")])
        after = state(engine, tenant)["1"]
        assert (after.status, after.resolved_by) == ("resolved", "reviewer")

    def test_same_fingerprint_other_type_or_scope_is_another_exception(
        self, engine: Engine
    ) -> None:
        tenant = create_tenant(engine, "sync scopes").tenant_id
        sync(engine, tenant, [finding(FIRST, "1"), finding(SECOND, "1")])
        sync(engine, tenant, [finding(FIRST, "1")], scope="invoice:y")
        with Session(engine) as session:
            rows = repository.list_exceptions(session, tenant)
        assert sorted((e.scope, e.type) for e in rows) == [
            ("invoice:x", FIRST),
            ("invoice:x", SECOND),
            ("invoice:y", FIRST),
        ]
        # Re-syncing scope y with nothing resolves only y's.
        sync(engine, tenant, [], scope="invoice:y")
        assert {e.status for e in state(engine, tenant).values()} == {"open"}
        assert {e.status for e in state(engine, tenant, "invoice:y").values()} == {"resolved"}


# --- Through billing runs --------------------------------------------------------------


def setup_tenant(engine: Engine, threshold_minor: int | None = None) -> str:
    """A tenant with input tokens at 2.00 per 10^6 (below gpt-4o's 2.50 provider price)
    and a 49.00 flat fee, one customer (acme), and optionally a review threshold."""
    tenant_id = create_tenant(engine, "rules").tenant_id
    book_id, version_id = uuid.uuid4().hex, uuid.uuid4().hex
    with Session(engine) as session, session.begin():
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        tenant.review_threshold_minor = threshold_minor
        session.add(
            PriceBook(id=book_id, tenant_id=tenant_id, name="b", currency="USD", is_default=True)
        )
        session.add(Customer(tenant_id=tenant_id, id="acme", name="Acme"))
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
            [
                PriceComponent(
                    id="input-component",
                    version_id=version_id,
                    position=0,
                    name="input",
                    meter="input_tokens",
                    filters={},
                    charge="per_unit",
                    unit_price=D("2.00"),
                    per_units=1_000_000,
                ),
                PriceComponent(
                    id=uuid.uuid4().hex,
                    version_id=version_id,
                    position=1,
                    name="platform",
                    filters={},
                    charge="flat_fee",
                    amount=D("49.00"),
                ),
            ]
        )
    return tenant_id


def use(engine: Engine, tenant_id: str, at: datetime, input_tokens: int) -> None:
    """One gpt-4o span of acme's, stored with its provider cost (2.50 per 10^6 input)."""
    trace = uuid.uuid4().hex
    record = UsageRecord(
        trace,
        trace[:16],
        "input_tokens",
        input_tokens,
        "acme",
        to_unix_nano(at),
        provider="openai",
        model="gpt-4o",
        operation="chat",
    )
    SqlUsageSink(engine, ProviderCostCatalog()).write(tenant_id, UsageBatch([record]))


def invoice_exceptions(
    engine: Engine, tenant_id: str, invoice_id: str, kind: str | None = None
) -> list[BillingException]:
    """The invoice's exceptions (of one type, if given)."""
    with Session(engine) as session:
        found = repository.list_exceptions(session, tenant_id, invoice_id=invoice_id)
    return [e for e in found if kind is None or e.type == kind]


def bill(engine: Engine, tenant_id: str, period: str = "2026-11") -> str:
    """Run billing for `period`; acme's invoice id of it."""
    with Session(engine) as session, session.begin():
        run_id = start_run(session, staff(tenant_id), period).id
    assert execute_run(engine, tenant_id, run_id).status == "completed"
    with Session(engine) as session:
        (invoice,) = repository.list_invoices(session, tenant_id, period=period)
        return invoice.id


class TestThroughBillingRuns:
    def test_review_threshold_blocks_until_waived_and_the_waiver_survives(
        self, engine: Engine
    ) -> None:
        tenant = setup_tenant(engine, threshold_minor=4000)  # 4900 is above it
        invoice_id = bill(engine, tenant)
        with Session(engine) as session:
            (exception,) = repository.list_exceptions(session, tenant, invoice_id=invoice_id)
        assert (exception.type, exception.severity, exception.status) == (
            ExceptionKind.TOTAL_ABOVE_REVIEW_THRESHOLD,
            Severity.BLOCKING,
            "open",
        )
        assert exception.evidence == {"total_minor": 4900, "threshold_minor": 4000}
        with (
            pytest.raises(ConflictError, match="total_above_review_threshold"),
            Session(engine) as session,
            session.begin(),
        ):
            finalize_invoice(session, staff(tenant), invoice_id, now=datetime.now(UTC))

        set_status(engine, tenant, exception.id, ExceptionStatus.WAIVED)
        assert bill(engine, tenant) == invoice_id
        with Session(engine) as session:
            (again,) = repository.list_exceptions(session, tenant, invoice_id=invoice_id)
        assert (again.id, again.status) == (exception.id, "waived")
        with Session(engine) as session, session.begin():
            final = finalize_invoice(
                session, staff(tenant), invoice_id, now=datetime(2026, 12, 1, tzinfo=UTC)
            )
            assert final.number == "INV-2026-000001"

    def test_raising_the_threshold_resolves_the_exception(self, engine: Engine) -> None:
        tenant = setup_tenant(engine, threshold_minor=4000)
        invoice_id = bill(engine, tenant)
        with Session(engine) as session, session.begin():
            found = session.get(Tenant, tenant)
            assert found is not None
            found.review_threshold_minor = 5000
        bill(engine, tenant)
        with Session(engine) as session:
            (exception,) = repository.list_exceptions(session, tenant, invoice_id=invoice_id)
        assert (exception.status, exception.resolved_by) == ("resolved", "system")

    def test_spike_against_the_three_periods_before(self, engine: Engine) -> None:
        """The history is the usage on the invoices of the three periods before."""
        tenant = setup_tenant(engine)
        use(engine, tenant, datetime(2026, 7, 10, tzinfo=UTC), 10**9)  # four periods back
        bill(engine, tenant, "2026-07")
        for month in (8, 9, 10):  # 100 000 input tokens in each of the trailing periods
            use(engine, tenant, datetime(2026, month, 10, tzinfo=UTC), 100_000)
            bill(engine, tenant, f"2026-{month:02d}")
        use(engine, tenant, datetime(2026, 11, 10, tzinfo=UTC), 300_000)  # 3× the average
        invoice_id = bill(engine, tenant)
        assert invoice_exceptions(engine, tenant, invoice_id, ExceptionKind.USAGE_SPIKE) == []

        use(engine, tenant, datetime(2026, 11, 11, tzinfo=UTC), 1)  # now above 3×
        bill(engine, tenant)
        (spike,) = invoice_exceptions(engine, tenant, invoice_id, ExceptionKind.USAGE_SPIKE)
        assert (spike.type, spike.severity, spike.status) == (
            ExceptionKind.USAGE_SPIKE,
            Severity.WARNING,
            "open",
        )
        assert spike.evidence["quantity_micros"] == 300_001 * 10**6
        assert sorted(spike.evidence["trailing_micros"]) == [100_000 * 10**6] * 3

    def test_spike_judged_against_the_periods_billed(self, engine: Engine) -> None:
        """One billed period of history is the baseline itself, not a third of it.

        October (acme's first invoice): 100 000 input tokens. November 250 000: the average
        of the one billed period is 100 000, 3× is 300 000, so no spike (dividing by three
        gave 33 333.3, 3× 100 000, and flagged this steady customer). 50 001 more
        (300 001) is above 300 000: a spike.
        """
        tenant = setup_tenant(engine)
        use(engine, tenant, datetime(2026, 10, 10, tzinfo=UTC), 100_000)
        bill(engine, tenant, "2026-10")
        use(engine, tenant, datetime(2026, 11, 10, tzinfo=UTC), 250_000)
        invoice_id = bill(engine, tenant)
        assert invoice_exceptions(engine, tenant, invoice_id, ExceptionKind.USAGE_SPIKE) == []

        use(engine, tenant, datetime(2026, 11, 11, tzinfo=UTC), 50_001)
        bill(engine, tenant)
        (spike,) = invoice_exceptions(engine, tenant, invoice_id, ExceptionKind.USAGE_SPIKE)
        assert spike.evidence["quantity_micros"] == 300_001 * 10**6
        assert spike.evidence["trailing_micros"] == [100_000 * 10**6]
        assert "previous billed period" in spike.message

    def test_billed_period_without_the_meter_counts_zero(self, engine: Engine) -> None:
        """September billed (the flat fee) with no input tokens, October 100 000, August
        not billed at all: the average is (0 + 100 000) / 2 = 50 000, 3× is 150 000."""
        tenant = setup_tenant(engine)
        bill(engine, tenant, "2026-09")
        use(engine, tenant, datetime(2026, 10, 10, tzinfo=UTC), 100_000)
        bill(engine, tenant, "2026-10")
        use(engine, tenant, datetime(2026, 11, 10, tzinfo=UTC), 150_000)
        invoice_id = bill(engine, tenant)
        assert invoice_exceptions(engine, tenant, invoice_id, ExceptionKind.USAGE_SPIKE) == []

        use(engine, tenant, datetime(2026, 11, 11, tzinfo=UTC), 1)
        bill(engine, tenant)
        (spike,) = invoice_exceptions(engine, tenant, invoice_id, ExceptionKind.USAGE_SPIKE)
        assert sorted(spike.evidence["trailing_micros"]) == [0, 100_000 * 10**6]

    def test_low_margin_from_stored_provider_costs(self, engine: Engine) -> None:
        tenant = setup_tenant(engine)
        # 1 000 000 input tokens: billed 2.00 → 200, provider cost 2.50 → 250: margin −50
        # on the line. The invoice, with the flat fee: 200 + 4900 − 250 = 4850, fine.
        use(engine, tenant, datetime(2026, 11, 10, tzinfo=UTC), 1_000_000)
        invoice_id = bill(engine, tenant)
        (low,) = invoice_exceptions(engine, tenant, invoice_id)
        assert (low.type, low.severity, low.fingerprint) == (
            ExceptionKind.LOW_MARGIN,
            Severity.WARNING,
            "line:input-component",
        )
        assert low.evidence == {
            "component": "input",
            "amount_minor": 200,
            "provider_cost_minor": 250,
            "margin_minor": -50,
        }

    def test_budget_exceeded(self, engine: Engine) -> None:
        tenant = setup_tenant(engine)
        with Session(engine) as session, session.begin():
            session.add(
                Budget(
                    tenant_id=tenant,
                    customer_id="acme",
                    currency="USD",
                    limit_minor=5000,
                    thresholds=[80, 100],
                )
            )
        # 500 000 tokens at 2.00 → 100, + 4900: 5000, at the limit.
        use(engine, tenant, datetime(2026, 11, 10, tzinfo=UTC), 500_000)
        invoice_id = bill(engine, tenant)
        assert invoice_exceptions(engine, tenant, invoice_id, ExceptionKind.BUDGET_EXCEEDED) == []
        # 2 501 more tokens: 502 501 × 2.00 / 10^6 = 1.005002 → 101, so 5001: above it.
        use(engine, tenant, datetime(2026, 11, 11, tzinfo=UTC), 2_501)
        bill(engine, tenant)
        (over,) = invoice_exceptions(engine, tenant, invoice_id, ExceptionKind.BUDGET_EXCEEDED)
        assert (over.type, over.severity) == (ExceptionKind.BUDGET_EXCEEDED, Severity.WARNING)
        assert over.evidence == {"subtotal_minor": 5001, "limit_minor": 5000}
