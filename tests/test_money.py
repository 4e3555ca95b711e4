"""The money helper: entered amounts are taken exactly or refused, never rounded."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agentmeter.money import InexactAmountError, exact_minor, to_minor


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("10.50", "USD", 1050),
        ("10.500", "USD", 1050),  # trailing zeros are not extra precision
        ("-2.25", "USD", -225),  # an adjustment may be negative
        ("0", "USD", 0),
        ("1500", "JPY", 1500),
        ("1500.0", "JPY", 1500),
        ("1.234", "KWD", 1234),
        ("1E+3", "USD", 100000),
    ],
)
def test_exact_amounts_convert(amount: str, currency: str, minor: int) -> None:
    assert exact_minor(Decimal(amount), currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency", "allowed"),
    [
        ("10.005", "USD", "at most 2 decimal places"),  # to_minor would give 1001
        ("-0.001", "USD", "at most 2 decimal places"),
        ("1.5", "JPY", "whole units"),
        ("1.2345", "KWD", "at most 3 decimal places"),
    ],
)
def test_finer_than_the_minor_unit_is_refused(amount: str, currency: str, allowed: str) -> None:
    with pytest.raises(InexactAmountError) as raised:
        exact_minor(Decimal(amount), currency, "limit")
    assert str(raised.value) == (
        f"limit {amount} is finer than the {currency} minor unit: {currency} amounts have {allowed}"
    )


def test_computed_amounts_still_round_half_up() -> None:
    assert to_minor(Decimal("10.005"), "USD") == 1001
