"""Portal links: signed tokens bound to a tenant and a customer, backed by a revocable row.

A token is the session row's id, tenant and customer, signed with the server's newest
secret (itsdangerous, HMAC-SHA1 over a URL-safe payload with a timestamp). It opens the
portal only while all of these hold: the signature verifies under one of the server's
secrets, the row exists with the same tenant and customer, it has not expired and has not
been revoked. Any failure is the same `InvalidPortalToken`, whatever the cause.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from agentmeter.tables import PortalSession
from billing_api.auth import Caller, Role
from billing_api.customers.service import get_customer
from billing_api.errors import NotFoundError
from billing_api.portal import repository

DEFAULT_EXPIRES_IN = timedelta(hours=24)
MIN_EXPIRES_IN = timedelta(minutes=1)
MAX_EXPIRES_IN = timedelta(days=30)
_SALT = "agentmeter.portal-session"


class InvalidPortalToken(Exception):
    """Tampered, expired, revoked, unknown or malformed: the portal shows nothing."""


@dataclass(frozen=True, slots=True)
class IssuedSession:
    """A new portal session and its token (shown once)."""

    id: str
    customer_id: str
    token: str
    expires_at: datetime


class PortalTokens:
    """Signs and verifies portal tokens with the server's secrets (newest last signs)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._serializer = URLSafeTimedSerializer(list(keys), salt=_SALT)

    def issue(
        self,
        session: Session,
        caller: Caller,
        customer_id: str,
        expires_in: timedelta,
        now: datetime,
    ) -> IssuedSession:
        """A link for `customer_id` (registered) valid for `expires_in` from `now`; staff
        of the billing role issue them."""
        caller.require(Role.BILLING)
        get_customer(session, caller, customer_id)
        row = PortalSession(
            id=secrets.token_hex(16),
            tenant_id=caller.tenant_id,
            customer_id=customer_id,
            created_by=caller.actor,
            created_at=now,
            expires_at=now + expires_in,
        )
        repository.add_session(session, row)
        token = self._serializer.dumps({"s": row.id, "t": row.tenant_id, "c": row.customer_id})
        return IssuedSession(row.id, customer_id, token, row.expires_at)

    def caller(self, session: Session, token: str, now: datetime) -> tuple[Caller, datetime]:
        """The customer-scoped caller a token stands for, and when its session expires."""
        try:
            payload = self._serializer.loads(token, max_age=int(MAX_EXPIRES_IN.total_seconds()))
        except BadSignature:
            raise InvalidPortalToken from None
        if not isinstance(payload, dict) or set(payload) != {"s", "t", "c"}:
            raise InvalidPortalToken
        row = repository.find_session(session, str(payload["s"]))
        if (
            row is None
            or row.tenant_id != payload["t"]
            or row.customer_id != payload["c"]
            or row.revoked_at is not None
            or row.expires_at <= now
        ):
            raise InvalidPortalToken
        caller = Caller(
            tenant_id=row.tenant_id,
            actor=f"portal:{row.id}",
            role=Role.CUSTOMER,
            customer_id=row.customer_id,
        )
        return caller, row.expires_at


def revoke(session: Session, caller: Caller, session_id: str, now: datetime) -> None:
    """Revoke a portal session of the caller's tenant (billing staff, or the session's own
    customer); revoking twice is harmless."""
    if caller.customer_id is None:
        caller.require(Role.BILLING)
    row = repository.get_session(session, caller.tenant_id, session_id)
    if row is None or (caller.customer_id is not None and row.customer_id != caller.customer_id):
        raise NotFoundError(f"no portal session {session_id!r}")
    if row.revoked_at is None:
        row.revoked_at = now
