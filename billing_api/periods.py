"""Billing periods: monthly, anchored on a customer's billing day, half-open, in UTC.

A customer with billing day d (1-28) has periods [d of month M 00:00 UTC, d of month M+1
00:00 UTC). Day 1 gives calendar months. The period "2026-11" is the one that starts in
November 2026. Usage at exactly the end instant belongs to the next period.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from agentmeter.clock import as_utc

_MONTH = re.compile(r"^([0-9]{4})-([0-9]{2})$")
MAX_BILLING_DAY = 28
# Usage times are int64 nanoseconds since 1970 (good to 2262); periods stay well inside, with
# room for the trailing history that spike checks read before a period.
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
FIRST_YEAR = 1971
LAST_YEAR = 2200


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open interval [start, end) in UTC."""

    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return f"{self.start.year:04d}-{self.start.month:02d}"


def _start(year: int, month: int, billing_day: int) -> datetime:
    return datetime(year, month, billing_day, tzinfo=UTC)


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _previous_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(LAST_YEAR + 1, 1, 1, tzinfo=UTC)


def check_moment(moment: datetime) -> datetime:
    """`moment` in UTC (naive read as UTC), if within the times AgentMeter stores: from
    1970 to the end of `LAST_YEAR`. Outside, `ValueError`."""
    aware = as_utc(moment)
    if not EARLIEST <= aware < LATEST:
        raise ValueError(f"must be from {EARLIEST:%Y-%m-%d} to before {LATEST:%Y-%m-%d} (UTC)")
    return aware


def _iso_text(value: object) -> object:
    """Times arrive as ISO 8601 text, as documented; a number (which pydantic would read
    as Unix seconds) is refused."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATE.match(value)):
        return value
    raise ValueError('expected an ISO 8601 time such as "2026-11-01T00:00:00Z"')


# A time in API input: ISO 8601 text, read as UTC when it has no offset, within the times
# AgentMeter stores.
UtcMoment = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(check_moment)]


def check_billing_day(billing_day: int) -> int:
    if not 1 <= billing_day <= MAX_BILLING_DAY:
        raise ValueError(f"billing day must be 1 to {MAX_BILLING_DAY}, got {billing_day}")
    return billing_day


def month_period(label: str, billing_day: int = 1) -> Period:
    """The period that starts in month `label` ("YYYY-MM") on `billing_day`."""
    match = _MONTH.fullmatch(label)
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"period must look like 2026-11, got {label!r}")
    year, month = int(match.group(1)), int(match.group(2))
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValueError(f"period year must be {FIRST_YEAR} to {LAST_YEAR}, got {label!r}")
    check_billing_day(billing_day)
    return Period(_start(year, month, billing_day), _start(*_next_month(year, month), billing_day))


def period_containing(moment: datetime, billing_day: int = 1) -> Period:
    """The period in which `moment` falls."""
    moment = as_utc(moment)
    year, month = moment.year, moment.month
    if moment < _start(year, month, check_billing_day(billing_day)):
        year, month = _previous_month(year, month)
    return month_period(f"{year:04d}-{month:02d}", billing_day)


def previous_periods(period: Period, count: int, billing_day: int = 1) -> list[Period]:
    """The `count` periods before `period`, most recent first."""
    periods = []
    current = period
    for _ in range(count):
        current = period_containing(current.start - timedelta(seconds=1), billing_day)
        periods.append(current)
    return periods


def _period_label(label: str) -> str:
    month_period(label)  # the year range, beyond what the pattern says
    return label


# A month as "YYYY-MM" (ASCII digits) in API input, within the years periods support.
PeriodLabel = Annotated[
    str,
    Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", examples=["2026-11"]),
    AfterValidator(_period_label),
]
