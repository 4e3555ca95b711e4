"""Spans per CPU-second of `SqlUsageSink.write` in this process, on SQLite and PostgreSQL.

    scripts/test.sh --exec .venv/bin/python bench/sink_write.py [--batches 40] [--backend both]

No transport and no OTLP parsing: the batches are built before anything is timed, as the
receiver's extraction hands them over (512 GenAI spans, 8 per trace, three or four token
meters each, provider costs from the catalog). Each trace has, under its agent span, the
shapes of tests/compat: the `anthropic` SDK's span and OpenLLMetry's sibling with one response
id (a duplicate pair), OpenInference's LLM span over an SDK span (parent and child), and four
plain SDK calls. Two layouts: every trace whole in one batch, and *split* (the OpenInference
parent, which ends last, arrives in the next batch: its child is then a stored relative).

For reference it also times the same writes with provider-call settlement replaced by a no-op
(`settle: off`, never a product path): the figure settlement is measured against. CPU is
`time.process_time()` of this process (the client work of the PostgreSQL driver included,
the server's not), so other load on the machine distorts less than wall time would.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from agentmeter.db import make_engine, migrate  # noqa: E402
from agentmeter.settings import Settings  # noqa: E402
from agentmeter.tables import UsageRow  # noqa: E402
from bench.dataset import fresh_postgres  # noqa: E402
from bench.figures import report  # noqa: E402
from exporter.provider_costs import ProviderCostCatalog  # noqa: E402
from exporter.sql_sink import SqlUsageSink  # noqa: E402
from otel_processor.usage import UsageBatch, UsageRecord  # noqa: E402

TENANT = "bench"
SPANS_PER_TRACE = 8
START = 1_795_000_000_000_000_000  # 2026-11-18
CALL = {"input_tokens": 1200, "cache_read_tokens": 800, "output_tokens": 90}
SDK_CALL = {**CALL, "cache_write_tokens": 300}  # the SDK's span reports cache writes too


def _trace(n: int, end: int) -> tuple[list[UsageRecord], list[UsageRecord]]:
    """The records of trace `n`: those of its first seven spans, and those of its
    OpenInference parent span (the last to end)."""
    trace = f"{n:032x}"
    agent = f"a{n:015x}"

    def span(
        k: int, meters: dict[str, int], parent: str, response: str, provider: str
    ) -> list[UsageRecord]:
        return [
            UsageRecord(
                trace,
                f"{n:012x}{k:04x}",
                meter,
                quantity,
                f"cust-{n % 97:03d}",
                end + k,
                provider,
                "claude-sonnet-4-5",
                "chat",
                "support",
                "answer",
                "",
                "bench",
                "llm",
                parent,
                response,
            )
            for meter, quantity in meters.items()
        ]

    first = [
        *span(1, SDK_CALL, agent, f"msg_{n}_1", "anthropic"),
        *span(2, CALL, agent, f"msg_{n}_1", "Anthropic"),  # OpenLLMetry's duplicate
        *span(4, CALL, f"{n:012x}{3:04x}", f"msg_{n}_4", "anthropic"),  # under span 3
        *(r for k in range(5, 9) for r in span(k, CALL, agent, f"msg_{n}_{k}", "anthropic")),
    ]
    parent = span(3, CALL, agent, "", "anthropic")  # OpenInference's LLM span over span 4
    return first, parent


def batches(count: int, spans: int, split: bool) -> list[UsageBatch]:
    """`count` batches of `spans` spans (`split`: each trace's parent span one batch later)."""
    traces = spans // SPANS_PER_TRACE
    out: list[UsageBatch] = []
    late: list[UsageRecord] = []
    for b in range(count):
        records: list[UsageRecord] = list(late)
        late = []
        for t in range(b * traces, (b + 1) * traces):
            first, parent = _trace(t, START + b * 10**9)
            records += first
            (late if split else records).extend(parent)
        out.append(UsageBatch(records=records))
    return out


@contextmanager
def settlement(on: bool) -> Iterator[None]:
    """Settlement as it is, or (`on` false) a no-op in its place."""
    if on:
        yield
    else:
        with mock.patch("exporter.sql_sink.settle_calls", lambda *args, **kwargs: None):
            yield


def run(label: str, fresh: Callable[[], str], count: int, spans: int) -> None:
    """Time every layout with settlement on and off, each on a fresh store from `fresh`."""
    for split in (False, True):
        layout = "split traces" if split else "whole traces"
        work = batches(count + 1, spans, split)
        span_count = sum(len({r[:2] for r in b.records}) for b in work[1:])
        for on in (True, False):
            engine = make_engine(Settings(database_url=fresh()))
            migrate(engine)
            sink = SqlUsageSink(engine, ProviderCostCatalog())
            with settlement(on):
                sink.write(TENANT, work[0])  # warm-up: caches, month partition
                started = time.process_time()
                for batch in work[1:]:
                    sink.write(TENANT, batch)
                cpu = time.process_time() - started
            with engine.connect() as connection:
                billed = connection.scalar(
                    select(func.count()).select_from(UsageRow).where(UsageRow.billed())
                )
            engine.dispose()
            rate = span_count / cpu
            name = f"{label}: write, {layout}, settle {'on' if on else 'off'}"
            print(f"{name:48} {rate:9,.0f} spans/CPU-s  ({billed:,} billed records)")
            report(name, rate, "spans/CPU-s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--spans", type=int, default=512)
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    args = parser.parse_args()
    if args.backend in ("both", "postgresql"):
        base = os.environ.get("AGENTMETER_TEST_POSTGRES_URL")
        if base:
            run("postgresql", lambda: fresh_postgres(base), args.batches, args.spans)
        else:
            print("postgresql: skipped (set AGENTMETER_TEST_POSTGRES_URL; see scripts/test.sh)")
    if args.backend in ("both", "sqlite"):
        with tempfile.TemporaryDirectory() as directory:
            files = itertools.count()
            url = f"sqlite:///{directory}/bench"
            run("sqlite", lambda: f"{url}{next(files)}.db", args.batches, args.spans)


if __name__ == "__main__":
    main()
