"""`is_meter_name`: the one rule for meter names, whole-name match, column-sized."""

from __future__ import annotations

import pytest

from otel_processor.usage import CANONICAL_METERS, MAX_METER_NAME_LENGTH, is_meter_name


@pytest.mark.parametrize(
    "name",
    [*CANONICAL_METERS, "web_searches", "sandbox.seconds", "a", "a" * MAX_METER_NAME_LENGTH],
)
def test_well_formed_names(name: str) -> None:
    assert is_meter_name(name)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("web-searches", id="hyphen"),
        pytest.param("web searches", id="space"),
        pytest.param("web_searches\n", id="trailing-newline"),
        pytest.param("Web_searches", id="upper-case"),
        pytest.param("1st_meter", id="leading-digit"),
        pytest.param("", id="empty"),
        pytest.param("a" * (MAX_METER_NAME_LENGTH + 1), id="longer-than-the-column"),
    ],
)
def test_malformed_names(name: str) -> None:
    assert not is_meter_name(name)
