"""Each provider call billed once; usage attributed to its nearest enclosing agent.

Several spans may describe one provider call: the `anthropic` SDK's own span beside
OpenLLMetry's (siblings with the same `gen_ai.response.id`), or under OpenInference's or
pydantic-ai's LLM span (parent and child). Every record is stored; of a tenant's LLM token
records, one is *superseded* (`superseded_by` names the span whose record bills the call:
kept for audit, never rated, listed or invoiced) when

1. **aggregate**: a child span of the same trace has an LLM record of the same meter. The
   parent repeats (or sums) what its children report. `superseded_by` is the smallest
   such child span id. Meters the children do not report stay billed on the parent.
2. **duplicate**: otherwise, when another record that is not an aggregate has the same
   canonical provider, response id and meter and comes first: the record of the span
   reporting more token meters (the fuller instrumentation: the SDK's own span reports
   cache writes and reasoning where OpenLLMetry's omits them and over-counts a streamed
   answer's output by one), then the smaller (trace id, span id). `superseded_by` is
   that record's span id. A meter only one span reports is billed from that span.

Both rules are functions of the set of stored records, never of their arrival order: each
write recomputes them, inside the transaction that inserts its records, for every record
the write can affect (its spans and their parents; the records sharing a response id with
those). Writers that could affect the same records are serialised: SQLite has one writer;
on PostgreSQL each write takes transaction-scoped advisory locks on its traces and its
response ids (sorted, before anything else), then on the response ids of the parents it
found. Whichever write of a call commits last therefore sees all of its records, in any
order, through any receiver. A lock taken after a read can deadlock with another write;
PostgreSQL then aborts one, whose exporter retries (`StoreUnavailableError`).

Agent names follow the same discipline: a record without an agent name takes the name of
its nearest ancestor, among the trace's agent spans and its other usage spans, that has
one, recomputed whenever an agent span or a nameless record of the trace arrives.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection, Table, and_, bindparam, func, select, text, tuple_, update
from sqlalchemy.sql.elements import ColumnElement

from agentmeter.db import dialect_insert
from agentmeter.tables import AgentSpan as AgentSpanRow
from agentmeter.tables import UsageRow
from otel_processor.usage import SOURCE_LLM, AgentSpan, UsageRecord

_USAGE: Table = UsageRow.__table__  # type: ignore[assignment]
_AGENTS: Table = AgentSpanRow.__table__  # type: ignore[assignment]
_CHUNK = 500
_Key = TypeVar("_Key", str, tuple[str, str])
# How far up a trace agent names are looked for: deeper nesting than any agent framework.
_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What the rules need of one stored LLM record."""

    trace_id: str
    span_id: str
    meter: str
    provider: str
    parent_span_id: str
    response_id: str
    superseded_by: str

    @property
    def key(self) -> tuple[str, str, str]:
        return self.trace_id, self.span_id, self.meter


_RECORD_COLUMNS = (
    _USAGE.c.trace_id,
    _USAGE.c.span_id,
    _USAGE.c.meter,
    _USAGE.c.provider,
    _USAGE.c.parent_span_id,
    _USAGE.c.response_id,
    _USAGE.c.superseded_by,
)


def lock_calls(
    connection: Connection,
    tenant_id: str,
    records: Sequence[UsageRecord],
    agent_spans: Sequence[AgentSpan],
) -> None:
    """PostgreSQL: serialise this transaction with every other that writes the same traces
    or response ids. Call first in the transaction; a no-op on SQLite (one writer)."""
    if connection.dialect.name != "postgresql":
        return
    keys = {f"t:{r.trace_id}" for r in records} | {f"t:{s.trace_id}" for s in agent_spans}
    keys |= {f"r:{r.response_id}" for r in records if r.response_id}
    _advisory_locks(connection, tenant_id, keys)


# Locks taken one after the other in key order: the subquery is sorted before the
# function runs on its rows (OFFSET 0 keeps the planner from flattening it).
_LOCK_SQL = text(
    "SELECT pg_advisory_xact_lock(k) FROM "
    "(SELECT unnest(CAST(:keys AS bigint[])) AS k ORDER BY 1 OFFSET 0) AS sorted_keys"
)


