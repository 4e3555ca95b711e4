"""The one clock: the current time, and any time read as UTC.

AgentMeter keeps every time aware and in UTC. A naive time (no offset) is read as UTC,
never as the machine's local time.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC time; a naive one is taken to be in UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
