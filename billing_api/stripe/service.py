"""Stripe Connect for a tenant: connecting an account (directly or by OAuth), how each
customer is invoiced there, the outbox jobs that invoicing's finalize, void and credit
notes enqueue, and retrying them by hand.

Services take (session, tenant id, plain arguments), return domain values, and never
commit: the request or job boundary does. Calls to Stripe happen here only where the
builder waits for the answer (checking an account, exchanging an OAuth code); everything
that touches invoices on Stripe runs later, from the outbox (`outbox.py`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import (
    CreditNote,
    Invoice,
    StripeAccount,
    StripeCustomer,
    StripeJob,
    StripeOAuthState,
)
from billing_api.auth import Caller, Role
from billing_api.errors import ApiError, ConflictError, NotFoundError
from billing_api.invoicing.repository import credit_notes
from billing_api.invoicing.states import InvoiceStatus
from billing_api.stripe import repository
from billing_api.stripe.gateway import StripeCallError, StripeGateway
from billing_api.stripe.states import (
    CollectionMethod,
    ConnectedVia,
    JobKind,
    JobStatus,
    PaymentStatus,
    SyncStatus,
)

logger = logging.getLogger("agentmeter.stripe")

OAUTH_STATE_TTL = timedelta(minutes=15)
_BAD_STATE = "unknown, used or expired state; start again from /api/v1/stripe/connect"
DEFAULT_DAYS_UNTIL_DUE = 30


class StripeNotConfiguredError(ApiError):
    status = 409
    code = "stripe_not_configured"


class StripeUnavailableError(ApiError):
    status = 502
    code = "stripe_unavailable"


class OAuthStateError(ApiError):
    status = 400
    code = "invalid_state"


@dataclass(frozen=True, slots=True)
class Connection:
    """A tenant's Stripe connection as the builder sees it."""

    stripe_enabled: bool
    account_id: str | None
    connected_via: str | None
    connected_at: datetime | None
    application_fee_percent: Decimal | None


@dataclass(frozen=True, slots=True)
class CustomerTerms:
    """How one customer's invoices are collected on Stripe, and its Stripe customer."""

    customer_id: str
    collection_method: CollectionMethod
    days_until_due: int | None
    stripe_customer_id: str | None


@dataclass(frozen=True, slots=True)
class JobView:
    kind: str
    status: str
    attempts: int
    last_error: str
    next_attempt_at: datetime


@dataclass(frozen=True, slots=True)
class InvoiceSync:
    """An invoice's Stripe state and the outbox jobs behind it."""

    invoice_id: str
    stripe_invoice_id: str | None
    stripe_sync_status: str
    stripe_error: str
    payment_status: str
    jobs: list[JobView]


def _require(gateway: StripeGateway | None) -> StripeGateway:
    if gateway is None:
        raise StripeNotConfiguredError("Stripe is off: set AGENTMETER_STRIPE_API_KEY")
    return gateway


def _connection(gateway: StripeGateway | None, account: StripeAccount | None) -> Connection:
    return Connection(
        stripe_enabled=gateway is not None,
        account_id=account.account_id if account else None,
        connected_via=account.connected_via if account else None,
        connected_at=account.connected_at if account else None,
        application_fee_percent=account.application_fee_percent if account else None,
    )


def get_connection(session: Session, caller: Caller, gateway: StripeGateway | None) -> Connection:
    """The tenant's connection (no account: not connected), and whether Stripe is on."""
    caller.require_staff()
    return _connection(gateway, repository.account_of_tenant(session, caller.tenant_id))


def _store_account(
    session: Session,
    tenant_id: str,
    account_id: str,
    via: ConnectedVia,
    fee_percent: Decimal | None,
    *,
    keep_fee: bool,
) -> StripeAccount:
    other = repository.tenant_of_account(session, account_id)
    if other is not None and other != tenant_id:
        raise ConflictError(f"Stripe account {account_id} is connected to another tenant")
    account = repository.account_of_tenant(session, tenant_id)
    if account is None:
        account = StripeAccount(tenant_id=tenant_id, account_id=account_id, connected_via=via)
        session.add(account)
    elif account.account_id != account_id:
        account.account_id = account_id
        account.connected_via = via
        account.connected_at = utcnow()
    if not keep_fee:
        account.application_fee_percent = fee_percent
    session.flush()
    return account


def connect_account(
    session: Session,
    caller: Caller,
    gateway: StripeGateway | None,
    account_id: str,
    application_fee_percent: Decimal | None,
) -> Connection:
    """Connect an account onboarded elsewhere, after checking the platform can act on it.
    Connecting again updates the platform fee (None: no fee). Admins only."""
    caller.require()
    client = _require(gateway)
    try:
        exists = client.account_exists(account_id)
    except StripeCallError as error:
        raise StripeUnavailableError(f"could not check the account: {error.message}") from None
    if not exists:
        raise ApiError(f"Stripe account {account_id} is not connected to this platform")
    account = _store_account(
        session,
        caller.tenant_id,
        account_id,
        ConnectedVia.API,
        application_fee_percent,
        keep_fee=False,
    )
    return _connection(gateway, account)


