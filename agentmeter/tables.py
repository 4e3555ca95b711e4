"""Database tables shared by the usage store (`exporter/`) and the billing API.

Quantities are stored as integer micro-units (`quantity_micros`, 10^-6 of a unit) so that
SUM in SQL is exact on SQLite and PostgreSQL alike; times as integer Unix nanoseconds
as OTLP carries them. An empty `customer_id` means the usage is not attributed yet.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Integer primary keys that autoincrement on both backends (SQLite only does so for INTEGER).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and always read back as an aware UTC datetime."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; AgentMeter stores aware UTC times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def to_unix_nano(moment: datetime) -> int:
    """An aware datetime as integer Unix nanoseconds (exact, no float on the way)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def from_unix_nano(unix_nano: int) -> datetime:
    """Integer Unix nanoseconds as an aware UTC datetime (to the microsecond)."""
    return _EPOCH + timedelta(microseconds=unix_nano // 1000)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Tenant(Base):
    """A builder: owns customers, keys, usage, price books and invoices."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Span/resource attribute keys that name the customer, first match wins.
    customer_attribute_keys: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """A secret that authenticates a tenant. Only its SHA-256 is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "ingest" or "admin"
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Customer(Base):
    """A builder's customer, addressed by the id agents put on spans."""

    __tablename__ = "customers"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsageRow(Base):
    """One meter of one span: the unit of exactly-once storage."""

    __tablename__ = "usage_records"
    __table_args__ = (
        UniqueConstraint("tenant_id", "trace_id", "span_id", "meter"),
        Index(None, "tenant_id", "customer_id", "time_unix_nano"),
        Index(None, "tenant_id", "time_unix_nano"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    trace_id: Mapped[str] = mapped_column(String(32))
    span_id: Mapped[str] = mapped_column(String(16))
    meter: Mapped[str] = mapped_column(String(128))
    quantity_micros: Mapped[int] = mapped_column(BigInteger)
    customer_id: Mapped[str] = mapped_column(String(256))
    time_unix_nano: Mapped[int] = mapped_column(BigInteger)
    received_unix_nano: Mapped[int] = mapped_column(BigInteger)
    provider: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(256))
    operation: Mapped[str] = mapped_column(String(128))
    agent_name: Mapped[str] = mapped_column(String(256))
    step: Mapped[str] = mapped_column(String(256))
    tool: Mapped[str] = mapped_column(String(256))
    service_name: Mapped[str] = mapped_column(String(256))
    source: Mapped[str] = mapped_column(String(16))


class TraceCustomer(Base):
    """The customer a trace was first seen with; customer-less spans of it inherit it."""

    __tablename__ = "trace_customers"

    tenant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    trace_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(256))
