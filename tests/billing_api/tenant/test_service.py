"""Tenant settings, webhooks, the meter registry and the portal's brand: who may read and
change them is decided by the services, for every entry point."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from billing_api.auth import Caller, Role
from billing_api.errors import ForbiddenError
from billing_api.meters import service as meters
from billing_api.portal import branding
from billing_api.tenant import service as tenant
from billing_api.webhooks import service as webhooks
from tests.billing_api.callers import customer, staff
from tests.billing_api.scenario import Scenario

Call = Callable[[Session, Caller], Any]
BRAND = branding.BrandSettings(
    name="Acme Agents",
    logo_url=None,
    primary_color=None,
    support_email=None,
    support_url=None,
    locale=None,
    frame_ancestors=(),
)

# Each change, and how to see on the tenant that it was made.
CHANGES: list[Any] = [
    pytest.param(
        lambda s, c: tenant.update_tenant(s, c, customer_attribute_keys=["account.id"]),
        lambda t: t.customer_attribute_keys == ["account.id"],
        id="update_tenant",
    ),
    pytest.param(
        lambda s, c: webhooks.set_endpoint(s, c, "https://93.184.215.14/", allow_private=False),
        lambda t: t.webhook_url == "https://93.184.215.14/",
        id="set_webhook",
    ),
    pytest.param(
        lambda s, c: branding.put_settings(s, c, BRAND),
        lambda t: t.brand_name == "Acme Agents",
        id="put_branding",
    ),
]
ADMIN_WRITES: list[Any] = [pytest.param(p.values[0], id=p.id) for p in CHANGES]
STAFF_READS: list[Any] = [
    pytest.param(lambda s, c: tenant.get_tenant(s, c), id="get_tenant"),
    pytest.param(lambda s, c: meters.list_meters(s, c), id="list_meters"),
    pytest.param(lambda s, c: branding.get_settings(s, c), id="get_branding"),
]
ADMIN_READS: list[Any] = [
    pytest.param(lambda s, c: webhooks.get_endpoint(s, c), id="get_webhook"),
    pytest.param(lambda s, c: webhooks.list_deliveries(s, c), id="list_deliveries"),
]


def changed(engine: Engine, scenario: Scenario, check: Callable[[Any], bool]) -> bool:
    with Session(engine) as session:
        return check(tenant.get_tenant(session, staff(scenario.tenant_id)))


@pytest.mark.parametrize(("call", "check"), CHANGES)
@pytest.mark.parametrize("role", [Role.BILLING, Role.VIEWER])
def test_only_admins_change_settings(
    engine: Engine, scenario: Scenario, call: Call, check: Callable[[Any], bool], role: Role
) -> None:
    with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
        call(session, staff(scenario.tenant_id, role))
    assert not changed(engine, scenario, check)
    with Session(engine) as session, session.begin():
        call(session, staff(scenario.tenant_id))  # the admin may
    assert changed(engine, scenario, check)


@pytest.mark.parametrize("call", [*STAFF_READS, *ADMIN_READS, *ADMIN_WRITES])
def test_a_customer_reads_and_changes_no_settings(
    engine: Engine, scenario: Scenario, call: Call
) -> None:
    with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
        call(session, customer(scenario.tenant_id, "acme"))


@pytest.mark.parametrize("call", STAFF_READS)
def test_viewers_read_tenant_settings(engine: Engine, scenario: Scenario, call: Call) -> None:
    with Session(engine) as session:
        assert call(session, staff(scenario.tenant_id, Role.VIEWER)) is not None


@pytest.mark.parametrize("call", ADMIN_READS)
def test_webhook_settings_are_the_admins(engine: Engine, scenario: Scenario, call: Call) -> None:
    with Session(engine) as session, pytest.raises(ForbiddenError):
        call(session, staff(scenario.tenant_id, Role.BILLING))


def test_billing_declares_meters_viewer_does_not(engine: Engine, scenario: Scenario) -> None:
    with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
        meters.declare_meter(session, staff(scenario.tenant_id, Role.VIEWER), "web_searches")
    with Session(engine) as session, session.begin():
        meters.declare_meter(session, staff(scenario.tenant_id, Role.BILLING), "web_searches")
    with Session(engine) as session:
        known = meters.list_meters(session, staff(scenario.tenant_id, Role.VIEWER))
        assert ("web_searches", meters.MeterOrigin.DECLARED) in [(m.name, m.origin) for m in known]
