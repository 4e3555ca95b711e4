"""Drafts: rate customers' periods, write their drafts in place, and raise their
exceptions. Finalized invoices are never touched here.

Drafts are re-rated in place: rated lines are replaced, reviewers' manual lines and
discounts stay, and a reviewer's adjustment of a rated line is re-applied to the line of
the same component and version. Re-running a period converges on the same drafts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import Invoice, InvoiceLine
from billing_api.budgets.service import budget_limits
from billing_api.credits.service import customers_with_credit, preview_credits
from billing_api.invoicing import checks, repository
from billing_api.invoicing.checks import Finding, ReviewRules
from billing_api.invoicing.exceptions import sync_exceptions
from billing_api.invoicing.repository import new_id
from billing_api.invoicing.states import (
    ExceptionKind,
    InvoiceStatus,
    LateUsagePolicy,
    LineKind,
    Severity,
)
from billing_api.periods import Period, month_period, previous_periods
from billing_api.rating.engine import RatedPeriod, rate_customer
from billing_api.rating.repository import load_pricing
from billing_api.rating.service import rate_period
from billing_api.rating.terms import TenantPricing

# Spikes compare with the average of the customer's billed periods among this many.
SPIKE_WINDOW = 3


def _line_key(line: InvoiceLine) -> tuple[str | None, int | None, str | None]:
    return (line.component_id, line.version_number, line.override_id)


def credit_date(invoice: Invoice) -> datetime:
    """The instant prepaid credit is judged at: the period's end, or now if earlier. A
    grant that expired before then cannot pay for the period."""
    return min(invoice.period_end, utcnow())


def recompute_totals(
    session: Session,
    invoice: Invoice,
    invoice_lines: Sequence[InvoiceLine],
    *,
    may_have_credit: bool = True,
) -> None:
    """Subtotal is the sum of rounded lines; a draft shows the prepaid credit finalizing
    would draw now (drawn for real only at finalization); total = subtotal - credits."""
    invoice.subtotal_minor = sum(line.amount_minor for line in invoice_lines)
    draws = (
        preview_credits(
            session,
            invoice.tenant_id,
            invoice.customer_id,
            invoice.currency,
            max(invoice.subtotal_minor, 0),
            credit_date(invoice),
        )
        if may_have_credit
        else []
    )
    invoice.credits_minor = sum(draw.amount_minor for draw in draws)
    invoice.total_minor = invoice.subtotal_minor - invoice.credits_minor


def _rated_lines(
    invoice: Invoice, rated: RatedPeriod, existing: Sequence[InvoiceLine]
) -> list[InvoiceLine]:
    """The rated lines of a re-rated draft, with reviewers' adjustments re-applied."""
    adjustments = {
        _line_key(line): line
        for line in existing
        if line.kind == LineKind.RATED and line.rated_amount_minor is not None
    }
    lines: list[InvoiceLine] = []
    for priced in rated.lines:
        line = InvoiceLine(
            id=new_id(),
            invoice_id=invoice.id,
            position=len(lines),
            kind=LineKind.RATED,
            description=priced.component_name,
            component_id=priced.component_id,
            charge=priced.charge,
            meter=priced.meter,
            version_number=priced.version_number,
            override_id=priced.override_id,
            quantity=priced.quantity,
            unit_price=priced.unit_price,
            per_units=priced.per_units,
            amount_minor=priced.amount_minor,
            provider_cost_minor=priced.provider_cost_minor,
            margin_minor=priced.margin_minor,
            details=priced.details,
        )
        adjusted = adjustments.get(_line_key(line))
        if adjusted is not None:
            if adjusted.rated_amount_minor != line.amount_minor:
                # Usage changed under the adjustment: a reviewer must look again.
                line.details = [
                    *line.details,
                    {
                        ExceptionKind.ADJUSTMENT_OUTDATED: {
                            "rated_when_adjusted_minor": adjusted.rated_amount_minor,
                            "rated_now_minor": line.amount_minor,
                            "adjusted_to_minor": adjusted.amount_minor,
                        }
                    },
                ]
            line.rated_amount_minor = line.amount_minor
            line.amount_minor = adjusted.amount_minor
            line.adjustment_reason = adjusted.adjustment_reason
            if line.provider_cost_minor is not None:
                line.margin_minor = line.amount_minor - line.provider_cost_minor
        lines.append(line)
    return lines


