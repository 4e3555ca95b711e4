"""Database tables shared by the usage store (`exporter/`) and the billing API.

Quantities are stored as integer micro-units (`quantity_micros`, 10^-6 of a unit) so that
SUM in SQL is exact on SQLite and PostgreSQL alike; times as integer Unix nanoseconds
as OTLP carries them. An empty `customer_id` means the usage is not attributed yet.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    and_,
    or_,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from agentmeter.clock import utcnow

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


class DecimalText(TypeDecorator[Decimal]):
    """An exact Decimal stored as text (SQLite has no exact decimal type).

    For prices and rates that are read, never summed in SQL; sums use integer columns.
    """

    impl = String(64)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValueError(f"expected a finite Decimal, got {value!r}")
        return format(value, "f")

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


def to_unix_nano(moment: datetime) -> int:
    """An aware datetime as integer Unix nanoseconds (exact, no float on the way)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def from_unix_nano(unix_nano: int) -> datetime:
    """Integer Unix nanoseconds as an aware UTC datetime (to the microsecond)."""
    return _EPOCH + timedelta(microseconds=unix_nano // 1000)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def on_dialect(dialect: str) -> Callable[..., bool]:
    """Alembic's `include_object` hook for a database of `dialect`: schema comparisons
    leave out indexes declared for other dialects only (`Index.ddl_if(dialect=…)`)."""

    def include_object(
        item: object, name: str | None, type_: str, reflected: bool, compare_to: object
    ) -> bool:
        ddl_if = getattr(item, "_ddl_if", None)
        return ddl_if is None or ddl_if.dialect in (None, dialect)

    return include_object


class Tenant(Base):
    """A builder: owns customers, keys, usage, price books and invoices."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Span/resource attribute keys that name the customer, first match wins.
    customer_attribute_keys: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Where budget alerts and other events are POSTed, signed with the secret.
    webhook_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Billing settings (see billing_api.invoicing): numbering, review rules, brand.
    invoice_prefix: Mapped[str] = mapped_column(String(16), default="INV", server_default="INV")
    late_usage_policy: Mapped[str] = mapped_column(
        String(32), default="adjust_next", server_default="adjust_next"
    )
    spike_factor: Mapped[Decimal] = mapped_column(
        DecimalText, default=Decimal(3), server_default="3"
    )
    margin_floor_percent: Mapped[Decimal] = mapped_column(
        DecimalText, default=Decimal(0), server_default="0"
    )
    review_threshold_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    brand_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    brand_color: Mapped[str | None] = mapped_column(String(16), nullable=True)
    brand_logo_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    # The rest of the brand the customer portal shows (billing_api.portal.branding).
    brand_support_email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    brand_support_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    brand_locale: Mapped[str | None] = mapped_column(String(35), nullable=True)
    # CSP frame-ancestors sources allowed to embed the portal; empty: nobody may frame it.
    brand_frame_ancestors: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


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
    # None: the tenant's default price book.
    price_book_id: Mapped[str | None] = mapped_column(ForeignKey("price_books.id"), nullable=True)
    # Monthly periods start on this day of the month (1-28), 00:00 UTC.
    billing_day: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


# The canonical token meters that live in a usage span's own columns (the lean layout,
# migration 0015); every other meter of a span is a row of `usage_meters`.
SPAN_METERS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "output_reasoning_tokens",
)


class UsageTenant(Base):
    """A tenant's integer key in the usage tables (4 bytes per span, not 32)."""

    __tablename__ = "usage_tenants"

    key: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(32), unique=True)


class UsageCustomer(Base):
    """A customer id's integer key in the usage tables, per tenant ("" = not attributed).

    Unique on (customer id, tenant): readers look a customer up by its id first."""

    __tablename__ = "usage_customers"
    __table_args__ = (UniqueConstraint("customer_id", "tenant_key"),)

    key: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_key: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[str] = mapped_column(String(256))


