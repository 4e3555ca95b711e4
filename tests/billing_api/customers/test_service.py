"""Customers: staff list them, the billing role registers them, a customer-scoped caller
reads only itself (another id answers as an unknown one does)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from billing_api.auth import Role
from billing_api.customers import service as customers
from billing_api.errors import ForbiddenError, NotFoundError
from tests.billing_api.callers import customer, staff
from tests.billing_api.scenario import Scenario


class TestCustomerScopedCaller:
    def test_reads_itself(self, engine: Engine, scenario: Scenario) -> None:
        with Session(engine) as session:
            found = customers.get_customer(session, customer(scenario.tenant_id, "acme"), "acme")
            assert (found.id, found.name) == ("acme", "Acme Inc")

    def test_another_customer_is_not_found(self, engine: Engine, scenario: Scenario) -> None:
        with Session(engine) as session, pytest.raises(NotFoundError):
            customers.get_customer(session, customer(scenario.tenant_id, "acme"), "globex")

    def test_cannot_list_or_register(self, engine: Engine, scenario: Scenario) -> None:
        caller = customer(scenario.tenant_id, "acme")
        with Session(engine) as session, pytest.raises(ForbiddenError):
            customers.list_customers(session, caller)
        with Session(engine) as session, pytest.raises(ForbiddenError):
            customers.create_customer(session, caller, "initech", "Initech")


class TestRoles:
    def test_viewer_lists_but_cannot_register(self, engine: Engine, scenario: Scenario) -> None:
        viewer = staff(scenario.tenant_id, Role.VIEWER)
        with Session(engine) as session:
            assert [c.id for c in customers.list_customers(session, viewer)] == ["acme", "globex"]
        with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
            customers.create_customer(session, viewer, "initech", "Initech")
        with Session(engine) as session, pytest.raises(NotFoundError):
            customers.get_customer(session, viewer, "initech")

    def test_billing_registers(self, engine: Engine, scenario: Scenario) -> None:
        billing = staff(scenario.tenant_id, Role.BILLING)
        with Session(engine) as session, session.begin():
            customers.create_customer(session, billing, "initech", "Initech", "ap@initech.test")
        with Session(engine) as session:
            assert customers.get_customer(session, billing, "initech").email == "ap@initech.test"
