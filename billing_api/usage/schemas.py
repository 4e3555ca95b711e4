"""Usage query parameters and answer."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from billing_api.periods import UtcMoment
from billing_api.pricing.components import FILTER_DIMENSIONS
from billing_api.usage.service import UsageAmount, UsageSelection

# Dimensions usage can be grouped by, besides customer_id and meter (always present).
GROUP_DIMENSIONS = (*FILTER_DIMENSIONS, "trace_id")


# Times without an offset are read as UTC.
UtcDatetime = UtcMoment


def _group_by(value: object) -> list[str]:
    """Comma-separated (`group_by=model,step`) or repeated (`group_by=model&group_by=step`)."""
    parts = value if isinstance(value, list) else [value]
    dims = [d.strip() for part in parts for d in str(part).split(",") if d.strip()]
    unknown = [d for d in dims if d not in (*GROUP_DIMENSIONS, "customer_id", "meter")]
    if unknown:
        raise ValueError(
            f"unknown dimension(s) {', '.join(unknown)}; use {', '.join(GROUP_DIMENSIONS)}"
        )
    return [d for d in dict.fromkeys(dims) if d not in ("customer_id", "meter")]


class UsageQuery(BaseModel):
    """`GET /api/v1/usage` filters: a half-open time range [start, end) in UTC."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str | None = None
    unattributed: bool = Field(default=False, description="only usage with no customer yet")
    meter: str | None = None
    start: UtcDatetime | None = None
    end: UtcDatetime | None = None
    group_by: Annotated[list[str], BeforeValidator(_group_by)] = Field(default_factory=list)
    interval: Literal["day"] | None = Field(
        default=None, description='"day": one row per UTC day too, with "day": "YYYY-MM-DD"'
    )

    @model_validator(mode="after")
    def _consistent(self) -> UsageQuery:
        if self.start and self.end and self.start >= self.end:
            raise ValueError("start must be before end")
        if self.unattributed and self.customer_id:
            raise ValueError("customer_id and unattributed=true exclude each other")
        return self

    def selection(self) -> UsageSelection:
        """The query as the usage service takes it."""
        return UsageSelection(
            customer_id=self.customer_id,
            unattributed=self.unattributed,
            meter=self.meter,
            start=self.start,
            end=self.end,
            group_by=tuple(self.group_by),
            by_day=self.interval == "day",
        )


def usage_row(amount: UsageAmount) -> dict[str, str]:
    """One row of a usage answer: `{"customer_id", "meter", <each group_by dim>, ["day",]
    "quantity": "<decimal>"}` (the portal's usage JSON and CSV use the same row)."""
    row = {"customer_id": amount.customer_id, "meter": amount.meter, **amount.dimensions}
    if amount.day is not None:
        row["day"] = amount.day.isoformat()
    row["quantity"] = str(amount.quantity)
    return row


class UsageAnswer(BaseModel):
    """Rows of `{"customer_id", "meter", <each group_by dim>, ["day",] "quantity": "<decimal>"}`."""

    rows: list[dict[str, str]]

    @classmethod
    def of(cls, amounts: list[UsageAmount]) -> UsageAnswer:
        """The answer of the usage service's totals."""
        return cls(rows=[usage_row(amount) for amount in amounts])
