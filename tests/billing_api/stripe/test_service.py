"""The Stripe service decides from the caller: the connection is an admin's, customer
terms and retries the billing role's; a customer sees none of it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from billing_api.auth import Caller, Role
from billing_api.errors import ForbiddenError, NotFoundError
from billing_api.stripe import service as stripe
from billing_api.stripe.states import CollectionMethod
from tests.billing_api.callers import customer, staff
from tests.billing_api.scenario import Scenario

NOW = datetime(2026, 11, 15, tzinfo=UTC)
Call = Callable[[Session, Caller], Any]

BILLING_WRITES: list[Any] = [
    pytest.param(
        lambda s, c: stripe.set_customer_terms(s, c, "acme", CollectionMethod.SEND_INVOICE, 14),
        id="set_customer_terms",
    ),
    pytest.param(lambda s, c: stripe.retry_sync(s, c, "no-such-invoice", now=NOW), id="retry"),
]
ADMIN_WRITES: list[Any] = [
    pytest.param(lambda s, c: stripe.disconnect_account(s, c), id="disconnect"),
    pytest.param(lambda s, c: stripe.start_oauth(s, c, None, now=NOW), id="start_oauth"),
    pytest.param(
        lambda s, c: stripe.connect_account(s, c, None, "acct_1", None), id="connect_account"
    ),
]
READS: list[Any] = [
    pytest.param(lambda s, c: stripe.get_connection(s, c, None), id="get_connection"),
    pytest.param(lambda s, c: stripe.customer_terms(s, c, "acme"), id="customer_terms"),
    pytest.param(lambda s, c: stripe.invoice_sync(s, c, "no-such-invoice"), id="invoice_sync"),
]


@pytest.mark.parametrize("call", [*READS, *BILLING_WRITES, *ADMIN_WRITES])
def test_a_customer_gets_nothing(engine: Engine, scenario: Scenario, call: Call) -> None:
    with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
        call(session, customer(scenario.tenant_id, "acme"))


@pytest.mark.parametrize("call", [*BILLING_WRITES, *ADMIN_WRITES])
def test_a_viewer_changes_nothing(engine: Engine, scenario: Scenario, call: Call) -> None:
    with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
        call(session, staff(scenario.tenant_id, Role.VIEWER))


@pytest.mark.parametrize("call", ADMIN_WRITES)
def test_the_connection_is_the_admins(engine: Engine, scenario: Scenario, call: Call) -> None:
    with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
        call(session, staff(scenario.tenant_id, Role.BILLING))


def test_billing_sets_terms_viewer_reads_them(engine: Engine, scenario: Scenario) -> None:
    with Session(engine) as session, session.begin():
        stripe.set_customer_terms(
            session,
            staff(scenario.tenant_id, Role.BILLING),
            "acme",
            CollectionMethod.SEND_INVOICE,
            14,
        )
    with Session(engine) as session:
        terms = stripe.customer_terms(session, staff(scenario.tenant_id, Role.VIEWER), "acme")
        assert terms.days_until_due == 14
        with pytest.raises(NotFoundError):
            stripe.invoice_sync(session, staff(scenario.tenant_id, Role.VIEWER), "nope")
