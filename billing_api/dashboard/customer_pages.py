"""Customers: the list with search, and one customer's usage, estimate, budget, credits,
price book and invoices; credit grants, voids, the price book assignment and portal links
(billing)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from billing_api.auth import Caller, Role
from billing_api.budgets.schemas import BudgetSet
from billing_api.budgets.service import get_budget, put_budget
from billing_api.credits import service as credits
from billing_api.credits.schemas import CreditGrantCreate, CreditGrantOut
from billing_api.customers.service import count_customers, find_customers, get_customer
from billing_api.dashboard.forms import parse
from billing_api.dashboard.http import PREFIX, DashboardRoute, StaffCaller, render, see_other
from billing_api.dashboard.overview import margin_percent
from billing_api.dashboard.paging import list_page
from billing_api.deps import DbSession
from billing_api.invoicing import repository as invoicing
from billing_api.portal.auth import tokens
from billing_api.portal.endpoints import portal_link
from billing_api.portal.schemas import PortalSessionCreate
from billing_api.pricing import service as pricing
from billing_api.pricing.schemas import OverrideOut
from billing_api.rating.service import estimate
from billing_api.usage.service import UsageSelection, query_usage

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)

USAGE_DIMENSIONS = (("step", "Step"), ("model", "Model"), ("tool", "Tool"), ("source", "Source"))
PORTAL_LINK_HOURS = ((1, "1 hour"), (24, "24 hours"), (24 * 7, "7 days"), (24 * 30, "30 days"))


@router.get("/customers", response_class=HTMLResponse)
def customers(request: Request, session: DbSession, caller: StaffCaller, q: str = "") -> Response:
    """Registered customers by id, a page at a time (`?page=`); `q` keeps those whose id,
    name or e-mail contains it."""
    text = q.strip()
    total = count_customers(session, caller, text)
    listed = list_page(request.url.path, request.query_params, total, noun="customers")
    found = find_customers(session, caller, text, offset=listed.offset, limit=listed.size)
    context = {"customers": found, "listed": listed, "q": q}
    return render(request, caller, "customers.html", page="customers", title="Customers",
                  context=context)  # fmt: skip


def _detail(session: Session, caller: Caller, customer_id: str, now: datetime) -> dict[str, Any]:
    customer = get_customer(session, caller, customer_id)
    rated = estimate(session, caller, customer_id, now)
    usage = {}
    for dimension, _label in USAGE_DIMENSIONS:
        selection = UsageSelection(
            customer_id=customer_id,
            start=rated.period.start,
            end=rated.period.end,
            group_by=(dimension,),
        )
        usage[dimension] = [
            (a.dimensions[dimension], a.meter, a.quantity)
            for a in query_usage(session, caller, selection)
        ]
    grants = [
        CreditGrantOut.of(grant, left, now)
        for grant, left in credits.list_grants(session, caller, customer_id)
    ]
    return {
        "customer": customer,
        "rated": rated,
        "margin_percent": margin_percent(rated.subtotal_minor, rated.margin_minor),
        "usage": usage,
        "dimensions": USAGE_DIMENSIONS,
        "budget": get_budget(session, caller, customer_id),
        "grants": grants,
        "balance": credits.balance(session, caller, customer_id, now),
        "books": pricing.list_price_books(session, caller),
        "overrides": [
            OverrideOut.of(o) for o in pricing.list_overrides(session, caller, customer_id)
        ],
        "invoices": invoicing.list_invoices(session, caller.tenant_id, customer_id=customer_id),
        "grant_errors": {},
        "grant_input": {},
        "budget_errors": {},
        "budget_input": {},
        "link_hours": PORTAL_LINK_HOURS,
        "portal_link": None,
        "link_errors": {},
    }


def _detail_page(
    request: Request,
    session: DbSession,
    caller: Caller,
    customer_id: str,
    status: int = 200,
    **extra: Any,
) -> Response:
    context = {**_detail(session, caller, customer_id, utcnow()), **extra}
    name = context["customer"].name
    return render(request, caller, "customer.html", page="customer", title=name,
                  context=context, status=status)  # fmt: skip


@router.get("/customers/{customer_id}", response_class=HTMLResponse)
def customer(
    request: Request, session: DbSession, caller: StaffCaller, customer_id: str
) -> Response:
    """One customer's period so far and everything billed to them."""
    return _detail_page(request, session, caller, customer_id)


