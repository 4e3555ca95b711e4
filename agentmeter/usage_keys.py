"""How the lean usage store keys what a record names (migration 0015).

Ids are stored as what they are, not as their hex text: a trace id as its 16 bytes, a span
id as a signed 64-bit integer, a response id as the 10 bytes of its key
(`agentmeter.response_keys`). Tenants, customer ids and combinations of dimensions are
stored once each and referenced by integer keys (`usage_tenants`, `usage_customers`,
`usage_dimensions`).

`UsageKeys` looks keys up and creates missing ones inside the caller's transaction. Keys
never change once created, so they are cached per process, but only once the transaction
that created them has committed (`UsageKeyCache.keep`): a rolled-back key would otherwise be
cached pointing at nothing.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import Connection, Table, select

from agentmeter.db import dialect_insert, in_chunks
from agentmeter.tables import UsageCustomer, UsageDimensions, UsageTenant

_TENANTS: Table = UsageTenant.__table__  # type: ignore[assignment]
_CUSTOMERS: Table = UsageCustomer.__table__  # type: ignore[assignment]
_DIMENSIONS: Table = UsageDimensions.__table__  # type: ignore[assignment]


def trace_bytes(trace_hex: str) -> bytes:
    """A trace id (32 hex digits) as stored."""
    return bytes.fromhex(trace_hex)


def trace_hex(stored: bytes) -> str:
    return stored.hex()


def span_int(span_hex: str) -> int | None:
    """A span id (16 hex digits) as stored: a signed 64-bit integer; None for "" (none)."""
    if not span_hex:
        return None
    value = int(span_hex, 16)
    return value - (1 << 64) if value >> 63 else value


def span_hex(stored: int | None) -> str:
    """A stored span id as its 16 hex digits ("" for none)."""
    return "" if stored is None else (stored & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "big").hex()


def response_hex(stored: bytes | None) -> str:
    return stored.hex() if stored else ""


class Dimensions(NamedTuple):
    """What `usage_dimensions` holds of a span, in its column order."""

    provider: str
    model: str
    operation: str
    agent_name: str
    step: str
    tool: str
    service_name: str

    def digest(self) -> bytes:
        """The unique key: the first 16 bytes of SHA-256 over the values joined by U+001F
        (PostgreSQL computes the same in migration 0015)."""
        return hashlib.sha256("\x1f".join(self).encode()).digest()[:16]


class UsageKeyCache:
    """The keys known to be committed, shared by every transaction of a process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tenants: dict[str, int] = {}
        self.customers: dict[tuple[int, str], int] = {}
        self.dimensions: dict[Dimensions, int] = {}

    def keys(self, connection: Connection) -> UsageKeys:
        """Keys for one transaction of `connection`."""
        return UsageKeys(connection, self)

    def keep(self, keys: UsageKeys) -> None:
        """After `keys`' transaction committed: cache what it found or created."""
        with self._lock:
            self.tenants.update(keys.tenants)
            self.customers.update(keys.customers)
            self.dimensions.update(keys.dimensions)


