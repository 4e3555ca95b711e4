"""The pricing service decides from the caller: staff read, the billing role writes, and
a customer-scoped caller obtains no price, provider cost or internal id at all."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from agentmeter.tables import CustomerOverride, PriceBook, PriceVersion, ProviderCostOverride
from billing_api.auth import Caller, Role
from billing_api.errors import ForbiddenError
from billing_api.pricing import service as pricing
from tests.billing_api.callers import customer, staff
from tests.billing_api.scenario import INPUT, MILLION, NOW, SINCE, Scenario

Call = Callable[[Session, Caller, Scenario], Any]

READS: list[Any] = [
    pytest.param(lambda s, c, x: pricing.list_price_books(s, c), id="list_price_books"),
    pytest.param(lambda s, c, x: pricing.get_price_book(s, c, x.book_id), id="get_price_book"),
    pytest.param(lambda s, c, x: pricing.list_versions(s, c, x.book_id), id="list_versions"),
    pytest.param(lambda s, c, x: pricing.get_version(s, c, x.book_id, 1), id="get_version"),
    pytest.param(
        lambda s, c, x: pricing.get_customer_price_book(s, c, "acme"), id="customer_price_book"
    ),
    pytest.param(lambda s, c, x: pricing.list_overrides(s, c, "acme"), id="list_overrides"),
    pytest.param(lambda s, c, x: pricing.list_provider_costs(s, c), id="list_provider_costs"),
]
WRITES: list[Any] = [
    pytest.param(lambda s, c, x: pricing.create_price_book(s, c, "b2", "USD"), id="create_book"),
    pytest.param(
        lambda s, c, x: pricing.update_price_book(s, c, x.book_id, name="renamed"),
        id="update_book",
    ),
    pytest.param(
        lambda s, c, x: pricing.create_version(s, c, x.book_id, NOW, [INPUT]), id="create_version"
    ),
    pytest.param(
        lambda s, c, x: pricing.replace_components(s, c, x.book_id, 1, [INPUT]),
        id="replace_components",
    ),
    pytest.param(lambda s, c, x: pricing.delete_version(s, c, x.book_id, 1), id="delete_version"),
    pytest.param(
        lambda s, c, x: pricing.set_customer_price_book(s, c, "acme", None), id="assign_book"
    ),
    pytest.param(
        lambda s, c, x: pricing.create_override(s, c, "globex", SINCE, [INPUT]),
        id="create_override",
    ),
    pytest.param(
        lambda s, c, x: pricing.create_provider_cost(
            s,
            c,
            provider="anthropic",
            model="*",
            meter="input_tokens",
            unit_cost_usd=Decimal("3"),
            per_units=MILLION,
            effective_from=SINCE,
        ),
        id="create_provider_cost",
    ),
    pytest.param(
        lambda s, c, x: pricing.delete_provider_cost(s, c, x.cost_id), id="delete_provider_cost"
    ),
]


def counts(engine: Engine) -> tuple[int, ...]:
    with Session(engine) as session:
        return tuple(
            session.scalar(select(func.count()).select_from(table)) or 0
            for table in (PriceBook, PriceVersion, CustomerOverride, ProviderCostOverride)
        )


class TestCustomerScopedCaller:
    @pytest.mark.parametrize("call", READS)
    def test_reads_nothing(self, engine: Engine, scenario: Scenario, call: Call) -> None:
        # Its own customer id changes nothing: prices and provider costs are the tenant's.
        with Session(engine) as session, pytest.raises(ForbiddenError):
            call(session, customer(scenario.tenant_id, "acme"), scenario)

    @pytest.mark.parametrize("call", WRITES)
    def test_writes_nothing(self, engine: Engine, scenario: Scenario, call: Call) -> None:
        before = counts(engine)
        with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
            call(session, customer(scenario.tenant_id, "acme"), scenario)
        assert counts(engine) == before


class TestRoles:
    @pytest.mark.parametrize("call", READS)
    def test_viewer_reads(self, engine: Engine, scenario: Scenario, call: Call) -> None:
        with Session(engine) as session:
            result = call(session, staff(scenario.tenant_id, Role.VIEWER), scenario)
        # Domain values, never the API's response models.
        values = result if isinstance(result, list | tuple) else [result]
        assert values and not any(isinstance(v, BaseModel) for v in values)

    @pytest.mark.parametrize("call", WRITES)
    def test_viewer_changes_nothing(self, engine: Engine, scenario: Scenario, call: Call) -> None:
        before = counts(engine)
        with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
            call(session, staff(scenario.tenant_id, Role.VIEWER), scenario)
        assert counts(engine) == before

    def test_billing_prices(self, engine: Engine, scenario: Scenario) -> None:
        billing = staff(scenario.tenant_id, Role.BILLING)
        with Session(engine) as session, session.begin():
            detail = pricing.create_version(session, billing, scenario.book_id, NOW, [INPUT])
            (component,) = detail.components
            assert (detail.version.number, component.name, component.unit_price) == (
                2,
                "input",
                Decimal("10"),
            )
        with Session(engine) as session:
            assert [
                v.number for v in pricing.list_versions(session, billing, scenario.book_id)
            ] == [
                1,
                2,
            ]
