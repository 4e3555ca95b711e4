"""Provider cost per usage record: genai-prices (bundled data) as the oracle for whole
spans, disjoint parts per record, long-context tiers, prices at the span's time, tenant
overrides, and costs stored by `SqlUsageSink` and recomputed by `exporter.recost.recost_usage`."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from sqlalchemy import Engine, insert, select

from agentmeter.tables import ProviderCostOverride, UsageRow, to_unix_nano
from agentmeter.tenants import create_tenant
from exporter.provider_costs import (
    NO_OVERRIDES,
    CostOverride,
    CostOverrides,
    ProviderCostCatalog,
    genai_provider_id,
)
from exporter.recost import recost_usage
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import Quantity, UsageBatch, UsageRecord

WHEN = datetime(2026, 1, 1, 12, tzinfo=UTC)
PICO = 10**12
MTOK = 1_000_000


@pytest.fixture(scope="module")
def catalog() -> ProviderCostCatalog:
    return ProviderCostCatalog()


def span(
    provider: str,
    model: str,
    when: datetime = WHEN,
    *,
    number: int = 1,
    **meters: Quantity,
) -> list[UsageRecord]:
    """The records of one span: one per meter, in the order given."""
    return span_of(provider, model, when, meters, number=number)


def span_of(
    provider: str,
    model: str,
    when: datetime,
    meters: Mapping[str, Quantity],
    *,
    number: int = 1,
) -> list[UsageRecord]:
    return [
        UsageRecord(
            trace_id=f"{number:032x}",
            span_id=f"{number:016x}",
            meter=meter,
            quantity=quantity,
            customer_id="acme",
            time_unix_nano=to_unix_nano(when),
            provider=provider,
            model=model,
        )
        for meter, quantity in meters.items()
    ]


def genai_prices_pico(
    provider: str, model: str, when: datetime, meters: dict[str, Quantity]
) -> Decimal:
    """What genai-prices' own `calc_price` says the span costs, in (unrounded) pico-USD."""
    price = calc_price(
        Usage(**meters),
        model,
        provider_id=genai_provider_id(provider),
        genai_request_timestamp=when,
    )
    return price.total_price * PICO


def usd(amount: str) -> int:
    return int(Decimal(amount) * PICO)


def override(
    meter: str,
    unit_cost_usd: str,
    *,
    provider: str = "openai",
    model: str = "gpt-4o",
    per_units: int = MTOK,
    effective_from: datetime = WHEN - timedelta(days=30),
) -> CostOverride:
    return CostOverride(
        provider=provider,
        model=model,
        meter=meter,
        unit_cost_usd=Decimal(unit_cost_usd),
        per_units=per_units,
        effective_from_unix_nano=to_unix_nano(effective_from),
    )


