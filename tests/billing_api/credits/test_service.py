"""Credits: the billing role grants and voids, a customer-scoped caller reads only its
own grants and balance."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from billing_api.auth import Caller, Role
from billing_api.credits import service as credits
from billing_api.errors import ForbiddenError, NotFoundError
from tests.billing_api.callers import customer, staff
from tests.billing_api.scenario import NOW, Scenario


def grant(session: Session, caller: Caller, customer_id: str) -> str:
    created, _ = credits.grant_credits(
        session, caller, customer_id, currency="USD", amount_minor=1500, now=NOW
    )
    return created.id


class TestCustomerScopedCaller:
    def test_reads_its_own_grants_and_balance(self, engine: Engine, scenario: Scenario) -> None:
        with Session(engine) as session, session.begin():
            grant(session, staff(scenario.tenant_id, Role.BILLING), "acme")
        acme = customer(scenario.tenant_id, "acme")
        with Session(engine) as session:
            assert [left for _, left in credits.list_grants(session, acme, "acme")] == [1500]
            assert credits.balance(session, acme, "acme", NOW) == {"USD": 1500}

    @pytest.mark.parametrize("read", ["list_grants", "balance", "ledger"])
    def test_another_customers_credit_is_not_found(
        self, engine: Engine, scenario: Scenario, read: str
    ) -> None:
        with Session(engine) as session, session.begin():
            grant(session, staff(scenario.tenant_id), "globex")
        acme = customer(scenario.tenant_id, "acme")
        with Session(engine) as session, pytest.raises(NotFoundError):
            if read == "balance":
                credits.balance(session, acme, "globex", NOW)
            elif read == "ledger":
                credits.ledger(session, acme, "globex")
            else:
                credits.list_grants(session, acme, "globex")

    def test_cannot_grant_or_void(self, engine: Engine, scenario: Scenario) -> None:
        with Session(engine) as session, session.begin():
            grant_id = grant(session, staff(scenario.tenant_id), "acme")
        acme = customer(scenario.tenant_id, "acme")
        with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
            grant(session, acme, "acme")
        with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
            credits.void_grant(session, acme, "acme", grant_id, "mine now", NOW)


class TestRoles:
    def test_viewer_reads_but_cannot_grant_or_void(
        self, engine: Engine, scenario: Scenario
    ) -> None:
        with Session(engine) as session, session.begin():
            grant_id = grant(session, staff(scenario.tenant_id), "acme")
        viewer = staff(scenario.tenant_id, Role.VIEWER)
        with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
            grant(session, viewer, "acme")
        with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
            credits.void_grant(session, viewer, "acme", grant_id, "no", NOW)
        with Session(engine) as session:
            assert credits.balance(session, viewer, "acme", NOW) == {"USD": 1500}
