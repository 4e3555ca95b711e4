"""Budget bodies: a spend limit per billing period with alert thresholds in percent."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from agentmeter.money import format_minor, to_minor
from billing_api.budgets.service import BudgetStatus
from billing_api.credits.schemas import exact_minor
from billing_api.pricing.schemas import Currency, Price

DEFAULT_THRESHOLDS = (50, 80, 100)
Threshold = Annotated[StrictInt, Field(ge=1, le=1000)]


class BudgetSet(BaseModel):
    """The customer's spend limit for each billing period, in the customer's billing
    currency. A webhook `budget.threshold_crossed` fires once per threshold and period
    when charges (before credits) reach that percent of the limit."""

    model_config = ConfigDict(extra="forbid")

    limit: Price = Field(examples=["500.00"])
    currency: Currency
    thresholds: list[Threshold] = Field(
        default_factory=lambda: list(DEFAULT_THRESHOLDS), max_length=20, examples=[[50, 80, 100]]
    )

    @field_validator("thresholds")
    @classmethod
    def _ascending(cls, thresholds: list[int]) -> list[int]:
        if any(a >= b for a, b in pairwise(thresholds)):
            raise ValueError("thresholds must be ascending and unique, e.g. [50, 80, 100]")
        return thresholds

    @model_validator(mode="after")
    def _exact_limit(self) -> BudgetSet:
        exact_minor(self.limit, self.currency, "limit")
        return self

    @property
    def limit_minor(self) -> int:
        return to_minor(self.limit, self.currency)


class BudgetStatusOut(BaseModel):
    """The budget against the current period's charges so far (before credits)."""

    customer_id: str
    currency: str
    limit: str
    limit_minor: int
    spent: str
    spent_minor: int
    remaining: str
    remaining_minor: int
    period_start: datetime
    period_end: datetime
    within_limit: bool
    percent_used: str
    thresholds: list[int]
    thresholds_crossed: list[int]

    @classmethod
    def of(cls, status: BudgetStatus) -> BudgetStatusOut:
        """The budget service's status, money as decimal strings and minor units."""
        currency = status.currency
        return cls(
            customer_id=status.customer_id,
            currency=currency,
            limit=format_minor(status.limit_minor, currency),
            limit_minor=status.limit_minor,
            spent=format_minor(status.spent_minor, currency),
            spent_minor=status.spent_minor,
            remaining=format_minor(status.remaining_minor, currency),
            remaining_minor=status.remaining_minor,
            period_start=status.period.start,
            period_end=status.period.end,
            within_limit=status.within_limit,
            percent_used=str(status.percent_used),
            thresholds=status.thresholds,
            thresholds_crossed=status.crossed,
        )
