"""A tenant's billing settings: numbering, late usage policy, review rules, brand."""

from __future__ import annotations

from decimal import Decimal
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from agentmeter.money import MAX_MINOR
from agentmeter.tables import Tenant
from billing_api.audit import log as audit_log
from billing_api.invoicing import repository


class BillingSettings(BaseModel):
    invoice_prefix: str
    late_usage_policy: str
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
            late_usage_policy=tenant.late_usage_policy,
            spike_factor=tenant.spike_factor,
            margin_floor_percent=tenant.margin_floor_percent,
            review_threshold_minor=tenant.review_threshold_minor,
            brand_name=tenant.brand_name,
            brand_color=tenant.brand_color,
            brand_logo_url=tenant.brand_logo_url,
        )


class BillingSettingsUpdate(BaseModel):
    """Fields left out are unchanged."""

    model_config = ConfigDict(extra="forbid")

    invoice_prefix: str | None = Field(default=None, pattern=r"^[A-Z0-9]{1,12}$")
    late_usage_policy: str | None = Field(default=None, pattern="^(adjust_next|exception_only)$")
    spike_factor: Decimal | None = Field(default=None, gt=1, le=1000, decimal_places=6)
    margin_floor_percent: Decimal | None = Field(default=None, ge=-100, le=100, decimal_places=6)
    review_threshold_minor: int | None = Field(
        default=None, ge=0, le=MAX_MINOR, description="null: no review threshold"
    )
    brand_name: str | None = Field(default=None, max_length=200)
    # Only a hex colour: it goes into the invoice's stylesheet.
    brand_color: str | None = Field(default=None, pattern=r"^#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?$")
    brand_logo_url: str | None = Field(default=None, pattern=r"^https://\S+$", max_length=2000)

    @model_validator(mode="after")
    def _no_null_for_required(self) -> Self:
        """Only the nullable settings may be set to null; the others can only change."""
        for name in _REQUIRED_SETTINGS:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null; leave it out to keep it")
        return self


_REQUIRED_SETTINGS = ("invoice_prefix", "late_usage_policy", "spike_factor", "margin_floor_percent")


def update_settings(
    session: Session, tenant_id: str, body: BillingSettingsUpdate, *, actor: str
) -> Tenant:
    tenant = repository.tenant(session, tenant_id)
    before = BillingSettings.of(tenant).model_dump(mode="json")
    for name, value in body.model_dump(exclude_unset=True).items():
        setattr(tenant, name, value)
    audit_log.record(
        session,
        tenant_id,
        entity="tenant",
        entity_id=tenant_id,
        action="billing_settings",
        actor=actor,
        before=before,
        after=BillingSettings.of(tenant).model_dump(mode="json"),
    )
    session.flush()
    return tenant
