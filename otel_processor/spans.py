"""Span → usage: the pure mapping at the core of AgentMeter.

Reads raw quantities from a span's attributes under every convention in
`otel_processor.conventions` and returns canonical `UsageRecord`s. No I/O, no pricing.
A span whose usage attributes are invalid is rejected whole (`SpanRejectedError`), so a
partial span is never billed.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import NamedTuple

from otel_processor import conventions as conv
from otel_processor.usage import (
    CACHE_READ_TOKENS,
    CACHE_WRITE_TOKENS,
    CANONICAL_METERS,
    INPUT_TOKENS,
    MAX_QUANTITY,
    MAX_TIME_UNIX_NANO,
    METER_NAME_PATTERN,
    OUTPUT_REASONING_TOKENS,
    OUTPUT_TOKENS,
    QUANTITY_PLACES,
    SOURCE_CUSTOM,
    SOURCE_LLM,
    SOURCE_TOOL,
    TOKEN_METERS,
    TOOL_CALLS,
    AgentSpan,
    Quantity,
    UsageRecord,
    is_meter_name,
    source_of,
)

Attributes = Mapping[str, object]

MAX_DIMENSION_LENGTH = 256
_LEADING_ID = re.compile(r'\s*\{\s*"id"\s*:\s*"([^"\\]{1,256})"')
_QUANTUM = Decimal(1).scaleb(-QUANTITY_PLACES)
_TOKEN_FIELDS = (
    (INPUT_TOKENS, conv.INPUT_TOKENS),
    (CACHE_READ_TOKENS, conv.CACHE_READ_TOKENS),
    (CACHE_WRITE_TOKENS, conv.CACHE_WRITE_TOKENS),
    (OUTPUT_TOKENS, conv.OUTPUT_TOKENS),
    (OUTPUT_REASONING_TOKENS, conv.REASONING_TOKENS),
)
_TOKEN_METERS = tuple(meter for meter, _ in _TOKEN_FIELDS)
_PROVIDER, _MODEL, _OPERATION = "provider", "model", "operation"
_AGENT_NAME, _TOOL, _RESPONSE_ID = "agent_name", "tool", "response_id"
# Each field read by precedence among its keys (first match wins), by name.
_FIELD_KEYS: dict[str, Sequence[str]] = {
    _PROVIDER: conv.PROVIDER,
    _MODEL: conv.MODEL,
    _OPERATION: conv.OPERATION,
    _AGENT_NAME: conv.AGENT_NAME,
    _TOOL: conv.TOOL_NAME,
    _RESPONSE_ID: conv.RESPONSE_ID,
    **dict(_TOKEN_FIELDS),
}
# How many distinct sets of attribute keys keep their reading plan (`_plan`): spans of one
# instrumentation share one set, so a few hundred cover every framework a tenant runs.
_PLAN_CACHE_SIZE = 1024
# Distinct (attribute key, string value) pairs whose checked text is kept.
_TEXT_CACHE_SIZE = 16_384
_KIND_KEYS = frozenset({conv.OPENINFERENCE_KIND, conv.OPENLLMETRY_KIND, conv.VERCEL_OPERATION})
_TOOL_OPERATIONS = (conv.TOOL_OPERATION, f"ai.{conv.VERCEL_TOOL_CALL}")


class RejectReason(StrEnum):
    """Why a span (or usage record) was refused; a label of the rejection metric."""

    INVALID_ID = "invalid_id"
    MISSING_TIME = "missing_time"
    INVALID_TIME = "invalid_time"
    INVALID_QUANTITY = "invalid_quantity"
    INCONSISTENT_TOKENS = "inconsistent_tokens"
    INVALID_METER = "invalid_meter"
    INVALID_DIMENSION = "invalid_dimension"
    UNREADABLE = "unreadable"  # undecodable, or failed in a way no rule foresaw


class SpanRejectedError(ValueError):
    """The span's usage cannot be trusted; none of it is stored. The message says why."""

    def __init__(self, message: str, reason: RejectReason) -> None:
        super().__init__(message)
        self.reason = reason


class SpanUsage(NamedTuple):
    """What one span contributes: its usage records and the customer it names, if any.

    A named tuple, as `UsageRecord`: one is built for every span ingested."""

    records: list[UsageRecord]
    customer_id: str
    # An agent, workflow or chain span (its token counts repeat its children's): the
    # store keeps it as a link of the trace, with the agent it names ("" for none).
    aggregate: bool = False
    agent_name: str = ""