class UsageDimensions(Base):
    """One combination of a span's dimensions, stored once and referenced by its id.

    `digest` (`agentmeter.usage_keys.Dimensions.digest`) is the unique key: one short index entry
    instead of an index over eight strings."""

    __tablename__ = "usage_dimensions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(256))
    operation: Mapped[str] = mapped_column(String(128))
    agent_name: Mapped[str] = mapped_column(String(256))
    step: Mapped[str] = mapped_column(String(256))
    tool: Mapped[str] = mapped_column(String(256))
    service_name: Mapped[str] = mapped_column(String(256))
    digest: Mapped[bytes] = mapped_column(LargeBinary(16), unique=True)


class UsageTokenMeter(Base):
    """The token meters of a span's columns, numbered: SQLite's `usage_records` view joins
    it to turn a span's columns into one record per meter (PostgreSQL uses LATERAL)."""

    __tablename__ = "usage_token_meters"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    meter: Mapped[str] = mapped_column(String(128))


# A span's identity: the primary key of `usage_spans`, and of `usage_meters` with the meter.
SPAN_KEY = ("tenant_key", "trace_id", "span_id", "time_unix_nano")


# Ids as stored: a trace id is its 16 bytes, span ids are signed 64-bit integers, a
# response id is its key's 10 bytes (agentmeter.usage_keys). Columns go by alignment, 8-byte
# ones first, so PostgreSQL pads none of them (a NULL takes no bytes on either backend).
usage_spans = Table(
    "usage_spans",
    Base.metadata,
    Column("span_id", BigInteger, nullable=False, autoincrement=False),
    # On PostgreSQL the table is partitioned by month of the end time (agentmeter.partitions),
    # and every copy of a span carries it.
    Column("time_unix_nano", BigInteger, nullable=False, autoincrement=False),
    Column("received_unix_nano", BigInteger, nullable=False),
    Column("parent_span_id", BigInteger, nullable=True),
    *(
        column
        for meter in SPAN_METERS
        for column in (
            # Provider cost in 10^-12 USD; NULL when unknown (model not priced).
            Column(f"{meter}_cost_pico", BigInteger, nullable=True),
            # The span whose record bills this call instead (exporter.provider_calls).
            Column(f"{meter}_superseded_by", BigInteger, nullable=True),
        )
    ),
    Column("tenant_key", Integer, nullable=False, autoincrement=False),
    Column("customer_key", Integer, nullable=False),
    Column("dimension_id", Integer, nullable=False),
    # Whole tokens (≤ 10^9: the view shows micro-units); NULL: the span has no record of
    # this meter. (A count takes 2-3 bytes on SQLite where micro-units take 6.)
    *(Column(meter, Integer, nullable=True) for meter in SPAN_METERS),
    Column("trace_id", LargeBinary(16), nullable=False),
    Column("response_key", LargeBinary(10), nullable=True),
    # True when the span has rows in `usage_meters` (NULL, no bytes, when not): readers of
    # the `usage_records` view look there only for such spans.
    Column("has_meters", Boolean, nullable=True),
    PrimaryKeyConstraint(*SPAN_KEY),
    # A customer's period is one range of this index (rating, estimates, the portal).
    Index(None, "customer_key", "time_unix_nano"),
    # The once-per-call rule: a response id's spans, a span's children.
    Index(
        "ix_usage_spans_response",
        "tenant_key",
        "response_key",
        postgresql_where=text("response_key IS NOT NULL"),
        sqlite_where=text("response_key IS NOT NULL"),
    ),
    # On PostgreSQL only: there a trace's spans lie anywhere in the heap, and finding a
    # batch's children through the identity's (tenant, trace) prefix read every span of
    # their traces (~10x the time, docs/lean_usage.md). SQLite finds them that way cheaply
    # (a trace's identity entries are adjacent; each of a batch's traces is read once,
    # `exporter.provider_calls`) and saves the index's bytes.
    Index(
        "ix_usage_spans_parent",
        "tenant_key",
        "trace_id",
        "parent_span_id",
        postgresql_where=text("parent_span_id IS NOT NULL"),
    ).ddl_if(dialect="postgresql"),
    # A rowid table on SQLite: its index entries then end in a rowid, not in the 34 bytes
    # of the identity (as they would in a WITHOUT ROWID table).
    postgresql_partition_by="RANGE (time_unix_nano)",
)


