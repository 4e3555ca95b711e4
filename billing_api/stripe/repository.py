"""All SQL of Stripe Connect: accounts, OAuth states, customer mappings, the job outbox,
stored webhook events, and the Stripe columns of invoices."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from agentmeter.db import read_only
from agentmeter.tables import (
    BillingException,
    Customer,
    Invoice,
    InvoiceLine,
    StripeAccount,
    StripeCustomer,
    StripeEvent,
    StripeJob,
    StripeOAuthState,
)
from billing_api.invoicing.states import ExceptionStatus
from billing_api.jobs.leasing import LeasedTable
from billing_api.stripe.states import EventStatus, JobStatus


def account_of_tenant(session: Session, tenant_id: str) -> StripeAccount | None:
    return session.get(StripeAccount, tenant_id)


def tenant_of_account(session: Session, account_id: str) -> str | None:
    return session.scalar(
        select(StripeAccount.tenant_id).where(StripeAccount.account_id == account_id)
    )


def delete_account(session: Session, account: StripeAccount) -> None:
    session.delete(account)
    session.flush()


def add_state(session: Session, state: StripeOAuthState) -> None:
    session.add(state)
    session.flush()


def state_is_live(engine: Engine, state_hash: str, now: datetime) -> bool:
    """True if the OAuth state exists, unused and unexpired; read without a write lock."""
    with read_only(engine) as connection:
        row = connection.execute(
            select(StripeOAuthState.expires_at).where(
                StripeOAuthState.state_hash == state_hash, StripeOAuthState.used_at.is_(None)
            )
        ).first()
    return row is not None and row.expires_at > now


def lock_state(session: Session, state_hash: str) -> StripeOAuthState | None:
    return session.scalars(
        select(StripeOAuthState).where(StripeOAuthState.state_hash == state_hash).with_for_update()
    ).first()


def stripe_customer(session: Session, tenant_id: str, customer_id: str) -> StripeCustomer | None:
    return session.get(StripeCustomer, (tenant_id, customer_id))


def customer(session: Session, tenant_id: str, customer_id: str) -> Customer | None:
    return session.get(Customer, (tenant_id, customer_id))


def invoice(session: Session, tenant_id: str, invoice_id: str) -> Invoice | None:
    return session.scalars(
        select(Invoice).where(Invoice.tenant_id == tenant_id, Invoice.id == invoice_id)
    ).first()


def lock_invoice(session: Session, tenant_id: str, invoice_id: str) -> Invoice | None:
    return session.scalars(
        select(Invoice)
        .where(Invoice.tenant_id == tenant_id, Invoice.id == invoice_id)
        .with_for_update()
    ).first()


def invoice_by_stripe_id(session: Session, tenant_id: str, stripe_id: str) -> Invoice | None:
    return session.scalars(
        select(Invoice)
        .where(Invoice.tenant_id == tenant_id, Invoice.stripe_invoice_id == stripe_id)
        .with_for_update()
    ).first()


def lines(session: Session, invoice_id: str) -> list[InvoiceLine]:
    return list(
        session.scalars(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id == invoice_id)
            .order_by(InvoiceLine.position, InvoiceLine.id)
        )
    )


# --- The outbox -------------------------------------------------------------------------


def job_by_key(session: Session, key: str) -> StripeJob | None:
    return session.scalars(select(StripeJob).where(StripeJob.key == key)).first()


def add_job(session: Session, job: StripeJob) -> None:
    session.add(job)
    session.flush()


def jobs_of_invoice(session: Session, invoice_id: str) -> list[StripeJob]:
    return list(
        session.scalars(
            select(StripeJob).where(StripeJob.invoice_id == invoice_id).order_by(StripeJob.id)
        )
    )


STRIPE_JOBS = LeasedTable(
    StripeJob,
    StripeJob.id,
    StripeJob.status,
    StripeJob.attempts,
    StripeJob.next_attempt_at,
    JobStatus.RUNNING,
)


def due_jobs(session: Session, now: datetime, limit: int) -> Sequence[StripeJob]:
    """Pending jobs whose time has come and running ones whose lease ran out (the worker
    died), oldest first; a job waits while an older job of its invoice is unfinished (a
    void never overtakes its push). Rows another worker has locked are skipped on
    PostgreSQL."""
    unfinished = (JobStatus.PENDING, JobStatus.RUNNING)
    older = aliased(StripeJob)
    return session.scalars(
        STRIPE_JOBS.due(unfinished, now)
        .where(
            ~exists().where(
                older.invoice_id == StripeJob.invoice_id,
                older.id < StripeJob.id,
                older.status.in_(unfinished),
            ),
        )
        .order_by(StripeJob.id)
        .limit(limit)
    ).all()


def claim(
    session: Session, job_id: int, seen_status: str, seen_attempts: int, lease_until: datetime
) -> bool:
    """Take a job for one attempt if nobody changed it since it was read
    (`LeasedTable.claim`)."""
    return STRIPE_JOBS.claim(session, job_id, seen_status, seen_attempts, lease_until)


def save_progress(
    session: Session, job_id: int, attempts: int, progress: dict[str, Any], lease_until: datetime
) -> bool:
    """Record the Stripe ids made so far and extend the lease; False if the claim was lost."""
    return STRIPE_JOBS.update_held(
        session, job_id, attempts, progress=progress, next_attempt_at=lease_until
    )


def lock_claimed(session: Session, job_id: int, attempts: int) -> StripeJob | None:
    """The job, locked, if this worker's claim on it still holds."""
    job: StripeJob | None = STRIPE_JOBS.lock_held(session, job_id, attempts)
    return job


# --- Exceptions on invoices -------------------------------------------------------------


def stripe_exception(
    session: Session, tenant_id: str, scope: str, type_: str, fingerprint: str
) -> BillingException | None:
    return session.scalars(
        select(BillingException).where(
            BillingException.tenant_id == tenant_id,
            BillingException.scope == scope,
            BillingException.type == type_,
            BillingException.fingerprint == fingerprint,
        )
    ).first()


def open_stripe_exceptions(session: Session, tenant_id: str, scope: str) -> list[BillingException]:
    return list(
        session.scalars(
            select(BillingException).where(
                BillingException.tenant_id == tenant_id,
                BillingException.scope == scope,
                BillingException.status == ExceptionStatus.OPEN,
            )
        )
    )


# --- Webhook events ---------------------------------------------------------------------


def insert_event(session: Session, event: StripeEvent) -> bool:
    """Store an event unless its id is stored already; True if it was new."""
    if session.get(StripeEvent, event.id) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(event)
    except IntegrityError:  # the same event, stored concurrently
        return False
    return True


def pending_events(session: Session, limit: int) -> Sequence[StripeEvent]:
    return session.scalars(
        select(StripeEvent)
        .where(StripeEvent.status == EventStatus.PENDING)
        .order_by(StripeEvent.received_at, StripeEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