def write_drafts(
    session: Session,
    tenant_id: str,
    period: Period,
    rated: Sequence[RatedPeriod],
    *,
    run_id: str | None,
    prior_lines: dict[str, list[InvoiceLine]],
) -> tuple[dict[str, Invoice], dict[str, list[InvoiceLine]]]:
    """Create or re-rate the drafts of these customers for `period`, a handful of
    statements for the whole batch; finalized invoices are returned untouched. Returns
    the invoices by customer and the drafts' lines by invoice id."""
    invoices = repository.lock_invoices_for_period(
        session,
        tenant_id,
        period,
        {r.customer_id: r.currency for r in rated},
        new_id=new_id,
    )
    drafts = {c: i for c, i in invoices.items() if i.status == InvoiceStatus.DRAFT}
    existing = repository.lines_of(session, [i.id for i in drafts.values()])
    with_credit = customers_with_credit(session, tenant_id, list(drafts))
    stale: list[str] = []
    fresh: list[InvoiceLine] = []
    by_invoice: dict[str, list[InvoiceLine]] = {}
    for result in rated:
        invoice = drafts.get(result.customer_id)
        if invoice is None:
            continue
        old = existing.get(invoice.id, [])
        stale += [line.id for line in old if line.kind in (LineKind.RATED, LineKind.PRIOR_PERIOD)]
        lines = _rated_lines(invoice, result, old)
        for extra in [
            *prior_lines.get(result.customer_id, []),
            *(line for line in old if line.kind in (LineKind.MANUAL, LineKind.DISCOUNT)),
        ]:
            extra.invoice_id = invoice.id
            extra.position = len(lines)
            lines.append(extra)
        fresh += [line for line in lines if line not in old]
        by_invoice[invoice.id] = lines
        invoice.currency = result.currency
        invoice.price_book_id = result.book_id
        invoice.versions = result.versions
        invoice.usage_micros = result.usage_micros
        invoice.provider_cost_minor = result.provider_cost_minor
        invoice.margin_minor = result.margin_minor
        invoice.rated_at = utcnow()
        invoice.run_id = run_id or invoice.run_id
        recompute_totals(session, invoice, lines, may_have_credit=result.customer_id in with_credit)
    repository.delete_lines(session, stale)
    session.add_all(fresh)
    session.flush()
    return invoices, by_invoice


@dataclass(frozen=True, slots=True)
class _Context:
    """What checking a chunk of drafts needs, loaded once per chunk."""

    rules: ReviewRules
    policy: str
    trailing: dict[str, dict[str, list[int]]]
    budgets: dict[tuple[str, str], int]


def _rules(session: Session, tenant_id: str) -> tuple[ReviewRules, str]:
    tenant = repository.tenant(session, tenant_id)
    return (
        ReviewRules(
            spike_factor=tenant.spike_factor,
            margin_floor_percent=tenant.margin_floor_percent,
            review_threshold_minor=tenant.review_threshold_minor,
        ),
        tenant.late_usage_policy,
    )


