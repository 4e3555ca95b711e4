"""Staff accounts of the dashboard: users, passwords, sign-in sessions and the throttle.

- Passwords are hashed with argon2id (argon2-cffi's `PasswordHasher`, its RFC 9106 low-memory
  profile); a hash made with older parameters is replaced at the next sign-in.
- A session is a random token in an HttpOnly cookie; only its SHA-256 is stored. It ends
  `idle` after its last use or `absolute` after sign-in, whichever comes first, or at sign-out.
- After `MAX_FAILURES` failed sign-ins for one e-mail address within `FAILURE_WINDOW`,
  further attempts are refused without checking the password until the window has passed
  (whether the address exists or not, so the answer tells nothing about accounts).
- A disabled user cannot sign in, and its open sessions stop working at once.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from agentmeter.tables import StaffLoginFailure, StaffSession, StaffUser, Tenant
from billing_api.auth import Caller, Role
from billing_api.errors import ApiError, ConflictError, NotFoundError, UnprocessableError

STAFF_ROLES = (Role.ADMIN, Role.BILLING, Role.VIEWER)
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 12

_hasher = PasswordHasher()
# Verified against when no user has the address, so a miss costs what a wrong password does.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class ThrottledError(ApiError):
    status = 429
    code = "too_many_attempts"


@dataclass(frozen=True, slots=True)
class StaffAccount:
    """A staff user as pages show it (never the password hash)."""

    id: str
    tenant_id: str
    email: str
    role: Role
    created_at: datetime
    disabled: bool


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long a session lives: `idle` since its last use, `absolute` since sign-in."""

    idle: timedelta
    absolute: timedelta


def _account(user: StaffUser) -> StaffAccount:
    return StaffAccount(
        id=user.id,
        tenant_id=user.tenant_id,
        email=user.email,
        role=Role(user.role),
        created_at=user.created_at,
        disabled=user.disabled_at is not None,
    )


def normalize_email(email: str) -> str:
    """The stored form of an address: trimmed, lower-cased; `UnprocessableError` if it is
    not one."""
    address = email.strip().lower()
    local, at, domain = address.partition("@")
    if not at or not local or "." not in domain or len(address) > 320 or " " in address:
        raise UnprocessableError(f"not an e-mail address: {email!r}")
    return address


def staff_role(value: str) -> Role:
    """A staff role by name; `UnprocessableError` for anything else (including customer)."""
    try:
        role = Role(value)
    except ValueError:
        role = Role.CUSTOMER
    if role not in STAFF_ROLES:
        names = ", ".join(r.value for r in STAFF_ROLES)
        raise UnprocessableError(f"unknown role {value!r}; use one of {names}")
    return role


def create_user(
    session: Session, tenant_id: str, email: str, password: str, role: str
) -> StaffAccount:
    """A new staff user of `tenant_id`. The CLI calls this (no caller: whoever runs the
    command owns the database)."""
    address = normalize_email(email)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UnprocessableError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    staff = staff_role(role)
    if session.get(Tenant, tenant_id) is None:
        raise NotFoundError(f"no tenant {tenant_id!r}")
    taken = select(StaffUser.id).where(StaffUser.tenant_id == tenant_id, StaffUser.email == address)
    if session.scalar(taken) is not None:
        raise ConflictError(f"a user {address} already exists")
    user = StaffUser(
        id=uuid.uuid4().hex,
        tenant_id=tenant_id,
        email=address,
        password_hash=_hasher.hash(password),
        role=staff.value,
    )
    session.add(user)
    session.flush()
    return _account(user)


