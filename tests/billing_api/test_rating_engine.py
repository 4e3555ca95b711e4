"""`rate_customer` on hand-built terms and usage aggregates (pure, no database): the
disjoint split of inclusive meters, mid-period version changes, customer overrides,
subscriptions, minimums, rounding once per line, unpriced usage, provider cost and margin.

Every expected figure is worked out by hand in the comment next to it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from random import Random
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_api.periods import month_period
from billing_api.pricing.components import ChargeModel, Component, Filters, Tier
from billing_api.rating.engine import PricedLine, RatedPeriod, rate_customer
from billing_api.rating.terms import (
    BookTerms,
    OverrideTerms,
    TenantPricing,
    UsageGroup,
    VersionTerms,
)

D = Decimal
CUSTOMER = "acme"
OTHER = "globex"
PERIOD = month_period("2026-03")  # [2026-03-01, 2026-04-01) UTC
MID = datetime(2026, 3, 16, tzinfo=UTC)
EARLIER = datetime(2026, 1, 1, tzinfo=UTC)
GPT = (("model", "gpt-4o"), ("provider", "openai"))
CLAUDE = (("model", "claude-sonnet-4"), ("provider", "anthropic"))

Slices = list[tuple[datetime, datetime, Sequence[UsageGroup]]]


# --- Builders -----------------------------------------------------------------------------


def usage(
    meter: str,
    quantity: int | str,
    dims: tuple[tuple[str, str], ...] = GPT,
    *,
    cost_usd: str | None = "0",
    unknown: int = 0,
) -> UsageGroup:
    """A usage group; `cost_usd=None` means one record of unknown provider cost."""
    return UsageGroup(
        meter=meter,
        dims=dims,
        quantity_micros=int(D(quantity).scaleb(6)),
        cost_pico=int(D(cost_usd or 0).scaleb(12)),
        unknown_cost_records=unknown + (1 if cost_usd is None else 0),
    )


def per_unit(
    name: str,
    meter: str,
    price: str,
    per_units: int = 1_000_000,
    *,
    position: int = 0,
    filters: dict[str, str] | None = None,
    id: str | None = None,
) -> Component:
    return Component(
        id=id or name,
        name=name,
        meter=meter,
        charge=ChargeModel.PER_UNIT,
        unit_price=D(price),
        per_units=per_units,
        position=position,
        filters=Filters(filters or {}),
    )


def version(number: int, effective_from: datetime, *components: Component) -> VersionTerms:
    return VersionTerms(
        id=f"v{number}", number=number, effective_from=effective_from, components=components
    )


def pricing(
    *versions: VersionTerms,
    currency: str = "USD",
    usd_rate: str = "1",
    overrides: dict[str, tuple[OverrideTerms, ...]] | None = None,
) -> TenantPricing:
    book = BookTerms(
        id="book", name="Standard", currency=currency, usd_rate=D(usd_rate), versions=versions
    )
    return TenantPricing(
        books={"book": book},
        default_book_id="book",
        assigned_books={},
        overrides=overrides or {},
        registered=frozenset({CUSTOMER, OTHER}),
        billing_days={},
    )


def whole(*groups: UsageGroup) -> Slices:
    return [(PERIOD.start, PERIOD.end, list(groups))]


def rate(terms: TenantPricing, slices: Slices, customer: str = CUSTOMER) -> RatedPeriod:
    return rate_customer(customer, terms, PERIOD, slices)


def by_name(rated: RatedPeriod) -> dict[str, PricedLine]:
    lines = {line.component_name: line for line in rated.lines}
    assert len(lines) == len(rated.lines), "one line per component here"
    return lines


def minor(rated: RatedPeriod) -> dict[str, int]:
    return {name: line.amount_minor for name, line in by_name(rated).items()}


# 2.50 / 1M input, 0.25 / 1M cache reads, 3.75 / 1M cache writes, 10 / 1M output,
# 12 / 1M reasoning.
INPUT = per_unit("input", "input_tokens", "2.50", position=0)
CACHE_READ = per_unit("cache read", "cache_read_tokens", "0.25", position=1)
CACHE_WRITE = per_unit("cache write", "cache_write_tokens", "3.75", position=2)
OUTPUT = per_unit("output", "output_tokens", "10", position=3)
REASONING = per_unit("reasoning", "output_reasoning_tokens", "12", position=4)


# --- Disjoint split of inclusive meters ---------------------------------------------------


class TestDisjointSplit:
    def test_cache_reads_with_their_own_component(self) -> None:
        rated = rate(
            pricing(version(1, EARLIER, INPUT, CACHE_READ)),
            whole(usage("input_tokens", 1_000_000), usage("cache_read_tokens", 200_000)),
        )
        lines = by_name(rated)
        # 800,000 uncached × 2.50 / 1M = 2.00; 200,000 × 0.25 / 1M = 0.05
        assert lines["input"].quantity == 800_000
        assert lines["input"].amount == D("2.00")
        assert lines["cache read"].quantity == 200_000
        assert lines["cache read"].amount == D("0.05")
        assert rated.subtotal_minor == 205
        assert rated.unpriced == []

    def test_cache_reads_without_a_component_stay_in_input(self) -> None:
        rated = rate(
            pricing(version(1, EARLIER, INPUT)),
            whole(usage("input_tokens", 1_000_000), usage("cache_read_tokens", 200_000)),
        )
        lines = by_name(rated)
        # All 1,000,000 at the input rate: 2.50. The cache reads are not unpriced.
        assert list(lines) == ["input"]
        assert lines["input"].quantity == 1_000_000
        assert lines["input"].amount_minor == 250
        assert rated.unpriced == []

    def test_cache_reads_and_writes(self) -> None:
        rated = rate(
            pricing(version(1, EARLIER, INPUT, CACHE_READ, CACHE_WRITE)),
            whole(
                usage("input_tokens", 1_000_000),
                usage("cache_read_tokens", 200_000),
                usage("cache_write_tokens", 100_000),
            ),
        )
        # input 700,000 × 2.50/1M = 1.75; reads 0.05; writes 100,000 × 3.75/1M = 0.375 → 0.38
        assert by_name(rated)["input"].quantity == 700_000
        assert minor(rated) == {"input": 175, "cache read": 5, "cache write": 38}
        assert rated.subtotal_minor == 218

    def test_only_the_priced_subset_leaves_input(self) -> None:
        rated = rate(
            pricing(version(1, EARLIER, INPUT, CACHE_READ)),
            whole(
                usage("input_tokens", 1_000_000),
                usage("cache_read_tokens", 200_000),
                usage("cache_write_tokens", 100_000),
            ),
        )
        # writes have no component → stay in input: 1,000,000 − 200,000 = 800,000 → 2.00
        assert by_name(rated)["input"].quantity == 800_000
        assert minor(rated) == {"input": 200, "cache read": 5}

    def test_reasoning_with_its_own_component(self) -> None:
        rated = rate(
            pricing(version(1, EARLIER, OUTPUT, REASONING)),
            whole(usage("output_tokens", 500_000), usage("output_reasoning_tokens", 300_000)),
        )
        # 200,000 × 10/1M = 2.00; 300,000 × 12/1M = 3.60
        assert by_name(rated)["output"].quantity == 200_000
        assert minor(rated) == {"output": 200, "reasoning": 360}

    def test_reasoning_without_a_component_stays_in_output(self) -> None:
        rated = rate(
            pricing(version(1, EARLIER, OUTPUT)),
            whole(usage("output_tokens", 500_000), usage("output_reasoning_tokens", 300_000)),
        )
        # 500,000 × 10/1M = 5.00
        assert by_name(rated)["output"].quantity == 500_000
        assert minor(rated) == {"output": 500}
        assert rated.unpriced == []

    def test_split_is_per_combination_of_dimensions(self) -> None:
        gpt_cache = per_unit(
            "gpt cache read", "cache_read_tokens", "1.25", filters={"model": "gpt-4o"}
        )
        rated = rate(
            pricing(version(1, EARLIER, INPUT, gpt_cache)),
            whole(
                usage("input_tokens", 1_000_000, GPT),
                usage("cache_read_tokens", 400_000, GPT),
                usage("input_tokens", 1_000_000, CLAUDE),
                usage("cache_read_tokens", 400_000, CLAUDE),
            ),
        )
        # gpt: 600,000 input + 400,000 cache at 1.25/1M (0.50); claude has no cache price:
        # all 1,000,000 at input. Input line 1,600,000 × 2.50/1M = 4.00.
        assert by_name(rated)["input"].quantity == 1_600_000
        assert minor(rated) == {"input": 400, "gpt cache read": 50}

    def test_provider_cost_follows_the_parts(self) -> None:
        groups = whole(
            usage("input_tokens", 1_000_000, cost_usd="1.00"),
            usage("cache_read_tokens", 200_000, cost_usd="0.05"),
        )
        split = by_name(rate(pricing(version(1, EARLIER, INPUT, CACHE_READ)), groups))
        # Each record carries the cost of its own disjoint part.
        assert split["input"].provider_cost_minor == 100
        assert split["cache read"].provider_cost_minor == 5
        merged = by_name(rate(pricing(version(1, EARLIER, INPUT)), groups))
        # Without a cache component the cache cost goes with input: 1.00 + 0.05
        assert merged["input"].provider_cost_minor == 105
        # margin: 2.50 − 1.05
        assert merged["input"].margin_minor == 145


# --- Price versions -----------------------------------------------------------------------

SEARCH_TIERS_V1 = (Tier(up_to=100, unit_price=D("0.10")), Tier(up_to=None, unit_price=D("0.05")))
SEARCH_TIERS_V2 = (Tier(up_to=100, unit_price=D("0.20")), Tier(up_to=None, unit_price=D("0.08")))


def searches(tiers: tuple[Tier, ...], id: str) -> Component:
    return Component(
        id=id,
        name="searches",
        meter="web_searches",
        charge=ChargeModel.GRADUATED,
        tiers=tiers,
        position=1,
    )


class TestVersionChange:
    terms = pricing(
        version(
            1,
            EARLIER,
            per_unit("input", "input_tokens", "2", id="v1-input"),
            searches(SEARCH_TIERS_V1, "v1-searches"),
        ),
        version(
            2,
            MID,
            per_unit("input", "input_tokens", "3", id="v2-input"),
            searches(SEARCH_TIERS_V2, "v2-searches"),
        ),
    )
    slices: ClassVar[Slices] = [
        (PERIOD.start, MID, [usage("input_tokens", 1_000_000), usage("web_searches", 80)]),
        (MID, PERIOD.end, [usage("input_tokens", 500_000), usage("web_searches", 50)]),
    ]

    def test_each_part_at_its_own_versions_rates(self) -> None:
        rated = rate(self.terms, self.slices)
        lines = {(line.component_name, line.version_number): line for line in rated.lines}
        # before: 1,000,000 × 2/1M = 2.00; after: 500,000 × 3/1M = 1.50
        assert lines["input", 1].amount_minor == 200
        assert lines["input", 2].amount_minor == 150
        assert lines["input", 1].version_id == "v1"
        assert lines["input", 2].version_id == "v2"
        assert rated.versions == [1, 2]

    def test_graduated_tier_position_carries_over(self) -> None:
        rated = rate(self.terms, self.slices)
        lines = {(line.component_name, line.version_number): line for line in rated.lines}
        # v1: 80 × 0.10 = 8.00. v2 continues at unit 81: 20 × 0.20 (to 100) = 4.00 and
        # 30 × 0.08 = 2.40 → 6.40 (not 50 × 0.20 = 10.00 as if the period restarted).
        assert lines["searches", 1].amount == D("8.00")
        assert lines["searches", 2].amount == D("6.40")
        # 2.00 + 1.50 + 8.00 + 6.40
        assert rated.subtotal_minor == 1790

    def test_slices_of_one_version_make_one_line(self) -> None:
        terms = pricing(version(1, EARLIER, INPUT))
        rated = rate(
            terms,
            [
                (PERIOD.start, MID, [usage("input_tokens", 1_000_000)]),
                (MID, PERIOD.end, [usage("input_tokens", 3_000_000)]),
            ],
        )
        # 4,000,000 × 2.50/1M = 10.00, one line
        assert [(line.component_name, line.amount_minor) for line in rated.lines] == [
            ("input", 1000)
        ]


def volume(tiers: tuple[Tier, ...], id: str) -> Component:
    return Component(
        id=id, name="searches", meter="web_searches", charge=ChargeModel.VOLUME, tiers=tiers
    )


class TestVolumeAndPackageInTheEngine:
    def test_volume_tier_from_the_period_total_across_versions(self) -> None:
        v1 = (Tier(up_to=100, unit_price=D("0.10")), Tier(None, D("0.05"), D("2.00")))
        v2 = (Tier(up_to=100, unit_price=D("0.10")), Tier(None, D("0.04"), D("3.00")))
        terms = pricing(
            version(1, EARLIER, volume(v1, "v1-searches")),
            version(2, MID, volume(v2, "v2-searches")),
        )
        rated = rate(
            terms,
            [
                (PERIOD.start, MID, [usage("web_searches", 80)]),
                (MID, PERIOD.end, [usage("web_searches", 50)]),
            ],
        )
        # Period total 130 → tier 2 in both versions. v1: 80 × 0.05 = 4.00 (no flat fee:
        # not the last slice); v2: 50 × 0.04 + its flat 3.00 = 5.00.
        lines = {line.version_number: line.amount_minor for line in rated.lines}
        assert lines == {1: 400, 2: 500}

    def test_volume_zero_usage_owes_nothing(self) -> None:
        base = (Tier(1000, D("0.01"), D("10.00")), Tier(None, D("0.005"), D("20.00")))
        terms = pricing(version(1, EARLIER, volume(base, "searches")))
        assert rate(terms, whole()).subtotal_minor == 0
        assert rate(terms, whole(usage("web_searches", 0))).subtotal_minor == 0

    def test_package_rounds_up_over_the_period(self) -> None:
        sandbox = Component(
            id="sandbox",
            name="sandbox",
            meter="sandbox_seconds",
            charge=ChargeModel.PACKAGE,
            package_size=3600,
            unit_price=D("1.20"),
        )
        rated = rate(
            pricing(version(1, EARLIER, sandbox)),
            [
                (PERIOD.start, MID, [usage("sandbox_seconds", 1000)]),
                (MID, PERIOD.end, [usage("sandbox_seconds", 4000)]),
            ],
        )
        # (0, 1000] starts package 1 → 1.20; (1000, 5000] starts package 2 → 1.20
        assert rated.subtotal_minor == 240


# --- Customer overrides -------------------------------------------------------------------


class TestOverrides:
    book = version(1, EARLIER, INPUT, OUTPUT)

    def test_replaces_by_name_and_adds(self) -> None:
        override = OverrideTerms(
            id="ov1",
            effective_from=EARLIER,
            effective_until=None,
            components=(
                per_unit("input", "input_tokens", "2.00", id="ov-input"),
                per_unit("searches", "web_searches", "0.01", 1, id="ov-searches", position=1),
            ),
        )
        terms = pricing(self.book, overrides={CUSTOMER: (override,)})
        slices = whole(
            usage("input_tokens", 1_000_000),
            usage("output_tokens", 100_000),
            usage("web_searches", 300),
        )
        lines = by_name(rate(terms, slices))
        # input at the contract's 2.00/1M (not 2.50); output from the book 100k × 10/1M = 1.00;
        # searches added by the contract: 300 × 0.01 = 3.00
        assert {n: line.amount_minor for n, line in lines.items()} == {
            "input": 200,
            "output": 100,
            "searches": 300,
        }
        assert lines["input"].component_id == "ov-input"
        assert lines["input"].override_id == "ov1"
        assert lines["input"].version_id is None
        assert lines["output"].override_id is None
        assert lines["output"].version_number == 1
        # Another customer has no contract: book input 2.50, searches unpriced.
        other = rate(terms, slices, OTHER)
        assert minor(other) == {"input": 250, "output": 100}
        assert [(u.meter, u.quantity) for u in other.unpriced] == [("web_searches", D(300))]

    def test_active_for_part_of_the_period(self) -> None:
        start, until = datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC)
        override = OverrideTerms(
            id="ov1",
            effective_from=start,
            effective_until=until,
            components=(per_unit("input", "input_tokens", "1.00", id="ov-input"),),
        )
        terms = pricing(version(1, EARLIER, INPUT), overrides={CUSTOMER: (override,)})
        assert terms.boundaries(PERIOD.start, PERIOD.end) == [start, until]
        slices: Slices = [
            (PERIOD.start, start, [usage("input_tokens", 1_000_000)]),
            (start, until, [usage("input_tokens", 2_000_000)]),
            (until, PERIOD.end, [usage("input_tokens", 3_000_000)]),
        ]
        rated = rate(terms, slices)
        lines = {(line.component_id, line.override_id): line for line in rated.lines}
        # Book: (1M + 3M) × 2.50/1M = 10.00 on one line; contract: 2M × 1.00/1M = 2.00
        assert lines["input", None].quantity == 4_000_000
        assert lines["input", None].amount_minor == 1000
        assert lines["ov-input", "ov1"].quantity == 2_000_000
        assert lines["ov-input", "ov1"].amount_minor == 200
        assert rated.subtotal_minor == 1200
        # Without the contract: 6M × 2.50/1M = 15.00
        assert rate(terms, slices, OTHER).subtotal_minor == 1500


# --- Subscriptions, pay-as-you-go, minimums ------------------------------------------------

PLATFORM = Component(id="platform", name="platform", charge=ChargeModel.FLAT_FEE, amount=D("49.00"))
INCLUDED = Component(
    id="included",
    name="included tokens",
    meter="input_tokens",
    charge=ChargeModel.ALLOWANCE,
    included_quantity=D(10_000_000),
    unit_price=D("1.50"),
    per_units=1_000_000,
    position=1,
)


class TestFlatSubscriptionPlusOverage:
    terms = pricing(version(1, EARLIER, PLATFORM, INCLUDED))

    @pytest.mark.parametrize(
        ("tokens", "overage_minor"),
        [
            pytest.param(8_000_000, 0, id="inside-allowance"),
            pytest.param(10_000_000, 0, id="at-allowance"),
            # 2.5M over × 1.50/1M = 3.75
            pytest.param(12_500_000, 375, id="overage"),
        ],
    )
    def test_fee_plus_overage(self, tokens: int, overage_minor: int) -> None:
        rated = rate(self.terms, whole(usage("input_tokens", tokens)))
        assert minor(rated) == {"included tokens": overage_minor, "platform": 4900}
        assert by_name(rated)["platform"].quantity == 1
        assert rated.subtotal_minor == 4900 + overage_minor

    def test_fee_without_usage(self) -> None:
        rated = rate(self.terms, whole())
        assert minor(rated) == {"platform": 4900}
        assert not rated.is_empty

    def test_allowance_counts_the_whole_period(self) -> None:
        rated = rate(
            self.terms,
            [
                (PERIOD.start, MID, [usage("input_tokens", 6_000_000)]),
                (MID, PERIOD.end, [usage("input_tokens", 6_000_000)]),
            ],
        )
        # 12M in the period → 2M over × 1.50/1M = 3.00 (each slice alone would be 0)
        assert minor(rated)["included tokens"] == 300


class TestPayAsYouGo:
    def test_per_unit_lines(self) -> None:
        tools = per_unit("tool calls", "tool_calls", "0.002", 1, position=5)
        rated = rate(
            pricing(version(1, EARLIER, INPUT, OUTPUT, tools)),
            whole(
                usage("input_tokens", 3_456_789),
                usage("output_tokens", 123_456),
                usage("tool_calls", 1_234, (("tool", "web_search"),)),
            ),
        )
        # input 3,456,789 × 2.50/1M = 8.6419725 → 8.64
        # output 123,456 × 10/1M = 1.23456 → 1.23
        # tools 1,234 × 0.002 = 2.468 → 2.47
        assert minor(rated) == {"input": 864, "output": 123, "tool calls": 247}
        assert rated.subtotal_minor == 1234
        assert [line.component_name for line in rated.lines] == ["input", "output", "tool calls"]


COMMITMENT = Component(
    id="commit", name="commitment", charge=ChargeModel.MINIMUM, amount=D("20.00")
)


class TestMinimumCommitment:
    @pytest.mark.parametrize(
        ("tokens", "true_up_minor"),
        [
            # 4M × 2.50/1M = 10.00 → 10.00 short of 20.00
            pytest.param(4_000_000, 1000, id="short"),
            # 8M → exactly 20.00: nothing owed on top
            pytest.param(8_000_000, None, id="met"),
            # 10M → 25.00
            pytest.param(10_000_000, None, id="exceeded"),
            # nothing used: the whole commitment
            pytest.param(0, 2000, id="no-usage"),
        ],
    )
    def test_true_up(self, tokens: int, true_up_minor: int | None) -> None:
        groups = [usage("input_tokens", tokens)] if tokens else []
        rated = rate(pricing(version(1, EARLIER, INPUT, COMMITMENT)), whole(*groups))
        lines = by_name(rated)
        if true_up_minor is None:
            assert "commitment" not in lines
            assert rated.subtotal_minor == tokens * 250 // 1_000_000
        else:
            assert lines["commitment"].amount_minor == true_up_minor
            assert rated.subtotal_minor == 2000
            assert rated.lines[-1].component_name == "commitment"

    def test_counts_the_subscription(self) -> None:
        fee = Component(id="fee", name="platform", charge=ChargeModel.FLAT_FEE, amount=D("5.00"))
        rated = rate(
            pricing(version(1, EARLIER, INPUT, fee, COMMITMENT)),
            whole(usage("input_tokens", 4_000_000)),
        )
        # 10.00 usage + 5.00 fee = 15.00 → 5.00 true-up
        assert minor(rated) == {"input": 1000, "platform": 500, "commitment": 500}


# --- Rounding -----------------------------------------------------------------------------


class TestRounding:
    @pytest.mark.parametrize(
        ("searches", "expected_yen"),
        [
            pytest.param(1, 1, id="half-yen-rounds-up"),  # ¥0.5 → ¥1
            pytest.param(3, 2, id="1.5"),  # ¥1.5 → ¥2
            pytest.param(4, 2, id="2.0"),
        ],
    )
    def test_jpy_has_no_minor_unit(self, searches: int, expected_yen: int) -> None:
        yen = per_unit("searches", "web_searches", "0.5", 1)
        rated = rate(
            pricing(version(1, EARLIER, yen), currency="JPY"),
            whole(usage("web_searches", searches)),
        )
        assert rated.currency == "JPY"
        assert rated.lines[0].amount_minor == expected_yen
        assert rated.subtotal_minor == expected_yen

    def test_jpy_tokens_and_minimum(self) -> None:
        tokens = per_unit("input", "input_tokens", "375")
        floor = Component(id="min", name="commitment", charge=ChargeModel.MINIMUM, amount=D(1000))
        rated = rate(
            pricing(version(1, EARLIER, tokens, floor), currency="JPY", usd_rate="150"),
            whole(usage("input_tokens", 1_234_567, cost_usd="1.00")),
        )
        # 1,234,567 × ¥375/1M = ¥462.962625 → ¥463; minimum ¥1000 → true-up ¥537
        assert minor(rated) == {"input": 463, "commitment": 537}
        # $1.00 × 150 = ¥150 cost; margin ¥313
        assert by_name(rated)["input"].provider_cost_minor == 150
        assert by_name(rated)["input"].margin_minor == 313

    def test_a_line_is_rounded_once(self) -> None:
        half_cent = per_unit("calls", "tool_calls", "0.005", 1)
        groups = [
            usage("tool_calls", 1, (("tool", f"tool-{n}"),)) for n in range(3)
        ]  # three groups, one line
        rated = rate(
            pricing(version(1, EARLIER, half_cent)),
            [(PERIOD.start, MID, groups[:2]), (MID, PERIOD.end, groups[2:])],
        )
        # 3 × 0.005 = 0.015 → 0.02 once (rounding each group/slice would give 0.03)
        assert len(rated.lines) == 1
        assert rated.lines[0].amount == D("0.015")
        assert rated.subtotal_minor == 2

    def test_subtotal_is_the_sum_of_rounded_lines(self) -> None:
        components = [
            per_unit(f"meter {n}", f"meter_{n}", "0.004", 1, position=n) for n in range(3)
        ]
        rated = rate(
            pricing(version(1, EARLIER, *components)),
            whole(*(usage(f"meter_{n}", 1) for n in range(3))),
        )
        # each 0.004 → 0.00; the sum of rounded lines is 0 (not round(0.012) = 0.01)
        assert [line.amount_minor for line in rated.lines] == [0, 0, 0]
        assert rated.subtotal_minor == 0


# --- Unpriced usage -----------------------------------------------------------------------


class TestUnpriced:
    def test_meter_and_model_without_a_component(self) -> None:
        gpt_input = per_unit("gpt input", "input_tokens", "2.50", filters={"model": "gpt-4o"})
        rated = rate(
            pricing(version(1, EARLIER, gpt_input)),
            whole(
                usage("input_tokens", 1_000_000, GPT),
                usage("input_tokens", 1_000, CLAUDE),
                usage("cache_read_tokens", 400, CLAUDE),
                usage("sandbox_seconds", "12.5", (("service_name", "sandbox"),)),
                usage("web_searches", 0, (("tool", "search"),)),
            ),
        )
        assert minor(rated) == {"gpt input": 250}
        unpriced = {(u.meter, u.dims): u for u in rated.unpriced}
        # Claude's cache reads are inside its 1,000 input tokens: reported once, not twice.
        # Zero quantities are not reported.
        assert set(unpriced) == {
            ("input_tokens", CLAUDE),
            ("sandbox_seconds", (("service_name", "sandbox"),)),
        }
        assert unpriced["input_tokens", CLAUDE].quantity == 1000
        assert unpriced["sandbox_seconds", (("service_name", "sandbox"),)].quantity == D("12.5")
        assert unpriced["input_tokens", CLAUDE].start == PERIOD.start
        assert unpriced["input_tokens", CLAUDE].end == PERIOD.end

    def test_no_book_prices_nothing(self) -> None:
        terms = TenantPricing(
            books={},
            default_book_id=None,
            assigned_books={},
            overrides={},
            registered=frozenset(),
            billing_days={},
        )
        rated = rate(terms, whole(usage("input_tokens", 10)))
        assert rated.lines == []
        assert rated.book_id is None
        assert [(u.meter, u.quantity) for u in rated.unpriced] == [("input_tokens", D(10))]
        assert not rated.is_empty


# --- Provider cost and margin -------------------------------------------------------------


class TestProviderCost:
    def test_cost_and_margin_per_line(self) -> None:
        rated = rate(
            pricing(version(1, EARLIER, INPUT, OUTPUT, PLATFORM)),
            whole(
                usage("input_tokens", 1_000_000, cost_usd="1.20"),
                usage("output_tokens", 100_000, cost_usd="0.333333"),
            ),
        )
        lines = by_name(rated)
        # input: 2.50 − 1.20 = 1.30; output: 1.00 − 0.33 = 0.67
        assert (lines["input"].provider_cost_minor, lines["input"].margin_minor) == (120, 130)
        assert (lines["output"].provider_cost_minor, lines["output"].margin_minor) == (33, 67)
        # The fee has no provider cost; the period's cost counts metered lines only.
        assert lines["platform"].margin_minor == 4900
        assert rated.provider_cost_minor == 153
        # 2.50 + 1.00 + 49.00 − 1.53
        assert rated.margin_minor == 5097

    def test_book_currency_via_usd_rate(self) -> None:
        rated = rate(
            pricing(version(1, EARLIER, INPUT), currency="EUR", usd_rate="0.9"),
            whole(usage("input_tokens", 1_000_000, cost_usd="1.20")),
        )
        line = rated.lines[0]
        # $1.20 × 0.9 = €1.08; €2.50 − €1.08 = €1.42
        assert line.currency == "EUR"
        assert line.provider_cost == D("1.080")
        assert (line.provider_cost_minor, line.margin_minor) == (108, 142)

    def test_unknown_cost_makes_cost_and_margin_unknown(self) -> None:
        rated = rate(
            pricing(version(1, EARLIER, INPUT, OUTPUT)),
            whole(
                usage("input_tokens", 1_000_000, cost_usd="1.20", unknown=1),
                usage("output_tokens", 100_000, cost_usd="0.30"),
            ),
        )
        lines = by_name(rated)
        assert lines["input"].unknown_cost_records == 1
        assert lines["input"].provider_cost_minor is None
        assert lines["input"].margin_minor is None
        assert lines["output"].provider_cost_minor == 30
        assert rated.provider_cost_minor is None
        assert rated.margin_minor is None

    def test_unknown_cost_of_a_subset_billed_in_its_parent(self) -> None:
        rated = rate(
            pricing(version(1, EARLIER, INPUT)),
            whole(
                usage("input_tokens", 1_000_000, cost_usd="1.00"),
                usage("cache_read_tokens", 100_000, cost_usd=None),
            ),
        )
        assert rated.lines[0].provider_cost_minor is None

    def test_cost_plus_in_book_currency(self) -> None:
        resold = Component(
            id="resold",
            name="resold",
            meter="input_tokens",
            charge=ChargeModel.COST_PLUS,
            markup=D("0.25"),
            unit_price=D("0.10"),
            per_units=1_000_000,
        )
        rated = rate(
            pricing(version(1, EARLIER, resold), currency="EUR", usd_rate="0.9"),
            whole(usage("input_tokens", 2_000_000, cost_usd="2.00")),
        )
        # $2.00 × 0.9 = €1.80; × 1.25 = €2.25; fee 2M × 0.10/1M = €0.20 → €2.45; margin €0.65
        line = rated.lines[0]
        assert line.amount == D("2.45")
        assert (line.amount_minor, line.provider_cost_minor, line.margin_minor) == (245, 180, 65)


# --- Properties ---------------------------------------------------------------------------

DIMS = [GPT, CLAUDE, (("model", "gpt-4o-mini"), ("provider", "openai"))]
METERS = ["input_tokens", "output_tokens", "tool_calls", "web_searches"]


@st.composite
def monotone_books(draw: st.DrawFn) -> TenantPricing:
    """A book of per_unit and graduated components over meters without subsets."""
    components = []
    for position, meter in enumerate(METERS):
        if not draw(st.booleans()):
            continue
        price = D(draw(st.integers(min_value=0, max_value=5000))).scaleb(-2)
        if draw(st.booleans()):
            component = per_unit(meter, meter, str(price), 1000, position=position)
        else:
            bounds = sorted(draw(st.sets(st.integers(1, 100_000), max_size=3)))
            component = Component(
                id=meter,
                name=meter,
                meter=meter,
                charge=ChargeModel.GRADUATED,
                per_units=1000,
                position=position,
                tiers=tuple(
                    Tier(
                        up_to=up_to,
                        unit_price=D(draw(st.integers(0, 5000))).scaleb(-2),
                        flat_fee=D(draw(st.integers(0, 500))).scaleb(-2),
                    )
                    for up_to in [*bounds, None]
                ),
            )
        components.append(component)
    return pricing(version(1, EARLIER, *components))


groups_strategy = st.lists(
    st.builds(
        lambda meter, dims, quantity, cost: usage(meter, quantity, dims, cost_usd=str(cost)),
        st.sampled_from(METERS),
        st.sampled_from(DIMS),
        st.integers(min_value=0, max_value=2_000_000),
        st.integers(min_value=0, max_value=10**6).map(lambda n: D(n).scaleb(-6)),
    ),
    max_size=8,
    unique_by=lambda g: (g.meter, g.dims),
)


def two_slices(groups: list[UsageGroup], cut: int) -> Slices:
    return [(PERIOD.start, MID, groups[:cut]), (MID, PERIOD.end, groups[cut:])]


@settings(max_examples=200)
@given(monotone_books(), groups_strategy, st.integers(0, 8))
def test_total_is_the_sum_of_lines(
    terms: TenantPricing, groups: list[UsageGroup], cut: int
) -> None:
    rated = rate(terms, two_slices(groups, cut))
    assert rated.subtotal_minor == sum(line.amount_minor for line in rated.lines)


@given(monotone_books(), groups_strategy, st.integers(0, 8))
def test_rating_is_deterministic(terms: TenantPricing, groups: list[UsageGroup], cut: int) -> None:
    first = rate(terms, two_slices(groups, cut))
    second = rate(terms, two_slices(list(groups), cut))
    assert first.lines == second.lines
    assert first.unpriced == second.unpriced
    assert first.subtotal_minor == second.subtotal_minor


@given(monotone_books(), groups_strategy, st.randoms(use_true_random=False))
def test_group_order_does_not_change_lines(
    terms: TenantPricing, groups: list[UsageGroup], random: Random
) -> None:
    """The database returns groups in no particular order."""
    shuffled = list(groups)
    random.shuffle(shuffled)
    first = rate(terms, whole(*groups))
    second = rate(terms, whole(*shuffled))
    assert [(x.component_id, x.amount, x.quantity) for x in first.lines] == [
        (x.component_id, x.amount, x.quantity) for x in second.lines
    ]


@settings(max_examples=200)
@given(
    monotone_books(),
    groups_strategy.filter(bool),
    st.integers(min_value=0, max_value=7),
    st.integers(min_value=1, max_value=3_000_000),
    st.integers(0, 8),
)
def test_more_usage_never_lowers_the_subtotal(
    terms: TenantPricing, groups: list[UsageGroup], pick: int, extra: int, cut: int
) -> None:
    index = pick % len(groups)
    raised = list(groups)
    group = raised[index]
    raised[index] = UsageGroup(
        meter=group.meter,
        dims=group.dims,
        quantity_micros=group.quantity_micros + extra * 10**6,
        cost_pico=group.cost_pico,
        unknown_cost_records=group.unknown_cost_records,
    )
    before = rate(terms, two_slices(groups, cut)).subtotal_minor
    after = rate(terms, two_slices(raised, cut)).subtotal_minor
    assert after >= before