@router.post("/customers/{customer_id}/credits", response_model=None)
def grant(
    request: Request,
    session: DbSession,
    caller: StaffCaller,
    customer_id: str,
    amount: Annotated[str, Form(max_length=40)] = "",
    currency: Annotated[str, Form(max_length=3)] = "",
    priority: Annotated[str, Form(max_length=12)] = "",
    expires_at: Annotated[str, Form(max_length=40)] = "",
    description: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Grant prepaid credit; field errors show next to the fields."""
    caller.require(Role.BILLING)  # before the form is read: a viewer learns nothing from it
    data = {"amount": amount, "currency": currency, "priority": priority,
            "expires_at": expires_at, "description": description}  # fmt: skip
    body, errors = parse(CreditGrantCreate, data)
    if body is not None:
        credits.grant_credits(session, caller, customer_id, currency=body.currency,
                              amount_minor=body.amount_minor, now=utcnow(),
                              priority=body.priority, expires_at=body.expires_at,
                              description=body.description)  # fmt: skip
        return see_other(f"/customers/{customer_id}#credits")
    return _detail_page(request, session, caller, customer_id, status=422,
                        grant_errors=errors, grant_input=data)  # fmt: skip


@router.post("/customers/{customer_id}/credits/{grant_id}/void")
def void(
    session: DbSession,
    caller: StaffCaller,
    customer_id: str,
    grant_id: str,
    reason: Annotated[str, Form(min_length=1, max_length=500)],
) -> Response:
    """Void a grant; what remained of it leaves the balance."""
    credits.void_grant(session, caller, customer_id, grant_id, reason, utcnow())
    return see_other(f"/customers/{customer_id}#credits")


@router.post("/customers/{customer_id}/price-book")
def assign_price_book(
    session: DbSession,
    caller: StaffCaller,
    customer_id: str,
    price_book_id: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Put the customer on a book; empty: the tenant's default book."""
    pricing.set_customer_price_book(session, caller, customer_id, price_book_id or None)
    return see_other(f"/customers/{customer_id}#terms")


@router.post("/customers/{customer_id}/budget", response_model=None)
def set_budget(
    request: Request,
    session: DbSession,
    caller: StaffCaller,
    customer_id: str,
    limit: Annotated[str, Form(max_length=40)] = "",
    currency: Annotated[str, Form(max_length=3)] = "",
    thresholds: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Set the customer's spend limit per period and its alert thresholds (percent)."""
    caller.require(Role.BILLING)  # before the form is read: a viewer learns nothing from it
    entered = {"limit": limit, "currency": currency, "thresholds": thresholds}
    parts = [p.strip() for p in thresholds.split(",") if p.strip()]
    data: dict[str, Any] = {"limit": limit, "currency": currency}
    errors: dict[str, str] = {}
    if parts:
        if all(p.isdigit() for p in parts):
            data["thresholds"] = [int(p) for p in parts]
        else:
            errors["thresholds"] = "whole percents separated by commas, e.g. 50, 80, 100"
    body, problems = parse(BudgetSet, data)
    errors = {**problems, **errors}
    if body is None or errors:
        return _detail_page(request, session, caller, customer_id, status=422,
                            budget_errors=errors, budget_input=entered)  # fmt: skip
    put_budget(session, caller, customer_id, currency=body.currency, limit_minor=body.limit_minor,
               thresholds=body.thresholds, now=utcnow())  # fmt: skip
    return see_other(f"/customers/{customer_id}#budget")


@router.post("/customers/{customer_id}/portal-sessions", response_model=None)
def new_portal_link(
    request: Request,
    session: DbSession,
    caller: StaffCaller,
    customer_id: str,
    hours: Annotated[str, Form(max_length=6)] = "24",
) -> Response:
    """A signed portal link for the customer, as `POST /api/v1/customers/{id}/portal-sessions`
    issues it; shown on this response only (no redirect: the token is never stored)."""
    caller.require(Role.BILLING)  # before the form is read: a viewer learns nothing from it
    seconds = str(int(hours) * 3600) if hours.isdigit() else hours
    body, errors = parse(PortalSessionCreate, {"expires_in": seconds})
    if body is None:
        return _detail_page(request, session, caller, customer_id, status=422,
                            link_errors={"hours": "; ".join(errors.values())})  # fmt: skip
    issued = tokens(request).issue(
        session, caller, customer_id, timedelta(seconds=body.expires_in), utcnow()
    )
    link = {"url": portal_link(request, issued.token), "expires_at": issued.expires_at}
    return _detail_page(request, session, caller, customer_id, portal_link=link)