def _context(
    session: Session, tenant_id: str, period: Period, billing_day: int, customer_ids: Sequence[str]
) -> _Context:
    """Review rules, budgets, and each customer's usage per meter in each of the (up to
    three) previous periods it was billed in, read from those periods' invoices (no rescan
    of old usage). A meter absent from a billed period used 0 in it."""
    rules, policy = _rules(session, tenant_id)
    billed: dict[str, list[dict[str, int]]] = defaultdict(list)
    starts = [p.start for p in previous_periods(period, SPIKE_WINDOW, billing_day)]
    for customer_id, usage in repository.usage_history(session, tenant_id, customer_ids, starts):
        billed[customer_id].append(usage)
    trailing = {
        customer_id: {
            meter: [usage.get(meter, 0) for usage in periods]
            for meter in {meter for usage in periods for meter in usage}
        }
        for customer_id, periods in billed.items()
    }
    budgets = budget_limits(session, tenant_id, customer_ids)
    return _Context(rules, policy, trailing, budgets)


def _outdated_adjustments(lines: Sequence[InvoiceLine]) -> list[Finding]:
    """Adjusted lines whose rated amount changed since the adjustment (blocking)."""
    findings = []
    for line in lines:
        for detail in line.details:
            if ExceptionKind.ADJUSTMENT_OUTDATED in detail:
                evidence = detail[ExceptionKind.ADJUSTMENT_OUTDATED]
                findings.append(
                    Finding(
                        ExceptionKind.ADJUSTMENT_OUTDATED,
                        Severity.BLOCKING,
                        f"{line.component_id}|{line.version_number}",
                        f"{line.description!r} was adjusted to {evidence['adjusted_to_minor']} "
                        f"when it rated {evidence['rated_when_adjusted_minor']}; it now rates "
                        f"{evidence['rated_now_minor']}: confirm or change the adjustment",
                        evidence,
                    )
                )
    return findings


def _late_usage_adjustment(
    session: Session, tenant_id: str, pricing: TenantPricing, found: repository.LateUsage
) -> tuple[InvoiceLine, Finding] | None:
    """The prior-period line (and its warning) that bills the late usage of a finalized
    period (policy adjust_next); None when re-rating the period changes nothing."""
    finalized = found.invoice
    customer_id = finalized.customer_id
    earlier = Period(finalized.period_start, finalized.period_end)
    rerated = rate_period(session, tenant_id, earlier, [customer_id], pricing=pricing)
    now_owed = rerated[customer_id].subtotal_minor if customer_id in rerated else 0
    billed = finalized.subtotal_minor + repository.billed_prior_period_adjustments(
        session, tenant_id, customer_id, finalized.period, exclude_invoice_id=""
    )
    delta = now_owed - billed
    if not delta:
        return None
    evidence = {
        "invoice": finalized.number,
        "period": finalized.period,
        "late_records": found.records,
        "late_spans": found.spans,
        "invoiced_minor": billed,
        "rerated_minor": now_owed,
        "adjustment_minor": delta,
    }
    finding = Finding(
        ExceptionKind.LATE_USAGE,
        Severity.WARNING,
        finalized.id,
        f"{found.spans} spans of usage for {finalized.period} (invoice {finalized.number}) "
        f"arrived after it was finalized; adjustment {delta} minor units",
        evidence,
    )
    line = InvoiceLine(
        id=new_id(),
        invoice_id="",
        position=0,
        kind=LineKind.PRIOR_PERIOD,
        description=f"Adjustment for {finalized.period} (usage received late)",
        quantity=Decimal(1),
        unit_price=None,
        amount_minor=delta,
        adjusts_period=finalized.period,
        details=[evidence],
    )
    return line, finding


