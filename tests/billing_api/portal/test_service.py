"""Portal sessions record who issued them (the caller's actor: a staff member's e-mail, or
the admin key); the portal's own view of a period carries no cost or margin."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agentmeter.tables import PortalSession
from agentmeter.tenants import issue_keys
from billing_api.auth import Role
from billing_api.errors import ForbiddenError
from billing_api.portal import service as portal
from billing_api.portal.sessions import PortalTokens
from tests.billing_api.callers import customer, staff
from tests.billing_api.inprocess import api_client
from tests.billing_api.scenario import NOW, Scenario

TOKENS = PortalTokens(["portal-test-secret"])


def issued_by(engine: Engine, session_id: str) -> str:
    with Session(engine) as session:
        row = session.scalars(select(PortalSession).where(PortalSession.id == session_id)).one()
        return row.created_by


class TestIssue:
    def test_actor_is_the_staff_members_email(self, engine: Engine, scenario: Scenario) -> None:
        amy = staff(scenario.tenant_id, Role.BILLING, actor="amy@acme-agents.test")
        with Session(engine) as session, session.begin():
            issued = TOKENS.issue(session, amy, "acme", timedelta(hours=1), NOW)
        assert issued_by(engine, issued.id) == "amy@acme-agents.test"

    def test_actor_of_an_admin_key_is_admin_whatever_the_client_says(
        self, engine: Engine, scenario: Scenario
    ) -> None:
        key = issue_keys(engine, scenario.tenant_id).admin_key
        with api_client(engine, key) as client:
            answer = client.post(
                "/api/v1/customers/acme/portal-sessions",
                json={},
                headers={"X-AgentMeter-Actor": "mallory@example.test"},
            )
        assert answer.status_code == 201, answer.text
        assert issued_by(engine, answer.json()["id"]) == "admin"

    @pytest.mark.parametrize("role", [Role.VIEWER, Role.CUSTOMER])
    def test_only_billing_staff_issue_links(
        self, engine: Engine, scenario: Scenario, role: Role
    ) -> None:
        caller = (
            customer(scenario.tenant_id, "acme")
            if role is Role.CUSTOMER
            else staff(scenario.tenant_id, role)
        )
        with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
            TOKENS.issue(session, caller, "acme", timedelta(hours=1), NOW)
        with Session(engine) as session:
            assert session.scalars(select(PortalSession)).all() == []


class TestCurrentPeriod:
    def test_customer_sees_charges_without_cost_or_margin(
        self, engine: Engine, scenario: Scenario
    ) -> None:
        with Session(engine) as session:
            current = portal.current_period(session, customer(scenario.tenant_id, "acme"), NOW)
        assert (current.customer_id, current.subtotal_minor) == ("acme", 2000)
        shown = {f.name for f in dataclasses.fields(current)} | {
            f.name for line in current.lines for f in dataclasses.fields(line)
        }
        assert not {name for name in shown if "cost" in name or "margin" in name}
        assert not {name for name in shown if name.endswith("_id") and name != "customer_id"}
