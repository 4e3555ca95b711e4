"""Callers for tests that call services directly, as the HTTP boundary would resolve them."""

from __future__ import annotations

from billing_api.auth import Caller, Role


def staff(tenant_id: str, actor: str = "admin") -> Caller:
    """An admin of `tenant_id` acting as `actor` (what the audit log records)."""
    return Caller(tenant_id=tenant_id, actor=actor, role=Role.ADMIN)
