"""Callers for tests that call services directly, as the entry points resolve them."""

from __future__ import annotations

from billing_api.auth import Caller, Role


def staff(tenant_id: str, role: Role = Role.ADMIN, actor: str = "tester@example.test") -> Caller:
    """A signed-in staff member (admin unless `role` says otherwise)."""
    return Caller(tenant_id=tenant_id, actor=actor, role=role)


def customer(tenant_id: str, customer_id: str) -> Caller:
    """A customer looking at its own portal."""
    return Caller(
        tenant_id=tenant_id, actor="portal:test", role=Role.CUSTOMER, customer_id=customer_id
    )
