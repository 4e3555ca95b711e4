"""Finding late usage across all customers, on SQLite and PostgreSQL.

    scripts/test.sh --exec python bench/late_usage.py [--customers 10000] [--records 1000000]

The synthetic month of bench/rating.py is billed and every invoice finalized; then 1 % of
the customers send more November usage. Times the one query that finds the late usage of
all customers (`repository.late_usage`, which reads every finalized period's usage) and
December's billing run, which drafts the adjustments.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, func, select, update  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from agentmeter.tables import Invoice, InvoiceLine, to_unix_nano  # noqa: E402
from bench.dataset import END, PERIOD, build, run_on_backends  # noqa: E402
from bench.figures import report  # noqa: E402
from billing_api.auth import Caller, Role  # noqa: E402
from billing_api.invoicing import repository  # noqa: E402
from billing_api.invoicing.runs import execute_run, start_run  # noqa: E402
from exporter.sql_sink import SqlUsageSink  # noqa: E402
from otel_processor.usage import UsageBatch, UsageRecord  # noqa: E402


def bill(engine: Engine, tenant_id: str, period: str) -> float:
    """Seconds of one billing run of `period`."""
    with Session(engine) as session, session.begin():
        run_id = start_run(session, Caller(tenant_id, "bench", Role.ADMIN), period, queue=False).id
    started = time.perf_counter()
    assert execute_run(engine, tenant_id, run_id).status == "completed"
    return time.perf_counter() - started


def run(label: str, url: str, customers: int, records: int) -> None:
    engine, tenant_id, load_s = build(url, customers, records)
    november_s = bill(engine, tenant_id, PERIOD)
    with Session(engine) as session, session.begin():
        session.execute(
            update(Invoice)
            .where(Invoice.tenant_id == tenant_id)
            .values(status="finalized", finalized_at=datetime.now(UTC))
        )
    late_customers = [f"cust-{n:05d}" for n in range(0, customers, 100)]
    at = to_unix_nano(END - timedelta(days=1))
    SqlUsageSink(engine).write(
        tenant_id,
        UsageBatch(
            [
                # Trace ids of their own: the month's traces count from 1.
                UsageRecord(f"1a7e{n:028x}", f"{n:016x}", "input_tokens", 10**6, customer, at)
                for n, customer in enumerate(late_customers, start=1)
            ]
        ),
    )
    with Session(engine) as session:
        started = time.perf_counter()
        late = repository.late_usage(session, tenant_id, END)
        query_s = time.perf_counter() - started
    december_s = bill(engine, tenant_id, "2026-12")
    with Session(engine) as session:
        adjustments = session.scalar(
            select(func.count()).select_from(InvoiceLine).where(InvoiceLine.kind == "prior_period")
        )
    print(
        f"{label:10} customers={customers} records={records} load={load_s:.1f}s "
        f"november_run={november_s:.2f}s late_query={query_s:.3f}s "
        f"late_customers={len(late)} december_run={december_s:.2f}s "
        f"adjustment_lines={adjustments}"
    )
    report(f"{label}: late usage query, {records:,} records", query_s, "s", higher_is_better=False)
    report(f"{label}: December run with adjustments", december_s, "s", higher_is_better=False)
    engine.dispose()


def main() -> None:
    run_on_backends(
        __doc__ or "", "late usage of every customer in one query; December drafts it", run
    )


if __name__ == "__main__":
    main()