class UsageKeys:
    """The keys of one transaction: cached ones, and those it looked up or created."""

    def __init__(self, connection: Connection, cache: UsageKeyCache | None = None) -> None:
        self._connection = connection
        self._cache = cache or UsageKeyCache()
        self.tenants: dict[str, int] = {}
        self.customers: dict[tuple[int, str], int] = {}
        self.dimensions: dict[Dimensions, int] = {}

    def tenant(self, tenant_id: str) -> int:
        found = self.find_tenant(tenant_id)
        if found is None:
            insert = dialect_insert(self._connection, _TENANTS).on_conflict_do_nothing()
            self._connection.execute(insert, {"tenant_id": tenant_id})
            found = self.find_tenant(tenant_id)
            assert found is not None  # inserted just now, or by a concurrent writer
        return found

    def find_tenant(self, tenant_id: str) -> int | None:
        """The tenant's key if it has one (it has stored usage), without creating it."""
        found = self.tenants.get(tenant_id) or self._cache.tenants.get(tenant_id)
        if found is None:
            query = select(_TENANTS.c.key).where(_TENANTS.c.tenant_id == tenant_id)
            found = self._connection.execute(query).scalar()
        if found is not None:
            self.tenants[tenant_id] = found
        return found

    def _known_customer(self, tenant_key: int, customer_id: str) -> int | None:
        """The customer id's key if this transaction or a committed one looked it up."""
        key = (tenant_key, customer_id)
        return self.customers.get(key) or self._cache.customers.get(key)

    def customers_of(self, tenant_key: int, customer_ids: Iterable[str]) -> dict[str, int]:
        """customer id → key, creating the missing ones."""
        wanted = set(customer_ids)
        found: dict[str, int] = {}
        for customer_id in wanted:
            key = self._known_customer(tenant_key, customer_id)
            if key is not None:
                found[customer_id] = key
        missing = sorted(wanted - found.keys())
        if missing:
            insert = dialect_insert(self._connection, _CUSTOMERS).on_conflict_do_nothing()
            self._connection.execute(
                insert, [{"tenant_key": tenant_key, "customer_id": c} for c in missing]
            )
            for chunk in in_chunks(missing):
                query = select(_CUSTOMERS.c.customer_id, _CUSTOMERS.c.key).where(
                    _CUSTOMERS.c.tenant_key == tenant_key, _CUSTOMERS.c.customer_id.in_(chunk)
                )
                found.update({c: k for c, k in self._connection.execute(query)})
        self.customers.update({(tenant_key, c): k for c, k in found.items()})
        return found

    def customer(self, tenant_key: int, customer_id: str) -> int:
        return self.customers_of(tenant_key, (customer_id,))[customer_id]

    def find_customer(self, tenant_key: int, customer_id: str) -> int | None:
        """The customer id's key if it has one (it has had usage), without creating it."""
        key = self._known_customer(tenant_key, customer_id)
        if key is None:
            query = select(_CUSTOMERS.c.key).where(
                _CUSTOMERS.c.tenant_key == tenant_key, _CUSTOMERS.c.customer_id == customer_id
            )
            key = self._connection.execute(query).scalar()
        return key

    def dimensions_of(self, combinations: Iterable[Dimensions]) -> dict[Dimensions, int]:
        """combination → id, creating the missing ones."""
        wanted = set(combinations)
        found: dict[Dimensions, int] = {}
        for combination in wanted:
            key = self.dimensions.get(combination) or self._cache.dimensions.get(combination)
            if key is not None:
                found[combination] = key
        missing = {c.digest(): c for c in wanted - found.keys()}
        if missing:
            insert = dialect_insert(self._connection, _DIMENSIONS).on_conflict_do_nothing()
            self._connection.execute(
                insert,
                [{**missing[d]._asdict(), "digest": d} for d in sorted(missing)],
            )
            for chunk in in_chunks(sorted(missing)):
                query = select(_DIMENSIONS.c.digest, _DIMENSIONS.c.id).where(
                    _DIMENSIONS.c.digest.in_(chunk)
                )
                found.update({missing[d]: k for d, k in self._connection.execute(query)})
        self.dimensions.update(found)
        return found

    def dimensions_by_id(self, ids: Iterable[int]) -> dict[int, Dimensions]:
        """id → combination (read from the table: ids are few per batch)."""
        found: dict[int, Dimensions] = {}
        for chunk in in_chunks(sorted(set(ids))):
            columns = [_DIMENSIONS.c[name] for name in Dimensions._fields]
            query = select(_DIMENSIONS.c.id, *columns).where(_DIMENSIONS.c.id.in_(chunk))
            for row in self._connection.execute(query):
                found[row[0]] = Dimensions(*row[1:])
        return found


__all__ = [
    "Dimensions",
    "UsageKeyCache",
    "UsageKeys",
    "response_hex",
    "span_hex",
    "span_int",
    "trace_bytes",
    "trace_hex",
]
