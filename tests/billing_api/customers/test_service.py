"""Customers: staff list them, the billing role registers them, a customer-scoped caller
reads only itself (another id answers as an unknown one does)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.tables import Customer
from billing_api.auth import Caller, Role
from billing_api.customers import service as customers
from billing_api.errors import ForbiddenError, NotFoundError, UnprocessableError
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


ALL = ("acme", "esc", "globex", "p100", "pct", "snake_case", "snakexcase", "snakeycase")


class TestFindCustomers:
    """The dashboard's paged search: id, name or e-mail containing the text, any case,
    `%` and `_` taken literally, in id order, a page at a time."""

    @pytest.fixture
    def viewer(self, engine: Engine, scenario: Scenario) -> Caller:
        with Session(engine) as session, session.begin():
            for id_, name, email in (
                ("pct", "100% Club", None),
                ("p100", "100 Club", "Jo@100.test"),
                ("snake_case", "Snake", None),
                ("snakexcase", "Not snake_ but x", None),
                ("snakeycase", "Other", "ops@Snake-Case.test"),
                ("esc", "Back\\slash / slash", None),
            ):
                session.add(Customer(tenant_id=scenario.tenant_id, id=id_, name=name,
                                     email=email))  # fmt: skip
        return staff(scenario.tenant_id, Role.VIEWER)

    @pytest.mark.parametrize(
        ("text", "ids"),
        [
            pytest.param("", [*ALL], id="empty: all"),
            pytest.param("%", ["pct"], id="percent is literal"),
            pytest.param("100%", ["pct"], id="percent after text"),
            pytest.param("_", ["snake_case", "snakexcase"], id="underscore is literal"),
            pytest.param("snake_c", ["snake_case"], id="underscore inside"),
            pytest.param("SNAKE-case", ["snakeycase"], id="e-mail, any case"),
            pytest.param("jo@", ["p100"], id="e-mail"),
            pytest.param("acme inc", ["acme"], id="name, any case"),
            pytest.param("\\", ["esc"], id="backslash is literal"),
            pytest.param("/", ["esc"], id="slash is literal"),
            pytest.param("nobody", [], id="none"),
        ],
    )
    def test_matches(self, engine: Engine, viewer: Caller, text: str, ids: list[str]) -> None:
        with Session(engine) as session:
            found = customers.find_customers(session, viewer, text, offset=0, limit=50)
            assert [c.id for c in found] == ids
            assert customers.count_customers(session, viewer, text) == len(ids)

    def test_pages_cover_every_match_once(self, engine: Engine, viewer: Caller) -> None:
        with Session(engine) as session:
            found = [
                customers.find_customers(session, viewer, "Snake", offset=offset, limit=2)
                for offset in (0, 2, 4)
            ]
        pages = [[c.id for c in page] for page in found]
        assert pages == [["snake_case", "snakexcase"], ["snakeycase"], []]

    def test_a_nul_character_is_refused(self, engine: Engine, viewer: Caller) -> None:
        # PostgreSQL text cannot hold one: refused before the driver would fail on it.
        with Session(engine) as session:
            with pytest.raises(UnprocessableError, match="NUL"):
                customers.count_customers(session, viewer, "a\x00b")
            with pytest.raises(UnprocessableError, match="NUL"):
                customers.find_customers(session, viewer, "\x00", offset=0, limit=1)

    def test_other_tenants_and_scoped_callers(self, engine: Engine, scenario: Scenario) -> None:
        other = staff("no-such-tenant", Role.ADMIN)
        with Session(engine) as session:
            assert customers.count_customers(session, other) == 0
            with pytest.raises(ForbiddenError):
                customers.count_customers(session, customer(scenario.tenant_id, "acme"))
            with pytest.raises(ForbiddenError):
                customers.find_customers(
                    session, customer(scenario.tenant_id, "acme"), offset=0, limit=1
                )
