"""Charge models as pure functions (`billing_api.rating.charges`), against amounts worked
out by hand in the comments beside each case. Amounts are unrounded Decimals: rounding
happens later, once per invoice line."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_api.pricing.components import ChargeModel, Component, Tier
from billing_api.rating import charges
from billing_api.rating.charges import cumulative, usage_charge

D = Decimal


# per_unit: 2.50 per 1,000,000 tokens.
PER_MILLION = Component(
    name="input",
    meter="input_tokens",
    charge=ChargeModel.PER_UNIT,
    unit_price=D("2.50"),
    per_units=1_000_000,
)

# graduated, per unit: (0, 100] at 0.10 (+1.00 on reaching it), (100, 1000] at 0.05
# (+2.00), (1000, ∞) at 0.01 (+3.00). Hand figures of F(q):
#   F(100)  = 100 × 0.10 + 1.00                = 11.00
#   F(1000) = F(100) + 900 × 0.05 + 2.00        = 58.00
GRADUATED = Component(
    name="searches",
    meter="web_searches",
    charge=ChargeModel.GRADUATED,
    tiers=(
        Tier(up_to=100, unit_price=D("0.10"), flat_fee=D("1.00")),
        Tier(up_to=1000, unit_price=D("0.05"), flat_fee=D("2.00")),
        Tier(up_to=None, unit_price=D("0.01"), flat_fee=D("3.00")),
    ),
)

# graduated per 1M tokens: first 10M at 3.00 per 1M, the rest at 2.00 per 1M.
GRADUATED_PER_MILLION = Component(
    name="output",
    meter="output_tokens",
    charge=ChargeModel.GRADUATED,
    per_units=1_000_000,
    tiers=(
        Tier(up_to=10_000_000, unit_price=D("3.00")),
        Tier(up_to=None, unit_price=D("2.00")),
    ),
)

# volume, per unit: a period total in (0, 100] → 0.10 each; (100, 1000] → 0.05 each + 2.00;
# above 1000 → 0.01 each + 5.00.
VOLUME = Component(
    name="searches",
    meter="web_searches",
    charge=ChargeModel.VOLUME,
    tiers=(
        Tier(up_to=100, unit_price=D("0.10")),
        Tier(up_to=1000, unit_price=D("0.05"), flat_fee=D("2.00")),
        Tier(up_to=None, unit_price=D("0.01"), flat_fee=D("5.00")),
    ),
)

# volume whose first tier has a flat fee: (0, 1000] → 0.01 each + 10.00; above → 0.005 + 20.00
VOLUME_WITH_BASE_FEE = Component(
    name="searches",
    meter="web_searches",
    charge=ChargeModel.VOLUME,
    tiers=(
        Tier(up_to=1000, unit_price=D("0.01"), flat_fee=D("10.00")),
        Tier(up_to=None, unit_price=D("0.005"), flat_fee=D("20.00")),
    ),
)

# package: 5.00 per started package of 1000 seconds.
PACKAGE = Component(
    name="sandbox",
    meter="sandbox_seconds",
    charge=ChargeModel.PACKAGE,
    package_size=1000,
    unit_price=D("5.00"),
)

# allowance: 1,000,000 tokens included, overage at 4.00 per 1M.
ALLOWANCE = Component(
    name="included tokens",
    meter="input_tokens",
    charge=ChargeModel.ALLOWANCE,
    included_quantity=D(1_000_000),
    unit_price=D("4.00"),
    per_units=1_000_000,
)


def whole_period(component: Component, quantity: Decimal) -> Decimal:
    """The charge of a period used in one slice."""
    return usage_charge(
        component,
        before=D(0),
        quantity=quantity,
        period_quantity=quantity,
        cost=D(0),
        last_slice=True,
    ).amount


def sliced(component: Component, cuts: list[Decimal]) -> list[Decimal]:
    """Charges of consecutive slices of `cuts[i]` units each, in one period."""
    total = sum(cuts, D(0))
    amounts = []
    before = D(0)
    for index, quantity in enumerate(cuts):
        charge = usage_charge(
            component,
            before=before,
            quantity=quantity,
            period_quantity=total,
            cost=D(0),
            last_slice=index == len(cuts) - 1,
        )
        amounts.append(charge.amount)
        before += quantity
    return amounts


class TestPerUnit:
    @pytest.mark.parametrize(
        ("quantity", "expected"),
        [
            pytest.param(D(0), D(0), id="nothing"),
            pytest.param(D(1), D("0.0000025"), id="one-token"),  # 2.50 / 1e6
            pytest.param(D(400_000), D("1.00"), id="400k"),  # 0.4 × 2.50
            pytest.param(D(1_000_000), D("2.50"), id="one-million"),
            # 1,234,567 × 2.50 / 1e6 = 3.0864175 (rounding is the line's business)
            pytest.param(D(1_234_567), D("3.0864175"), id="unrounded"),
            pytest.param(D("0.5"), D("0.00000125"), id="fractional-unit"),
        ],
    )
    def test_per_million_tokens(self, quantity: Decimal, expected: Decimal) -> None:
        assert cumulative(PER_MILLION, quantity) == expected
        charge = usage_charge(
            PER_MILLION,
            before=D(0),
            quantity=quantity,
            period_quantity=quantity,
            cost=D(0),
            last_slice=True,
        )
        assert charge.amount == expected
        assert charge.unit_price == D("2.50")

    def test_per_units_one_is_the_unit_price(self) -> None:
        component = Component(
            name="calls", meter="tool_calls", charge=ChargeModel.PER_UNIT, unit_price=D("0.002")
        )
        # 1,234 × 0.002 = 2.468
        assert cumulative(component, D(1234)) == D("2.468")


class TestGraduated:
    @pytest.mark.parametrize(
        ("quantity", "expected"),
        [
            pytest.param(D(0), D(0), id="0-no-tier-reached"),
            # 1 × 0.10 + first tier's flat 1.00
            pytest.param(D(1), D("1.10"), id="1"),
            # 99 × 0.10 + 1.00
            pytest.param(D(99), D("10.90"), id="99"),
            # up_to is inclusive: unit 100 is still tier 1 → 10.00 + 1.00
            pytest.param(D(100), D("11.00"), id="100-boundary"),
            # 11.00 + 1 × 0.05 + tier 2 flat 2.00
            pytest.param(D(101), D("13.05"), id="101"),
            # 11.00 + 899 × 0.05 (44.95) + 2.00
            pytest.param(D(999), D("57.95"), id="999"),
            # 11.00 + 900 × 0.05 (45.00) + 2.00
            pytest.param(D(1000), D("58.00"), id="1000-boundary"),
            # 58.00 + 1 × 0.01 + tier 3 flat 3.00
            pytest.param(D(1001), D("61.01"), id="1001"),
            # 58.00 + 1000 × 0.01 + 3.00
            pytest.param(D(2000), D("71.00"), id="2000"),
            # 11.00 + 0.5 × 0.05 + 2.00: a fraction past the boundary reaches tier 2
            pytest.param(D("100.5"), D("13.025"), id="100.5"),
        ],
    )
    def test_cumulative(self, quantity: Decimal, expected: Decimal) -> None:
        assert cumulative(GRADUATED, quantity) == expected
        assert whole_period(GRADUATED, quantity) == expected

    @pytest.mark.parametrize(
        ("quantity", "expected"),
        [
            # 9.5M × 3.00 / 1M
            pytest.param(D(9_500_000), D("28.50"), id="inside-first-tier"),
            pytest.param(D(10_000_000), D("30.00"), id="at-boundary"),
            # 10 × 3.00 + 2.5 × 2.00
            pytest.param(D(12_500_000), D("35.00"), id="past-boundary"),
        ],
    )
    def test_per_million_tokens(self, quantity: Decimal, expected: Decimal) -> None:
        assert cumulative(GRADUATED_PER_MILLION, quantity) == expected

    def test_slice_across_a_boundary(self) -> None:
        # (50, 110]: 50 × 0.10 = 5.00 in tier 1 (its flat fee was owed by unit 1, before
        # this slice); 10 × 0.05 = 0.50 in tier 2 plus its flat 2.00 → 7.50.
        # Check: F(110) − F(50) = (11.00 + 0.50 + 2.00) − (5.00 + 1.00) = 7.50.
        charge = usage_charge(
            GRADUATED,
            before=D(50),
            quantity=D(60),
            period_quantity=D(110),
            cost=D(0),
            last_slice=True,
        )
        assert charge.amount == D("7.50")
        assert charge.unit_price is None
        tiers = charge.detail["tiers"]
        assert [(t["quantity"], t["flat_fee"]) for t in tiers] == [("50", "0"), ("10", "2.00")]

    def test_slice_starting_on_a_boundary_owes_the_next_tier_flat_fee(self) -> None:
        # (100, 101]: unit 101 is the first of tier 2 → 0.05 + 2.00
        charge = usage_charge(
            GRADUATED,
            before=D(100),
            quantity=D(1),
            period_quantity=D(101),
            cost=D(0),
            last_slice=True,
        )
        assert charge.amount == D("2.05")


class TestVolume:
    @pytest.mark.parametrize(
        ("quantity", "expected"),
        [
            pytest.param(D(1), D("0.10"), id="1"),
            # 100 is inside tier 1 (up_to inclusive): 100 × 0.10
            pytest.param(D(100), D("10.00"), id="100-boundary"),
            # every unit at tier 2: 101 × 0.05 + 2.00
            pytest.param(D(101), D("7.05"), id="101"),
            # 1000 × 0.05 + 2.00
            pytest.param(D(1000), D("52.00"), id="1000-boundary"),
            # every unit at tier 3: 1001 × 0.01 + 5.00 (cheaper than 1000 units)
            pytest.param(D(1001), D("15.01"), id="1001"),
        ],
    )
    def test_whole_period(self, quantity: Decimal, expected: Decimal) -> None:
        charge = usage_charge(
            VOLUME,
            before=D(0),
            quantity=quantity,
            period_quantity=quantity,
            cost=D(0),
            last_slice=True,
        )
        assert charge.amount == expected

    def test_slices_use_the_period_total_tier_and_the_flat_fee_once(self) -> None:
        # Period total 1001 → tier 3 (0.01, flat 5.00). First slice 300 × 0.01 = 3.00,
        # last slice 701 × 0.01 + 5.00 = 12.01; together 15.01 as in one slice.
        assert sliced(VOLUME, [D(300), D(701)]) == [D("3.00"), D("12.01")]

    @pytest.mark.parametrize(
        ("quantity", "expected"),
        [
            # 1 × 0.01 + tier 1's flat 10.00
            pytest.param(D(1), D("10.01"), id="1"),
            # Nothing used reaches no tier: no flat fee (as graduated: F(0) = 0).
            pytest.param(
                D(0),
                D(0),
                id="0",
            ),
        ],
    )
    def test_first_tier_flat_fee(self, quantity: Decimal, expected: Decimal) -> None:
        assert whole_period(VOLUME_WITH_BASE_FEE, quantity) == expected

    def test_volume_is_not_cumulative(self) -> None:
        with pytest.raises(ValueError, match="volume"):
            cumulative(VOLUME, D(10))


class TestPackage:
    @pytest.mark.parametrize(
        ("quantity", "expected"),
        [
            pytest.param(D(0), D(0), id="0"),
            # one started package
            pytest.param(
                D(1),
                D("5.00"),
                id="1",
            ),
            pytest.param(
                D(999),
                D("5.00"),
                id="999",
            ),
            # exactly one package
            pytest.param(D(1000), D("5.00"), id="1000-exact"),
            # 1001 → two packages
            pytest.param(
                D(1001),
                D("10.00"),
                id="1001",
            ),
            pytest.param(D(2000), D("10.00"), id="2000-exact"),
            # half a second is a started package
            pytest.param(
                D("0.5"),
                D("5.00"),
                id="fraction",
            ),
        ],
    )
    def test_rounds_up_to_whole_packages(self, quantity: Decimal, expected: Decimal) -> None:
        assert cumulative(PACKAGE, quantity) == expected

    def test_slices_pay_each_package_once(self) -> None:
        # Slices of 1, 1000, 1 seconds (total 1002 → 2 packages = 10.00):
        # (0, 1] starts package 1 → 5.00; (1, 1001] starts package 2 → 5.00;
        # (1001, 1002] starts none → 0.
        assert sliced(PACKAGE, [D(1), D(1000), D(1)]) == [D("5.00"), D("5.00"), D(0)]


class TestAllowance:
    @pytest.mark.parametrize(
        ("quantity", "expected"),
        [
            pytest.param(D(0), D(0), id="0"),
            pytest.param(D(999_999), D(0), id="below"),
            pytest.param(D(1_000_000), D(0), id="at"),
            # 1 token over: 4.00 / 1e6
            pytest.param(D(1_000_001), D("0.000004"), id="one-over"),
            # 2.5M over × 4.00 per 1M
            pytest.param(D(3_500_000), D("10.00"), id="above"),
        ],
    )
    def test_overage_only(self, quantity: Decimal, expected: Decimal) -> None:
        assert cumulative(ALLOWANCE, quantity) == expected

    def test_slices_use_up_the_allowance_first(self) -> None:
        # 600k + 600k: the first slice is inside the 1M allowance (0), the second has 200k
        # overage → 0.80.
        assert sliced(ALLOWANCE, [D(600_000), D(600_000)]) == [D(0), D("0.80")]


class TestCostPlus:
    @pytest.mark.parametrize(
        ("markup", "unit_price", "per_units", "quantity", "cost", "expected"),
        [
            # 10.00 × 1.20 + 100 × 0.01 = 12.00 + 1.00
            pytest.param(D("0.20"), D("0.01"), 1, D(100), D("10.00"), D("13.00"), id="markup+fee"),
            # no markup, no fee: the cost itself
            pytest.param(D(0), None, 1, D(5), D("3.33"), D("3.33"), id="at-cost"),
            # 2.00 × 1.5
            pytest.param(D("0.5"), None, 1, D(7), D("2.00"), D("3.00"), id="markup-only"),
            # 1.00 × 1.25 + 3000 × 0.50 / 1000 = 1.25 + 1.50
            pytest.param(
                D("0.25"), D("0.50"), 1000, D(3000), D("1.00"), D("2.75"), id="fee-per-1000"
            ),
            # nothing used, nothing owed
            pytest.param(D("0.25"), D("0.50"), 1000, D(0), D(0), D(0), id="zero"),
        ],
    )
    def test_cost_times_markup_plus_fee(
        self,
        markup: Decimal,
        unit_price: Decimal | None,
        per_units: int,
        quantity: Decimal,
        cost: Decimal,
        expected: Decimal,
    ) -> None:
        component = Component(
            name="resold",
            meter="input_tokens",
            charge=ChargeModel.COST_PLUS,
            markup=markup,
            unit_price=unit_price,
            per_units=per_units,
        )
        charge = usage_charge(
            component,
            before=D(0),
            quantity=quantity,
            period_quantity=quantity,
            cost=cost,
            last_slice=True,
        )
        assert charge.amount == expected
        assert charge.detail["provider_cost"] == str(cost)


@pytest.mark.parametrize(
    "charge",
    [ChargeModel.VOLUME, ChargeModel.COST_PLUS, ChargeModel.FLAT_FEE, ChargeModel.MINIMUM],
)
def test_non_cumulative_models_refuse_cumulative(charge: ChargeModel) -> None:
    with pytest.raises(ValueError, match=charge):
        cumulative(Component(name="x", charge=charge), D(1))


@pytest.mark.parametrize(
    ("component", "cuts", "total"),
    [
        # 0.4M + 0.6M + 1.234567M tokens = 2,234,567 × 2.50 / 1e6 = 5.5864175
        pytest.param(
            PER_MILLION, [D(400_000), D(600_000), D(1_234_567)], D("5.5864175"), id="per_unit"
        ),
        # 50 + 60 + 890 + 1000 = 2000 → F(2000) = 71.00 (crosses both boundaries)
        pytest.param(GRADUATED, [D(50), D(60), D(890), D(1000)], D("71.00"), id="graduated"),
        # 600k + 2.9M = 3.5M → 2.5M over → 10.00
        pytest.param(ALLOWANCE, [D(600_000), D(2_900_000)], D("10.00"), id="allowance"),
        # 1000 + 1000 = 2000 → two packages (exact multiples are unaffected by the bug)
        pytest.param(PACKAGE, [D(1000), D(1000)], D("10.00"), id="package-exact"),
        pytest.param(
            PACKAGE,
            [D(400), D(700), D(1)],
            D("10.00"),  # 1101 → 2 packages
            id="package-partial",
        ),
    ],
)
def test_slices_sum_to_the_whole(component: Component, cuts: list[Decimal], total: Decimal) -> None:
    """Σ F(after) − F(before) over slices == F(total), and equals the hand figure."""
    assert sum(sliced(component, cuts), D(0)) == cumulative(component, sum(cuts, D(0)))
    assert cumulative(component, sum(cuts, D(0))) == total


# --- Properties ---------------------------------------------------------------------------

prices = st.integers(min_value=0, max_value=100_000).map(lambda cents: D(cents).scaleb(-4))
quantities = st.integers(min_value=0, max_value=5_000_000).map(D)


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(
        draw(st.sets(st.integers(min_value=1, max_value=3_000_000), min_size=0, max_size=4))
    )
    ups: list[int | None] = [*bounds, None]
    return tuple(Tier(up_to=up_to, unit_price=draw(prices), flat_fee=draw(prices)) for up_to in ups)


per_units_values = st.sampled_from([1, 1000, 1_000_000])


def graduated(tiers: tuple[Tier, ...], per_units: int) -> Component:
    return Component(
        name="g", meter="m", charge=ChargeModel.GRADUATED, tiers=tiers, per_units=per_units
    )


def volume(tiers: tuple[Tier, ...], per_units: int) -> Component:
    return Component(
        name="v", meter="m", charge=ChargeModel.VOLUME, tiers=tiers, per_units=per_units
    )


@given(tier_lists(), per_units_values, quantities, quantities)
def test_graduated_is_monotone(
    tiers: tuple[Tier, ...], per_units: int, low: Decimal, extra: Decimal
) -> None:
    component = graduated(tiers, per_units)
    assert cumulative(component, low + extra) >= cumulative(component, low)


@given(tier_lists(), per_units_values, quantities, st.lists(quantities, min_size=1, max_size=5))
def test_volume_is_linear_at_a_fixed_tier(
    tiers: tuple[Tier, ...], per_units: int, period: Decimal, parts: list[Decimal]
) -> None:
    """With the period total (hence the tier) fixed, the usage charge is quantity × rate:
    additive over parts, and the tier's flat fee is added once, on the last slice only
    (and not at all when nothing was used)."""
    component = volume(tiers, per_units)
    tier = charges.volume_tier(component, period)

    def amount(quantity: Decimal, last: bool) -> Decimal:
        return usage_charge(
            component,
            before=D(0),
            quantity=quantity,
            period_quantity=period,
            cost=D(0),
            last_slice=last,
        ).amount

    whole = sum(parts, D(0))
    assert sum((amount(p, False) for p in parts), D(0)) == amount(whole, False)
    assert amount(whole, False) == whole * tier.unit_price / per_units
    flat = tier.flat_fee if period > 0 else D(0)
    assert amount(whole, True) == amount(whole, False) + flat


cumulative_components = st.one_of(
    st.builds(
        lambda price, per_units: Component(
            name="u", meter="m", charge=ChargeModel.PER_UNIT, unit_price=price, per_units=per_units
        ),
        prices,
        per_units_values,
    ),
    st.builds(graduated, tier_lists(), per_units_values),
    st.builds(
        lambda size, price: Component(
            name="p", meter="m", charge=ChargeModel.PACKAGE, package_size=size, unit_price=price
        ),
        st.integers(min_value=1, max_value=10_000),
        prices,
    ),
    st.builds(
        lambda included, price, per_units: Component(
            name="a",
            meter="m",
            charge=ChargeModel.ALLOWANCE,
            included_quantity=D(included),
            unit_price=price,
            per_units=per_units,
        ),
        st.integers(min_value=0, max_value=5_000_000),
        prices,
        per_units_values,
    ),
)


@given(cumulative_components, st.lists(quantities, min_size=1, max_size=6))
def test_slicing_invariance(component: Component, cuts: list[Decimal]) -> None:
    """However a period is cut into slices, the slices' charges add up to F(total)."""
    assert sum(sliced(component, cuts), D(0)) == cumulative(component, sum(cuts, D(0)))
