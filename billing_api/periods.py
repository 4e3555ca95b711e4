"""Billing periods: monthly, anchored on a customer's billing day, half-open, in UTC.

A customer with billing day d (1-28) has periods [d of month M 00:00 UTC, d of month M+1
00:00 UTC). Day 1 gives calendar months. The period "2026-11" is the one that starts in
November 2026. Usage at exactly the end instant belongs to the next period.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
MAX_BILLING_DAY = 28


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


def check_billing_day(billing_day: int) -> int:
    if not 1 <= billing_day <= MAX_BILLING_DAY:
        raise ValueError(f"billing day must be 1 to {MAX_BILLING_DAY}, got {billing_day}")
    return billing_day


def month_period(label: str, billing_day: int = 1) -> Period:
    """The period that starts in month `label` ("YYYY-MM") on `billing_day`."""
    match = _MONTH.match(label)
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"period must look like 2026-11, got {label!r}")
    year, month = int(match.group(1)), int(match.group(2))
    check_billing_day(billing_day)
    return Period(_start(year, month, billing_day), _start(*_next_month(year, month), billing_day))


def period_containing(moment: datetime, billing_day: int = 1) -> Period:
    """The period in which `moment` falls."""
    moment = moment.astimezone(UTC)
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