GENAI_PRICES_CASES = [
    pytest.param(
        "openai", "gpt-4o", WHEN, {"input_tokens": 1234, "output_tokens": 567}, id="gpt-4o"
    ),
    pytest.param(
        "openai",
        "gpt-4o-mini",
        WHEN,
        {"input_tokens": 12_345, "cache_read_tokens": 10_000, "output_tokens": 678},
        id="gpt-4o-mini-cache-read",
    ),
    pytest.param(
        "openai",
        "gpt-4o",
        WHEN,
        {"input_tokens": 1000, "cache_write_tokens": 300, "output_tokens": 5},
        id="gpt-4o-cache-write-without-its-own-rate",
    ),
    pytest.param(
        "anthropic",
        "claude-sonnet-4-20250514",
        WHEN,
        {
            "input_tokens": 50_000,
            "cache_read_tokens": 30_000,
            "cache_write_tokens": 10_000,
            "output_tokens": 777,
        },
        id="claude-sonnet-4-cache-read-write",
    ),
    pytest.param(
        "gcp.gemini",
        "gemini-2.5-pro",
        WHEN,
        {"input_tokens": 200_000, "cache_read_tokens": 50_000, "output_tokens": 777},
        id="gemini-2.5-pro-at-200k-base-tier",
    ),
    pytest.param(
        "gcp.gemini",
        "gemini-2.5-pro",
        WHEN,
        {"input_tokens": 200_001, "cache_read_tokens": 50_000, "output_tokens": 777},
        id="gemini-2.5-pro-past-200k-long-context-tier",
    ),
    pytest.param(
        "gcp.vertex_ai",
        "claude-sonnet-4-5@20250929",
        WHEN,
        {"input_tokens": 250_000, "cache_write_tokens": 100_000, "output_tokens": 1000},
        id="vertex-claude-tiered-cache-write",
    ),
    pytest.param(
        "openai",
        "o3",
        datetime(2025, 6, 9, 23, 59, tzinfo=UTC),
        {"input_tokens": 1000, "output_tokens": 5000, "output_reasoning_tokens": 3000},
        id="o3-reasoning-before-price-cut",
    ),
    pytest.param(
        "openai",
        "o3",
        datetime(2025, 6, 10, tzinfo=UTC),
        {"input_tokens": 1000, "output_tokens": 5000, "output_reasoning_tokens": 3000},
        id="o3-reasoning-after-price-cut",
    ),
    pytest.param(
        "perplexity",
        "sonar-deep-research",
        WHEN,
        {"input_tokens": 1000, "output_tokens": 5000, "output_reasoning_tokens": 3000},
        id="reasoning-with-its-own-rate",
    ),
    pytest.param(
        "perplexity",
        "sonar",
        WHEN,
        {"input_tokens": 1000, "output_tokens": 5000},
        id="per-request-fee",
    ),
    pytest.param(
        "deepseek",
        "deepseek-chat",
        datetime(2026, 1, 1, 17, tzinfo=UTC),
        {"input_tokens": 1000, "cache_read_tokens": 100, "output_tokens": 5000},
        id="deepseek-standard-hours",
    ),
    pytest.param(
        "deepseek",
        "deepseek-chat",
        datetime(2026, 1, 1, 16, 29, 59, tzinfo=UTC),
        {"input_tokens": 1000, "cache_read_tokens": 100, "output_tokens": 5000},
        id="deepseek-time-of-day-price",
    ),
    pytest.param(
        "aws.bedrock",
        "us.anthropic.claude-sonnet-4-20250514-v1:0",
        WHEN,
        {"input_tokens": 3000, "cache_read_tokens": 1000, "output_tokens": 50},
        id="bedrock-claude",
    ),
    pytest.param(
        "azure.ai.openai", "gpt-4o", WHEN, {"input_tokens": 999, "output_tokens": 1}, id="azure"
    ),
    pytest.param(
        "x_ai",
        "grok-3",
        WHEN,
        {"input_tokens": 4000, "cache_read_tokens": 3999, "output_tokens": 7},
        id="xai",
    ),
    pytest.param(
        "mistral_ai",
        "mistral-large-latest",
        WHEN,
        {"input_tokens": 333, "output_tokens": 333},
        id="mistral",
    ),
    pytest.param(
        "",
        "claude-3-5-haiku-latest",
        WHEN,
        {"input_tokens": 7, "output_tokens": 3},
        id="no-provider",
    ),
    pytest.param(
        "openai",
        "gpt-4o-mini",
        WHEN,
        {"input_tokens": 1, "output_tokens": 1},
        id="sub-pico-parts",
    ),
]


class TestSpanCostsAgreeWithGenaiPrices:
    @pytest.mark.parametrize(("provider", "model", "when", "meters"), GENAI_PRICES_CASES)
    def test_record_costs_sum_to_calc_price(
        self,
        catalog: ProviderCostCatalog,
        provider: str,
        model: str,
        when: datetime,
        meters: dict[str, Quantity],
    ) -> None:
        costs = catalog.span_costs(span_of(provider, model, when, meters))

        assert None not in costs
        total = sum(c for c in costs if c is not None)
        assert abs(total - genai_prices_pico(provider, model, when, meters)) <= len(costs) / 2

    def test_records_in_any_order_cost_the_same(self, catalog: ProviderCostCatalog) -> None:
        meters: dict[str, Quantity] = {
            "output_tokens": 10,
            "cache_read_tokens": 20,
            "input_tokens": 30,
        }
        forward = span_of("openai", "gpt-4o", WHEN, meters)

        backward = catalog.span_costs(forward[::-1])

        assert backward[::-1] == catalog.span_costs(forward)