def meters_of_spans() -> ColumnElement[bool]:
    """The join condition of a span's `usage_meters` rows to its `usage_spans` row."""
    return and_(*(usage_meters.c[key] == usage_spans.c[key] for key in SPAN_KEY))


def meter_bills(meter: str) -> ColumnElement[bool]:
    """A span's record of token meter `meter`, if it has one, bills: it is not superseded."""
    return usage_spans.c[f"{meter}_superseded_by"].is_(None)


def span_bills() -> ColumnElement[bool]:
    """A `usage_spans` row has a record that bills (as `UsageRow.billed` says of records):
    a token meter not superseded, or other meters (never superseded)."""
    return or_(
        *(
            and_(
                usage_spans.c[meter].is_not(None), usage_spans.c[f"{meter}_superseded_by"].is_(None)
            )
            for meter in SPAN_METERS
        ),
        usage_spans.c.has_meters.is_(True),
    )


usage_meters = Table(
    "usage_meters",
    Base.metadata,
    Column("tenant_key", Integer, primary_key=True),
    Column("trace_id", LargeBinary(16), primary_key=True),
    Column("span_id", BigInteger, primary_key=True),
    Column("time_unix_nano", BigInteger, primary_key=True, autoincrement=False),
    Column("meter", String(128), primary_key=True),
    Column("quantity_micros", BigInteger, nullable=False),
    Column("provider_cost_pico", BigInteger, nullable=True),
    sqlite_with_rowid=False,
    postgresql_partition_by="RANGE (time_unix_nano)",
)

# `usage_records` is a view (migration 0015), in a metadata of its own so that schema
# comparison and `create_all` leave it alone: one record per meter of a span, with the
# columns every reader queries.
_VIEWS = MetaData()


class UsageRow(Base):
    """One meter of one span, as readers see it: a row of the `usage_records` view.

    Written through `usage_spans` (the span, its dimensions and its token meters) and
    `usage_meters` (its other meters: tool calls, custom meters), never through the view."""

    __table__ = Table(
        "usage_records",
        _VIEWS,
        Column("tenant_id", String(32), primary_key=True),
        Column("trace_id", String(32), primary_key=True),
        Column("span_id", String(16), primary_key=True),
        Column("meter", String(128), primary_key=True),
        Column("quantity_micros", BigInteger),
        Column("customer_id", String(256)),
        Column("time_unix_nano", BigInteger, primary_key=True),
        Column("received_unix_nano", BigInteger),
        Column("provider", String(128)),
        Column("model", String(256)),
        Column("operation", String(128)),
        Column("agent_name", String(256)),
        Column("step", String(256)),
        Column("tool", String(256)),
        Column("service_name", String(256)),
        Column("source", String(16)),
        # Provider cost of this record in 10^-12 USD; NULL when unknown (model not priced).
        Column("provider_cost_pico", BigInteger, nullable=True),
        # How the store bills each provider call once (exporter.provider_calls): the span's
        # parent, the provider's response id (its key, in hex: agentmeter.response_keys),
        # and, when another span's record bills this call, that span's id ("" otherwise).
        Column("parent_span_id", String(16)),
        Column("response_id", String(20)),
        Column("superseded_by", String(16)),
    )

    tenant_id: Mapped[str]
    trace_id: Mapped[str]
    span_id: Mapped[str]
    meter: Mapped[str]
    quantity_micros: Mapped[int]
    customer_id: Mapped[str]
    time_unix_nano: Mapped[int]
    received_unix_nano: Mapped[int]
    provider: Mapped[str]
    model: Mapped[str]
    operation: Mapped[str]
    agent_name: Mapped[str]
    step: Mapped[str]
    tool: Mapped[str]
    service_name: Mapped[str]
    source: Mapped[str]
    provider_cost_pico: Mapped[int | None]
    parent_span_id: Mapped[str]
    response_id: Mapped[str]
    superseded_by: Mapped[str]

    @classmethod
    def billed(cls) -> ColumnElement[bool]:
        """The condition every query of billable usage applies: not superseded."""
        return cls.superseded_by == ""