def span_usage(
    *,
    trace_id: bytes,
    span_id: bytes,
    name: str,
    end_time_unix_nano: int,
    attributes: Attributes,
    resource_attributes: Attributes,
    customer_keys: Sequence[str] = conv.DEFAULT_CUSTOMER_KEYS,
    parent_span_id: bytes = b"",
) -> SpanUsage:
    """Map one span to its usage records.

    Token meters come only from leaf inference/embedding spans: agent, workflow and wrapper
    spans repeat their children's totals and contribute none. `execute_tool` spans count
    one `tool_calls`; `agentmeter.usage.<name>` attributes become custom meters on any span.
    Token records carry the parent span id and the provider's response id, with which the
    store bills each provider call once (`exporter.sql_sink`).
    """
    if len(trace_id) != 16 or not any(trace_id):
        raise SpanRejectedError(
            f"trace id must be 16 non-zero bytes, got {len(trace_id)}", RejectReason.INVALID_ID
        )
    if len(span_id) != 8 or not any(span_id):
        raise SpanRejectedError(
            f"span id must be 8 non-zero bytes, got {len(span_id)}", RejectReason.INVALID_ID
        )
    if end_time_unix_nano <= 0:
        raise SpanRejectedError("span has no end time", RejectReason.MISSING_TIME)
    if end_time_unix_nano > MAX_TIME_UNIX_NANO:
        raise SpanRejectedError(
            f"span end time {end_time_unix_nano} is past year 2262", RejectReason.INVALID_TIME
        )

    customer_id = _customer(attributes, resource_attributes, customer_keys)
    fields, custom, has_kind = _plan(tuple(attributes))
    operation = _first_text(attributes, fields[_OPERATION])
    agent_name = _first_text(attributes, fields[_AGENT_NAME])
    tool = _first_text(attributes, fields[_TOOL])
    # A step from the span name is a label, not data: cut it rather than refuse the span.
    step = _text(conv.STEP, attributes.get(conv.STEP)) or agent_name or _label(name)
    provider = _first_text(attributes, fields[_PROVIDER])
    model = _first_text(attributes, fields[_MODEL])
    service_name = _text(conv.SERVICE_NAME, resource_attributes.get(conv.SERVICE_NAME))

    trace_hex = trace_id.hex()
    span_hex = span_id.hex()
    dims = (provider, model, operation, agent_name, step, tool, service_name)
    # Positional construction of the named tuple: this loop runs for every span ingested.
    records: list[UsageRecord] = []
    aggregate = _is_aggregate(operation, attributes, has_kind)
    parent_hex = parent_span_id.hex() if any(parent_span_id) else ""
    if not aggregate:
        call = (parent_hex, _response_id(attributes, fields, has_kind))
        for meter, count in _token_counts(attributes, fields).items():
            records.append(
                UsageRecord(
                    trace_hex,
                    span_hex,
                    meter,
                    count,
                    customer_id,
                    end_time_unix_nano,
                    *dims,
                    SOURCE_LLM,
                    *call,
                )
            )
    if _is_tool_call(operation, attributes, has_kind):
        records.append(
            UsageRecord(
                trace_hex,
                span_hex,
                TOOL_CALLS,
                1,
                customer_id,
                end_time_unix_nano,
                *dims,
                SOURCE_TOOL,
                parent_hex,
            )
        )
    for key in custom:
        value = attributes[key]
        if value is None:
            continue
        meter = _custom_meter_name(key, key.removeprefix(conv.CUSTOM_METER_PREFIX))
        quantity = parse_quantity(key, value)
        records.append(
            UsageRecord(
                trace_hex,
                span_hex,
                meter,
                quantity,
                customer_id,
                end_time_unix_nano,
                *dims,
                SOURCE_CUSTOM,
                parent_hex,
            )
        )
    return SpanUsage(
        records=records,
        customer_id=customer_id,
        aggregate=aggregate,
        agent_name=_agent_span_name(name, agent_name, attributes) if aggregate else "",
    )


class _Plan(NamedTuple):
    """Where a span with a given set of attribute keys is read from: for each field, the
    keys it has among the field's, by precedence (first match wins); and the custom meters'
    keys (`agentmeter.usage.*`), in attribute order."""

    fields: dict[str, tuple[str, ...]]
    custom: tuple[str, ...]
    # Some span-kind attribute is there (OpenInference, OpenLLMetry, Vercel AI SDK).
    has_kind: bool


