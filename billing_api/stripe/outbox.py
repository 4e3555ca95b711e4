"""Running the Stripe outbox: each job pushes, voids or credits one invoice on the tenant's
connected account, exactly once in effect.

Protocol (as `billing_api/webhooks/delivery.py`, with the claim/lease and backoff of
`billing_api.jobs.leasing`): a worker claims a due job with a
compare-and-set UPDATE that also pushes its next attempt time past a lease, commits, and
only then calls Stripe; no transaction stays open during HTTP. A job of an invoice is not
due while an older job of the same invoice is unfinished (a void never overtakes its push).

Exactly once: every Stripe call that creates something carries an idempotency key made
from our ids (`agentmeter-<what>-<our id>`), and each Stripe id is written to the job's
`progress` (and the invoice, the customer mapping) as soon as Stripe answers, which also
extends the lease. A worker that dies mid-job leaves its claim to expire; the next one
resumes from `progress`, and a call whose answer was lost is repeated with the same key,
so Stripe returns the object it made the first time.

Outcomes: success → done (invoice `synced`); 429, 409, 5xx, timeouts and connection
errors → retried after 30 s, 1 min, 2 min, … (capped at 6 h) until `max_attempts`, then
failed; anything else (a refused parameter, a total that differs from ours) fails at once.
A failed job sets the invoice `failed` with `stripe_error` and opens a warning exception on
it; `POST /api/v1/invoices/{id}/stripe-sync` queues it again.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import BillingException, Invoice, StripeCustomer
from billing_api.invoicing.repository import credit_notes
from billing_api.invoicing.states import (
    SYSTEM_ACTOR,
    ExceptionKind,
    ExceptionStatus,
    InvoiceStatus,
    Severity,
)
from billing_api.jobs.leasing import retry_delay
from billing_api.stripe import repository
from billing_api.stripe.gateway import StripeCallError, StripeGateway
from billing_api.stripe.service import DEFAULT_DAYS_UNTIL_DUE, push_key
from billing_api.stripe.states import CollectionMethod, JobKind, JobStatus, SyncStatus

logger = logging.getLogger("agentmeter.stripe")

MAX_ATTEMPTS = 10
# Longer than one job's calls can take between two progress writes (each extends it).
LEASE = timedelta(minutes=10)
BATCH_SIZE = 20
SYNC_FAILED = ExceptionKind.STRIPE_SYNC_FAILED
TOTAL_MISMATCH = ExceptionKind.STRIPE_TOTAL_MISMATCH


class PermanentFailure(Exception):
    """A job that cannot succeed by retrying; `exception_type` names the invoice exception."""

    def __init__(self, message: str, exception_type: ExceptionKind = SYNC_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exception_type = exception_type


class ClaimLostError(Exception):
    """Another worker took the job over (this one outlived its lease)."""


@dataclass(slots=True)
class JobReport:
    """What one `run_due_jobs` pass did."""

    done: int = 0
    retrying: int = 0
    failed: int = 0


@dataclass(slots=True)
class _Claim:
    id: int
    key: str
    tenant_id: str
    invoice_id: str
    kind: JobKind
    credit_note_id: str | None
    attempts: int  # including the one now claimed
    progress: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Item:
    key: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _PushPlan:
    """Everything a push sends, read in one short transaction."""

    account_id: str
    customer_id: str
    voided: bool
    mapped_customer: str | None
    customer_params: dict[str, Any]
    invoice_params: dict[str, Any]
    items: list[_Item]
    currency: str
    total: int


def run_due_jobs(
    engine: Engine,
    gateway: StripeGateway | None,
    now: datetime | None = None,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    limit: int = 1000,
) -> JobReport:
    """Run every job due at `now` (at most `limit`); return the counts. Does nothing when
    Stripe is off. A job boundary: opens and commits its own short transactions; blocks on
    HTTP, so run it in a worker thread from async code."""
    report = JobReport()
    if gateway is None:
        return report
    now = now or utcnow()
    handled = 0
    while handled < limit:
        claims = _claim_batch(engine, now, min(BATCH_SIZE, limit - handled))
        if not claims:
            break
        handled += len(claims)
        for claim in claims:
            _run(engine, gateway, claim, now, max_attempts, report)
    return report


def _claim_batch(engine: Engine, now: datetime, size: int) -> list[_Claim]:
    with Session(engine) as session, session.begin():
        due = repository.due_jobs(session, now, size)
        claims = []
        for job in due:
            if not repository.claim(session, job.id, job.status, job.attempts, now + LEASE):
                continue
            claims.append(
                _Claim(
                    id=job.id,
                    key=job.key,
                    tenant_id=job.tenant_id,
                    invoice_id=job.invoice_id,
                    kind=JobKind(job.kind),
                    credit_note_id=job.credit_note_id,
                    attempts=job.attempts + 1,
                    progress=dict(job.progress),
                )
            )
        return claims


def _run(
    engine: Engine,
    gateway: StripeGateway,
    claim: _Claim,
    now: datetime,
    max_attempts: int,
    report: JobReport,
) -> None:
    steps = {JobKind.PUSH: _push, JobKind.VOID: _void, JobKind.CREDIT_NOTE: _credit_note}
    try:
        steps[claim.kind](engine, gateway, claim)
    except ClaimLostError:
        logger.warning("stripe job %s was re-claimed by another worker", claim.key)
        return
    except StripeCallError as error:
        if error.retryable and claim.attempts < max_attempts:
            _finish(engine, claim, retry_at=now + retry_delay(claim.attempts), error=error.message)
            report.retrying += 1
        else:
            _finish(engine, claim, failure=PermanentFailure(error.message))
            report.failed += 1
        return
    except PermanentFailure as failure:
        _finish(engine, claim, failure=failure)
        report.failed += 1
        return
    _finish(engine, claim)
    report.done += 1


def _save(
    engine: Engine,
    claim: _Claim,
    *,
    stripe_invoice_id: str | None = None,
    mapping: tuple[str, str, str] | None = None,
) -> None:
    """Write progress (and what else Stripe just made) at once, extending the lease."""
    with Session(engine) as session, session.begin():
        saved = repository.save_progress(
            session, claim.id, claim.attempts, claim.progress, utcnow() + LEASE
        )
        if not saved:
            raise ClaimLostError(claim.key)
        if stripe_invoice_id is not None:
            invoice = repository.invoice(session, claim.tenant_id, claim.invoice_id)
            assert invoice is not None
            invoice.stripe_invoice_id = stripe_invoice_id
        if mapping is not None:
            customer_id, account_id, stripe_customer_id = mapping
            found = repository.stripe_customer(session, claim.tenant_id, customer_id)
            if found is None:
                found = StripeCustomer(
                    tenant_id=claim.tenant_id,
                    customer_id=customer_id,
                    collection_method=CollectionMethod.SEND_INVOICE,
                    days_until_due=DEFAULT_DAYS_UNTIL_DUE,
                )
                session.add(found)
            found.account_id = account_id
            found.stripe_customer_id = stripe_customer_id


def _key(what: str, our_id: str) -> str:
    return f"agentmeter-{what}-{our_id}"


def _fee(total: int, percent: Decimal | None) -> int | None:
    if percent is None or percent <= 0 or total <= 0:
        return None
    fee = int((Decimal(total) * percent / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return fee or None


def _push_plan(engine: Engine, claim: _Claim) -> _PushPlan:
    with Session(engine) as session:
        invoice = repository.invoice(session, claim.tenant_id, claim.invoice_id)
        if invoice is None:
            raise PermanentFailure("the invoice no longer exists")
        account = repository.account_of_tenant(session, claim.tenant_id)
        if account is None:
            raise PermanentFailure("no Stripe account is connected")
        account_id = claim.progress.get("account", account.account_id)
        customer = repository.customer(session, claim.tenant_id, invoice.customer_id)
        terms = repository.stripe_customer(session, claim.tenant_id, invoice.customer_id)
        method = terms.collection_method if terms else CollectionMethod.SEND_INVOICE
        currency = invoice.currency.lower()
        metadata = {"agentmeter_invoice_id": invoice.id, "agentmeter_number": invoice.number or ""}
        invoice_params: dict[str, Any] = {
            "currency": currency,
            "collection_method": method,
            "auto_advance": False,
            "pending_invoice_items_behavior": "exclude",
            "description": f"{invoice.number} ({invoice.period})",
            "metadata": metadata,
        }
        if method == CollectionMethod.SEND_INVOICE:
            days = terms.days_until_due if terms else None
            invoice_params["days_until_due"] = DEFAULT_DAYS_UNTIL_DUE if days is None else days
        fee = _fee(invoice.total_minor, account.application_fee_percent)
        if fee is not None:
            invoice_params["application_fee_amount"] = fee
        customer_params: dict[str, Any] = {
            "name": customer.name if customer else invoice.customer_id,
            "metadata": {"agentmeter_customer_id": invoice.customer_id},
        }
        if customer is not None and customer.email:
            customer_params["email"] = customer.email
        period = {
            "start": int(invoice.period_start.timestamp()),
            "end": int(invoice.period_end.timestamp()),
        }
        items = [
            _Item(
                line.id,
                {
                    "amount": line.amount_minor,
                    "currency": currency,
                    "description": line.description[:500],
                    "period": period,
                    "metadata": {
                        "agentmeter_line_id": line.id,
                        "quantity": format(line.quantity, "f")[:500],
                    },
                },
            )
            for line in repository.lines(session, invoice.id)
        ]
        if invoice.credits_minor:
            items.append(
                _Item(
                    f"credits-{invoice.id}",
                    {
                        "amount": -invoice.credits_minor,
                        "currency": currency,
                        "description": "Prepaid credit applied",
                        "metadata": {"agentmeter_invoice_id": invoice.id},
                    },
                )
            )
        mapped = (
            terms.stripe_customer_id
            if terms is not None and terms.account_id == account_id
            else None
        )
        return _PushPlan(
            account_id=account_id,
            customer_id=invoice.customer_id,
            voided=invoice.status == InvoiceStatus.VOID,
            mapped_customer=mapped,
            customer_params=customer_params,
            invoice_params=invoice_params,
            items=items,
            currency=currency,
            total=invoice.total_minor,
        )


def _push(engine: Engine, gateway: StripeGateway, claim: _Claim) -> None:
    """Customer, draft invoice, one invoice item per line at its exact amount, compare the
    totals, finalize. Each step is skipped when `progress` shows it done."""
    plan = _push_plan(engine, claim)
    progress = claim.progress
    if plan.voided and "invoice" not in progress:
        return  # voided before anything reached Stripe: nothing to push
    if "account" not in progress:
        progress["account"] = plan.account_id
        _save(engine, claim)
    account = plan.account_id
    customer = progress.get("customer") or plan.mapped_customer
    if customer is None:
        ours = f"{claim.tenant_id}\n{plan.customer_id}\n{account}".encode()
        customer = gateway.create_customer(
            account, _key("customer", hashlib.sha256(ours).hexdigest()[:32]), plan.customer_params
        )
        progress["customer"] = customer
        _save(engine, claim, mapping=(plan.customer_id, account, customer))
    elif "customer" not in progress:
        progress["customer"] = customer
        _save(engine, claim)
    stripe_invoice = progress.get("invoice")
    if stripe_invoice is None:
        stripe_invoice = gateway.create_invoice(
            account,
            _key("invoice", claim.invoice_id),
            {**plan.invoice_params, "customer": customer},
        )
        progress["invoice"] = stripe_invoice
        _save(engine, claim, stripe_invoice_id=stripe_invoice)
    made: dict[str, str] = progress.setdefault("items", {})
    for item in plan.items:
        if item.key in made:
            continue
        made[item.key] = gateway.add_invoice_item(
            account,
            _key("line", item.key),
            {**item.params, "customer": customer, "invoice": stripe_invoice},
        )
        _save(engine, claim)
    remote = gateway.retrieve_invoice(account, stripe_invoice)
    if remote.total != plan.total or remote.currency != plan.currency:
        raise PermanentFailure(
            f"Stripe invoice {remote.id} totals {remote.total} {remote.currency}, ours "
            f"{plan.total} {plan.currency}; not finalized on Stripe",
            TOTAL_MISMATCH,
        )
    if remote.status == "draft" and not plan.voided:
        gateway.finalize_invoice(account, _key("finalize", claim.invoice_id), stripe_invoice)


def _pushed(engine: Engine, claim: _Claim) -> tuple[str, str] | None:
    """(account, Stripe invoice id) the push of the claim's invoice used, if it got that far."""
    with Session(engine) as session:
        push = repository.job_by_key(session, push_key(claim.invoice_id))
        invoice = repository.invoice(session, claim.tenant_id, claim.invoice_id)
        if push is None or invoice is None or invoice.stripe_invoice_id is None:
            return None
        return push.progress["account"], invoice.stripe_invoice_id


