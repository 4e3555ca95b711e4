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
from itertools import chain
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, Table, bindparam, select, update

from agentmeter.db import dialect_insert, driver_placeholder, in_chunks
from agentmeter.tables import SPAN_METERS, UsageDimensions, usage_spans
from agentmeter.tables import AgentSpan as AgentSpanRow
from agentmeter.usage_keys import (
    UsageKeys,
    response_hex,
    span_hex,
    span_int,
    trace_bytes,
    trace_hex,
)
from otel_processor.usage import SOURCE_LLM, AgentSpan, UsageRecord

_DIMENSIONS: Table = UsageDimensions.__table__  # type: ignore[assignment]
_AGENTS: Table = AgentSpanRow.__table__  # type: ignore[assignment]
_Key = TypeVar("_Key", str, tuple[str, str])
# How far up a trace agent names are looked for: deeper nesting than any agent framework.
_MAX_DEPTH = 64


class CallRecord(NamedTuple):
    """What the rules need of one stored LLM record (a named tuple: settlement builds one
    per record of every batch)."""

    trace_id: str
    span_id: str
    meter: str
    provider: str
    parent_span_id: str
    response_id: str
    superseded_by: str

    @property
    def key(self) -> tuple[str, str, str]:
        """(trace id, span id, meter): the record's identity, but for its end time."""
        return self[:3]


def lock_calls(
    connection: Connection,
    tenant_id: str,
    records: Sequence[UsageRecord],
    agent_spans: Sequence[AgentSpan],
) -> None:
    """PostgreSQL: serialise this transaction with every other that writes the same traces
    or response ids. Call first in the transaction; a no-op on SQLite (one writer)."""
    # Generators: on SQLite `_advisory_locks` takes no lock and so builds no key.
    keys = chain(
        (f"t:{r.trace_id}" for r in records),
        (f"t:{s.trace_id}" for s in agent_spans),
        (f"r:{r.response_id}" for r in records if r.response_id),
    )
    _advisory_locks(connection, tenant_id, keys)


# Locks taken one after the other in key order: the subquery is sorted before the
# function runs on its rows (OFFSET 0 keeps the planner from flattening it). PostgreSQL
# only: the keys go as one binary array (`agentmeter.db.driver_placeholder`).
_LOCK_SQL = (
    "SELECT pg_advisory_xact_lock(k) FROM "
    "(SELECT unnest(CAST(%b AS bigint[])) AS k ORDER BY 1 OFFSET 0) AS sorted_keys"
)


def _advisory_locks(connection: Connection, tenant_id: str, keys: Iterable[str]) -> None:
    """Transaction-scoped locks on `keys`, in a fixed order; none on SQLite (one writer)."""
    if connection.dialect.name != "postgresql":
        return
    ids = sorted(
        {
            int.from_bytes(
                hashlib.blake2b(f"{tenant_id}/{key}".encode(), digest_size=8).digest(),
                "big",
                signed=True,
            )
            for key in set(keys)  # a trace's records repeat its key: hash it once
        }
    )
    if ids:
        connection.exec_driver_sql(_LOCK_SQL, (ids,))


