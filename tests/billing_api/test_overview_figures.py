"""The overview's margin percent and margin-floor flag, computed in integers for every
customer on each view, agree with Decimal arithmetic rounded half to even."""

from __future__ import annotations

import random
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from billing_api.dashboard.overview import below_floor, margin_percent


def _decimal_percent(revenue: int, margin: int) -> Decimal:
    exact = Decimal(margin * 100) / Decimal(revenue)
    return exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


@pytest.mark.parametrize(
    ("revenue", "margin", "percent"),
    [
        (2000, 1600, "80.00"),
        (3, 1, "33.33"),
        (3, 2, "66.67"),
        (80000, 1, "0.00"),  # 0.00125 %: down
        (16000, 1, "0.01"),  # 0.00625 %: up
        (40000, 1, "0.00"),  # 0.0025 %: half, to the even 0.00
        (40000, 3, "0.01"),  # 0.0075 %: up
        (8000, 1, "0.01"),  # 0.0125 %: half, to the even 0.01
        (40000, -3, "-0.01"),
        (-2000, 500, "-25.00"),
        (2000, -4000, "-200.00"),
    ],
)
def test_margin_percent_rounds_half_to_even(revenue: int, margin: int, percent: str) -> None:
    assert margin_percent(revenue, margin) == Decimal(percent)
    assert str(margin_percent(revenue, margin)) == percent


def test_margin_percent_agrees_with_decimal_arithmetic() -> None:
    chance = random.Random(13)
    for _ in range(20_000):
        revenue = chance.choice([-1, 1]) * chance.randint(1, 10**9)
        margin = chance.randint(-(10**9), 10**9)
        assert margin_percent(revenue, margin) == _decimal_percent(revenue, margin)


def test_unknown_or_nothing_charged_has_no_percent_and_no_flag() -> None:
    assert margin_percent(0, 0) is None
    assert margin_percent(100, None) is None
    assert not below_floor(0, 0, Decimal(30))
    assert not below_floor(100, None, Decimal(30))


def test_below_floor_compares_the_rounded_percent() -> None:
    assert below_floor(1000, 299, Decimal(30))  # 29.90 %
    assert not below_floor(1000, 300, Decimal(30))
    # 29.995 % rounds half to even to 30.00 %: not below a 30 % floor, as shown.
    assert not below_floor(200000, 59990, Decimal(30))
    assert below_floor(200000, 59989, Decimal("30"))
    assert not below_floor(1000, -5000, Decimal(0))  # no floor
    assert below_floor(1000, 299, Decimal("29.95"))
