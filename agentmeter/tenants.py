"""Tenants and their API keys.

Keys are random (256 bits), shown once, and stored only as SHA-256 hashes: a slow hash
buys nothing for secrets of that entropy and would cost every export a few milliseconds.
An ingest key can only send usage; an admin key can only use the REST API.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from agentmeter.attribution import DEFAULT_CUSTOMER_KEYS
from agentmeter.clock import utcnow
from agentmeter.db import read_only
from agentmeter.tables import ApiKey, Tenant


class KeyKind(StrEnum):
    INGEST = "ingest"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class NewTenant:
    """A freshly created tenant and its first keys (the only time they are shown)."""

    tenant_id: str
    ingest_key: str
    admin_key: str


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key(session: Session, tenant_id: str, kind: KeyKind) -> str:
    key = f"am_{kind.value}_{secrets.token_urlsafe(32)}"
    session.add(
        ApiKey(id=uuid.uuid4().hex, tenant_id=tenant_id, kind=kind.value, key_hash=hash_key(key))
    )
    return key


def create_tenant(engine: Engine, name: str) -> NewTenant:
    """Create a tenant with one ingest key and one admin key."""
    tenant_id = uuid.uuid4().hex
    with Session(engine) as session, session.begin():
        session.add(
            Tenant(id=tenant_id, name=name, customer_attribute_keys=list(DEFAULT_CUSTOMER_KEYS))
        )
    return issue_keys(engine, tenant_id)


def issue_keys(engine: Engine, tenant_id: str) -> NewTenant:
    """A new ingest key and admin key for an existing tenant (older keys stay valid)."""
    with Session(engine) as session, session.begin():
        ingest_key = _new_key(session, tenant_id, KeyKind.INGEST)
        admin_key = _new_key(session, tenant_id, KeyKind.ADMIN)
    return NewTenant(tenant_id=tenant_id, ingest_key=ingest_key, admin_key=admin_key)


def find_tenant(engine: Engine, name: str) -> str | None:
    """The id of the oldest tenant called `name`, if any."""
    with Session(engine) as session:
        query = select(Tenant.id).where(Tenant.name == name).order_by(Tenant.created_at)
        return session.scalars(query).first()


def revoke_key(engine: Engine, key: str) -> bool:
    """Revoke a key; False if no such unrevoked key exists."""
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(ApiKey)
            .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """The tenant an unrevoked key belongs to, with its customer attribution settings."""

    tenant_id: str
    customer_keys: tuple[str, ...]


def key_owner(engine: Engine, key: str, kind: KeyKind) -> KeyOwner | None:
    """The tenant owning an unrevoked key of `kind`, else None.

    Reads without taking SQLite's write lock. Database errors propagate: the receiver's key
    resolver (`exporter.keys`) and the API's admin-key auth (`billing_api.auth`) each turn
    a retryable one into their own "unavailable" answer (`agentmeter.db.is_retryable`)."""
    query = (
        select(Tenant.id, Tenant.customer_attribute_keys)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(
            ApiKey.key_hash == hash_key(key),
            ApiKey.kind == kind.value,
            ApiKey.revoked_at.is_(None),
        )
    )
    with read_only(engine) as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    return KeyOwner(tenant_id=row.id, customer_keys=tuple(row.customer_attribute_keys))


def tenant_ids(engine: Engine) -> list[str]:
    """Every tenant's id, oldest first."""
    with Session(engine) as session:
        return list(session.scalars(select(Tenant.id).order_by(Tenant.created_at)))


def tenant_exists(engine: Engine, tenant_id: str) -> bool:
    with Session(engine) as session:
        return session.get(Tenant, tenant_id) is not None


# --- Keys as the dashboard manages them (session-scoped) ----------------------------------


def list_keys(session: Session, tenant_id: str) -> list[ApiKey]:
    """The tenant's keys, newest first (hashes only: a key is shown once, when created)."""
    query = select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at.desc())
    return list(session.scalars(query))


def create_key(session: Session, tenant_id: str, kind: KeyKind) -> str:
    """A new key of `kind` for the tenant, returned this once."""
    return _new_key(session, tenant_id, kind)


def revoke_key_id(session: Session, tenant_id: str, key_id: str) -> bool:
    """Revoke the tenant's key `key_id`; False if it has no such unrevoked key."""
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