def settle_calls(
    connection: Connection,
    keys: UsageKeys,
    tenant_id: str,
    records: Sequence[UsageRecord],
    *,
    all_new: bool,
) -> None:
    """Recompute which stored LLM records bill their call (rules 1 and 2), for every record
    that the newly written `records` can affect, and store the outcome.

    `all_new`: the write inserted every span of `records` (none was stored before). Then
    the batch's LLM records are what the store holds of their spans (a span's LLM records
    are its row's token meters), and are taken from memory rather than read back; only
    their stored relatives are read: the records of their parent spans, those of spans
    sharing a response id, and the children of each span. Only records whose
    `superseded_by` changes are updated. Raw driver SQL with tuples throughout:
    SQLAlchemy's per-row work cost more than the queries."""
    llm = [r for r in records if r.source == SOURCE_LLM]
    if not llm:
        return
    store = _Store(connection, keys.tenant(tenant_id))
    spans = {(r.trace_id, r.span_id) for r in llm}
    # Copies stored before: the stored ones count. (The batch's own are made `CallRecord`s
    # only if the rules run: most batches take the early return below.)
    ours: list[UsageRecord] | list[CallRecord] = llm if all_new else store.by_spans(spans)
    parents = store.by_spans(
        {(r.trace_id, r.parent_span_id) for r in ours if r.parent_span_id} - spans
    )
    known = [*ours, *parents]
    responses = {r.response_id for r in known if r.response_id}
    new_responses = responses - {r.response_id for r in records}
    if new_responses:
        _advisory_locks(connection, tenant_id, (f"r:{rid}" for rid in new_responses))
    # Other spans share a response id when the store holds more spans of it than those
    # known so far (the batch's own, their parents; a copy of a span with another end time
    # is one more, and is then read: the stored ones count).
    held = Counter(rid for rid, _, _ in {(r.response_id, *r[:2]) for r in known if r.response_id})
    shared = [rid for rid, count in store.count_responses(responses) if count > held[rid]]
    relatives = store.by_responses(shared)
    children = store.children({(r.trace_id, r.span_id) for r in (*known, *relatives)})
    if all_new and not parents and not relatives and not children and _one_span_a_call(known):
        return  # the batch's records alone, no two spans of one call: each bills, as stored
    affected, mixed = _by_key([*map(_as_call, known), *relatives])
    decided = supersessions(affected.values(), children)
    changes = sorted(
        key
        for key, record in affected.items()
        if decided[key] != record.superseded_by or key in mixed
    )
    store.supersede([(key, decided[key]) for key in changes])


def _as_call(record: UsageRecord | CallRecord) -> CallRecord:
    """A record of the batch as the rules take it (not superseded: it is new)."""
    if isinstance(record, CallRecord):
        return record
    return CallRecord(*record[:3], record.provider, record.parent_span_id, record.response_id, "")


def _one_span_a_call(records: Iterable[UsageRecord | CallRecord]) -> bool:
    """No two spans among `records` have a record of the same call (provider, response id)
    and meter: rule 2 supersedes none of them."""
    calls = {(r.provider, r.response_id, r.meter, *r[:2]) for r in records if r.response_id}
    return len({call[:3] for call in calls}) == len(calls)


def _by_key(
    records: Iterable[CallRecord],
) -> tuple[dict[tuple[str, str, str], CallRecord], set[tuple[str, str, str]]]:
    """The records by key, and the keys whose copies (other end times) disagree on
    `superseded_by`: those are updated whatever the outcome."""
    by_key: dict[tuple[str, str, str], CallRecord] = {}
    mixed: set[tuple[str, str, str]] = set()
    for record in records:
        first = by_key.setdefault(record.key, record)
        if first.superseded_by != record.superseded_by:
            mixed.add(record.key)
    return by_key, mixed


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
    for record in records:
        key = record[:3]
        decided[key] = child = children.get(key, "") if children else ""
        if not child and record.response_id:
            call = (record.provider, record.response_id, record.meter)
            calls.setdefault(call, []).append(record)
    duplicated = [duplicates for duplicates in calls.values() if len(duplicates) > 1]
    # Token meters per span, to prefer the fuller one (counted only when there are duplicates)
    meters = Counter(r[:2] for r in records) if duplicated else Counter()
    for duplicates in duplicated:
        winner = min(
            duplicates, key=lambda r: (-meters[r.trace_id, r.span_id], r.trace_id, r.span_id)
        )
        for record in duplicates:
            if record is not winner:
                decided[record.key] = winner.span_id
    return decided