def disconnect_account(session: Session, caller: Caller) -> None:
    """Forget the connection; invoices finalized later are not pushed. Admins only."""
    caller.require()
    account = repository.account_of_tenant(session, caller.tenant_id)
    if account is None:
        raise NotFoundError("no Stripe account is connected")
    repository.delete_account(session, account)


def _hash_state(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def start_oauth(
    session: Session, caller: Caller, gateway: StripeGateway | None, *, now: datetime
) -> str:
    """The Stripe OAuth URL to send the builder to; its `state` names this tenant, works
    once, and expires after `OAUTH_STATE_TTL`. Admins only."""
    caller.require()
    client = _require(gateway)
    if not client.oauth_enabled:
        raise StripeNotConfiguredError("OAuth is off: set AGENTMETER_STRIPE_CLIENT_ID")
    state = secrets.token_urlsafe(32)
    repository.add_state(
        session,
        StripeOAuthState(
            state_hash=_hash_state(state),
            tenant_id=caller.tenant_id,
            expires_at=now + OAUTH_STATE_TTL,
        ),
    )
    return client.authorize_url(state)


def finish_oauth(
    session: Session, gateway: StripeGateway | None, *, state: str, code: str, now: datetime
) -> tuple[str, Connection]:
    """Redeem `state` (once, unexpired) and store the account the `code` grants; the
    tenant and its connection.

    The state is checked without a lock first (a forged one costs no call to Stripe), and
    redeemed only after Stripe answered, so no write lock is held during the call.
    """
    client = _require(gateway)
    state_hash = _hash_state(state)
    engine = session.get_bind()
    assert isinstance(engine, Engine), "sessions are bound to the engine"
    if not repository.state_is_live(engine, state_hash, now):
        raise OAuthStateError(_BAD_STATE)
    try:
        account_id = client.exchange_code(code)
    except StripeCallError as error:
        if error.retryable:
            raise StripeUnavailableError(f"Stripe did not answer: {error.message}") from None
        raise ApiError(f"Stripe refused the authorization code: {error.message}") from None
    found = repository.lock_state(session, state_hash)
    if found is None or found.used_at is not None or found.expires_at <= now:
        raise OAuthStateError(_BAD_STATE)  # redeemed by a concurrent callback meanwhile
    found.used_at = now
    account = _store_account(
        session, found.tenant_id, account_id, ConnectedVia.OAUTH, None, keep_fee=True
    )
    return found.tenant_id, _connection(gateway, account)


def _terms(customer_id: str, found: StripeCustomer | None) -> CustomerTerms:
    if found is None:
        return CustomerTerms(
            customer_id, CollectionMethod.SEND_INVOICE, DEFAULT_DAYS_UNTIL_DUE, None
        )
    return CustomerTerms(
        customer_id,
        CollectionMethod(found.collection_method),
        found.days_until_due,
        found.stripe_customer_id,
    )


def customer_terms(session: Session, caller: Caller, customer_id: str) -> CustomerTerms:
    """How the customer is invoiced on Stripe (send_invoice, 30 days unless set)."""
    caller.require_staff()
    if repository.customer(session, caller.tenant_id, customer_id) is None:
        raise NotFoundError(f"no customer {customer_id!r}")
    found = repository.stripe_customer(session, caller.tenant_id, customer_id)
    return _terms(customer_id, found)


def set_customer_terms(
    session: Session,
    caller: Caller,
    customer_id: str,
    collection_method: CollectionMethod,
    days_until_due: int | None,
) -> CustomerTerms:
    """Invoice the customer by email with `days_until_due` (send_invoice), or charge its
    default payment method (charge_automatically, no due days)."""
    caller.require(Role.BILLING)
    tenant_id = caller.tenant_id
    if repository.customer(session, tenant_id, customer_id) is None:
        raise NotFoundError(f"no customer {customer_id!r}")
    if collection_method is CollectionMethod.SEND_INVOICE:
        days_until_due = DEFAULT_DAYS_UNTIL_DUE if days_until_due is None else days_until_due
    elif days_until_due is not None:
        raise ApiError("days_until_due applies to send_invoice only")
    found = repository.stripe_customer(session, tenant_id, customer_id)
    if found is None:
        found = StripeCustomer(tenant_id=tenant_id, customer_id=customer_id)
        session.add(found)
    found.collection_method = collection_method
    found.days_until_due = days_until_due
    session.flush()
    return _terms(customer_id, found)


# --- The outbox, fed by invoicing -------------------------------------------------------


def _enqueue(
    session: Session,
    invoice: Invoice,
    kind: JobKind,
    key: str,
    *,
    credit_note_id: str | None = None,
    now: datetime | None = None,
) -> None:
    if repository.job_by_key(session, key) is not None:
        return
    repository.add_job(
        session,
        StripeJob(
            key=key,
            tenant_id=invoice.tenant_id,
            invoice_id=invoice.id,
            kind=kind,
            credit_note_id=credit_note_id,
            status=JobStatus.PENDING,
            attempts=0,
            next_attempt_at=now or utcnow(),
            last_error="",
            progress={},
        ),
    )
    invoice.stripe_sync_status = SyncStatus.PENDING


def push_key(invoice_id: str) -> str:
    """The outbox key of an invoice's push (one per invoice)."""
    return f"{JobKind.PUSH}:{invoice_id}"


def invoice_finalized(session: Session, invoice: Invoice) -> None:
    """Called in the transaction that finalizes `invoice`: queue its push to the tenant's
    connected account, or mark it not_connected."""
    invoice.payment_status = PaymentStatus.UNPAID
    if repository.account_of_tenant(session, invoice.tenant_id) is None:
        invoice.stripe_sync_status = SyncStatus.NOT_CONNECTED
        return
    _enqueue(session, invoice, JobKind.PUSH, push_key(invoice.id))


def invoice_voided(session: Session, invoice: Invoice) -> None:
    """Called in the transaction that voids `invoice`: its payment status is void, and a
    copy on Stripe (or one still being pushed) is voided there."""
    invoice.payment_status = PaymentStatus.VOID
    if repository.job_by_key(session, push_key(invoice.id)) is not None:
        _enqueue(session, invoice, JobKind.VOID, f"{JobKind.VOID}:{invoice.id}")


def credit_note_created(session: Session, invoice: Invoice, note: CreditNote) -> None:
    """Called in the transaction that issues `note`: mirror it on Stripe if the invoice is
    pushed (or being pushed) there."""
    if repository.job_by_key(session, push_key(invoice.id)) is not None:
        _enqueue(
            session,
            invoice,
            JobKind.CREDIT_NOTE,
            f"{JobKind.CREDIT_NOTE}:{note.id}",
            credit_note_id=note.id,
        )


def _sync_view(session: Session, invoice: Invoice) -> InvoiceSync:
    return InvoiceSync(
        invoice_id=invoice.id,
        stripe_invoice_id=invoice.stripe_invoice_id,
        stripe_sync_status=invoice.stripe_sync_status,
        stripe_error=invoice.stripe_error,
        payment_status=invoice.payment_status,
        jobs=[
            JobView(j.kind, j.status, j.attempts, j.last_error, j.next_attempt_at)
            for j in repository.jobs_of_invoice(session, invoice.id)
        ],
    )


def invoice_sync(session: Session, caller: Caller, invoice_id: str) -> InvoiceSync:
    """The invoice's Stripe state and its outbox jobs, oldest first (staff: the jobs'
    errors are the builder's, not the customer's)."""
    caller.require_staff()
    invoice = repository.invoice(session, caller.tenant_id, invoice_id)
    if invoice is None:
        raise NotFoundError(f"no invoice {invoice_id!r}")
    return _sync_view(session, invoice)


def retry_sync(session: Session, caller: Caller, invoice_id: str, *, now: datetime) -> InvoiceSync:
    """Retry an invoice's failed Stripe jobs now; an invoice finalized before the account
    was connected is pushed (with its void and credit notes)."""
    caller.require(Role.BILLING)
    tenant_id = caller.tenant_id
    invoice = repository.lock_invoice(session, tenant_id, invoice_id)
    if invoice is None:
        raise NotFoundError(f"no invoice {invoice_id!r}")
    if invoice.status == InvoiceStatus.DRAFT:
        raise ConflictError("drafts are not pushed to Stripe; finalize the invoice first")
    if repository.account_of_tenant(session, tenant_id) is None:
        raise ConflictError("no Stripe account is connected")
    jobs = repository.jobs_of_invoice(session, invoice.id)
    if not jobs:
        _enqueue(session, invoice, JobKind.PUSH, push_key(invoice.id), now=now)
        if invoice.status == InvoiceStatus.VOID:
            invoice_voided(session, invoice)
        for note in credit_notes(session, invoice.id):
            credit_note_created(session, invoice, note)
    for job in jobs:
        if job.status == JobStatus.FAILED:
            job.status = JobStatus.PENDING
            job.attempts = 0
            job.next_attempt_at = now
            invoice.stripe_sync_status = SyncStatus.PENDING
    session.flush()
    return _sync_view(session, invoice)