@functools.lru_cache(maxsize=_PLAN_CACHE_SIZE)
def _plan(keys: tuple[str, ...]) -> _Plan:
    """The reading plan of a span whose attribute keys are `keys`: worked out once per set
    of keys, not once per span (an instrumentation sends the same keys on every span)."""
    present = frozenset(keys)
    return _Plan(
        {
            name: tuple(k for k in candidates if k in present)
            for name, candidates in _FIELD_KEYS.items()
        },
        tuple(k for k in keys if k.startswith(conv.CUSTOM_METER_PREFIX)),
        not present.isdisjoint(_KIND_KEYS),
    )


def _response_id(attributes: Attributes, fields: dict[str, tuple[str, ...]], has_kind: bool) -> str:
    """The provider's response id: an attribute, or for an OpenInference LLM span the `id`
    that leads the JSON response in `output.value` (as its SDK serializes it)."""
    found = _first_text(attributes, fields[_RESPONSE_ID])
    if (
        found
        or not has_kind
        or _kind(attributes, conv.OPENINFERENCE_KIND) != conv.OPENINFERENCE_LLM_KIND
    ):
        return found
    output = attributes.get(conv.OPENINFERENCE_OUTPUT)
    if attributes.get(conv.OPENINFERENCE_OUTPUT_TYPE) != "application/json" or not isinstance(
        output, str
    ):
        return ""
    leading = _LEADING_ID.match(output)
    return leading.group(1) if leading else ""


def _agent_span_name(name: str, agent_name: str, attributes: Attributes) -> str:
    """The agent an agent span stands for: its agent-name attribute, or, for OpenInference
    `AGENT` spans (which name the agent only in the span name), the span name."""
    if agent_name:
        return agent_name
    if _kind(attributes, conv.OPENINFERENCE_KIND) == conv.OPENINFERENCE_AGENT_KIND:
        return name[:MAX_DIMENSION_LENGTH].strip()
    return ""


def _kind(attributes: Attributes, key: str) -> str:
    """A span-kind attribute as text. Any other type is refused: guessing whether the span
    is an aggregate could bill its totals twice."""
    value = attributes.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SpanRejectedError(
            f"{key} must be a string, got {type(value).__name__}", RejectReason.INVALID_DIMENSION
        )
    return value


def _is_aggregate(operation: str, attributes: Attributes, has_kind: bool) -> bool:
    if operation in conv.AGGREGATE_OPERATIONS:
        return True
    if not has_kind:
        return False
    if _kind(attributes, conv.OPENINFERENCE_KIND) in conv.AGGREGATE_OPENINFERENCE_KINDS:
        return True
    if _kind(attributes, conv.OPENLLMETRY_KIND) in conv.AGGREGATE_OPENLLMETRY_KINDS:
        return True
    # Vercel AI SDK: `ai.generateText` wraps `ai.generateText.doGenerate` (the real call).
    vercel_operation = _kind(attributes, conv.VERCEL_OPERATION)
    if vercel_operation.startswith("ai."):
        parts = vercel_operation.split(".")
        return len(parts) == 2 and parts[1] != conv.VERCEL_TOOL_CALL
    return False


def _is_tool_call(operation: str, attributes: Attributes, has_kind: bool) -> bool:
    return operation in _TOOL_OPERATIONS or (
        has_kind
        and (
            _kind(attributes, conv.OPENINFERENCE_KIND) == conv.TOOL_OPENINFERENCE_KIND
            or _kind(attributes, conv.OPENLLMETRY_KIND) == conv.TOOL_OPENLLMETRY_KIND
        )
    )