class _Store:
    """The queries of settlement on `usage_spans`, as raw driver SQL (as the sink's insert).

    A span row holds its LLM records: one per token meter it has. Pairs of ids are a list
    joined to the spans, the list first: on SQLite a VALUES list, on PostgreSQL two arrays
    (two parameters, not two per pair)."""

    def __init__(self, connection: Connection, tenant_key: int) -> None:
        self._connection = connection
        self._tenant_key = tenant_key
        self._sqlite = connection.dialect.name == "sqlite"
        self._p = driver_placeholder(connection)

    def _records(self, rows: Iterable[Any]) -> Iterator[CallRecord]:
        """The LLM records of span rows selected as `_SPAN`."""
        for trace, span, provider, parent, response, *meters in rows:
            for index, meter in enumerate(SPAN_METERS):
                if meters[2 * index] is not None:
                    yield CallRecord(
                        trace_hex(trace),
                        span_hex(span),
                        meter,
                        provider,
                        span_hex(parent),
                        response_hex(response),
                        span_hex(meters[2 * index + 1]),
                    )

    def _joined(
        self, select_sql: str, column: str, spans: Collection[tuple[str, str]]
    ) -> Iterator[Any]:
        """The rows of `SELECT select_sql` over the tenant's spans (`s`, with their
        dimensions `d`) whose trace id and `column` are one of `spans`."""
        p = self._p
        for chunk in in_chunks(sorted(spans)):
            traces = [trace_bytes(trace) for trace, _ in chunk]
            ids = [span_int(span) for _, span in chunk]
            if self._sqlite:
                pairs = f"VALUES {', '.join(['(?, ?)'] * len(chunk))}"
                values: list[Any] = [v for pair in zip(traces, ids, strict=True) for v in pair]
            else:
                pairs = f"SELECT * FROM unnest(CAST({p} AS bytea[]), CAST({p} AS bigint[]))"
                values = [traces, ids]
            sql = (
                f"WITH k(t, s) AS ({pairs}) SELECT {select_sql} FROM k CROSS JOIN usage_spans AS s "
                "JOIN usage_dimensions AS d ON d.id = s.dimension_id "
                f"WHERE s.tenant_key = {p} AND s.trace_id = k.t AND s.{column} = k.s "
                # (implied, but said: the parent-span index is partial, on spans with one)
                f"AND s.{column} IS NOT NULL"
            )
            yield from self._connection.exec_driver_sql(sql, (*values, self._tenant_key))

    def by_spans(self, spans: Collection[tuple[str, str]]) -> list[CallRecord]:
        """The stored LLM records of these spans."""
        return list(self._records(self._joined(_SPAN, "span_id", spans)))

    def _of_responses(
        self, select_sql: str, responses: Collection[str], tail: str = ""
    ) -> Iterator[Any]:
        """The rows of `SELECT select_sql` over the tenant's spans (`s`, with their
        dimensions `d`) of these response ids (keys, in hex)."""
        for chunk in in_chunks(sorted(responses)):
            values: tuple[Any, ...]
            keys = [bytes.fromhex(key) for key in chunk]
            if self._sqlite:
                listed, values = f"IN ({', '.join(['?'] * len(chunk))})", tuple(keys)
            else:
                listed, values = f"= ANY(CAST({self._p} AS bytea[]))", (keys,)
            sql = (
                f"SELECT {select_sql} FROM usage_spans AS s "
                "JOIN usage_dimensions AS d ON d.id = s.dimension_id "
                f"WHERE s.tenant_key = {self._p} AND s.response_key {listed} "
                f"AND s.response_key IS NOT NULL {tail}"  # (implied; the index is partial)
            )
            yield from self._connection.exec_driver_sql(sql, (self._tenant_key, *values))

    def by_responses(self, responses: Collection[str]) -> list[CallRecord]:
        """The stored LLM records of these response ids."""
        return list(self._records(self._of_responses(_SPAN, responses)))

    def count_responses(self, responses: Collection[str]) -> list[tuple[str, int]]:
        """(response id, how many spans of it are stored), of these response ids."""
        rows = self._of_responses("s.response_key, count(*)", responses, "GROUP BY 1")
        return [(response_hex(key), count) for key, count in rows]

    def children(self, spans: Collection[tuple[str, str]]) -> dict[tuple[str, str, str], str]:
        """(trace id, parent span id, meter) → the smallest child span id with an LLM
        record of that meter, for these parent spans."""
        rows = (
            self._in_traces(spans) if self._sqlite else self._joined(_SPAN, "parent_span_id", spans)
        )
        smallest: dict[tuple[str, str, str], str] = {}
        for record in self._records(rows):
            if (record.trace_id, record.parent_span_id) not in spans:
                continue  # (SQLite: a child of a span of another of the traces)
            key = (record.trace_id, record.parent_span_id, record.meter)
            if key not in smallest or record.span_id < smallest[key]:
                smallest[key] = record.span_id
        return smallest

    def _in_traces(self, spans: Collection[tuple[str, str]]) -> Iterator[Any]:
        """SQLite: the rows (as `_SPAN`) of spans in these traces whose parent is one of
        these span ids (traces and ids crossed: `children` keeps the pairs asked for).
        SQLite finds a trace's spans through the identity's (tenant, trace) prefix and
        reads each row to see its parent (no parent-span index there, `agentmeter.tables`):
        so each trace is read once, not once per span of it asked for (a 512-span export
        of 8-span traces: 4,096 row reads before, 512 now)."""
        for chunk in in_chunks(sorted(spans)):
            traces = {trace_bytes(trace) for trace, _ in chunk}
            parents = {span_int(span) for _, span in chunk}
            sql = (
                f"SELECT {_SPAN} FROM usage_spans AS s "
                "JOIN usage_dimensions AS d ON d.id = s.dimension_id "
                f"WHERE s.tenant_key = ? AND s.trace_id IN ({', '.join('?' * len(traces))}) "
                f"AND s.parent_span_id IN ({', '.join('?' * len(parents))})"
            )
            yield from self._connection.exec_driver_sql(sql, (self._tenant_key, *traces, *parents))

    def supersede(self, outcomes: Sequence[tuple[tuple[str, str, str], str]]) -> None:
        """Store each record's `superseded_by` ("" for none), in every copy of its span."""
        p = self._p
        by_meter: dict[str, list[tuple[Any, ...]]] = {}
        for (trace, span, meter), superseded_by in outcomes:
            by_meter.setdefault(meter, []).append(
                (span_int(superseded_by), self._tenant_key, trace_bytes(trace), span_int(span))
            )
        for meter, rows in sorted(by_meter.items()):
            self._connection.exec_driver_sql(
                f"UPDATE usage_spans SET {meter}_superseded_by = {p} "
                f"WHERE tenant_key = {p} AND trace_id = {p} AND span_id = {p}",
                rows,
            )


