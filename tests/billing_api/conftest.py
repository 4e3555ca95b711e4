"""Fixtures shared by the service tests of the billing domains."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests.billing_api.scenario import Scenario, build


@pytest.fixture
def scenario(engine: Engine) -> Scenario:
    return build(engine)