class AgentSpan(Base):
    """A span that names an agent; usage below it in its trace inherits the name. Keys
    and ids as in `usage_spans`."""

    __tablename__ = "agent_spans"
    __table_args__ = ({"sqlite_with_rowid": False},)

    tenant_key: Mapped[int] = mapped_column(Integer, primary_key=True)
    trace_id: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    span_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    parent_span_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    agent_name: Mapped[str] = mapped_column(String(256))


class TraceCustomer(Base):
    """The customer a trace was first seen with; customer-less spans of it inherit it.
    Keys and ids as in `usage_spans`."""

    __tablename__ = "trace_customers"
    __table_args__ = ({"sqlite_with_rowid": False},)

    tenant_key: Mapped[int] = mapped_column(Integer, primary_key=True)
    trace_id: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    customer_key: Mapped[int] = mapped_column(Integer)


class PriceBook(Base):
    """A tenant's prices in one currency. Customers use the default book unless assigned."""

    __tablename__ = "price_books"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    is_default: Mapped[bool] = mapped_column(default=False)
    # Units of this book's currency per USD, to turn provider cost into this currency.
    usd_rate: Mapped[Decimal] = mapped_column(DecimalText, default=Decimal(1))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PriceVersion(Base):
    """The prices of a book from `effective_from` until the next version's start.

    Locked (immutable) once it has priced a finalized invoice: edits make a new version.
    """

    __tablename__ = "price_versions"
    __table_args__ = (
        UniqueConstraint("book_id", "number"),
        UniqueConstraint("book_id", "effective_from"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    book_id: Mapped[str] = mapped_column(ForeignKey("price_books.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CustomerOverride(Base):
    """Contract terms of one customer: components layered over the book's for a time range.

    An override component with the name of a book component replaces it; a new name adds one.
    """

    __tablename__ = "customer_overrides"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    customer_id: Mapped[str] = mapped_column(String(256))
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    effective_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    note: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index(None, "tenant_id", "customer_id"),)


class PriceComponent(Base):
    """One priced thing: which usage it matches, and how it is charged.

    Belongs to a price version or to a customer override. `charge` is one of per_unit,
    graduated, volume, package, flat_fee, allowance, minimum, cost_plus; the fields a
    charge model needs are validated by the API (billing_api.pricing.schemas).
    """

    __tablename__ = "price_components"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    version_id: Mapped[str | None] = mapped_column(
        ForeignKey("price_versions.id"), nullable=True, index=True
    )
    override_id: Mapped[str | None] = mapped_column(
        ForeignKey("customer_overrides.id"), nullable=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    meter: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Dimension → exact value or glob (fnmatch) pattern, e.g. {"model": "gpt-4o*"}.
    filters: Mapped[dict[str, str]] = mapped_column(JSON)
    charge: Mapped[str] = mapped_column(String(32))
    unit_price: Mapped[Decimal | None] = mapped_column(DecimalText, nullable=True)
    per_units: Mapped[int] = mapped_column(BigInteger, default=1)
    # [{"up_to": int | null, "unit_price": "decimal", "flat_fee": "decimal"}]
    tiers: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    package_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    included_quantity: Mapped[Decimal | None] = mapped_column(DecimalText, nullable=True)
    amount: Mapped[Decimal | None] = mapped_column(DecimalText, nullable=True)
    markup: Mapped[Decimal | None] = mapped_column(DecimalText, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)


class ProviderCostOverride(Base):
    """A builder's negotiated provider rate, from a date on, replacing genai-prices' rate."""

    __tablename__ = "provider_cost_overrides"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    provider: Mapped[str] = mapped_column(String(128))  # exact or glob
    model: Mapped[str] = mapped_column(String(256))  # exact or glob
    meter: Mapped[str] = mapped_column(String(128))
    unit_cost_usd: Mapped[Decimal] = mapped_column(DecimalText)
    per_units: Mapped[int] = mapped_column(BigInteger, default=1_000_000)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CreditGrant(Base):
    """Prepaid credit (a credit pack) in the customer's billing currency."""

    __tablename__ = "credit_grants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    customer_id: Mapped[str] = mapped_column(String(256))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index(None, "tenant_id", "customer_id"),)


class CreditLedgerEntry(Base):
    """Append-only movements of credit: grant (+), draw (-), expire (-), reversal (+)."""

    __tablename__ = "credit_ledger"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[str] = mapped_column(String(256))
    grant_id: Mapped[str] = mapped_column(ForeignKey("credit_grants.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    invoice_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index(None, "tenant_id", "customer_id"),)


class Budget(Base):
    """A customer's spend limit per billing period, with alert thresholds in percent."""

    __tablename__ = "budgets"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    limit_minor: Mapped[int] = mapped_column(BigInteger)
    thresholds: Mapped[list[int]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BudgetAlert(Base):
    """A threshold crossed in a period: recorded once, then delivered by webhook."""

    __tablename__ = "budget_alerts"
    __table_args__ = (UniqueConstraint("tenant_id", "customer_id", "period_start", "threshold"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[str] = mapped_column(String(256))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    threshold: Mapped[int] = mapped_column(Integer)
    spend_minor: Mapped[int] = mapped_column(BigInteger)
    limit_minor: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """Outbox of signed events to the tenant's webhook URL, retried until delivered."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(32), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class BillingRun(Base):
    """One pass of drafting invoices for a month, with progress."""

    __tablename__ = "billing_runs"
    __table_args__ = (Index(None, "tenant_id", "period"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    period: Mapped[str] = mapped_column(String(7))  # "2026-11"
    status: Mapped[str] = mapped_column(String(16), default="running")
    total_customers: Mapped[int] = mapped_column(Integer, default=0)
    processed_customers: Mapped[int] = mapped_column(Integer, default=0)
    drafted: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The lease: who works on the run, and when it last said so (see invoicing.leases).
    holder: Mapped[str] = mapped_column(String(64), default="", server_default="")
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Invoice(Base):
    """A customer's invoice for one period: draft (re-rated in place), finalized
    (immutable, numbered) or void."""

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("tenant_id", "customer_id", "period_start"),
        UniqueConstraint("tenant_id", "number"),
        Index(None, "tenant_id", "period", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    customer_id: Mapped[str] = mapped_column(String(256))
    period: Mapped[str] = mapped_column(String(7))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="draft")
    number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    currency: Mapped[str] = mapped_column(String(3))
    price_book_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    versions: Mapped[list[int]] = mapped_column(JSON, default=list)
    # Quantity per meter in the period (micro-units): the history spike checks compare to.
    usage_micros: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    subtotal_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    total_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # Internal: never shown to the customer.
    provider_cost_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    margin_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    rated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    void_reason: Mapped[str] = mapped_column(String(2000), default="")
    # Stripe Connect (billing_api.stripe): where the pushed copy is and whether it is paid.
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stripe_sync_status: Mapped[str] = mapped_column(
        String(16), default="not_connected", server_default="not_connected"
    )
    stripe_error: Mapped[str] = mapped_column(String(2000), default="", server_default="")
    payment_status: Mapped[str] = mapped_column(
        String(16), default="unpaid", server_default="unpaid"
    )
    # `created` of the Stripe event that set payment_status: older events never overwrite it.
    payment_event_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class InvoiceLine(Base):
    """A line of an invoice: rated usage, a fee, a manual line or discount, an adjustment."""

    __tablename__ = "invoice_lines"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    # rated | manual | discount | prior_period
    kind: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(500))
    component_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    charge: Mapped[str | None] = mapped_column(String(32), nullable=True)
    meter: Mapped[str | None] = mapped_column(String(128), nullable=True)
    version_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    override_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    quantity: Mapped[Decimal] = mapped_column(DecimalText)
    unit_price: Mapped[Decimal | None] = mapped_column(DecimalText, nullable=True)
    # The unit price is per this many units (per 1,000,000 tokens, say).
    per_units: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    # Set when a reviewer adjusted the rated amount: what rating said, and why it changed.
    rated_amount_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    adjustment_reason: Mapped[str] = mapped_column(String(2000), default="")
    provider_cost_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    margin_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # On a prior-period line: the period ("2026-10") whose late usage it bills.
    adjusts_period: Mapped[str | None] = mapped_column(String(7), nullable=True)
    details: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class BillingException(Base):
    """Something a reviewer must see before (blocking) or after (warning) finalizing."""

    __tablename__ = "billing_exceptions"
    __table_args__ = (UniqueConstraint("tenant_id", "scope", "type", "fingerprint"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    # "invoice:<id>" or "run:<period>": where the exception belongs, for dedup on re-runs.
    scope: Mapped[str] = mapped_column(String(64))
    invoice_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    period: Mapped[str] = mapped_column(String(7))
    customer_id: Mapped[str] = mapped_column(String(256), default="")
    type: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))  # blocking | warning
    status: Mapped[str] = mapped_column(String(16), default="open")  # open|resolved|waived
    fingerprint: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(String(2000))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolved_by: Mapped[str] = mapped_column(String(200), default="")
    note: Mapped[str] = mapped_column(String(2000), default="")


class AuditEntry(Base):
    """Append-only record of every review change: who, when, before, after, why."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32), index=True)
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    reason: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InvoiceSequence(Base):
    """The last number used per tenant, document kind ("invoice", "credit_note") and year.

    Gapless: a number is taken under a row lock inside the transaction that finalizes the
    document, so a rollback gives the number back and two finalizations never share one.
    """

    __tablename__ = "invoice_sequences"

    tenant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class CreditNote(Base):
    """A full or partial credit against a finalized invoice."""

    __tablename__ = "credit_notes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"), index=True)
    number: Mapped[str] = mapped_column(String(64))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Meter(Base):
    """A meter a tenant bills by: declared through the API or first seen in usage. The
    canonical meters need no row."""

    __tablename__ = "meters"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    origin: Mapped[str] = mapped_column(String(16))  # declared | usage
    description: Mapped[str] = mapped_column(String(500), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StripeAccount(Base):
    """The Stripe account a tenant connected (Connect); AgentMeter acts on it as platform."""

    __tablename__ = "stripe_accounts"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), unique=True)
    connected_via: Mapped[str] = mapped_column(String(16))  # api | oauth
    # The platform's fee on each pushed invoice, percent of its total; None: no fee.
    application_fee_percent: Mapped[Decimal | None] = mapped_column(DecimalText, nullable=True)
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StripeOAuthState(Base):
    """A pending OAuth onboarding: single use, expiring, bound to its tenant. Only the
    SHA-256 of the state is stored."""

    __tablename__ = "stripe_oauth_states"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StripeCustomer(Base):
    """How a customer is invoiced on Stripe, and its customer object there once created."""

    __tablename__ = "stripe_customers"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    collection_method: Mapped[str] = mapped_column(String(32), default="send_invoice")
    days_until_due: Mapped[int | None] = mapped_column(Integer, nullable=True, default=30)
    # The Stripe customer on `account_id`; a mapping to another account is not reused.
    account_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class StripeJob(Base):
    """Outbox of calls to the connected account (push, void, credit note), written in the
    transaction that changed the invoice and run by the worker with claim/lease."""

    __tablename__ = "stripe_jobs"
    __table_args__ = (Index(None, "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # One job per thing to do: "push:<invoice>", "void:<invoice>", "credit_note:<note>".
    key: Mapped[str] = mapped_column(String(64), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    invoice_id: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    credit_note_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str] = mapped_column(String(2000), default="")
    # Stripe ids created so far, so a resumed job continues where it stopped.
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StripeEvent(Base):
    """A verified Stripe webhook event, stored once per event id, processed from here."""

    __tablename__ = "stripe_events"
    __table_args__ = (Index(None, "status", "received_at"),)

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    type: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    note: Mapped[str] = mapped_column(String(2000), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PortalSession(Base):
    """A link given to one customer: the signed token names this row, which can be revoked."""

    __tablename__ = "portal_sessions"
    __table_args__ = (Index(None, "tenant_id", "customer_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    customer_id: Mapped[str] = mapped_column(String(256))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ServerSecret(Base):
    """A signing secret generated on first use when `AGENTMETER_SECRET_KEYS` is not set, so
    every replica on this database signs and verifies alike."""

    __tablename__ = "server_secrets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StaffUser(Base):
    """A builder's staff member who signs in to the dashboard (billing_api.dashboard)."""

    __tablename__ = "staff_users"
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    # Stored lower-cased, so sign-in ignores case.
    email: Mapped[str] = mapped_column(String(320), index=True)
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id, PHC string
    role: Mapped[str] = mapped_column(String(16))  # billing_api.auth.Role, not "customer"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StaffSession(Base):
    """A signed-in dashboard session; the cookie holds the token, only its hash is stored."""

    __tablename__ = "staff_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("staff_users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)  # absolute, never extended


class StaffLoginFailure(Base):
    """A failed dashboard sign-in, counted per e-mail address to throttle guessing."""

    __tablename__ = "staff_login_failures"
    __table_args__ = (Index(None, "email", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Job(Base):
    """A unit of background work (`billing_api/jobs`): enqueued in the transaction of its
    cause, claimed by one worker at a time under a lease, retried, or dead with its error."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index(None, "status", "due_at"),
        Index(None, "lane", "id"),
        # Idempotent enqueue: one pending (not yet started) job per (kind, key).
        Index(
            "uq_jobs_pending_kind_key",
            "kind",
            "key",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    # Jobs of one lane run one at a time, oldest first (e.g. recosts of one tenant).
    lane: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tenant_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=10)
    # Pending or retrying: when it may run; running: when its lease runs out.
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    holder: Mapped[str] = mapped_column(String(100), default="")
    last_error: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RatingChange(Base):
    """Something rating reads changed since the rated-month cache last caught up: usage of
    a customer on a day, a customer's book or registration, or a tenant's prices.

    Written only by database triggers (migration 0014) on `usage_records`, `customers`,
    `price_books`, `price_versions`, `price_components` and `customer_overrides`, so every
    writer is covered, present or future. `customer_id` None: every customer of the
    tenant; `day` (days since 1970, UTC) a day of the month whose usage changed: on
    SQLite the usage's own day, on PostgreSQL its month's first; None: every day.
    `writer` is the writing transaction on PostgreSQL (one row per transaction, customer
    and day: no two transactions touch the same row) and 0 on SQLite, whose single writer
    sets `claimed` back to false on the existing row instead. The cache
    (`billing_api.rating.cache`) claims the rows it is about to read past and deletes
    them only if still claimed when it stores."""

    __tablename__ = "rating_changes"
    __table_args__ = (UniqueConstraint("tenant_id", "customer_id", "day", "writer"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    writer: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    claimed: Mapped[bool] = mapped_column(default=False, server_default=text("false"))


class RatingCacheGeneration(Base):
    """A tenant's rated-month cache: bumped by each reader's claim and by its store, which
    happens only if no later reader claimed (whose figures may be newer); the reader
    computing holds a lease until `computing_until`, and others wait for its result."""

    __tablename__ = "rating_cache_generations"

    tenant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)
    computing_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RatedMonth(Base):
    """A calendar month whose every customer's figures are in `rated_customer_months`
    (a customer with nothing to bill has no row)."""

    __tablename__ = "rated_months"

    tenant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)


class RatedCustomerMonth(Base):
    """The rated totals of one customer's calendar month, as `rate_period` computed them
    from the usage and terms stored when it ran (kept exact by `rating_changes`)."""

    __tablename__ = "rated_customer_months"

    tenant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal_minor: Mapped[int] = mapped_column(BigInteger)
    # None when some priced usage has no known provider cost.
    provider_cost_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RatedMonthTotals(Base):
    """A cached month's sums per currency over its customers (a customer's unknown provider
    cost, and so margin, counted as 0), summed from `rated_customer_months` whenever the
    month's rows change."""

    __tablename__ = "rated_month_totals"

    tenant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    revenue_minor: Mapped[int] = mapped_column(BigInteger)
    provider_cost_minor: Mapped[int] = mapped_column(BigInteger)
    margin_minor: Mapped[int] = mapped_column(BigInteger)


class RatedCustomerMonthUsage(Base):
    """The raw quantity of one meter in a rated customer month (priced or not), beside
    its `rated_customer_months` row."""

    __tablename__ = "rated_customer_month_usage"

    tenant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    meter: Mapped[str] = mapped_column(String(128), primary_key=True)
    quantity_micros: Mapped[int] = mapped_column(BigInteger)
