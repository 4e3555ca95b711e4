"""Rating against the database on SQLite and PostgreSQL: `rate_period` sums usage in SQL and
agrees with the pure engine on the same data; a month split by a version change;
unattributed usage is not rated; and the estimate endpoint (in-process: what is tested is
the API's answer, not the server around it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import count
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import (
    SPAN_METERS,
    Customer,
    PriceBook,
    PriceComponent,
    PriceVersion,
    to_unix_nano,
    usage_meters,
    usage_spans,
)
from agentmeter.tenants import NewTenant, create_tenant
from agentmeter.usage_keys import UsageKeys, span_int
from billing_api.errors import NotFoundError
from billing_api.periods import month_period, period_containing
from billing_api.pricing.components import FILTER_DIMENSIONS as DIMENSIONS
from billing_api.rating import service
from billing_api.rating.engine import RatedPeriod, UnpricedUsage, rate_customer
from billing_api.rating.repository import load_pricing
from billing_api.rating.service import rate_period
from billing_api.rating.terms import UsageGroup
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import SOURCE_CUSTOM, UsageBatch, UsageRecord
from tests.billing_api.callers import staff
from tests.billing_api.inprocess import api_client

D = Decimal
MARCH = month_period("2026-03")
VERSION_CHANGE = datetime(2026, 3, 16, tzinfo=UTC)
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)

_ids = count(1)


def day(n: int, hour: int = 12) -> datetime:
    return datetime(2026, 3, n, hour, tzinfo=UTC)


# --- Building a tenant's prices and usage ------------------------------------------------


def component(name: str, charge: str, *, meter: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"name": name, "charge": charge, "meter": meter, **fields}


def per_unit(
    name: str, meter: str, price: str, per_units: int = 1_000_000, **fields: Any
) -> dict[str, Any]:
    return component(
        name, "per_unit", meter=meter, unit_price=D(price), per_units=per_units, **fields
    )


def add_book(
    engine: Engine,
    tenant_id: str,
    versions: Sequence[tuple[datetime, Sequence[dict[str, Any]]]],
    *,
    name: str = "Standard",
    currency: str = "USD",
    default: bool = True,
) -> str:
    """A price book with numbered versions and their components, written as ORM rows."""
    book_id = uuid.uuid4().hex
    with Session(engine) as session, session.begin():
        session.add(
            PriceBook(
                id=book_id,
                tenant_id=tenant_id,
                name=name,
                currency=currency,
                is_default=default,
                usd_rate=D(1),
            )
        )
        session.flush()
        for number, (effective_from, components) in enumerate(versions, start=1):
            version_id = uuid.uuid4().hex
            session.add(
                PriceVersion(
                    id=version_id, book_id=book_id, number=number, effective_from=effective_from
                )
            )
            session.flush()
            for position, fields in enumerate(components):
                fields = dict(fields)
                tiers = fields.pop("tiers", None)
                session.add(
                    PriceComponent(
                        id=uuid.uuid4().hex,
                        version_id=version_id,
                        position=position,
                        filters=fields.pop("filters", {}),
                        tiers=tiers,
                        **fields,
                    )
                )
    return book_id


def add_customer(
    engine: Engine, tenant_id: str, customer_id: str, book_id: str | None = None
) -> None:
    with Session(engine) as session, session.begin():
        session.add(
            Customer(tenant_id=tenant_id, id=customer_id, name=customer_id, price_book_id=book_id)
        )


def record(
    meter: str,
    quantity: int | Decimal,
    at: datetime,
    *,
    customer: str = "acme",
    provider: str = "openai",
    model: str = "gpt-4o",
    service_name: str = "agent",
    source: str = "llm",
    span: int | None = None,
) -> UsageRecord:
    span = span if span is not None else next(_ids)
    return UsageRecord(
        trace_id=f"{span:032x}",
        span_id=f"{span:016x}",
        meter=meter,
        quantity=quantity,
        customer_id=customer,
        time_unix_nano=to_unix_nano(at),
        provider=provider,
        model=model,
        operation="chat" if source == "llm" else "",
        service_name=service_name,
        source=source,
    )


def write(engine: Engine, tenant_id: str, records: Iterable[UsageRecord]) -> None:
    SqlUsageSink(engine).write(tenant_id, UsageBatch(list(records)))


def set_cost(
    engine: Engine, tenant_id: str, span_ids: Iterable[str], meter: str, usd: str | None
) -> None:
    """Give stored records a provider cost (the sink without a catalog stores none)."""
    pico = None if usd is None else int(D(usd).scaleb(12))
    with engine.begin() as connection:
        tenant_key = UsageKeys(connection).find_tenant(tenant_id)
        spans = [span_int(span) for span in span_ids]
        if meter in SPAN_METERS:
            statement = (
                update(usage_spans)
                .where(usage_spans.c.tenant_key == tenant_key, usage_spans.c.span_id.in_(spans))
                .values({f"{meter}_cost_pico": pico})
            )
        else:
            statement = (
                update(usage_meters)
                .where(
                    usage_meters.c.tenant_key == tenant_key,
                    usage_meters.c.meter == meter,
                    usage_meters.c.span_id.in_(spans),
                )
                .values(provider_cost_pico=pico)
            )
        connection.execute(statement)


def dims(keep: Sequence[str] = DIMENSIONS, **values: str) -> tuple[tuple[str, str], ...]:
    """Dimensions as the repository groups them: the `keep` ones, in sorted order."""
    return tuple((d, values.get(d, "")) for d in sorted(keep))


GPT_VALUES = {
    "provider": "openai",
    "model": "gpt-4o",
    "operation": "chat",
    "service_name": "agent",
    "source": "llm",
}
CLAUDE_VALUES = {**GPT_VALUES, "provider": "anthropic", "model": "claude"}
SANDBOX_VALUES = {"service_name": "sandbox", "source": "custom"}


def group(
    meter: str,
    quantity: str | int,
    dimensions: tuple[tuple[str, str], ...],
    *,
    cost_usd: str = "0",
    unknown: int = 0,
) -> UsageGroup:
    return UsageGroup(
        meter=meter,
        dims=dimensions,
        quantity_micros=int(D(quantity).scaleb(6)),
        cost_pico=int(D(cost_usd).scaleb(12)),
        unknown_cost_records=unknown,
    )


def unpriced_key(u: UnpricedUsage) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (u.meter, u.dims)


def assert_same_figures(from_sql: RatedPeriod, pure: RatedPeriod) -> None:
    assert from_sql.lines == pure.lines
    assert sorted(from_sql.unpriced, key=unpriced_key) == sorted(pure.unpriced, key=unpriced_key)
    assert from_sql.subtotal_minor == pure.subtotal_minor
    assert from_sql.versions == pure.versions


def line_minor(rated: RatedPeriod) -> dict[tuple[str, int | None], int]:
    return {(line.component_name, line.version_number): line.amount_minor for line in rated.lines}


# --- rate_period ----------------------------------------------------------------------------

STANDARD = [
    per_unit("input", "input_tokens", "2.50", filters={"provider": "openai"}),
    per_unit("cache read", "cache_read_tokens", "0.25"),
    per_unit("output", "output_tokens", "10"),
    per_unit("sandbox", "sandbox_seconds", "0.01", 1),
    component("platform", "flat_fee", amount=D("49.00")),
]


@dataclass
class Loaded:
    tenant_id: str
    spans: dict[str, list[str]] = field(default_factory=dict)


class TestRatePeriod:
    def load(self, engine: Engine) -> Loaded:
        tenant = create_tenant(engine, "rating").tenant_id
        add_book(engine, tenant, [(LONG_AGO, STANDARD)])
        add_customer(engine, tenant, "acme")
        loaded = Loaded(tenant)
        records = []
        llm_spans = []
        for when in (day(2), day(10), day(25)):
            span = next(_ids)
            llm_spans.append(f"{span:016x}")
            records += [
                record("input_tokens", 400_000, when, span=span),
                record("cache_read_tokens", 100_000, when, span=span),
                record("output_tokens", 50_000, when, span=span),
            ]
        sandbox = [
            record(
                "sandbox_seconds",
                quantity,
                day(n),
                provider="",
                model="",
                service_name="sandbox",
                source=SOURCE_CUSTOM,
            )
            for n, quantity in ((3, D("12.5")), (4, D("7.25")))
        ]
        records += sandbox
        # No component prices anthropic input: reported as unpriced.
        records.append(record("input_tokens", 1000, day(5), provider="anthropic", model="claude"))
        # Outside March: the last instant of February and exactly the period's end.
        records.append(
            record("input_tokens", 9_999_999, datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC))
        )
        records.append(record("input_tokens", 9_999_999, MARCH.end))
        write(engine, tenant, records)
        set_cost(engine, tenant, llm_spans, "input_tokens", "0.50")
        set_cost(engine, tenant, llm_spans, "cache_read_tokens", "0.01")
        set_cost(engine, tenant, llm_spans[:2], "output_tokens", "0.20")  # third: unknown
        set_cost(engine, tenant, [r.span_id for r in sandbox], "sandbox_seconds", "0")
        loaded.spans["llm"] = llm_spans
        return loaded

    def test_hand_worked_figures(self, engine: Engine) -> None:
        loaded = self.load(engine)
        with Session(engine) as session:
            rated = rate_period(session, loaded.tenant_id, MARCH)
        assert set(rated) == {"acme"}
        acme = rated["acme"]
        assert acme.currency == "USD"
        # input: 3 × 400,000 − 3 × 100,000 cached = 900,000 × 2.50/1M = 2.25
        # cache read: 300,000 × 0.25/1M = 0.075 → 0.08 (rounded once, half up)
        # output: 150,000 × 10/1M = 1.50
        # sandbox: 12.5 + 7.25 = 19.75 s × 0.01 = 0.1975 → 0.20
        # platform: 49.00 → subtotal 2.25 + 0.08 + 1.50 + 0.20 + 49.00 = 53.03
        assert line_minor(acme) == {
            ("input", 1): 225,
            ("cache read", 1): 8,
            ("output", 1): 150,
            ("sandbox", 1): 20,
            ("platform", 1): 4900,
        }
        lines = {line.component_name: line for line in acme.lines}
        assert lines["input"].quantity == 900_000
        assert lines["sandbox"].quantity == D("19.75")
        assert acme.subtotal_minor == 5303
        # Provider cost summed in SQL: input 3 × 0.50 = 1.50 (margin 0.75), cache 0.03
        # (margin 0.05); output has one record of unknown cost → unknown.
        assert (lines["input"].provider_cost_minor, lines["input"].margin_minor) == (150, 75)
        assert (lines["cache read"].provider_cost_minor, lines["cache read"].margin_minor) == (3, 5)
        assert lines["output"].unknown_cost_records == 1
        assert lines["output"].provider_cost_minor is None
        assert acme.provider_cost_minor is None
        assert [(u.meter, dict(u.dims)["provider"], u.quantity) for u in acme.unpriced] == [
            ("input_tokens", "anthropic", D(1000))
        ]

    def test_matches_the_pure_engine(self, engine: Engine) -> None:
        loaded = self.load(engine)
        with Session(engine) as session:
            pricing = load_pricing(session, loaded.tenant_id)
            from_sql = rate_period(session, loaded.tenant_id, MARCH)["acme"]
        # Usage is grouped by the dimensions components filter on: here only provider.
        assert pricing.filter_dimensions == ("provider",)

        def by(keep: Sequence[str]) -> list[UsageGroup]:
            """What the database should sum from the records written above."""
            gpt, claude = dims(keep, **GPT_VALUES), dims(keep, **CLAUDE_VALUES)
            return [
                group("input_tokens", 1_200_000, gpt, cost_usd="1.50"),
                group("cache_read_tokens", 300_000, gpt, cost_usd="0.03"),
                group("output_tokens", 150_000, gpt, cost_usd="0.40", unknown=1),
                group("sandbox_seconds", "19.75", dims(keep, **SANDBOX_VALUES)),
                group("input_tokens", 1000, claude, unknown=1),
            ]

        pure = rate_customer("acme", pricing, MARCH, [(MARCH.start, MARCH.end, by(["provider"]))])
        assert_same_figures(from_sql, pure)
        assert pure.subtotal_minor == 5303
        # Grouping by every dimension prices the same lines (only unpriced dims differ).
        detailed = rate_customer("acme", pricing, MARCH, [(MARCH.start, MARCH.end, by(DIMENSIONS))])
        assert detailed.lines == from_sql.lines
        assert [(u.meter, u.quantity) for u in detailed.unpriced] == [
            (u.meter, u.quantity) for u in from_sql.unpriced
        ]


class TestVersionChange:
    def test_usage_split_across_a_version_change(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "versions").tenant_id

        def searches(first: str, rest: str) -> dict[str, Any]:
            return component(
                "searches",
                "graduated",
                meter="web_searches",
                tiers=[
                    {"up_to": 100, "unit_price": first, "flat_fee": "0"},
                    {"up_to": None, "unit_price": rest, "flat_fee": "0"},
                ],
            )

        add_book(
            engine,
            tenant,
            [
                (LONG_AGO, [per_unit("input", "input_tokens", "2"), searches("0.10", "0.05")]),
                (
                    VERSION_CHANGE,
                    [per_unit("input", "input_tokens", "3"), searches("0.20", "0.08")],
                ),
            ],
        )
        add_customer(engine, tenant, "acme")

        def search(quantity: int, at: datetime) -> UsageRecord:
            return record("web_searches", quantity, at, provider="", model="", source=SOURCE_CUSTOM)

        write(
            engine,
            tenant,
            [
                record("input_tokens", 1_000_000, day(5)),
                search(40, day(6)),
                search(40, day(15, 23)),
                # Exactly at the change: the new version's.
                record("input_tokens", 500_000, VERSION_CHANGE),
                search(50, day(20)),
            ],
        )
        with Session(engine) as session:
            rated = rate_period(session, tenant, MARCH)["acme"]
            pricing = load_pricing(session, tenant)
        # input: 1,000,000 × 2/1M = 2.00 at v1; 500,000 × 3/1M = 1.50 at v2
        # searches: 80 × 0.10 = 8.00 at v1; v2 continues at unit 81: 20 × 0.20 + 30 × 0.08
        # = 4.00 + 2.40 = 6.40. Subtotal 17.90.
        assert line_minor(rated) == {
            ("input", 1): 200,
            ("searches", 1): 800,
            ("input", 2): 150,
            ("searches", 2): 640,
        }
        assert rated.subtotal_minor == 1790
        assert rated.versions == [1, 2]
        assert pricing.filter_dimensions == ()  # no filters: one group per meter
        none: tuple[tuple[str, str], ...] = ()
        pure = rate_customer(
            "acme",
            pricing,
            MARCH,
            [
                (
                    MARCH.start,
                    VERSION_CHANGE,
                    [
                        group("input_tokens", 1_000_000, none, unknown=1),
                        group("web_searches", 80, none, unknown=2),
                    ],
                ),
                (
                    VERSION_CHANGE,
                    MARCH.end,
                    [
                        group("input_tokens", 500_000, none, unknown=1),
                        group("web_searches", 50, none, unknown=1),
                    ],
                ),
            ],
        )
        assert_same_figures(rated, pure)


class TestAttribution:
    def test_unattributed_usage_is_not_rated(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "attribution").tenant_id
        other_tenant = create_tenant(engine, "someone else").tenant_id
        add_book(engine, tenant, [(LONG_AGO, [per_unit("input", "input_tokens", "2.50")])])
        add_customer(engine, tenant, "acme")
        add_customer(engine, tenant, "idle")  # registered, no usage, no fee: nothing to bill
        write(
            engine,
            tenant,
            [
                record("input_tokens", 1_000_000, day(3)),
                record("input_tokens", 5_000_000, day(4), customer=""),
                # Usage may arrive before its customer is registered: rated by its id.
                record("input_tokens", 2_000_000, day(5), customer="newco"),
            ],
        )
        write(engine, other_tenant, [record("input_tokens", 7_000_000, day(3))])
        with Session(engine) as session:
            everyone = rate_period(session, tenant, MARCH)
            only_acme = rate_period(session, tenant, MARCH, ["acme"])
        # acme 1M × 2.50/1M = 2.50; newco 2M → 5.00; the 5M without a customer nowhere.
        assert {c: r.subtotal_minor for c, r in everyone.items()} == {"acme": 250, "newco": 500}
        assert all(not r.unpriced for r in everyone.values())
        assert {c: r.subtotal_minor for c, r in only_acme.items()} == {"acme": 250}


# --- The estimate endpoint ------------------------------------------------------------------


@pytest.fixture
def tenant(engine: Engine) -> NewTenant:
    return create_tenant(engine, "rating")


@pytest.fixture
def api(engine: Engine) -> Iterator[TestClient]:
    """The API in-process, no credentials by default (each request brings its own)."""
    with api_client(engine, None) as client:
        yield client


def admin(tenant: NewTenant) -> dict[str, str]:
    return {"authorization": f"Bearer {tenant.admin_key}"}


def estimate(api: TestClient, customer_id: str, headers: dict[str, str]) -> Any:
    return api.get(f"/api/v1/customers/{customer_id}/estimate", headers=headers)


def load_estimate_data(tenant: str, engine: Engine) -> None:
    add_book(
        engine,
        tenant,
        [
            (
                LONG_AGO,
                [
                    per_unit("input", "input_tokens", "2.50"),
                    per_unit("cache read", "cache_read_tokens", "0.25"),
                    component("platform", "flat_fee", amount=D("49.00")),
                ],
            )
        ],
    )
    yen = add_book(
        engine,
        tenant,
        [(LONG_AGO, [per_unit("input", "input_tokens", "375")])],
        name="Japan",
        currency="JPY",
        default=False,
    )
    add_customer(engine, tenant, "acme")
    add_customer(engine, tenant, "idle")
    add_customer(engine, tenant, "tokyo", yen)
    # The current period of a billing day 1 customer starts on the 1st of this month.
    start = period_containing(utcnow()).start
    span = next(_ids)
    write(
        engine,
        tenant,
        [
            record("input_tokens", 1_000_000, start, span=span),
            record("cache_read_tokens", 200_000, start, span=span),
            record("input_tokens", 1_234_567, start, customer="tokyo"),
            record("input_tokens", 1_000_000, start, customer="newco"),
        ],
    )


def test_estimate_endpoint(api: TestClient, tenant: NewTenant, engine: Engine) -> None:
    load_estimate_data(tenant.tenant_id, engine)
    period = period_containing(utcnow())

    response = estimate(api, "acme", admin(tenant))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer_id"] == "acme"
    assert body["currency"] == "USD"
    assert datetime.fromisoformat(body["period_start"]) == period.start
    assert datetime.fromisoformat(body["period_end"]) == period.end
    assert body["versions"] == [1]
    # 800,000 × 2.50/1M = 2.00; 200,000 × 0.25/1M = 0.05; platform 49.00 → 51.05
    assert [(x["component"], x["amount"], x["amount_minor"]) for x in body["lines"]] == [
        ("input", "2.00", 200),
        ("cache read", "0.05", 5),
        ("platform", "49.00", 4900),
    ]
    assert (body["subtotal"], body["subtotal_minor"]) == ("51.05", 5105)
    assert body["unpriced"] == []
    # The sink stored no provider cost: unknown, not zero.
    assert body["lines"][0]["provider_cost_minor"] is None
    assert body["provider_cost_minor"] is None

    # JPY: 1,234,567 × ¥375/1M = ¥462.962625 → "463", no decimals
    tokyo = estimate(api, "tokyo", admin(tenant)).json()
    assert tokyo["currency"] == "JPY"
    assert [(x["amount"], x["amount_minor"]) for x in tokyo["lines"]] == [("463", 463)]
    assert (tokyo["subtotal"], tokyo["subtotal_minor"]) == ("463", 463)

    # Registered without usage: the subscription alone.
    idle = estimate(api, "idle", admin(tenant)).json()
    assert [(x["component"], x["amount"]) for x in idle["lines"]] == [("platform", "49.00")]
    # Not registered but with usage: 1M × 2.50/1M + 49.00
    assert estimate(api, "newco", admin(tenant)).json()["subtotal"] == "51.50"

    assert estimate(api, "acme", {}).status_code == 401
    assert (
        estimate(api, "acme", {"authorization": f"Bearer {tenant.ingest_key}"}).status_code == 401
    )


def test_an_estimate_loads_only_its_customer_and_rates_as_the_whole_tenant_does(
    tenant: NewTenant, engine: Engine
) -> None:
    """An estimate loads one customer's terms (not the tenant's thousands), and rates that
    customer exactly as rating every customer at once does: same book, lines and total."""
    load_estimate_data(tenant.tenant_id, engine)
    now = utcnow()
    with Session(engine) as session:
        whole = rate_period(session, tenant.tenant_id, period_containing(now))
        assert load_pricing(session, tenant.tenant_id, ["tokyo"]).registered == {"tokyo"}
        for customer_id in ("acme", "idle", "tokyo", "newco"):
            alone = service.estimate_period(session, tenant.tenant_id, customer_id, now)
            assert (alone.currency, alone.lines, alone.subtotal_minor) == (
                whole[customer_id].currency,
                whole[customer_id].lines,
                whole[customer_id].subtotal_minor,
            )
    assert whole["tokyo"].currency == "JPY"  # the assigned book, not the default


def test_estimate_unknown_customer_is_404(api: TestClient, engine: Engine) -> None:
    # A tenant whose book has no subscription: nothing at all is owed by an unknown id.
    other = create_tenant(engine, "pay as you go")
    add_book(engine, other.tenant_id, [(LONG_AGO, [per_unit("input", "input_tokens", "2.50")])])
    add_customer(engine, other.tenant_id, "acme")
    headers = {"authorization": f"Bearer {other.admin_key}"}
    unknown = estimate(api, "nobody", headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    # A registered customer without usage is not unknown: an empty estimate.
    acme = estimate(api, "acme", headers)
    assert acme.status_code == 200
    assert (acme.json()["lines"], acme.json()["subtotal"]) == ([], "0.00")


def test_estimate_unknown_customer_is_404_with_a_subscription_book(
    api: TestClient, tenant: NewTenant, engine: Engine
) -> None:
    load_estimate_data(tenant.tenant_id, engine)  # default book has the 49.00 platform fee
    unknown = estimate(api, "nobody", admin(tenant))
    assert unknown.status_code == 404, unknown.text


def test_service_estimate_of_an_unknown_customer_raises(engine: Engine) -> None:
    tenant = create_tenant(engine, "subscriptions").tenant_id
    add_book(engine, tenant, [(LONG_AGO, [component("platform", "flat_fee", amount=D("49"))])])
    with Session(engine) as session, pytest.raises(NotFoundError):
        service.estimate(session, staff(tenant), "nobody", utcnow())


def test_estimate_quantities_are_plain_decimal_strings(
    api: TestClient, tenant: NewTenant, engine: Engine
) -> None:
    load_estimate_data(tenant.tenant_id, engine)
    body = estimate(api, "acme", admin(tenant)).json()
    assert [x["quantity"] for x in body["lines"]] == ["800000", "200000", "1"]
