"""The usage service narrows a customer-scoped caller to its own usage, whatever it asks."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from billing_api.errors import ForbiddenError, NotFoundError
from billing_api.usage.service import UsageSelection, query_usage
from tests.billing_api.callers import customer, staff
from tests.billing_api.scenario import Scenario


def totals(engine: Engine, scenario: Scenario, **selection: object) -> dict[str, Decimal]:
    caller = selection.pop("caller")
    with Session(engine) as session:
        amounts = query_usage(session, caller, UsageSelection(**selection))  # type: ignore[arg-type]
    return {a.customer_id: a.quantity for a in amounts}


class TestQueryUsage:
    def test_staff_see_every_customer_and_unattributed_usage(
        self, engine: Engine, scenario: Scenario
    ) -> None:
        assert totals(engine, scenario, caller=staff(scenario.tenant_id)) == {
            "": Decimal(7000),
            "acme": Decimal(2_000_000),
            "globex": Decimal(5_000_000),
        }

    def test_customer_without_a_filter_sees_only_its_own(
        self, engine: Engine, scenario: Scenario
    ) -> None:
        caller = customer(scenario.tenant_id, "acme")
        assert totals(engine, scenario, caller=caller) == {"acme": Decimal(2_000_000)}
        assert totals(engine, scenario, caller=caller, group_by=("model",)) == {
            "acme": Decimal(2_000_000)
        }

    def test_customer_asking_for_another_finds_nothing(
        self, engine: Engine, scenario: Scenario
    ) -> None:
        with pytest.raises(NotFoundError):
            totals(
                engine, scenario, caller=customer(scenario.tenant_id, "acme"), customer_id="globex"
            )

    def test_customer_cannot_read_unattributed_usage(
        self, engine: Engine, scenario: Scenario
    ) -> None:
        with pytest.raises(ForbiddenError):
            totals(engine, scenario, caller=customer(scenario.tenant_id, "acme"), unattributed=True)
