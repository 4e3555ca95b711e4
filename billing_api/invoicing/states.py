"""The states and kinds of invoicing, one definition each.

StrEnums: stored and answered as the same strings as before (`"draft"`, `"open"`, …), so
columns, JSON and templates compare them with plain strings too.
"""

from __future__ import annotations

from enum import StrEnum


class InvoiceStatus(StrEnum):
    """A draft is re-rated by runs and reviewed; finalized is numbered and frozen; void
    keeps its number and gives its credit back."""

    DRAFT = "draft"
    FINALIZED = "finalized"
    VOID = "void"


class RunStatus(StrEnum):
    """A billing run's status. `INTERRUPTED` is never stored: it is how a `RUNNING` run
    whose lease lapsed is observed (see `leases`)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    SUPERSEDED = "superseded"


class LineKind(StrEnum):
    """Where an invoice line comes from: rating, a reviewer (manual line or discount), or
    the adjustment of an earlier period's late usage."""

    RATED = "rated"
    MANUAL = "manual"
    DISCOUNT = "discount"
    PRIOR_PERIOD = "prior_period"


class LateUsagePolicy(StrEnum):
    """What a run does with usage of a finalized period that arrived after it."""

    ADJUST_NEXT = "adjust_next"
    EXCEPTION_ONLY = "exception_only"


class Severity(StrEnum):
    """Blocking exceptions prevent finalizing until resolved or waived."""

    BLOCKING = "blocking"
    WARNING = "warning"


class ExceptionStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    WAIVED = "waived"


class ExceptionKind(StrEnum):
    """What a billing exception is about (docs/billing.md, "Exceptions")."""

    UNPRICED_USAGE = "unpriced_usage"
    UNKNOWN_PROVIDER_COST = "unknown_provider_cost"
    USAGE_SPIKE = "usage_spike"
    LOW_MARGIN = "low_margin"
    BUDGET_EXCEEDED = "budget_exceeded"
    TOTAL_ABOVE_REVIEW_THRESHOLD = "total_above_review_threshold"
    LATE_USAGE = "late_usage"
    UNATTRIBUTED_USAGE = "unattributed_usage"
    UNREGISTERED_CUSTOMER = "unregistered_customer"
    ADJUSTMENT_OUTDATED = "adjustment_outdated"
    STRIPE_SYNC_FAILED = "stripe_sync_failed"
    STRIPE_TOTAL_MISMATCH = "stripe_total_mismatch"


# Who resolves an exception that no longer applies (as `resolved_by`).
SYSTEM_ACTOR = "system"
