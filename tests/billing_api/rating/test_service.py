"""The estimate and the dashboard's figures hold provider cost and margin: staff get them,
a customer never does."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from billing_api.auth import Caller, Role
from billing_api.dashboard import overview
from billing_api.errors import ForbiddenError
from billing_api.rating import service as rating
from tests.billing_api.callers import customer, staff
from tests.billing_api.scenario import NOW, Scenario


class TestEstimate:
    def test_staff_get_cost_and_margin(self, engine: Engine, scenario: Scenario) -> None:
        with Session(engine) as session:
            rated = rating.estimate(session, staff(scenario.tenant_id, Role.VIEWER), "acme", NOW)
        # 2,000,000 tokens at 10.00 per million = 20.00; negotiated cost 2.00 per million =
        # 4.00; margin 16.00.
        assert (rated.subtotal_minor, rated.provider_cost_minor, rated.margin_minor) == (
            2000,
            400,
            1600,
        )

    @pytest.mark.parametrize("customer_id", ["acme", "globex"])
    def test_customer_gets_no_estimate_with_cost(
        self, engine: Engine, scenario: Scenario, customer_id: str
    ) -> None:
        with Session(engine) as session, pytest.raises(ForbiddenError):
            rating.estimate(session, customer(scenario.tenant_id, "acme"), customer_id, NOW)


@pytest.mark.parametrize("figures", [overview.overview, overview.trend])
def test_dashboard_figures_refuse_a_customer(
    engine: Engine, scenario: Scenario, figures: Callable[[Session, Caller, datetime], object]
) -> None:
    with Session(engine) as session:
        assert figures(session, staff(scenario.tenant_id, Role.VIEWER), NOW)
        with pytest.raises(ForbiddenError):
            figures(session, customer(scenario.tenant_id, "acme"), NOW)