class TestDisjointParts:
    def test_each_record_carries_its_own_part_at_its_own_rate(
        self, catalog: ProviderCostCatalog
    ) -> None:
        # Claude Sonnet 4: $3 input, $0.30 cache read, $3.75 cache write, $15 output per MTok.
        records = span(
            "anthropic",
            "claude-sonnet-4-20250514",
            input_tokens=50_000,
            cache_read_tokens=30_000,
            cache_write_tokens=10_000,
            output_tokens=777,
        )

        assert catalog.span_costs(records) == [
            usd("0.03"),  # 10k uncached input x $3/M
            usd("0.009"),  # 30k cache reads x $0.30/M
            usd("0.0375"),  # 10k cache writes x $3.75/M
            usd("0.011655"),  # 777 output x $15/M
        ]

    def test_cache_writes_without_their_own_rate_cost_the_input_rate_on_their_record(
        self, catalog: ProviderCostCatalog
    ) -> None:
        # gpt-4o prices cache reads but not cache writes: $2.50 input per MTok.
        records = span("openai", "gpt-4o", input_tokens=1000, cache_write_tokens=300)

        assert catalog.span_costs(records) == [usd("0.00175"), usd("0.00075")]

    def test_reasoning_without_its_own_rate_costs_the_output_rate(
        self, catalog: ProviderCostCatalog
    ) -> None:
        # o3 from 2025-06-10: $8 output per MTok, no reasoning price.
        records = span("openai", "o3", output_tokens=5000, output_reasoning_tokens=3000)

        assert catalog.span_costs(records) == [usd("0.016"), usd("0.024")]

    def test_reasoning_with_its_own_rate_leaves_output_the_rest(
        self, catalog: ProviderCostCatalog
    ) -> None:
        # sonar-deep-research: $8 output, $3 reasoning per MTok.
        records = span(
            "perplexity", "sonar-deep-research", output_tokens=5000, output_reasoning_tokens=3000
        )

        assert catalog.span_costs(records) == [usd("0.016"), usd("0.009")]

    def test_per_request_fee_goes_on_the_input_record_once(
        self, catalog: ProviderCostCatalog
    ) -> None:
        # sonar: $1 input, $1 output per MTok and $12 per thousand requests.
        records = span("perplexity", "sonar", output_tokens=1000, input_tokens=1000)

        assert catalog.span_costs(records) == [usd("0.001"), usd("0.001") + usd("0.012")]

    def test_cache_parts_larger_than_input_leave_no_negative_input(
        self, catalog: ProviderCostCatalog
    ) -> None:
        records = span("openai", "gpt-4o", input_tokens=100, cache_read_tokens=400)

        assert catalog.span_costs(records) == [0, usd("0.0005")]


class TestLongContextTier:
    @pytest.mark.parametrize(
        ("input_tokens", "input_rate", "cache_rate"),
        [
            pytest.param(200_000, "1.25", "0.125", id="at-threshold"),
            pytest.param(200_001, "2.5", "0.25", id="past-threshold"),
        ],
    )
    def test_span_total_input_picks_the_rate_of_every_part(
        self, catalog: ProviderCostCatalog, input_tokens: int, input_rate: str, cache_rate: str
    ) -> None:
        records = span(
            "gcp.gemini", "gemini-2.5-pro", input_tokens=input_tokens, cache_read_tokens=100_000
        )

        uncached = input_tokens - 100_000
        assert catalog.span_costs(records) == [
            usd(input_rate) * uncached // MTOK,
            usd(cache_rate) * 100_000 // MTOK,
        ]

    def test_tier_is_per_span_not_per_batch(self, catalog: ProviderCostCatalog) -> None:
        small = span("gcp.gemini", "gemini-2.5-pro", number=1, input_tokens=150_000)
        other = span("gcp.gemini", "gemini-2.5-pro", number=2, input_tokens=150_000)

        assert catalog.costs(small + other) == [usd("0.1875"), usd("0.1875")]


class TestUnknownCost:
    @pytest.mark.parametrize(
        ("provider", "model"),
        [
            pytest.param("openai", "no-such-model", id="unknown-model"),
            pytest.param("openai", "", id="no-model"),
            pytest.param("anthropic", "gpt-4o", id="model-of-another-provider"),
            pytest.param("ibm.watsonx.ai", "ibm/granite-13b-chat-v2", id="unknown-provider"),
            pytest.param("", "", id="nothing"),
        ],
    )
    def test_unknown_model_costs_none_never_zero(
        self, catalog: ProviderCostCatalog, provider: str, model: str
    ) -> None:
        records = span(provider, model, input_tokens=10, cache_read_tokens=5, output_tokens=10)

        assert catalog.span_costs(records) == [None, None, None]

    def test_unknown_provider_falls_back_to_the_model_name(
        self, catalog: ProviderCostCatalog
    ) -> None:
        costs = catalog.span_costs(span("some-gateway", "gpt-4o", input_tokens=1000))

        assert costs == [usd("0.0025")]

    def test_known_free_model_costs_zero(self, catalog: ProviderCostCatalog) -> None:
        records = span(
            "openrouter",
            "deepseek/deepseek-chat-v3-0324:free",
            input_tokens=1000,
            output_tokens=10,
        )

        assert catalog.span_costs(records) == [0, 0]

    def test_tool_calls_and_custom_meters_cost_none_without_override(
        self, catalog: ProviderCostCatalog
    ) -> None:
        records = span(
            "openai", "gpt-4o", tool_calls=1, web_searches=2, sandbox_seconds=Decimal("12.5")
        )

        assert catalog.span_costs(records) == [None, None, None]