def _advisory_locks(connection: Connection, tenant_id: str, keys: Iterable[str]) -> None:
    ids = sorted(
        {
            int.from_bytes(
                hashlib.blake2b(f"{tenant_id}/{key}".encode(), digest_size=8).digest(),
                "big",
                signed=True,
            )
            for key in keys
        }
    )
    if ids:
        connection.execute(_LOCK_SQL, {"keys": ids})


def settle_calls(connection: Connection, tenant_id: str, records: Sequence[UsageRecord]) -> None:
    """Recompute which stored LLM records bill their call (rules 1 and 2), for every record
    that the newly written `records` can affect, and store the outcome.

    A batch whose LLM records name neither a parent nor a response id can only be affected
    by children stored before it (rule 1): one query finds out, and settles nothing when
    there are none (the common case of a plain leaf call)."""
    llm = [r for r in records if r.source == SOURCE_LLM]
    own = {(r.trace_id, r.span_id) for r in llm}
    if not own:
        return
    linked = any(r.parent_span_id or r.response_id for r in llm)
    if not linked and not _children(connection, tenant_id, own):
        return
    spans = own | {(r.trace_id, r.parent_span_id) for r in llm if r.parent_span_id}
    affected = {r.key: r for r in _by_spans(connection, tenant_id, spans)}
    responses = {r.response_id for r in affected.values() if r.response_id}
    new_responses = responses - {r.response_id for r in records}
    if new_responses:
        _advisory_locks(connection, tenant_id, (f"r:{rid}" for rid in new_responses))
    for record in _by_responses(connection, tenant_id, responses):
        affected.setdefault(record.key, record)
    children = _children(
        connection, tenant_id, {(r.trace_id, r.span_id) for r in affected.values()}
    )
    decided = supersessions(affected.values(), children)
    changes = [
        {"b_trace": r.trace_id, "b_span": r.span_id, "b_meter": r.meter, "b_by": decided[r.key]}
        for r in affected.values()
        if decided[r.key] != r.superseded_by
    ]
    if changes:
        connection.execute(
            update(_USAGE)
            .where(
                _USAGE.c.tenant_id == tenant_id,
                _USAGE.c.trace_id == bindparam("b_trace"),
                _USAGE.c.span_id == bindparam("b_span"),
                _USAGE.c.meter == bindparam("b_meter"),
            )
            .values(superseded_by=bindparam("b_by")),
            sorted(changes, key=lambda c: (c["b_trace"], c["b_span"], c["b_meter"])),
        )


def supersessions(
    records: Iterable[CallRecord], children: dict[tuple[str, str, str], str]
) -> dict[tuple[str, str, str], str]:
    """The pure rule: each record's `superseded_by` ("" when it bills its call).

    `children` maps (trace id, parent span id, meter) to the smallest child span id with an
    LLM record of that meter. `records` hold every LLM record of each span they include.
    """
    decided: dict[tuple[str, str, str], str] = {}
    calls: dict[tuple[str, str, str], list[CallRecord]] = {}
    records = list(records)
    meters = Counter((r.trace_id, r.span_id) for r in records)
    for record in records:
        child = children.get((record.trace_id, record.span_id, record.meter), "")
        decided[record.key] = child
        if not child and record.response_id:
            call = (record.provider, record.response_id, record.meter)
            calls.setdefault(call, []).append(record)
    for duplicates in calls.values():
        winner = min(
            duplicates, key=lambda r: (-meters[r.trace_id, r.span_id], r.trace_id, r.span_id)
        )
        for record in duplicates:
            if record is not winner:
                decided[record.key] = winner.span_id
    return decided


def _llm(tenant_id: str) -> ColumnElement[bool]:
    return and_(_USAGE.c.tenant_id == tenant_id, _USAGE.c.source == SOURCE_LLM)


def _by_spans(
    connection: Connection, tenant_id: str, spans: Collection[tuple[str, str]]
) -> Iterator[CallRecord]:
    for chunk in _chunks(spans):
        query = select(*_RECORD_COLUMNS).where(
            _llm(tenant_id), tuple_(_USAGE.c.trace_id, _USAGE.c.span_id).in_(chunk)
        )
        for row in connection.execute(query):
            yield CallRecord(*row)


def _by_responses(
    connection: Connection, tenant_id: str, responses: Collection[str]
) -> Iterator[CallRecord]:
    for chunk in _chunks(responses):
        query = select(*_RECORD_COLUMNS).where(_llm(tenant_id), _USAGE.c.response_id.in_(chunk))
        for row in connection.execute(query):
            yield CallRecord(*row)


