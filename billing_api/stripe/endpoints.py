"""HTTP surface of Stripe Connect: the connection, OAuth onboarding, customers' collection
terms, retrying an invoice's sync, and the webhook endpoint Stripe calls."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Query, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from agentmeter.clock import utcnow
from billing_api.auth import AdminCaller
from billing_api.deps import DbSession, WriteSession
from billing_api.errors import ApiError, database_errors
from billing_api.stripe import events, service
from billing_api.stripe.gateway import StripeGateway, WebhookSignatureError
from billing_api.stripe.schemas import (
    AccountConnect,
    AccountOut,
    ConnectUrlOut,
    CustomerTermsOut,
    CustomerTermsSet,
    InvoiceSyncOut,
    WebhookReceived,
)

router = APIRouter(prefix="/api/v1", tags=["stripe"])


def stripe_gateway(request: Request) -> StripeGateway | None:
    """The process's one Stripe gateway (built at start-up), or None when Stripe is off."""
    return getattr(request.app.state, "stripe", None)


Gateway = Annotated[StripeGateway | None, Depends(stripe_gateway)]


class BadSignatureError(ApiError):
    code = "invalid_signature"


def _account_out(connection: service.Connection) -> AccountOut:
    return AccountOut(
        stripe_enabled=connection.stripe_enabled,
        connected=connection.account_id is not None,
        account_id=connection.account_id,
        connected_via=connection.connected_via,
        connected_at=connection.connected_at,
        application_fee_percent=connection.application_fee_percent,
    )


@router.put("/stripe/account")
def connect_account(
    body: AccountConnect, session: DbSession, caller: AdminCaller, gateway: Gateway
) -> AccountOut:
    """Connect a Stripe account onboarded elsewhere (checked with Stripe first)."""
    return _account_out(
        service.connect_account(
            session, caller, gateway, body.account_id, body.application_fee_percent
        )
    )


@router.get("/stripe/account")
def get_account(session: DbSession, caller: AdminCaller, gateway: Gateway) -> AccountOut:
    return _account_out(service.get_connection(session, caller, gateway))


@router.delete("/stripe/account", status_code=204)
def disconnect_account(session: DbSession, caller: AdminCaller) -> None:
    service.disconnect_account(session, caller)


@router.get("/stripe/connect")
def start_oauth(session: DbSession, caller: AdminCaller, gateway: Gateway) -> ConnectUrlOut:
    """The Stripe OAuth URL to open; Stripe sends the builder back to the callback."""
    return ConnectUrlOut(url=service.start_oauth(session, caller, gateway, now=utcnow()))


@router.get("/stripe/connect/callback")
def finish_oauth(
    session: WriteSession,
    gateway: Gateway,
    state: Annotated[str, Query(min_length=1, max_length=200)],
    code: Annotated[str | None, Query(max_length=500)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
    error_description: Annotated[str | None, Query(max_length=1000)] = None,
) -> AccountOut:
    """Where Stripe redirects after OAuth: the state names the tenant (no admin key)."""
    if error is not None or not code:
        raise ApiError(f"Stripe did not authorize: {error_description or error or 'no code'}")
    _, connection = service.finish_oauth(session, gateway, state=state, code=code, now=utcnow())
    return _account_out(connection)


@router.put("/stripe/customers/{customer_id}")
def set_customer_terms(
    customer_id: str, body: CustomerTermsSet, session: DbSession, caller: AdminCaller
) -> CustomerTermsOut:
    """How the customer's invoices are collected on Stripe (default send_invoice, 30 days)."""
    terms = service.set_customer_terms(
        session, caller, customer_id, body.collection_method, body.days_until_due
    )
    return CustomerTermsOut.model_validate(terms)


@router.get("/stripe/customers/{customer_id}")
def get_customer_terms(
    customer_id: str, session: DbSession, caller: AdminCaller
) -> CustomerTermsOut:
    return CustomerTermsOut.model_validate(service.customer_terms(session, caller, customer_id))


@router.get("/invoices/{invoice_id}/stripe-sync")
def get_invoice_sync(invoice_id: str, session: DbSession, caller: AdminCaller) -> InvoiceSyncOut:
    """The invoice's Stripe state and its outbox jobs."""
    return InvoiceSyncOut.model_validate(service.invoice_sync(session, caller, invoice_id))


@router.post("/invoices/{invoice_id}/stripe-sync", status_code=202)
def retry_invoice_sync(invoice_id: str, session: DbSession, caller: AdminCaller) -> InvoiceSyncOut:
    """Queue the invoice's failed Stripe jobs again (or its first push, if it was finalized
    before an account was connected); the worker runs them."""
    sync = service.retry_sync(session, caller, invoice_id, now=utcnow())
    return InvoiceSyncOut.model_validate(sync)


def _store(engine: Engine, event: dict[str, Any]) -> bool:
    with database_errors(), Session(engine) as session, session.begin():
        return events.store_event(session, event)


@router.post("/stripe/webhooks")
async def receive_webhook(
    request: Request,
    background: BackgroundTasks,
    gateway: Gateway,
    signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> WebhookReceived:
    """Stripe's Connect events: verified on the raw body, stored once per event id, then
    processed after the answer (and by the background worker, should this process stop)."""
    if gateway is None or not gateway.webhook_secret:
        raise service.StripeNotConfiguredError(
            "Stripe webhooks are off: set AGENTMETER_STRIPE_API_KEY and _WEBHOOK_SECRET"
        )
    body = await request.body()
    try:
        event = gateway.verify_webhook(body, signature)
    except WebhookSignatureError as error:
        raise BadSignatureError(f"webhook rejected: {error}") from None
    engine: Engine = request.app.state.engine
    stored = await run_in_threadpool(_store, engine, event)
    if stored:
        background.add_task(events.process_events, engine)
    return WebhookReceived(received=True, duplicate=not stored)