# The columns `_Store._records` reads of a span row `s` and its dimensions `d`.
_SPAN = "s.trace_id, s.span_id, d.provider, s.parent_span_id, s.response_key, " + ", ".join(
    f"s.{m}, s.{m}_superseded_by" for m in SPAN_METERS
)


def store_agent_spans(connection: Connection, tenant_key: int, spans: Sequence[AgentSpan]) -> None:
    """Record agent spans (the first copy of a span wins; retries are no-ops)."""
    if not spans:
        return
    connection.execute(
        dialect_insert(connection, _AGENTS).on_conflict_do_nothing(
            index_elements=["tenant_key", "trace_id", "span_id"]
        ),
        [
            {
                "tenant_key": tenant_key,
                "trace_id": trace_bytes(span.trace_id),
                "span_id": span_int(span.span_id),
                "parent_span_id": span_int(span.parent_span_id),
                "agent_name": span.agent_name,
            }
            for span in sorted(set(spans), key=lambda s: (s.trace_id, s.span_id))
        ],
    )


def inherit_agent_names(
    connection: Connection,
    keys: UsageKeys,
    tenant_id: str,
    records: Sequence[UsageRecord],
    agent_spans: Sequence[AgentSpan],
) -> None:
    """Give nameless spans of the affected traces their nearest enclosing agent's name (a
    span's dimensions with that name, `agentmeter.usage_keys`).

    Per batch, not per trace: one look for the traces' nameless spans; for the traces that
    have some, one read of their agent spans, one of their usage spans (span, parent, name:
    the whole tree a name can come down), one update of the spans."""
    traces = {s.trace_id for s in agent_spans} | {r.trace_id for r in records if not r.agent_name}
    if not traces:
        return
    tenant_key = keys.tenant(tenant_id)
    traces = _with_nameless_spans(connection, tenant_key, traces)
    if not traces:
        return
    # trace → span id → (parent span id, agent name); agent spans first, so they win.
    links: dict[str, dict[str, tuple[str, str]]] = {}
    # (trace, span) → the dimension ids of its nameless copies
    nameless: dict[tuple[str, str], set[int]] = {}
    for chunk in in_chunks(sorted(traces)):
        query = select(
            _AGENTS.c.trace_id, _AGENTS.c.span_id, _AGENTS.c.parent_span_id, _AGENTS.c.agent_name
        ).where(
            _AGENTS.c.tenant_key == tenant_key,
            _AGENTS.c.trace_id.in_([trace_bytes(t) for t in chunk]),
        )
        for trace, span, parent, name in connection.execute(query):
            links.setdefault(trace_hex(trace), {})[span_hex(span)] = (span_hex(parent), name)
    for chunk in in_chunks(sorted(traces)):
        query = (
            select(
                usage_spans.c.trace_id,
                usage_spans.c.span_id,
                usage_spans.c.parent_span_id,
                usage_spans.c.dimension_id,
                _DIMENSIONS.c.agent_name,
            )
            .join(_DIMENSIONS, _DIMENSIONS.c.id == usage_spans.c.dimension_id)
            .where(
                usage_spans.c.tenant_key == tenant_key,
                usage_spans.c.trace_id.in_([trace_bytes(t) for t in chunk]),
            )
            # Named copies first: a span's name is that of a copy that has one.
            .order_by(_DIMENSIONS.c.agent_name.desc())
        )
        for row in connection.execute(query):
            trace, span = trace_hex(row.trace_id), span_hex(row.span_id)
            parent, dimension_id, name = row.parent_span_id, row.dimension_id, row.agent_name
            links.setdefault(trace, {}).setdefault(span, (span_hex(parent), name))
            if not name:
                nameless.setdefault((trace, span), set()).add(dimension_id)
    names = {
        (trace, span): name
        for trace, span in sorted(nameless)
        if (name := _nearest_agent(span, links[trace]))
    }
    if not names:
        return
    stored = keys.dimensions_by_id(i for span in names for i in nameless[span])
    renamed = {
        (span, i): stored[i]._replace(agent_name=name)
        for span, name in names.items()
        for i in nameless[span]
    }
    new_ids = keys.dimensions_of(renamed.values())
    connection.execute(
        update(usage_spans)
        .where(
            usage_spans.c.tenant_key == tenant_key,
            usage_spans.c.trace_id == bindparam("b_trace"),
            usage_spans.c.span_id == bindparam("b_span"),
            usage_spans.c.dimension_id == bindparam("b_old"),
        )
        .values(dimension_id=bindparam("b_new")),
        [
            {
                "b_trace": trace_bytes(trace),
                "b_span": span_int(span),
                "b_old": old,
                "b_new": new_ids[dimensions],
            }
            for ((trace, span), old), dimensions in sorted(renamed.items())
        ],
    )


def _with_nameless_spans(connection: Connection, tenant_key: int, traces: set[str]) -> set[str]:
    """Those of `traces` with a usage span without an agent name (most batches' traces
    have none: their spans named their agent)."""
    found: set[str] = set()
    for chunk in in_chunks(sorted(traces)):
        query = (
            select(usage_spans.c.trace_id)
            .join(_DIMENSIONS, _DIMENSIONS.c.id == usage_spans.c.dimension_id)
            .where(
                usage_spans.c.tenant_key == tenant_key,
                usage_spans.c.trace_id.in_([trace_bytes(t) for t in chunk]),
                _DIMENSIONS.c.agent_name == "",
            )
            .distinct()
        )
        found.update(trace_hex(trace) for trace in connection.execute(query).scalars())
    return found


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