class TestProviderNames:
    @pytest.mark.parametrize(
        ("provider", "genai_id"),
        [
            ("openai", "openai"),
            ("anthropic", "anthropic"),
            ("gcp.gemini", "google"),
            ("gcp.vertex_ai", "google"),
            ("gcp.gen_ai", "google"),
            ("aws.bedrock", "aws"),
            ("azure.ai.openai", "azure"),
            ("azure.ai.inference", "azure"),
            ("mistral_ai", "mistral"),
            ("groq", "groq"),
            ("deepseek", "deepseek"),
            ("x_ai", "x-ai"),
            ("cohere", "cohere"),
            ("perplexity", "perplexity"),
            ("openai.chat", "openai"),
            ("xai.chat", "x-ai"),
            ("OpenAI", "openai"),
            ("ibm.watsonx.ai", None),
            ("", None),
        ],
    )
    def test_otel_provider_maps_to_genai_prices_id(self, provider: str, genai_id: str) -> None:
        assert genai_provider_id(provider) == genai_id


class TestOverrides:
    def test_override_applies_from_its_effective_date_on(
        self, catalog: ProviderCostCatalog
    ) -> None:
        overrides = CostOverrides([override("input_tokens", "2", effective_from=WHEN)])
        before = span("openai", "gpt-4o", WHEN - timedelta(microseconds=1), input_tokens=1000)
        after = span("openai", "gpt-4o", WHEN, input_tokens=1000)

        assert catalog.span_costs(before, overrides) == [usd("0.0025")]  # genai-prices' $2.50
        assert catalog.span_costs(after, overrides) == [usd("0.002")]

    def test_latest_version_in_effect_wins(self, catalog: ProviderCostCatalog) -> None:
        overrides = CostOverrides(
            [
                override("output_tokens", "9", effective_from=WHEN - timedelta(days=2)),
                override("output_tokens", "8", effective_from=WHEN - timedelta(days=1)),
                override("output_tokens", "7", effective_from=WHEN + timedelta(days=1)),
            ]
        )

        assert catalog.span_costs(span("openai", "gpt-4o", output_tokens=MTOK), overrides) == [
            usd("8")
        ]

    def test_glob_patterns_match_provider_and_model(self, catalog: ProviderCostCatalog) -> None:
        overrides = CostOverrides([override("input_tokens", "1", provider="*", model="gpt-4o*")])

        assert catalog.span_costs(
            span("azure.ai.openai", "gpt-4o-mini", input_tokens=MTOK), overrides
        ) == [usd("1")]
        assert catalog.span_costs(span("openai", "o3", input_tokens=MTOK), overrides) == [usd("2")]

    def test_exact_model_beats_glob_even_when_older(self, catalog: ProviderCostCatalog) -> None:
        overrides = CostOverrides(
            [
                override(
                    "input_tokens", "2.2", model="gpt-4o", effective_from=WHEN - timedelta(30)
                ),
                override("input_tokens", "1.1", model="gpt-*", effective_from=WHEN - timedelta(1)),
            ]
        )

        assert catalog.span_costs(span("openai", "gpt-4o", input_tokens=MTOK), overrides) == [
            usd("2.2")
        ]
        assert catalog.span_costs(span("openai", "gpt-4.1", input_tokens=MTOK), overrides) == [
            usd("1.1")
        ]

    def test_specific_override_not_yet_in_effect_leaves_the_glob_one(
        self, catalog: ProviderCostCatalog
    ) -> None:
        overrides = CostOverrides(
            [
                override("input_tokens", "2.2", model="gpt-4o", effective_from=WHEN + timedelta(1)),
                override("input_tokens", "1.1", model="gpt-*"),
            ]
        )

        assert catalog.span_costs(span("openai", "gpt-4o", input_tokens=MTOK), overrides) == [
            usd("1.1")
        ]

    def test_patterns_are_case_sensitive_like_price_book_filters(
        self, catalog: ProviderCostCatalog
    ) -> None:
        overrides = CostOverrides([override("input_tokens", "1", model="GPT-4o")])

        assert catalog.span_costs(span("openai", "gpt-4o", input_tokens=MTOK), overrides) == [
            usd("2.5")
        ]

    def test_override_replaces_only_its_meter(self, catalog: ProviderCostCatalog) -> None:
        overrides = CostOverrides([override("cache_read_tokens", "0.5")])
        records = span(
            "openai", "gpt-4o", input_tokens=2 * MTOK, cache_read_tokens=MTOK, output_tokens=MTOK
        )

        assert catalog.span_costs(records, overrides) == [usd("2.5"), usd("0.5"), usd("10")]

    def test_cache_part_without_own_rate_follows_an_input_override(
        self, catalog: ProviderCostCatalog
    ) -> None:
        overrides = CostOverrides([override("input_tokens", "2")])
        records = span("openai", "gpt-4o", input_tokens=2 * MTOK, cache_write_tokens=MTOK)

        assert catalog.span_costs(records, overrides) == [usd("2"), usd("2")]

    def test_override_prices_a_model_genai_prices_does_not_know(
        self, catalog: ProviderCostCatalog
    ) -> None:
        overrides = CostOverrides(
            [
                override("input_tokens", "0.2", provider="vllm", model="our-llama-*"),
                override("output_tokens", "0.4", provider="vllm", model="our-llama-*"),
            ]
        )
        records = span(
            "vllm",
            "our-llama-70b",
            input_tokens=MTOK,
            cache_read_tokens=MTOK // 2,
            output_tokens=MTOK,
            output_reasoning_tokens=MTOK // 4,
            tool_calls=1,
        )

        assert catalog.span_costs(records, overrides) == [
            usd("0.1"),
            usd("0.1"),
            usd("0.3"),
            usd("0.1"),
            None,
        ]

    def test_custom_meter_override(self, catalog: ProviderCostCatalog) -> None:
        overrides = CostOverrides(
            [override("web_searches", "0.01", provider="*", model="*", per_units=1)]
        )
        records = span("", "", web_searches=3) + span("openai", "gpt-4o", number=2, web_searches=1)

        assert catalog.costs(records, overrides) == [usd("0.03"), usd("0.01")]

    def test_fractional_quantity_rounds_half_even_once(self, catalog: ProviderCostCatalog) -> None:
        # One pico-USD per two seconds: 0.5 → 0, 1.5 → 2, 2.5 → 2, 1.000001 → 1.
        overrides = CostOverrides(
            [
                override(
                    "sandbox_seconds",
                    "0.000000000001",
                    provider="*",
                    model="*",
                    per_units=2,
                )
            ]
        )
        quantities = [Decimal(1), Decimal(3), Decimal(5), Decimal("2.000002")]
        records = [
            span("", "", number=n, sandbox_seconds=q)[0] for n, q in enumerate(quantities, 1)
        ]

        assert catalog.costs(records, overrides) == [0, 2, 2, 1]


