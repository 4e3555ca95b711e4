"""A tenant's billing settings: invoice numbering, late usage policy, review rules and
brand. Every change is in the audit log, by the caller's actor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from agentmeter.tables import Tenant
from billing_api.audit import log as audit_log
from billing_api.auth import Caller, Role
from billing_api.invoicing import repository
from billing_api.invoicing.states import LateUsagePolicy


@dataclass(frozen=True, slots=True)
class BillingSettings:
    invoice_prefix: str
    late_usage_policy: LateUsagePolicy
    spike_factor: Decimal
    margin_floor_percent: Decimal
    review_threshold_minor: int | None
    brand_name: str | None
    brand_color: str | None
    brand_logo_url: str | None

    @classmethod
    def of(cls, tenant: Tenant) -> BillingSettings:
        return cls(
            invoice_prefix=tenant.invoice_prefix,
            late_usage_policy=LateUsagePolicy(tenant.late_usage_policy),
            spike_factor=tenant.spike_factor,
            margin_floor_percent=tenant.margin_floor_percent,
            review_threshold_minor=tenant.review_threshold_minor,
            brand_name=tenant.brand_name,
            brand_color=tenant.brand_color,
            brand_logo_url=tenant.brand_logo_url,
        )

    def as_audited(self) -> dict[str, Any]:
        """The settings as the audit log keeps them (decimals as their exact text)."""
        return {k: str(v) if isinstance(v, Decimal) else v for k, v in asdict(self).items()}


def billing_settings(session: Session, caller: Caller) -> BillingSettings:
    """The caller's tenant's billing settings."""
    return BillingSettings.of(repository.tenant(session, caller.tenant_id))


def update_settings(
    session: Session, caller: Caller, changes: Mapping[str, Any]
) -> BillingSettings:
    """Change the named settings (the others stay), audited with before and after."""
    caller.require(Role.BILLING)
    tenant = repository.tenant(session, caller.tenant_id)
    before = BillingSettings.of(tenant)
    for name, value in changes.items():
        setattr(tenant, name, value)
    after = BillingSettings.of(tenant)
    audit_log.record(
        session,
        caller,
        entity="tenant",
        entity_id=caller.tenant_id,
        action="billing_settings",
        before=before.as_audited(),
        after=after.as_audited(),
    )
    session.flush()
    return after
