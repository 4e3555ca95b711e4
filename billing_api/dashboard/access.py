"""Who may do what in the dashboard: the one role rule, checked on the server by every
action of `billing_api.dashboard` before it calls a service.

- viewer: reads every page, changes nothing;
- billing: also prices, credits, budgets, billing runs and invoice review;
- admin: everything, including staff users, ingest keys and webhooks.
"""

from __future__ import annotations

from billing_api.auth import Caller, Role
from billing_api.errors import ForbiddenError

BILLING = (Role.BILLING,)
ADMIN_ONLY: tuple[Role, ...] = ()


def allowed(caller: Caller, *roles: Role) -> bool:
    """Whether `caller` has one of `roles`; admins may do everything."""
    return caller.role is Role.ADMIN or caller.role in roles


def require(caller: Caller, *roles: Role) -> None:
    """Refuse (403) a caller whose role is not among `roles` (admins always pass)."""
    if not allowed(caller, *roles):
        raise ForbiddenError(f"the {caller.role.value} role may not do this")