def _void(engine: Engine, gateway: StripeGateway, claim: _Claim) -> None:
    """Void the Stripe copy; a draft there (the push stopped before finalizing) is deleted."""
    pushed = _pushed(engine, claim)
    if pushed is None:
        return  # nothing reached Stripe
    account, stripe_invoice = pushed
    remote = gateway.retrieve_invoice(account, stripe_invoice)
    if remote.status == "draft":
        gateway.delete_draft(account, stripe_invoice)
    elif remote.status in ("open", "uncollectible"):
        gateway.void_invoice(account, _key("void", claim.invoice_id), stripe_invoice)
    elif remote.status == "paid":
        raise PermanentFailure(
            f"Stripe invoice {stripe_invoice} is paid and cannot be voided; refund it on Stripe"
        )


def _credit_note(engine: Engine, gateway: StripeGateway, claim: _Claim) -> None:
    pushed = _pushed(engine, claim)
    if pushed is None:
        raise PermanentFailure("the invoice is not on Stripe, so its credit note cannot be")
    account, stripe_invoice = pushed
    assert claim.credit_note_id is not None
    with Session(engine) as session:
        note = next(
            (n for n in credit_notes(session, claim.invoice_id) if n.id == claim.credit_note_id),
            None,
        )
        if note is None:
            raise PermanentFailure("the credit note no longer exists")
        params = {
            "invoice": stripe_invoice,
            "lines": [
                {
                    "type": "custom_line_item",
                    "description": f"Credit note {note.number}"[:500],
                    "quantity": 1,
                    "unit_amount": note.amount_minor,
                }
            ],
            "memo": note.reason[:5000],
            "metadata": {"agentmeter_credit_note_id": note.id, "agentmeter_number": note.number},
        }
    claim.progress["credit_note"] = gateway.create_credit_note(
        account, _key("credit-note", claim.credit_note_id), params
    )