def _children(
    connection: Connection, tenant_id: str, spans: Collection[tuple[str, str]]
) -> dict[tuple[str, str, str], str]:
    found: dict[tuple[str, str, str], str] = {}
    for chunk in _chunks(spans):
        query = (
            select(_USAGE.c.trace_id, _USAGE.c.parent_span_id, _USAGE.c.meter)
            .add_columns(func.min(_USAGE.c.span_id))
            .where(_llm(tenant_id), tuple_(_USAGE.c.trace_id, _USAGE.c.parent_span_id).in_(chunk))
            .group_by(_USAGE.c.trace_id, _USAGE.c.parent_span_id, _USAGE.c.meter)
        )
        for trace, parent, meter, child in connection.execute(query):
            found[(trace, parent, meter)] = child
    return found


def _chunks(values: Collection[_Key]) -> Iterator[list[_Key]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


def store_agent_spans(connection: Connection, tenant_id: str, spans: Sequence[AgentSpan]) -> None:
    """Record agent spans (the first copy of a span wins; retries are no-ops)."""
    if not spans:
        return
    connection.execute(
        dialect_insert(connection, _AGENTS).on_conflict_do_nothing(
            index_elements=["tenant_id", "trace_id", "span_id"]
        ),
        [
            {"tenant_id": tenant_id, **span._asdict()}
            for span in sorted(set(spans), key=lambda s: (s.trace_id, s.span_id))
        ],
    )


def inherit_agent_names(
    connection: Connection,
    tenant_id: str,
    records: Sequence[UsageRecord],
    agent_spans: Sequence[AgentSpan],
) -> None:
    """Give nameless records of the affected traces their nearest enclosing agent's name.

    Per batch, not per trace: one read of the traces' agent spans, one of their usage spans
    (span, parent, name: the whole tree a name can come down), one update of the names."""
    traces = {s.trace_id for s in agent_spans} | {r.trace_id for r in records if not r.agent_name}
    if not traces:
        return
    # trace → span id → (parent span id, agent name); agent spans first, so they win.
    links: dict[str, dict[str, tuple[str, str]]] = {}
    nameless: set[tuple[str, str]] = set()
    for chunk in _chunks(traces):
        query = select(
            _AGENTS.c.trace_id, _AGENTS.c.span_id, _AGENTS.c.parent_span_id, _AGENTS.c.agent_name
        ).where(_AGENTS.c.tenant_id == tenant_id, _AGENTS.c.trace_id.in_(chunk))
        for trace, span, parent, name in connection.execute(query):
            links.setdefault(trace, {})[span] = (parent, name)
    for chunk in _chunks(traces):
        query = (
            select(
                _USAGE.c.trace_id,
                _USAGE.c.span_id,
                _USAGE.c.parent_span_id,
                func.max(_USAGE.c.agent_name),
                func.min(_USAGE.c.agent_name) == "",
            )
            .where(_USAGE.c.tenant_id == tenant_id, _USAGE.c.trace_id.in_(chunk))
            .group_by(_USAGE.c.trace_id, _USAGE.c.span_id, _USAGE.c.parent_span_id)
        )
        for row in connection.execute(query):
            trace, span, parent, name, has_nameless = tuple(row)
            links.setdefault(trace, {}).setdefault(span, (parent, name))
            if has_nameless:
                nameless.add((trace, span))
    names = [
        {"b_trace": trace, "b_span": span, "b_name": name}
        for trace, span in sorted(nameless)
        if (name := _nearest_agent(span, links[trace]))
    ]
    if names:
        connection.execute(
            update(_USAGE)
            .where(
                _USAGE.c.tenant_id == tenant_id,
                _USAGE.c.trace_id == bindparam("b_trace"),
                _USAGE.c.span_id == bindparam("b_span"),
                _USAGE.c.agent_name == "",
            )
            .values(agent_name=bindparam("b_name")),
            names,
        )


def _nearest_agent(span: str, links: dict[str, tuple[str, str]]) -> str:
    """The first agent name on the way up from `span`'s parent to the root."""
    parent = links.get(span, ("", ""))[0]
    for _ in range(_MAX_DEPTH):
        if not parent or parent not in links:
            return ""
        parent, name = links[parent]
        if name:
            return name
    return ""


__all__ = [
    "inherit_agent_names",
    "lock_calls",
    "settle_calls",
    "store_agent_spans",
    "supersessions",
]
