"""Exception rules: what a reviewer must see before finalizing a draft (pure functions).

Each finding has a type, a severity (blocking findings prevent finalization until resolved
or waived), a fingerprint (the same finding on a re-run is the same exception, not a new
one), a message and its evidence (numbers and affected records).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from billing_api.invoicing.states import ExceptionKind, Severity
from billing_api.pricing.components import ChargeModel
from billing_api.rating.engine import RatedPeriod


@dataclass(frozen=True, slots=True)
class Finding:
    type: ExceptionKind
    severity: Severity
    fingerprint: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReviewRules:
    """A tenant's review settings."""

    spike_factor: Decimal = Decimal(3)
    margin_floor_percent: Decimal = Decimal(0)
    review_threshold_minor: int | None = None


def invoice_findings(
    rated: RatedPeriod,
    *,
    rules: ReviewRules,
    trailing_usage: Mapping[str, list[int]],
    period_usage: Mapping[str, int],
    total_minor: int,
    budget_limit_minor: int | None,
) -> list[Finding]:
    """Findings about one customer's draft.

    `trailing_usage` maps a meter to its quantities (micro-units) in each earlier period
    the customer was billed in (0 where it was not used); `period_usage` to this
    period's. A meter spikes above `spike_factor` × its average over those periods. A
    spike needs some history: a meter with no usage in the earlier periods is new, not
    spiking.
    """
    findings: list[Finding] = []
    for item in rated.unpriced:
        dims = ",".join(f"{k}={v}" for k, v in item.dims if v)
        findings.append(
            Finding(
                ExceptionKind.UNPRICED_USAGE,
                Severity.BLOCKING,
                f"{item.meter}|{dims}",
                f"{item.quantity} {item.meter} ({dims or 'no dimensions'}) match no price",
                {
                    "meter": item.meter,
                    "dimensions": dict(item.dims),
                    "quantity": str(item.quantity),
                },
            )
        )
    for line in rated.lines:
        if line.unknown_cost_records:
            # Cost-plus bills the cost itself: unknown cost there means a wrong amount.
            cost_plus = line.charge == ChargeModel.COST_PLUS
            findings.append(
                Finding(
                    ExceptionKind.UNKNOWN_PROVIDER_COST,
                    Severity.BLOCKING if cost_plus else Severity.WARNING,
                    line.component_id,
                    f"provider cost unknown for {line.unknown_cost_records} usage records "
                    f"priced by {line.component_name!r}: "
                    + ("the cost-plus amount is incomplete" if cost_plus else "margin unknown"),
                    {"component": line.component_name, "records": line.unknown_cost_records},
                )
            )
        margin = line.margin_minor
        if (
            margin is not None
            and line.meter is not None
            and _below_floor(margin, line.amount_minor, rules.margin_floor_percent)
        ):
            findings.append(
                Finding(
                    ExceptionKind.LOW_MARGIN,
                    Severity.WARNING,
                    f"line:{line.component_id}",
                    f"margin on {line.component_name!r} is {margin} minor units "
                    f"on {line.amount_minor}, below the floor of {rules.margin_floor_percent} %",
                    {
                        "component": line.component_name,
                        "amount_minor": line.amount_minor,
                        "provider_cost_minor": line.provider_cost_minor,
                        "margin_minor": margin,
                    },
                )
            )
    margin = rated.margin_minor
    if margin is not None and _below_floor(
        margin, rated.subtotal_minor, rules.margin_floor_percent
    ):
        findings.append(
            Finding(
                ExceptionKind.LOW_MARGIN,
                Severity.WARNING,
                "invoice",
                f"invoice margin {margin} on {rated.subtotal_minor} is below "
                f"the floor of {rules.margin_floor_percent} %",
                {"subtotal_minor": rated.subtotal_minor, "margin_minor": margin},
            )
        )
    for meter, quantity in sorted(period_usage.items()):
        history = trailing_usage.get(meter, [])
        average = Decimal(sum(history)) / len(history) if history else Decimal(0)
        if average > 0 and quantity > rules.spike_factor * average:
            findings.append(
                Finding(
                    ExceptionKind.USAGE_SPIKE,
                    Severity.WARNING,
                    meter,
                    f"{meter} is {Decimal(quantity) / average:.1f}× its average over the "
                    f"{len(history)} previous billed period{'s' if len(history) > 1 else ''}",
                    {
                        "meter": meter,
                        "quantity_micros": quantity,
                        "trailing_micros": history,
                        "factor": str(rules.spike_factor),
                    },
                )
            )
    if budget_limit_minor is not None and rated.subtotal_minor > budget_limit_minor:
        findings.append(
            Finding(
                ExceptionKind.BUDGET_EXCEEDED,
                Severity.WARNING,
                "budget",
                f"charges {rated.subtotal_minor} exceed the budget of {budget_limit_minor}",
                {"subtotal_minor": rated.subtotal_minor, "limit_minor": budget_limit_minor},
            )
        )
    if rules.review_threshold_minor is not None and total_minor > rules.review_threshold_minor:
        findings.append(
            Finding(
                ExceptionKind.TOTAL_ABOVE_REVIEW_THRESHOLD,
                Severity.BLOCKING,
                "total",
                f"total {total_minor} is above the review threshold {rules.review_threshold_minor}",
                {"total_minor": total_minor, "threshold_minor": rules.review_threshold_minor},
            )
        )
    return findings


def _below_floor(margin: int, amount: int, floor_percent: Decimal) -> bool:
    """margin / amount < floor %, without dividing (a zero amount with a loss is below)."""
    return Decimal(margin) * 100 < floor_percent * amount
