"""Bytes per LLM span in the usage store, on SQLite and PostgreSQL.

    scripts/test.sh --exec python bench/storage.py [--spans 30000] [--batch 500]
        [--backend both|sqlite|postgresql]

Writes `--spans` LLM spans, each with input, cache-read and output tokens (three usage
records), through the real `exporter.sql_sink.SqlUsageSink` in batches of `--batch`, as a
receiver would: random 128-bit trace ids (eight spans a trace, under one agent span),
random span ids, a parent span id, an OpenAI-style response id, 1,000 customers, four
models, three steps, an agent name and a service name. It prints, per table of the usage
store (spans, their other meters, the customer, dimension and tenant keys, trace customers,
agent spans), its bytes with every index (SQLite: the `dbstat` pages of the table and its
indexes; PostgreSQL: `pg_total_relation_size` of the table, or of each monthly partition),
divided by the number of spans: first as written (SQLite: after a WAL checkpoint), then
after compaction (SQLite: VACUUM; PostgreSQL: VACUUM FULL ANALYZE).

Goal (issue 13): ≤ 200 bytes per LLM span on each backend (table + indexes), compacted.
As written is what a month takes on disk until it is compacted: B-tree pages split by
random ids are partly empty, and updated rows (settlement, attribution) leave dead
versions on PostgreSQL. Nothing is timed.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, text  # noqa: E402

from agentmeter.db import make_engine, migrate  # noqa: E402
from agentmeter.settings import Settings  # noqa: E402
from bench.dataset import MODELS, STEPS, fresh_postgres  # noqa: E402
from bench.figures import report  # noqa: E402
from exporter.sql_sink import SqlUsageSink  # noqa: E402
from otel_processor.usage import AgentSpan, UsageBatch, UsageRecord  # noqa: E402

GOAL = 200
TENANT = "5f0e3c2a9b6d4e8fa1c7d2b3e4f50617"  # 32 characters, like a real tenant id
TABLES = (
    "usage_spans",
    "usage_meters",
    "usage_customers",
    "usage_dimensions",
    "usage_tenants",
    "trace_customers",
    "agent_spans",
)
SPANS_PER_TRACE = 8
START_NS = 1_793_491_200_000_000_000  # 2026-11-01T00:00:00Z


def batches(spans: int, batch: int, seed: int = 1) -> list[UsageBatch]:
    """The spans to store, `batch` spans an export; each trace's spans in one export."""
    rng = random.Random(seed)
    out: list[UsageBatch] = []
    records: list[UsageRecord] = []
    agents: list[AgentSpan] = []
    customers: dict[str, str] = {}
    for n in range(spans):
        if n % SPANS_PER_TRACE == 0:
            trace, agent = f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}"
            customer = f"cust-{rng.randrange(1000):05d}"
            agents.append(AgentSpan(trace, agent, "", "support"))
            customers[trace] = customer
        provider, model = MODELS[rng.randrange(len(MODELS))]
        span = f"{rng.getrandbits(64):016x}"
        response = f"chatcmpl-{rng.getrandbits(140):035x}"[:38]
        tokens = rng.randrange(500, 20_000)
        call = UsageRecord(
            trace_id=trace,
            span_id=span,
            meter="",
            quantity=0,
            customer_id=customer,
            time_unix_nano=START_NS + n * 50_000_000,
            provider=provider,
            model=model,
            operation="chat",
            agent_name="support",
            step=STEPS[rng.randrange(len(STEPS))],
            service_name="support-agent",
            parent_span_id=agent,
            response_id=response,
        )
        for meter, quantity in (
            ("input_tokens", tokens),
            ("cache_read_tokens", tokens // 4),
            ("output_tokens", rng.randrange(50, 2_000)),
        ):
            records.append(call._replace(meter=meter, quantity=quantity))
        if (n + 1) % batch == 0 or n + 1 == spans:
            out.append(UsageBatch(records, dict(customers), agents))
            records, agents, customers = [], [], {}
    return out


def table_bytes(engine: Engine, *, compact: bool) -> dict[str, int]:
    """Bytes of each usage-store table with its indexes, as written or after compaction."""
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        assert path
        engine.dispose()  # the store's own pool must not hold the file during VACUUM
        return _sqlite_bytes(path, compact=compact)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in TABLES if compact else ():
            connection.exec_driver_sql(f"VACUUM FULL ANALYZE {table}")
        return {
            table: connection.execute(
                # A partitioned table's bytes are its partitions' (pg_partition_tree lists
                # the table itself too; nothing for a plain table).
                text(
                    "SELECT pg_total_relation_size(CAST(:table AS regclass)) + coalesce(("
                    "SELECT sum(pg_total_relation_size(relid)) FROM "
                    "pg_partition_tree(CAST(:table AS regclass)) WHERE level > 0), 0)"
                ),
                {"table": table},
            ).scalar_one()
            for table in TABLES
        }


def _sqlite_bytes(path: str, *, compact: bool) -> dict[str, int]:
    database = sqlite3.connect(path, isolation_level=None)
    try:
        database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if compact:
            database.execute("VACUUM")
        return {
            table: database.execute(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN "
                "(SELECT name FROM sqlite_master WHERE tbl_name = ?)",
                (table,),
            ).fetchone()[0]
            for table in TABLES
        }
    finally:
        database.close()


def run(label: str, url: str, spans: int, batch: int) -> None:
    engine = make_engine(Settings(database_url=url))
    migrate(engine)
    sink = SqlUsageSink(engine)
    for export in batches(spans, batch):
        sink.write(TENANT, export)
    print(f"{label}: {spans:,} LLM spans ({spans * 3:,} usage records)")
    written = table_bytes(engine, compact=False)
    print(f"{label}: as written")
    print_sizes(f"{label}: storage per LLM span as written", written, spans, goal=None)
    compacted = table_bytes(engine, compact=True)
    engine.dispose()
    print(f"{label}: compacted")
    print_sizes(f"{label}: storage per LLM span", compacted, spans, goal=GOAL)


def print_sizes(figure: str, sizes: dict[str, int], spans: int, goal: float | None) -> None:
    """Print each relation's bytes and bytes per span, then the total (against `goal`, if
    any), and report the total per span as `figure`."""
    width = max(len("total"), *(len(name) for name in sizes))
    for name, size in sizes.items():
        print(f"  {name:{width}} {size:>12,} bytes  {size / spans:7.1f} bytes/span")
    total = sum(sizes.values())
    verdict = "" if goal is None else " (meets goal)" if total / spans <= goal else " (misses goal)"
    print(f"  {'total':{width}} {total:>12,} bytes  {total / spans:7.1f} bytes/span{verdict}")
    report(figure, total / spans, "bytes", goal=goal, higher_is_better=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    args = parser.parse_args()
    print(f"goal: <= {GOAL} bytes per LLM span (input, cache read, output), table + indexes")
    if args.backend in ("both", "postgresql"):
        base = os.environ.get("AGENTMETER_TEST_POSTGRES_URL")
        if base:
            run("postgresql", fresh_postgres(base), args.spans, args.batch)
        else:
            print("postgresql: skipped (set AGENTMETER_TEST_POSTGRES_URL; see scripts/test.sh)")
    if args.backend in ("both", "sqlite"):
        with tempfile.TemporaryDirectory() as directory:
            run("sqlite", f"sqlite:///{directory}/bench.db", args.spans, args.batch)


if __name__ == "__main__":
    main()