def set_password(session: Session, tenant_id: str, email: str, password: str) -> bool:
    """Give the user `email` of `tenant_id` a new password, ending its sessions; False if
    there is no such user. For the command line (`agentmeter serve --demo`)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UnprocessableError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    user = session.scalars(
        select(StaffUser).where(
            StaffUser.tenant_id == tenant_id, StaffUser.email == normalize_email(email)
        )
    ).one_or_none()
    if user is None:
        return False
    user.password_hash = _hasher.hash(password)
    session.execute(delete(StaffSession).where(StaffSession.user_id == user.id))
    return True


def _failures(session: Session, address: str, now: datetime) -> int:
    query = select(func.count()).where(
        StaffLoginFailure.email == address, StaffLoginFailure.at > now - FAILURE_WINDOW
    )
    return session.scalar(query) or 0


def _matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _verified(user: StaffUser, password: str) -> bool:
    if not _matches(user.password_hash, password):
        return False
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return True


def sign_in(
    session: Session, email: str, password: str, policy: SessionPolicy, now: datetime
) -> str | None:
    """A new session token for the enabled user with this e-mail and password, or None
    (the failure is counted). `ThrottledError` while the address is throttled.

    The caller commits in either case: a failure must be recorded even though sign-in fails.
    """
    try:
        address = normalize_email(email)
    except UnprocessableError:
        return None
    if _failures(session, address, now) >= MAX_FAILURES:
        minutes = int(FAILURE_WINDOW.total_seconds() // 60)
        raise ThrottledError(f"too many failed sign-ins; try again in {minutes} minutes")
    users = session.scalars(
        select(StaffUser).where(StaffUser.email == address).order_by(StaffUser.created_at)
    ).all()
    found = next((u for u in users if _verified(u, password)), None)
    if not users:
        _matches(_DUMMY_HASH, password)
    if found is None or found.disabled_at is not None:
        session.add(StaffLoginFailure(email=address, at=now))
        return None
    session.execute(delete(StaffLoginFailure).where(StaffLoginFailure.email == address))
    token = secrets.token_urlsafe(32)
    session.add(
        StaffSession(
            token_hash=_token_hash(token),
            user_id=found.id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.absolute,
        )
    )
    return token


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# The idle clock restarts at most this often, so most page reads write nothing (a read
# never waits for the writer; a write from a read would).
TOUCH_INTERVAL = timedelta(minutes=1)


def resolve_session(
    session: Session, token: str, policy: SessionPolicy, now: datetime
) -> Caller | None:
    """The caller of a live session (its idle clock restarts), or None if the token is
    unknown, idle too long, past its absolute end, or its user is disabled."""
    row = session.execute(
        select(StaffSession, StaffUser)
        .join(StaffUser, StaffUser.id == StaffSession.user_id)
        .where(StaffSession.token_hash == _token_hash(token))
    ).first()
    if row is None:
        return None
    staff_session, user = row
    live = (
        user.disabled_at is None
        and now < staff_session.expires_at
        and now < staff_session.last_seen_at + policy.idle
    )
    if not live:
        session.delete(staff_session)
        return None
    if now - staff_session.last_seen_at >= TOUCH_INTERVAL:
        staff_session.last_seen_at = now
    return Caller(tenant_id=user.tenant_id, actor=user.email, role=Role(user.role))


def sign_out(session: Session, token: str) -> None:
    """End the session of `token` (nothing if there is none)."""
    session.execute(delete(StaffSession).where(StaffSession.token_hash == _token_hash(token)))


def list_users(session: Session, caller: Caller) -> Sequence[StaffAccount]:
    """The tenant's staff users, oldest first (admins only)."""
    caller.require()
    query = (
        select(StaffUser)
        .where(StaffUser.tenant_id == caller.tenant_id)
        .order_by(StaffUser.created_at, StaffUser.email)
    )
    return [_account(user) for user in session.scalars(query)]


def set_disabled(
    session: Session, caller: Caller, user_id: str, disabled: bool, now: datetime
) -> StaffAccount:
    """Disable (ending its sessions) or enable a user of the caller's tenant (admins only;
    nobody disables themselves, so a tenant always keeps the admin who is acting)."""
    caller.require()
    user = session.get(StaffUser, user_id)
    if user is None or user.tenant_id != caller.tenant_id:
        raise NotFoundError(f"no user {user_id!r}")
    if disabled and user.email == caller.actor:
        raise ConflictError("you cannot disable your own account")
    user.disabled_at = now if disabled else None
    if disabled:
        session.execute(delete(StaffSession).where(StaffSession.user_id == user.id))
    return _account(user)
