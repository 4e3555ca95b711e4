"""Who is asking: the `Caller` every new service takes, resolved at the HTTP boundary.

A caller is a tenant, an actor (written to the audit log), a role and, for a customer
looking at their own portal, a customer scope. Services decide what a caller may see from
the caller itself: a customer-scoped caller never obtains provider cost or margin, nor
another customer's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request

from agentmeter.tenants import KeyKind, key_owner
from billing_api.errors import ForbiddenError, NotFoundError, UnauthorizedError, database_errors
from otel_processor.receiver.service import bearer_token


class Role(StrEnum):
    """What a caller may do, the one role rule every service checks:

    - viewer: reads everything of its tenant, changes nothing;
    - billing: also prices, customers, credits, budgets, billing runs and invoice review;
    - admin: everything, including staff users, keys, tenant settings and webhooks;
    - customer: reads only its own usage and invoices (a portal token).
    """

    ADMIN = "admin"
    BILLING = "billing"
    VIEWER = "viewer"
    CUSTOMER = "customer"


STAFF = (Role.BILLING, Role.VIEWER)
"""The roles that read a tenant's internal figures (admins always may)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated party of a request (see the module docstring)."""

    tenant_id: str
    actor: str
    role: Role
    customer_id: str | None = None

    @property
    def sees_internal_figures(self) -> bool:
        """Provider cost, margin and internal price ids: staff only."""
        return self.customer_id is None

    def customer(self, customer_id: str | None = None) -> str:
        """The customer this caller may look at: its own scope, or `customer_id` for staff.

        A scoped caller asking for another customer gets the same 404 as for one that
        does not exist, so ids cannot be probed."""
        if self.customer_id is not None:
            if customer_id is not None and customer_id != self.customer_id:
                raise NotFoundError(f"no customer {customer_id!r}")
            return self.customer_id
        if customer_id is None:
            raise NotFoundError("no customer given")
        return customer_id

    def may(self, *roles: Role) -> bool:
        """Whether this caller has one of `roles`; admins may do everything."""
        return self.role is Role.ADMIN or self.role in roles

    def require(self, *roles: Role) -> None:
        """Refuse (403) a caller whose role is not among `roles` (admins always pass)."""
        if not self.may(*roles):
            raise ForbiddenError(f"the {self.role.value} role may not do this")

    def require_staff(self) -> None:
        """Refuse (403) a customer-scoped caller: what follows is the tenant's own."""
        self.require(*STAFF)


def get_tenant_id(request: Request) -> str:
    """The tenant of the request's admin key (`Authorization: Bearer <admin_key>`)."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise UnauthorizedError("missing Authorization: Bearer <admin key>")
    with database_errors():
        owner = key_owner(request.app.state.engine, token, KeyKind.ADMIN)
    if owner is None:
        raise UnauthorizedError("unknown or revoked admin key")
    return owner.tenant_id


TenantId = Annotated[str, Depends(get_tenant_id)]


def admin_caller(tenant_id: TenantId) -> Caller:
    """The caller of a request authenticated by an admin key. Its audit actor is "admin",
    as it always was; what a client sends (a header) never changes it."""
    return Caller(tenant_id=tenant_id, actor="admin", role=Role.ADMIN)


AdminCaller = Annotated[Caller, Depends(admin_caller)]
