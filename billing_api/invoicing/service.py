"""Billing runs and drafts: rate every customer's period, write drafts in place, raise
exceptions. Finalized invoices are never touched here.

Drafts are re-rated in place: rated lines are replaced, reviewers' manual lines and
discounts stay, and a reviewer's adjustment of a rated line is re-applied to the line of
the same component and version. Re-running a period converges on the same drafts.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import BillingException, BillingRun, Invoice, InvoiceLine
from billing_api.credits.service import preview_credits
from billing_api.errors import ConflictError, NotFoundError, UnprocessableError
from billing_api.invoicing import checks, leases, repository
from billing_api.invoicing.checks import Finding, ReviewRules
from billing_api.periods import Period, month_period, previous_periods
from billing_api.rating.engine import RatedPeriod, rate_customer
from billing_api.rating.repository import load_pricing
from billing_api.rating.service import rate_period
from billing_api.rating.terms import TenantPricing

logger = logging.getLogger("agentmeter.billing")

RATED = "rated"
MANUAL = "manual"
DISCOUNT = "discount"
PRIOR_PERIOD = "prior_period"
SYSTEM = "system"
CHUNK = 500
ADJUST_NEXT = "adjust_next"
OUTDATED_ADJUSTMENT = "adjustment_outdated"
EXCEPTION_ONLY = "exception_only"
# Spikes compare with the average of the customer's billed periods among this many.
SPIKE_WINDOW = 3

Progress = Callable[[int, int], None]


def new_id() -> str:
    return uuid.uuid4().hex


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
        if line.kind == RATED and line.rated_amount_minor is not None
    }
    lines: list[InvoiceLine] = []
    for priced in rated.lines:
        line = InvoiceLine(
            id=new_id(),
            invoice_id=invoice.id,
            position=len(lines),
            kind=RATED,
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
                        OUTDATED_ADJUSTMENT: {
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
    drafts = {c: i for c, i in invoices.items() if i.status == "draft"}
    existing = repository.lines_of(session, [i.id for i in drafts.values()])
    with_credit = repository.customers_with_credit(session, tenant_id, list(drafts))
    stale: list[str] = []
    fresh: list[InvoiceLine] = []
    by_invoice: dict[str, list[InvoiceLine]] = {}
    for result in rated:
        invoice = drafts.get(result.customer_id)
        if invoice is None:
            continue
        old = existing.get(invoice.id, [])
        stale += [line.id for line in old if line.kind in (RATED, PRIOR_PERIOD)]
        lines = _rated_lines(invoice, result, old)
        for extra in [
            *prior_lines.get(result.customer_id, []),
            *(line for line in old if line.kind in (MANUAL, DISCOUNT)),
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


def sync_exceptions(
    session: Session,
    tenant_id: str,
    *,
    scope: str,
    period: str,
    customer_id: str,
    invoice_id: str | None,
    findings: Iterable[Finding],
    known_in_scope: Sequence[BillingException] | None = None,
) -> None:
    """Make the scope's exceptions match `findings`: new ones open, known ones keep their
    status (a waiver survives a re-run) with fresh evidence, gone ones are resolved by the
    system. `known_in_scope` saves the query when the caller loaded them in bulk."""
    if known_in_scope is None:
        known_in_scope = repository.exceptions_in_scope(session, tenant_id, scope)
    known = {(e.type, e.fingerprint): e for e in known_in_scope}
    seen = set()
    for finding in findings:
        key = (finding.type, finding.fingerprint)
        seen.add(key)
        exception = known.get(key)
        if exception is None:
            session.add(
                BillingException(
                    id=new_id(),
                    tenant_id=tenant_id,
                    scope=scope,
                    invoice_id=invoice_id,
                    period=period,
                    customer_id=customer_id,
                    type=finding.type,
                    severity=finding.severity,
                    fingerprint=finding.fingerprint,
                    message=finding.message,
                    evidence=finding.evidence,
                )
            )
            continue
        exception.message = finding.message
        exception.evidence = finding.evidence
        if exception.status == "resolved" and exception.resolved_by == SYSTEM:
            exception.status = "open"  # it came back
            exception.resolved_at = None
            exception.resolved_by = ""
    for key, exception in known.items():
        if key not in seen and exception.status == "open":
            exception.status = "resolved"
            exception.resolved_at = utcnow()
            exception.resolved_by = SYSTEM
            exception.note = "no longer applies after re-rating"
    session.flush()


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
    budgets = repository.budget_limits(session, tenant_id, customer_ids)
    return _Context(rules, policy, trailing, budgets)


def _outdated_adjustments(lines: Sequence[InvoiceLine]) -> list[Finding]:
    """Adjusted lines whose rated amount changed since the adjustment (blocking)."""
    findings = []
    for line in lines:
        for detail in line.details:
            if OUTDATED_ADJUSTMENT in detail:
                evidence = detail[OUTDATED_ADJUSTMENT]
                findings.append(
                    Finding(
                        OUTDATED_ADJUSTMENT,
                        checks.BLOCKING,
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
        checks.LATE_USAGE,
        checks.WARNING,
        finalized.id,
        f"{found.spans} spans of usage for {finalized.period} (invoice {finalized.number}) "
        f"arrived after it was finalized; adjustment {delta} minor units",
        evidence,
    )
    line = InvoiceLine(
        id=new_id(),
        invoice_id="",
        position=0,
        kind=PRIOR_PERIOD,
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
            if context.policy == ADJUST_NEXT:
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
        drafts = [i for i in invoices.values() if i.status == "draft"]
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
                    checks.LATE_USAGE,
                    checks.WARNING,
                    finalized.id,
                    f"{found.spans} spans of usage for {finalized.period} arrived after "
                    f"invoice {finalized.number} was finalized",
                    {"late_records": found.records, "late_spans": found.spans},
                )
            ],
        )


def run_findings(
    session: Session, tenant_id: str, period: Period, pricing: TenantPricing, drafted: Iterable[str]
) -> list[Finding]:
    """Findings about the period as a whole: usage nobody can be billed for yet."""
    findings = []
    records, quantity, traces = repository.unattributed_usage(
        session, tenant_id, period.start, period.end
    )
    if records:
        findings.append(
            Finding(
                checks.UNATTRIBUTED_USAGE,
                checks.WARNING,
                "unattributed",
                f"{records} usage records in {period.label} have no customer",
                {"records": records, "quantity_micros": quantity, "trace_ids": traces},
            )
        )
    for customer_id in sorted(set(drafted) - pricing.registered):
        findings.append(
            Finding(
                checks.UNREGISTERED_CUSTOMER,
                checks.WARNING,
                customer_id,
                f"usage for customer id {customer_id!r}, which is not a registered customer: "
                "register it or map the usage to an existing customer",
                {"customer_id": customer_id},
            )
        )
    return findings


def _chunks(items: Sequence[str], size: int) -> Iterable[list[str]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def start_run(
    session: Session,
    tenant_id: str,
    period_label: str,
    *,
    now: datetime | None = None,
    lease: timedelta | None = None,
) -> BillingRun:
    """Record a new run of `period_label` (a month that has begun by `now`); runs of the
    period whose worker died (see `leases`) are marked superseded by it."""
    now = now or utcnow()
    try:
        begins = month_period(period_label).start
    except ValueError as error:
        raise UnprocessableError(str(error)) from None
    if begins > now:
        raise UnprocessableError(f"period {period_label} has not begun; nothing to bill yet")
    lease = lease or leases.lease_duration()
    run = BillingRun(id=new_id(), tenant_id=tenant_id, period=period_label, status=leases.RUNNING)
    for stale in repository.running_runs(session, tenant_id, period_label):
        if leases.observed_status(stale, now, lease) == leases.INTERRUPTED:
            stale.status = leases.SUPERSEDED
            stale.holder = ""  # a worker that was only stuck stops at its next chunk
            stale.error = f"interrupted; superseded by run {run.id}"
            stale.finished_at = now
    session.add(run)
    session.flush()
    return run


def resume_run(
    session: Session, tenant_id: str, run_id: str, *, now: datetime, lease: timedelta
) -> BillingRun:
    """Make an interrupted run claimable again; the caller then executes it."""
    run = repository.get_run(session, tenant_id, run_id)
    if run is None:
        raise NotFoundError(f"no billing run {run_id!r}")
    status = leases.observed_status(run, now, lease)
    if status != leases.INTERRUPTED:
        raise ConflictError(f"billing run {run_id} is {status}; only an interrupted run resumes")
    run.holder = ""
    run.heartbeat_at = now
    run.error = ""
    session.flush()
    return run


def execute_run(
    engine: Engine,
    tenant_id: str,
    run_id: str,
    progress: Progress | None = None,
    *,
    lease: timedelta | None = None,
) -> BillingRun:
    """Draft the invoice of every customer with something to bill for the run's month
    (usage, fees or commitments in it, or late usage of an earlier finalized period), in
    chunks that each commit, so progress is visible and a crash loses at most one chunk
    (which a re-run redoes). A registered customer with nothing to bill gets no invoice.

    Holds the run's lease meanwhile (`leases`): `ConflictError` if a live worker holds it
    already, `LeaseLostError` if it is taken away (superseded) before the run ends.
    """
    lease = lease or leases.lease_duration()
    holder = leases.new_holder()
    with Session(engine) as session, session.begin():
        if not repository.claim_run(session, tenant_id, run_id, holder, utcnow(), lease):
            raise ConflictError(f"billing run {run_id} is not running or is held by a worker")
    with leases.Heartbeat(engine, tenant_id, run_id, holder, lease) as heartbeat:
        return _execute_held_run(engine, tenant_id, run_id, holder, heartbeat, progress)


def _held(session: Session, tenant_id: str, run_id: str, holder: str) -> BillingRun:
    """The run, if this worker still holds it (checked in the transaction that writes)."""
    run = repository.get_run(session, tenant_id, run_id)
    if run is None or run.holder != holder or run.status != leases.RUNNING:
        raise leases.LeaseLostError(f"billing run {run_id} is no longer held by this worker")
    run.heartbeat_at = utcnow()
    return run


def _execute_held_run(
    engine: Engine,
    tenant_id: str,
    run_id: str,
    holder: str,
    heartbeat: leases.Heartbeat,
    progress: Progress | None,
) -> BillingRun:
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            run = _held(session, tenant_id, run_id, holder)
            label = run.period
            pricing = load_pricing(session, tenant_id)
            # Late usage of all customers in one query, idle or not this month.
            late = repository.late_usage(session, tenant_id, month_period(label).start)
            groups = _billing_day_groups(session, tenant_id, label, pricing, late)
            total = sum(len(ids) for _, ids in groups)
            run.total_customers = total
        done = drafted = 0
        all_drafted: list[str] = []
        for period, customer_ids in groups:
            # Rated once per group: the database sums the whole period in one pass.
            with Session(engine) as session:
                wanted = None if len(groups) == 1 else customer_ids
                rated = rate_period(session, tenant_id, period, wanted, pricing=pricing)
            for chunk in _chunks(customer_ids, CHUNK):
                heartbeat.check()
                with Session(engine, expire_on_commit=False) as session, session.begin():
                    drafts = draft_customers(
                        session,
                        tenant_id,
                        period,
                        {c: rated[c] for c in chunk if c in rated},
                        late={c: late[c] for c in chunk if c in late},
                        run_id=run_id,
                        pricing=pricing,
                    )
                    drafted += len(drafts)
                    all_drafted.extend(d.customer_id for d in drafts)
                    done += len(chunk)
                    run = _held(session, tenant_id, run_id, holder)
                    run.processed_customers = done
                    run.drafted = drafted
                if progress is not None:
                    progress(done, total)
        with Session(engine, expire_on_commit=False) as session, session.begin():
            # Concurrent runs of one tenant meet here one at a time.
            repository.lock_tenant(session, tenant_id)
            first = groups[0][0] if groups else month_period(label)
            sync_exceptions(
                session,
                tenant_id,
                scope=f"run:{label}",
                period=label,
                customer_id="",
                invoice_id=None,
                findings=run_findings(session, tenant_id, first, pricing, all_drafted),
            )
            run = _held(session, tenant_id, run_id, holder)
            run.status = leases.COMPLETED
            run.finished_at = utcnow()
        return run
    except leases.LeaseLostError:
        logger.warning("billing run taken over", extra={"tenant_id": tenant_id, "run_id": run_id})
        raise
    except Exception as error:
        logger.exception("billing run failed", extra={"tenant_id": tenant_id, "run_id": run_id})
        with Session(engine, expire_on_commit=False) as session, session.begin():
            failed = repository.get_run(session, tenant_id, run_id)
            if failed is not None and failed.holder == holder:
                failed.status = leases.FAILED
                failed.error = str(error)[:2000]
                failed.finished_at = utcnow()
        raise


def _billing_day_groups(
    session: Session, tenant_id: str, label: str, pricing: TenantPricing, late: Iterable[str]
) -> list[tuple[Period, list[str]]]:
    """Customers to consider, grouped by the period their billing day gives in month
    `label`.

    Registered customers, plus ids with usage in the month or late usage that are not
    registered yet (they bill on day 1 until registered)."""
    by_day: dict[int, set[str]] = defaultdict(set)
    for customer_id in pricing.registered:
        by_day[pricing.billing_days.get(customer_id, 1)].add(customer_id)
    calendar = month_period(label)
    for customer_id in {
        *repository.customers_with_usage(session, tenant_id, calendar.start, calendar.end),
        *late,
    }:
        if customer_id not in pricing.registered:
            by_day[1].add(customer_id)
    return [(month_period(label, day), sorted(ids)) for day, ids in sorted(by_day.items())]


def redraft_customer(
    session: Session, tenant_id: str, customer_id: str, period_label: str, *, run_id: str | None
) -> Invoice | None:
    """Re-rate one customer's draft for a month (after a review action or mapping)."""
    pricing = load_pricing(session, tenant_id)
    period = month_period(period_label, pricing.billing_days.get(customer_id, 1))
    rated = rate_period(session, tenant_id, period, [customer_id], pricing=pricing)
    late = repository.late_usage(
        session, tenant_id, month_period(period_label).start, [customer_id]
    )
    drafts = draft_customers(
        session, tenant_id, period, rated, late=late, run_id=run_id, pricing=pricing
    )
    return drafts[0] if drafts else None


def snapshot(line: InvoiceLine) -> dict[str, Any]:
    """A line as the audit log records it."""
    return {
        "id": line.id,
        "kind": line.kind,
        "description": line.description,
        "quantity": str(line.quantity),
        "unit_price": None if line.unit_price is None else str(line.unit_price),
        "amount_minor": line.amount_minor,
        "rated_amount_minor": line.rated_amount_minor,
        "adjustment_reason": line.adjustment_reason,
    }