class TestCostsOfABatch:
    def test_interleaved_spans_cost_as_separate_spans(self, catalog: ProviderCostCatalog) -> None:
        first = span(
            "gcp.gemini", "gemini-2.5-pro", number=1, input_tokens=150_000, output_tokens=1
        )
        second = span("gcp.gemini", "gemini-2.5-pro", number=2, input_tokens=150_000)
        third = span("openai", "gpt-4o", number=3, input_tokens=100_000, output_tokens=100_000)
        interleaved = [first[0], second[0], third[0], first[1], third[1]]

        expected = dict(
            zip(
                first + second + third,
                catalog.span_costs(first) + catalog.span_costs(second) + catalog.span_costs(third),
                strict=True,
            )
        )
        assert catalog.costs(interleaved) == [expected[r] for r in interleaved]

    def test_empty_batch(self, catalog: ProviderCostCatalog) -> None:
        assert catalog.costs([]) == []
        assert catalog.span_costs([], NO_OVERRIDES) == []


class TestBundledDataOnly:
    def test_costing_opens_no_connection_and_starts_no_updater(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("provider costs must not touch the network")

        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(socket, "create_connection", refuse)

        catalog = ProviderCostCatalog()
        costs = catalog.span_costs(span("openai", "gpt-4o", input_tokens=1000))

        assert costs == [usd("0.0025")]
        assert not [t for t in threading.enumerate() if t.name.startswith("genai_prices")]


# --- Stored costs: SqlUsageSink and recost_usage on SQLite and PostgreSQL ---------------


def stored_costs(engine: Engine, tenant_id: str) -> dict[tuple[str, str], int | None]:
    """(span id, meter) → provider_cost_pico of every stored record of the tenant."""
    table = UsageRow.__table__
    query = select(table.c.span_id, table.c.meter, table.c.provider_cost_pico).where(
        table.c.tenant_id == tenant_id
    )
    with engine.connect() as connection:
        return {(r.span_id, r.meter): r.provider_cost_pico for r in connection.execute(query)}


def add_override(engine: Engine, tenant_id: str, **fields: Any) -> None:
    values = {
        "id": uuid.uuid4().hex,
        "tenant_id": tenant_id,
        "provider": "openai",
        "model": "gpt-4o",
        "per_units": MTOK,
        "effective_from": WHEN - timedelta(days=30),
        **fields,
    }
    with engine.begin() as connection:
        connection.execute(insert(ProviderCostOverride), [values])


@pytest.fixture
def tenant_id(engine: Engine) -> str:
    return create_tenant(engine, "cost tenant").tenant_id


def gpt_4o_span(number: int, when: datetime = WHEN) -> list[UsageRecord]:
    return span(
        "openai",
        "gpt-4o",
        when,
        number=number,
        input_tokens=2 * MTOK,
        cache_read_tokens=MTOK,
        output_tokens=MTOK,
        web_searches=2,
    )


class TestSinkStoresCosts:
    def test_every_inserted_record_gets_its_cost(
        self, engine: Engine, tenant_id: str, catalog: ProviderCostCatalog
    ) -> None:
        sink = SqlUsageSink(engine, catalog)
        records = gpt_4o_span(1) + span("nope", "nope", number=2, input_tokens=5)

        sink.write(tenant_id, UsageBatch(records))

        assert stored_costs(engine, tenant_id) == {
            (f"{1:016x}", "input_tokens"): usd("2.5"),
            (f"{1:016x}", "cache_read_tokens"): usd("1.25"),
            (f"{1:016x}", "output_tokens"): usd("10"),
            (f"{1:016x}", "web_searches"): None,
            (f"{2:016x}", "input_tokens"): None,
        }

    def test_tenant_overrides_apply_at_write(
        self, engine: Engine, tenant_id: str, catalog: ProviderCostCatalog
    ) -> None:
        add_override(engine, tenant_id, meter="input_tokens", unit_cost_usd=Decimal("2"))
        add_override(
            engine,
            tenant_id,
            meter="web_searches",
            provider="*",
            model="*",
            unit_cost_usd=Decimal("0.01"),
            per_units=1,
        )
        other_tenant = create_tenant(engine, "other").tenant_id
        sink = SqlUsageSink(engine, catalog)

        sink.write(tenant_id, UsageBatch(gpt_4o_span(1)))
        sink.write(other_tenant, UsageBatch(gpt_4o_span(1)))

        mine, theirs = stored_costs(engine, tenant_id), stored_costs(engine, other_tenant)
        assert mine[(f"{1:016x}", "input_tokens")] == usd("2")
        assert mine[(f"{1:016x}", "web_searches")] == usd("0.02")
        assert theirs[(f"{1:016x}", "input_tokens")] == usd("2.5")
        assert theirs[(f"{1:016x}", "web_searches")] is None

    def test_an_override_added_between_writes_costs_the_next_write(
        self, engine: Engine, tenant_id: str, catalog: ProviderCostCatalog
    ) -> None:
        sink = SqlUsageSink(engine, catalog)
        # The sink costs a batch with the overrides its last write read (none, here) and
        # checks them again inside the write.
        sink.write(tenant_id, UsageBatch(gpt_4o_span(1)))
        add_override(engine, tenant_id, meter="input_tokens", unit_cost_usd=Decimal("2"))

        sink.write(tenant_id, UsageBatch(gpt_4o_span(2)))

        costs = stored_costs(engine, tenant_id)
        assert costs[(f"{1:016x}", "input_tokens")] == usd("2.5")
        assert costs[(f"{2:016x}", "input_tokens")] == usd("2")

    def test_without_a_catalog_costs_stay_unknown(self, engine: Engine, tenant_id: str) -> None:
        SqlUsageSink(engine).write(tenant_id, UsageBatch(gpt_4o_span(1)))

        assert set(stored_costs(engine, tenant_id).values()) == {None}


class TestRecostUsage:
    def test_override_added_later_is_applied_to_stored_records(
        self, engine: Engine, tenant_id: str, catalog: ProviderCostCatalog
    ) -> None:
        SqlUsageSink(engine, catalog).write(tenant_id, UsageBatch(gpt_4o_span(1)))
        add_override(engine, tenant_id, meter="input_tokens", unit_cost_usd=Decimal("2"))
        add_override(
            engine,
            tenant_id,
            meter="web_searches",
            model="*",
            unit_cost_usd=Decimal("0.01"),
            per_units=1,
        )

        changed = recost_usage(engine, tenant_id, catalog=catalog)

        assert changed == 2
        costs = stored_costs(engine, tenant_id)
        assert costs[(f"{1:016x}", "input_tokens")] == usd("2")
        assert costs[(f"{1:016x}", "web_searches")] == usd("0.02")
        assert costs[(f"{1:016x}", "output_tokens")] == usd("10")
        assert recost_usage(engine, tenant_id, catalog=catalog) == 0

    def test_fills_costs_of_records_stored_without_them(
        self, engine: Engine, tenant_id: str
    ) -> None:
        SqlUsageSink(engine).write(tenant_id, UsageBatch(gpt_4o_span(1)))

        assert recost_usage(engine, tenant_id) == 3

        assert stored_costs(engine, tenant_id)[(f"{1:016x}", "output_tokens")] == usd("10")

    def test_start_leaves_earlier_records_alone(
        self, engine: Engine, tenant_id: str, catalog: ProviderCostCatalog
    ) -> None:
        sink = SqlUsageSink(engine, catalog)
        sink.write(tenant_id, UsageBatch(gpt_4o_span(1, WHEN - timedelta(days=1))))
        sink.write(tenant_id, UsageBatch(gpt_4o_span(2, WHEN)))
        add_override(engine, tenant_id, meter="output_tokens", unit_cost_usd=Decimal("5"))

        assert recost_usage(engine, tenant_id, start=WHEN, catalog=catalog) == 1

        costs = stored_costs(engine, tenant_id)
        assert costs[(f"{1:016x}", "output_tokens")] == usd("10")
        assert costs[(f"{2:016x}", "output_tokens")] == usd("5")

    @pytest.mark.parametrize("batch_size", [1, 3, 4, 7])
    def test_small_batches_keep_spans_whole(
        self, engine: Engine, tenant_id: str, catalog: ProviderCostCatalog, batch_size: int
    ) -> None:
        # Long-context spans: a span split over two batches would be costed at the base tier.
        records: list[UsageRecord] = []
        for number in range(1, 8):
            records += span(
                "gcp.gemini",
                "gemini-2.5-pro",
                WHEN + timedelta(seconds=number % 3),
                number=number,
                input_tokens=250_000,
                cache_read_tokens=100_000,
                output_tokens=1_000 + number,
            )
        SqlUsageSink(engine).write(tenant_id, UsageBatch(records))

        changed = recost_usage(engine, tenant_id, catalog=catalog, batch_size=batch_size)

        assert changed == len(records)
        expected = dict(
            zip(
                [(r.span_id, r.meter) for r in records],
                catalog.costs(records),
                strict=True,
            )
        )
        assert stored_costs(engine, tenant_id) == expected

    def test_in_the_callers_transaction(
        self, engine: Engine, tenant_id: str, catalog: ProviderCostCatalog
    ) -> None:
        SqlUsageSink(engine).write(tenant_id, UsageBatch(gpt_4o_span(1)))

        with engine.connect() as connection:
            assert recost_usage(connection, tenant_id, catalog=catalog) == 3
            connection.rollback()
        assert set(stored_costs(engine, tenant_id).values()) == {None}

        with engine.begin() as connection:
            assert recost_usage(connection, tenant_id, catalog=catalog) == 3
        assert stored_costs(engine, tenant_id)[(f"{1:016x}", "input_tokens")] == usd("2.5")
