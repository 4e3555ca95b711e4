"""Budgets: the billing role sets them; a customer reads its own (spend, never cost)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from billing_api.auth import Caller, Role
from billing_api.budgets import service as budgets
from billing_api.errors import ForbiddenError, NotFoundError
from tests.billing_api.callers import customer, staff
from tests.billing_api.scenario import NOW, Scenario


def put(session: Session, caller: Caller, customer_id: str) -> budgets.BudgetStatus:
    return budgets.put_budget(
        session,
        caller,
        customer_id,
        currency="USD",
        limit_minor=10_000,
        thresholds=[50, 100],
        now=NOW,
    )


class TestBudgets:
    def test_billing_sets_customer_reads_its_own(self, engine: Engine, scenario: Scenario) -> None:
        with Session(engine) as session, session.begin():
            put(session, staff(scenario.tenant_id, Role.BILLING), "acme")
        with Session(engine) as session, session.begin():
            status = budgets.evaluate_budget(
                session, customer(scenario.tenant_id, "acme"), "acme", NOW
            )
        # 2,000,000 tokens at 10.00 per million: 20.00 of a 100.00 limit.
        assert (status.spent_minor, status.remaining_minor, status.crossed) == (2000, 8000, [])

    def test_customer_cannot_read_another_budget(self, engine: Engine, scenario: Scenario) -> None:
        with Session(engine) as session, session.begin():
            put(session, staff(scenario.tenant_id), "globex")
        with Session(engine) as session, session.begin(), pytest.raises(NotFoundError):
            budgets.evaluate_budget(session, customer(scenario.tenant_id, "acme"), "globex", NOW)
        with Session(engine) as session:
            assert budgets.get_budget(session, staff(scenario.tenant_id), "globex") is not None
            with pytest.raises(NotFoundError):
                budgets.get_budget(session, customer(scenario.tenant_id, "acme"), "globex")

    @pytest.mark.parametrize("role", [Role.VIEWER, Role.CUSTOMER])
    def test_only_billing_sets_or_deletes(
        self, engine: Engine, scenario: Scenario, role: Role
    ) -> None:
        caller = (
            customer(scenario.tenant_id, "acme")
            if role is Role.CUSTOMER
            else staff(scenario.tenant_id, role)
        )
        with Session(engine) as session, session.begin():
            put(session, staff(scenario.tenant_id), "acme")
        with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
            put(session, caller, "acme")
        with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
            budgets.delete_budget(session, caller, "acme")
        with Session(engine) as session:
            assert budgets.get_budget(session, staff(scenario.tenant_id), "acme") is not None
