"""The usage record, the batch a receiver hands to storage, and the sink interface."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple, Protocol

# Canonical meters (names follow genai-prices' usage keys).
INPUT_TOKENS = "input_tokens"
CACHE_READ_TOKENS = "cache_read_tokens"
CACHE_WRITE_TOKENS = "cache_write_tokens"
OUTPUT_TOKENS = "output_tokens"
OUTPUT_REASONING_TOKENS = "output_reasoning_tokens"
TOOL_CALLS = "tool_calls"
TOKEN_METERS = (
    INPUT_TOKENS,
    CACHE_READ_TOKENS,
    CACHE_WRITE_TOKENS,
    OUTPUT_TOKENS,
    OUTPUT_REASONING_TOKENS,
)
CANONICAL_METERS = (*TOKEN_METERS, TOOL_CALLS)
# A meter's name, canonical or custom (`agentmeter.usage.<name>`): lower case, digits, `_`
# and `.`, at most MAX_METER_NAME_LENGTH characters (the store's meter columns).
MAX_METER_NAME_LENGTH = 128
METER_NAME_PATTERN = rf"[a-z][a-z0-9_.]{{0,{MAX_METER_NAME_LENGTH - 1}}}"
_METER_NAME = re.compile(METER_NAME_PATTERN)


def is_meter_name(name: str) -> bool:
    """True when `name` is a well-formed meter name (the whole of it; see
    `METER_NAME_PATTERN`). Canonical meters are well-formed too."""
    return _METER_NAME.fullmatch(name) is not None


SOURCE_LLM = "llm"
SOURCE_TOOL = "tool"
SOURCE_CUSTOM = "custom"


def source_of(meter: str) -> str:
    """A record's source follows from its meter: token meters are LLM usage, tool calls are
    tool usage, every other meter is custom (the store keeps the meter, not the source)."""
    if meter in TOKEN_METERS:
        return SOURCE_LLM
    return SOURCE_TOOL if meter == TOOL_CALLS else SOURCE_CUSTOM


# Quantities are exact: whole units as int, fractional ones as Decimal with at most
# QUANTITY_PLACES decimal places (stored as integer micro-units).
QUANTITY_PLACES = 6
MAX_QUANTITY = 10**9
# Times are stored as signed 64-bit integers: OTLP's fixed64 may carry more.
MAX_TIME_UNIX_NANO = 2**63 - 1

Quantity = int | Decimal
_MICROS: int = 10**QUANTITY_PLACES


def to_micros(quantity: int | Decimal) -> int:
    """A usage quantity as integer micro-units (exact: quantities carry ≤ 6 places)."""
    if isinstance(quantity, int):
        return quantity * _MICROS
    return int(quantity.scaleb(QUANTITY_PLACES))


def from_micros(micros: int) -> Decimal:
    """Integer micro-units back to an exact Decimal quantity, without exponent notation."""
    whole, fraction = divmod(micros, _MICROS)
    if not fraction:
        return Decimal(whole)
    return Decimal(micros).scaleb(-QUANTITY_PLACES).normalize()


class UsageRecord(NamedTuple):
    """One meter of one span, with every dimension billing and the dashboard group by.

    Identity (with the tenant) is (trace_id, span_id, meter): storing the same record
    twice is a no-op. An empty `customer_id` means not attributed (yet). A named tuple,
    not a dataclass: ingest builds hundreds of thousands a second, and a tuple is also
    what the database driver takes.
    """

    trace_id: str
    span_id: str
    meter: str
    quantity: Quantity
    customer_id: str
    time_unix_nano: int
    provider: str = ""
    model: str = ""
    operation: str = ""
    agent_name: str = ""
    step: str = ""
    tool: str = ""
    service_name: str = ""
    source: str = SOURCE_LLM
    # The span's parent and the provider's response id: how the store tells that two
    # spans describe one provider call (see `exporter.sql_sink`). Not dimensions.
    parent_span_id: str = ""
    response_id: str = ""


class AgentSpan(NamedTuple):
    """An agent, workflow or chain span: usage below it in its trace is the nearest named
    agent's. Kept even without a name (`agent_name` ""), as a link between its children
    and the agent spans above it."""

    trace_id: str
    span_id: str
    parent_span_id: str
    agent_name: str


@dataclass(frozen=True, slots=True)
class UsageBatch:
    """What one export delivers to storage.

    `trace_customers` maps a trace id to the customer that some span of the trace named,
    including spans that carry no usage themselves (an agent span naming the customer).
    Customer-less records of such a trace inherit the customer the store saw first.
    `agent_spans` are the agent, workflow and chain spans seen: records without an agent
    name take the name of the nearest enclosing agent, whichever arrives first.
    """

    records: Sequence[UsageRecord]
    trace_customers: Mapping[str, str] = field(default_factory=dict)
    agent_spans: Sequence[AgentSpan] = ()


@dataclass(frozen=True, slots=True)
class WriteResult:
    """How many records were new and how many the store already held."""

    inserted: int
    duplicates: int


class StoreUnavailableError(Exception):
    """The store cannot take writes now (down, locked, overloaded); the caller may retry."""


class UsageSink(Protocol):
    """Where extracted usage goes.

    `write` returns only once the batch is durable (committed); it raises
    `StoreUnavailableError` when the batch could not be made durable and may be retried.
    Writes are idempotent per record identity. Implementations are safe to call from
    several threads; `write` blocks the calling thread, so async callers run it in a
    worker thread.
    """

    def write(self, tenant_id: str, batch: UsageBatch) -> WriteResult:
        """Store `batch` for `tenant_id`, attribute by trace, skip duplicates, commit."""
        ...


class InMemoryUsageSink:
    """A `UsageSink` that keeps records in a dict, with the same dedup and customer rules.

    It stores records as extracted: agent-name inheritance and the once-per-provider-call
    rule (`exporter.sql_sink`) are the SQL store's.

    For tests and for agents that only want to see what they would be billed for.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str, str, str], UsageRecord] = {}
        self._trace_customers: dict[tuple[str, str], str] = {}

    def write(self, tenant_id: str, batch: UsageBatch) -> WriteResult:
        with self._lock:
            for trace_id, customer_id in batch.trace_customers.items():
                self._trace_customers.setdefault((tenant_id, trace_id), customer_id)
            inserted = duplicates = 0
            for record in batch.records:
                key = (tenant_id, record.trace_id, record.span_id, record.meter)
                if key in self._records:
                    duplicates += 1
                    continue
                self._records[key] = record
                inserted += 1
            for key, record in self._records.items():
                inherited = self._trace_customers.get((key[0], record.trace_id))
                if not record.customer_id and inherited:
                    self._records[key] = record._replace(customer_id=inherited)
            return WriteResult(inserted=inserted, duplicates=duplicates)

    def records(self, tenant_id: str) -> list[UsageRecord]:
        """Every record stored for `tenant_id`, in insertion order."""
        with self._lock:
            return [r for key, r in self._records.items() if key[0] == tenant_id]