def _finish(
    engine: Engine,
    claim: _Claim,
    *,
    retry_at: datetime | None = None,
    error: str = "",
    failure: PermanentFailure | None = None,
) -> None:
    """Record the attempt's outcome on the job and the invoice (no-op if the claim was lost)."""
    with Session(engine) as session, session.begin():
        job = repository.lock_claimed(session, claim.id, claim.attempts)
        if job is None:
            logger.warning("stripe job %s was re-claimed before its outcome was saved", claim.key)
            return
        job.progress = claim.progress
        invoice = repository.lock_invoice(session, claim.tenant_id, claim.invoice_id)
        if retry_at is not None:
            job.status, job.next_attempt_at, job.last_error = JobStatus.PENDING, retry_at, error
            logger.info("stripe job %s retrying: %s", claim.key, error)
            return
        job.finished_at = utcnow()
        if invoice is None:
            job.status = JobStatus.FAILED if failure else JobStatus.DONE
            return
        scope = f"stripe:{invoice.id}"
        if failure is None:
            job.status, job.last_error = JobStatus.DONE, ""
            invoice.stripe_sync_status = SyncStatus.SYNCED
            invoice.stripe_error = ""
            for exception in repository.open_stripe_exceptions(session, claim.tenant_id, scope):
                if exception.fingerprint == claim.key:
                    exception.status = ExceptionStatus.RESOLVED
                    exception.resolved_at = utcnow()
                    exception.resolved_by = SYSTEM_ACTOR
                    exception.note = "synced with Stripe"
            return
        job.status, job.last_error = JobStatus.FAILED, failure.message[:2000]
        invoice.stripe_sync_status = SyncStatus.FAILED
        invoice.stripe_error = failure.message[:2000]
        _open_exception(session, invoice, scope, claim, failure)
        logger.warning("stripe job %s failed: %s", claim.key, failure.message)


def _open_exception(
    session: Session, invoice: Invoice, scope: str, claim: _Claim, failure: PermanentFailure
) -> None:
    message = f"Stripe {claim.kind} failed: {failure.message}"[:2000]
    found = repository.stripe_exception(
        session, invoice.tenant_id, scope, failure.exception_type, claim.key
    )
    if found is None:
        session.add(
            BillingException(
                id=uuid.uuid4().hex,
                tenant_id=invoice.tenant_id,
                scope=scope,
                invoice_id=invoice.id,
                period=invoice.period,
                customer_id=invoice.customer_id,
                type=failure.exception_type,
                severity=Severity.WARNING,
                fingerprint=claim.key,
                message=message,
                evidence={"job": claim.key, "attempts": claim.attempts, **claim.progress},
            )
        )
        return
    found.message = message
    found.status = ExceptionStatus.OPEN
    found.resolved_at = None
    found.resolved_by = ""
