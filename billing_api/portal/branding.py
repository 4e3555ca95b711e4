"""The builder's brand as the portal shows it: name, logo, colour, support contact, locale
and who may embed the portal. Every field is checked strictly on the way in, because each
ends up in a page, a stylesheet or a Content-Security-Policy header."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from agentmeter.tables import Tenant
from billing_api.auth import Caller
from billing_api.portal import repository
from billing_api.web.formatting import DEFAULT_LOCALE

DEFAULT_COLOR = "#2f5f8f"


@dataclass(frozen=True, slots=True)
class Brand:
    """What the portal is dressed in. `name` falls back to the tenant's own name."""

    name: str
    logo_url: str | None
    primary_color: str
    support_email: str | None
    support_url: str | None
    locale: str
    frame_ancestors: tuple[str, ...]

    @classmethod
    def of(cls, tenant: Tenant) -> Brand:
        return cls(
            name=tenant.brand_name or tenant.name,
            logo_url=tenant.brand_logo_url,
            primary_color=tenant.brand_color or DEFAULT_COLOR,
            support_email=tenant.brand_support_email,
            support_url=tenant.brand_support_url,
            locale=tenant.brand_locale or DEFAULT_LOCALE,
            frame_ancestors=tuple(tenant.brand_frame_ancestors or ()),
        )


@dataclass(frozen=True, slots=True)
class BrandSettings:
    """The brand fields as the builder set them (None: not set)."""

    name: str | None
    logo_url: str | None
    primary_color: str | None
    support_email: str | None
    support_url: str | None
    locale: str | None
    frame_ancestors: tuple[str, ...]


def get_brand(session: Session, caller: Caller) -> Brand:
    """The brand the caller's tenant shows."""
    return Brand.of(repository.tenant(session, caller.tenant_id))


def get_settings(session: Session, caller: Caller) -> BrandSettings:
    """The brand fields as the builder set them (staff)."""
    caller.require_staff()
    tenant = repository.tenant(session, caller.tenant_id)
    return BrandSettings(
        name=tenant.brand_name,
        logo_url=tenant.brand_logo_url,
        primary_color=tenant.brand_color,
        support_email=tenant.brand_support_email,
        support_url=tenant.brand_support_url,
        locale=tenant.brand_locale,
        frame_ancestors=tuple(tenant.brand_frame_ancestors or ()),
    )


def put_settings(session: Session, caller: Caller, brand: BrandSettings) -> BrandSettings:
    """Replace the brand (already validated by the API schema); admins only."""
    caller.require()
    tenant = repository.tenant(session, caller.tenant_id)
    tenant.brand_name = brand.name
    tenant.brand_logo_url = brand.logo_url
    tenant.brand_color = brand.primary_color
    tenant.brand_support_email = brand.support_email
    tenant.brand_support_url = brand.support_url
    tenant.brand_locale = brand.locale
    tenant.brand_frame_ancestors = list(brand.frame_ancestors)
    session.flush()
    return get_settings(session, caller)
