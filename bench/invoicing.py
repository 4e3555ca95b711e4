"""Billing-run throughput: drafts for every customer of a month, on SQLite and PostgreSQL.

    scripts/test.sh --exec python bench/invoicing.py [--customers 10000] [--records 10000000]

The same synthetic month as bench/rating.py. Times `execute_run` (rating, drafts with their
lines, exception checks, progress commits) and a second, idempotent re-run, with the memory of
each run alone (RSS when it starts, peak RSS during it; see bench/memory.py). Goal (issue 13, at
10,000 customers / 10 M records): no slower than before it, 40 s on PostgreSQL; ≤ 1 GiB.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from agentmeter.tables import Invoice, InvoiceLine  # noqa: E402
from bench.dataset import PERIOD, build, run_on_backends  # noqa: E402
from bench.figures import report  # noqa: E402
from bench.memory import PeakRss  # noqa: E402
from billing_api.auth import Caller, Role  # noqa: E402
from billing_api.invoicing.runs import execute_run, start_run  # noqa: E402


def run(label: str, url: str, customers: int, records: int) -> None:
    engine, tenant_id, load_s = build(url, customers, records)
    for attempt in ("first run", "re-run"):
        with Session(engine) as session, session.begin():
            caller = Caller(tenant_id, "bench", Role.ADMIN)
            run_id = start_run(session, caller, PERIOD, queue=False).id
        with PeakRss() as rss:
            started = time.perf_counter()
            result = execute_run(engine, tenant_id, run_id)
            seconds = time.perf_counter() - started
        with Session(engine) as session:
            invoices = session.scalar(select(func.count()).select_from(Invoice))
            lines = session.scalar(select(func.count()).select_from(InvoiceLine))
            total = session.scalar(select(func.sum(Invoice.total_minor)))
        print(
            f"{label:10} {attempt:9} status={result.status} customers={result.total_customers} "
            f"drafts={invoices} lines={lines} total_minor={total} load={load_s:.1f}s "
            f"run={seconds:.2f}s {rss.result()}"
        )
        goal = 40 if label == "postgresql" else None
        report(f"{label}: billing {attempt}, {records:,} records", seconds, "s", goal=goal,
               higher_is_better=False)  # fmt: skip
    report(
        f"{label}: billing peak memory",
        rss.result().peak_mib,
        "MiB",
        goal=1024,
        higher_is_better=False,
    )
    engine.dispose()


def main() -> None:
    run_on_backends(
        __doc__ or "",
        "goal: a billing run for all customers in <= 40 s on PostgreSQL, peak memory <= 1024 MiB",
        run,
    )


if __name__ == "__main__":
    main()
