"""Span → usage: conventions, attribution, the OTLP receiver, and the agent-side SDK pieces.

No pricing and no Stripe here; usage goes to any `UsageSink`.
"""

from otel_processor.customer import CustomerSpanProcessor, customer, step
from otel_processor.usage import (
    InMemoryUsageSink,
    StoreUnavailableError,
    UsageBatch,
    UsageRecord,
    UsageSink,
    WriteResult,
)

__all__ = [
    "CustomerSpanProcessor",
    "InMemoryUsageSink",
    "StoreUnavailableError",
    "UsageBatch",
    "UsageRecord",
    "UsageSink",
    "WriteResult",
    "customer",
    "step",
]