def draft_customers(
    session: Session,
    tenant_id: str,
    period: Period,
    rated: dict[str, RatedPeriod],
    *,
    late: dict[str, list[repository.LateUsage]],
    run_id: str | None,
    pricing: TenantPricing,
) -> list[Invoice]:
    """Draft the customers of one billing-day group of a period that have something to
    bill, and raise their exceptions.

    `rated` holds the customers with usage, fees or commitments in the period; `late`
    the customers with unsettled late usage of earlier finalized periods. Under policy
    adjust_next late usage that changes what a period owes is billed by a prior-period
    line on the customer's draft, drafted for it alone if the customer has nothing else
    to bill; late usage that changes nothing, and all late usage under exception_only, is
    reported on the finalized invoice it belongs to. Late usage is never dropped."""
    context = _context(session, tenant_id, period, period.start.day, sorted({*rated, *late}))
    to_draft = dict(rated)
    prior_lines: dict[str, list[InvoiceLine]] = defaultdict(list)
    late_findings: dict[str, list[Finding]] = defaultdict(list)
    on_finalized: list[repository.LateUsage] = []
    for customer_id, found in late.items():
        for item in found:
            adjustment = None
            if context.policy == LateUsagePolicy.ADJUST_NEXT:
                adjustment = _late_usage_adjustment(session, tenant_id, pricing, item)
            if adjustment is None:
                on_finalized.append(item)
                continue
            prior_lines[customer_id].append(adjustment[0])
            late_findings[customer_id].append(adjustment[1])
            if customer_id not in to_draft:  # idle this period: the draft is the adjustment
                to_draft[customer_id] = rate_customer(customer_id, pricing, period, [])
    with session.no_autoflush:
        invoices, fresh_lines = write_drafts(
            session,
            tenant_id,
            period,
            list(to_draft.values()),
            run_id=run_id,
            prior_lines=prior_lines,
        )
        drafts = [i for i in invoices.values() if i.status == InvoiceStatus.DRAFT]
        known = repository.exceptions_in_scopes(
            session, tenant_id, [f"invoice:{i.id}" for i in drafts]
        )
        for invoice in drafts:
            customer_id = invoice.customer_id
            findings = checks.invoice_findings(
                to_draft[customer_id],
                rules=context.rules,
                trailing_usage=context.trailing.get(customer_id, {}),
                period_usage=to_draft[customer_id].usage_micros,
                total_minor=invoice.total_minor,
                budget_limit_minor=context.budgets.get((customer_id, invoice.currency)),
            )
            findings += _outdated_adjustments(fresh_lines.get(invoice.id, []))
            scope = f"invoice:{invoice.id}"
            sync_exceptions(
                session,
                tenant_id,
                scope=scope,
                period=period.label,
                customer_id=customer_id,
                invoice_id=invoice.id,
                findings=[*findings, *late_findings.get(customer_id, [])],
                known_in_scope=known.get(scope, []),
            )
    session.flush()
    _late_usage_exceptions(session, tenant_id, on_finalized)
    return drafts


def _late_usage_exceptions(
    session: Session, tenant_id: str, late: Sequence[repository.LateUsage]
) -> None:
    """Late usage reported on the finalized invoice it belongs to, for a reviewer to
    settle (credit note or manual line); nothing is billed."""
    for found in late:
        finalized = found.invoice
        sync_exceptions(
            session,
            tenant_id,
            scope=f"late:{finalized.id}",
            period=finalized.period,
            customer_id=finalized.customer_id,
            invoice_id=finalized.id,
            findings=[
                Finding(
                    ExceptionKind.LATE_USAGE,
                    Severity.WARNING,
                    finalized.id,
                    f"{found.spans} spans of usage for {finalized.period} arrived after "
                    f"invoice {finalized.number} was finalized",
                    {"late_records": found.records, "late_spans": found.spans},
                )
            ],
        )


def redraft_customer(
    session: Session, tenant_id: str, customer_id: str, period_label: str, *, run_id: str | None
) -> Invoice | None:
    """Re-rate one customer's draft for a month (after a review action or mapping)."""
    pricing = load_pricing(session, tenant_id, [customer_id])
    period = month_period(period_label, pricing.billing_days.get(customer_id, 1))
    rated = rate_period(session, tenant_id, period, [customer_id], pricing=pricing)
    late = repository.late_usage(
        session, tenant_id, month_period(period_label).start, [customer_id]
    )
    drafts = draft_customers(
        session, tenant_id, period, rated, late=late, run_id=run_id, pricing=pricing
    )
    return drafts[0] if drafts else None