def _token_counts(attributes: Attributes, fields: dict[str, tuple[str, ...]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for meter in _TOKEN_METERS:
        for key in fields[meter]:
            # The first key present wins, whatever its value.
            value = attributes[key]
            if value is not None:
                counts[meter] = _token_count(key, value)
                break
    cached = counts.get(CACHE_READ_TOKENS, 0) + counts.get(CACHE_WRITE_TOKENS, 0)
    if cached and cached > counts.get(INPUT_TOKENS, 0):
        raise SpanRejectedError(
            f"cache read + write tokens ({cached}) exceed input tokens "
            f"({counts.get(INPUT_TOKENS, 0)}); input tokens must include cached ones",
            RejectReason.INCONSISTENT_TOKENS,
        )
    reasoning = counts.get(OUTPUT_REASONING_TOKENS, 0)
    if reasoning and reasoning > counts.get(OUTPUT_TOKENS, 0):
        raise SpanRejectedError(
            f"reasoning tokens ({reasoning}) exceed output tokens "
            f"({counts.get(OUTPUT_TOKENS, 0)}); output tokens must include reasoning",
            RejectReason.INCONSISTENT_TOKENS,
        )
    return counts


def _token_count(key: str, value: object) -> int:
    quantity = parse_quantity(key, value, exact=True)
    if not isinstance(quantity, int):
        raise SpanRejectedError(
            f"{key} must be a whole number of tokens, got {value!r}", RejectReason.INVALID_QUANTITY
        )
    return quantity


def _custom_meter_name(key: str, meter: str) -> str:
    if not is_meter_name(meter):
        raise SpanRejectedError(
            f"{key}: meter name must match {METER_NAME_PATTERN}", RejectReason.INVALID_METER
        )
    if meter in CANONICAL_METERS:
        raise SpanRejectedError(
            f"{key}: {meter} is a canonical meter, not a custom one", RejectReason.INVALID_METER
        )
    return meter


def parse_quantity(key: str, value: object, *, exact: bool = False) -> Quantity:
    """An exact, bounded, non-negative quantity: int when whole, else a Decimal.

    Past `QUANTITY_PLACES` decimal places the value is rounded, or with `exact` refused.
    """
    if type(value) is int and 0 <= value <= MAX_QUANTITY:
        return value  # what OTel SDKs send, on every span: taken as it is, no checks below
    if isinstance(value, bool):
        raise SpanRejectedError(
            f"{key} must be a number, got a boolean", RejectReason.INVALID_QUANTITY
        )
    if isinstance(value, int):
        quantity: Quantity = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise SpanRejectedError(
                f"{key} must be a finite number, got {value!r}", RejectReason.INVALID_QUANTITY
            )
        # repr gives the shortest decimal that round-trips: 12.5, not 12.4999…
        quantity = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            quantity = Decimal(value.strip())
        except InvalidOperation:
            raise SpanRejectedError(
                f"{key} must be a number, got {value!r}", RejectReason.INVALID_QUANTITY
            ) from None
        if not quantity.is_finite():
            raise SpanRejectedError(
                f"{key} must be a finite number, got {value!r}", RejectReason.INVALID_QUANTITY
            )
    else:
        raise SpanRejectedError(
            f"{key} must be a number, got {type(value).__name__}", RejectReason.INVALID_QUANTITY
        )
    if quantity < 0:
        raise SpanRejectedError(
            f"{key} must not be negative, got {value!r}", RejectReason.INVALID_QUANTITY
        )
    if quantity > MAX_QUANTITY:
        raise SpanRejectedError(
            f"{key} is absurdly large ({value!r} > {MAX_QUANTITY})", RejectReason.INVALID_QUANTITY
        )
    if isinstance(quantity, Decimal):
        if exact and quantity != quantity.quantize(_QUANTUM):
            # "1.0000001" tokens are not 1: refuse rather than round a count.
            raise SpanRejectedError(
                f"{key} has more than {QUANTITY_PLACES} decimal places, got {value!r}",
                RejectReason.INVALID_QUANTITY,
            )
        quantity = quantity.quantize(_QUANTUM)
        if quantity == quantity.to_integral_value():
            return int(quantity)
        return quantity.normalize()
    return quantity


def _customer(attributes: Attributes, resource_attributes: Attributes, keys: Sequence[str]) -> str:
    for source in (attributes, resource_attributes):
        for key in keys:
            value = source.get(key)
            if value is not None and (customer_id := _text(key, value)):
                return customer_id
    return ""


def _first_text(attributes: Attributes, keys: tuple[str, ...]) -> str:
    """The first non-empty value among `keys` (by precedence; OTLP reads an unset value
    as "")."""
    for key in keys:
        if text := _text(key, attributes[key]):
            return text
    return ""


def _text(key: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return _stripped_text(key, value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise SpanRejectedError(
        f"{key} must be a string, got {type(value).__name__}", RejectReason.INVALID_DIMENSION
    )


@functools.lru_cache(maxsize=_TEXT_CACHE_SIZE)
def _stripped_text(key: str, value: str) -> str:
    """A string attribute as stored: stripped and checked once per distinct value (spans
    repeat the same models, agents, steps and customers; a refusal is not cached)."""
    return _bounded(key, value.strip())


def _bounded(key: str, text: str) -> str:
    if len(text) > MAX_DIMENSION_LENGTH:
        raise SpanRejectedError(
            f"{key} is longer than {MAX_DIMENSION_LENGTH} characters",
            RejectReason.INVALID_DIMENSION,
        )
    if _UNSTORABLE.search(text):
        raise SpanRejectedError(
            f"{key} holds a NUL or an unpaired surrogate character",
            RejectReason.INVALID_DIMENSION,
        )
    return text


# PostgreSQL text cannot hold NUL; neither database can encode a lone surrogate as UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _label(name: str) -> str:
    """A span name as a step label: cut to length, without characters no store holds."""
    return _UNSTORABLE.sub("", name[:MAX_DIMENSION_LENGTH])


_TRACE_HEX = re.compile(r"[0-9a-f]{32}")
_SPAN_HEX = re.compile(r"[0-9a-f]{16}")
_DIMENSIONS = (
    "customer_id",
    "provider",
    "model",
    "operation",
    "agent_name",
    "step",
    "tool",
    "service_name",
)


def checked_record(record: UsageRecord) -> UsageRecord:
    """Validate a usage record that arrived ready-made (AgentMeter's own UsageService).

    The same rules as for spans: hex ids, a known or well-formed meter, an exact bounded
    quantity, bounded dimensions. Returns the record with its quantity normalized.
    """
    _check_trace_id(record.trace_id)
    _check_span_id("span_id", record.span_id)
    if record.time_unix_nano <= 0:
        raise SpanRejectedError("record has no time", RejectReason.MISSING_TIME)
    if record.time_unix_nano > MAX_TIME_UNIX_NANO:
        raise SpanRejectedError(
            f"record time {record.time_unix_nano} is past year 2262", RejectReason.INVALID_TIME
        )
    if record.meter not in CANONICAL_METERS:
        _custom_meter_name("meter", record.meter)
    if record.parent_span_id:
        _check_span_id("parent_span_id", record.parent_span_id)
    _bounded("response_id", record.response_id)
    if record.source != source_of(record.meter):
        raise SpanRejectedError(
            f"source of meter {record.meter} must be {source_of(record.meter)}",
            RejectReason.INVALID_DIMENSION,
        )
    for name in _DIMENSIONS:
        _bounded(name, getattr(record, name))
    quantity = parse_quantity("quantity", str(record.quantity))
    if record.meter in TOKEN_METERS:
        _token_count("quantity", quantity)  # whole tokens, as spans carry them
    return record if quantity == record.quantity else record._replace(quantity=quantity)


def span_consistent(records: Sequence[UsageRecord]) -> Iterator[UsageRecord | SpanRejectedError]:
    """Ready-made records, each kept or refused: the records of one span (trace, span, end
    time) must agree on what the store keeps once per span (its customer, dimensions and
    parent span; its LLM records, on the response id), as the records extracted from one
    span do. The first record of a span (the first LLM record, for the response id) sets
    what the others must match."""
    spans: dict[tuple[str, str, int], UsageRecord] = {}
    calls: dict[tuple[str, str, int], str] = {}
    for record in records:
        key = (record.trace_id, record.span_id, record.time_unix_nano)
        first = spans.setdefault(key, record)
        response = calls.setdefault(key, record.response_id) if record.source == SOURCE_LLM else ""
        differing = [
            name
            for name in (*_DIMENSIONS, "parent_span_id")
            if getattr(record, name) != getattr(first, name)
        ] + (["response_id"] if record.response_id != response else [])
        if differing:
            yield SpanRejectedError(
                f"{', '.join(differing)} differ from the span's first record",
                RejectReason.INVALID_DIMENSION,
            )
        else:
            yield record


def checked_trace_customer(trace_id: str, customer_id: str) -> None:
    """Validate a (trace id, customer id) pair that arrived ready-made."""
    _check_trace_id(trace_id)
    _bounded("customer_id", customer_id)


def checked_agent_span(span: AgentSpan) -> None:
    """Validate an agent (or workflow, or chain) span that arrived ready-made."""
    _check_trace_id(span.trace_id)
    _check_span_id("span_id", span.span_id)
    if span.parent_span_id:
        _check_span_id("parent_span_id", span.parent_span_id)
    _bounded("agent_name", span.agent_name)


def _check_span_id(name: str, span_id: str) -> None:
    if not _SPAN_HEX.fullmatch(span_id) or not int(span_id, 16):
        raise SpanRejectedError(f"{name} must be 16 lowercase hex digits", RejectReason.INVALID_ID)


def _check_trace_id(trace_id: str) -> None:
    if not _TRACE_HEX.fullmatch(trace_id) or not int(trace_id, 16):
        raise SpanRejectedError("trace_id must be 32 lowercase hex digits", RejectReason.INVALID_ID)
