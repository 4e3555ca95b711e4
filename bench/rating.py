"""Rating throughput: every customer's month rated at once, on SQLite and PostgreSQL.

    scripts/test.sh --exec python bench/rating.py [--customers 10000] [--records 10000000]

PostgreSQL comes from AGENTMETER_TEST_POSTGRES_URL (scripts/test.sh --exec starts one);
without it only SQLite runs. Prints load time (not part of the figure), rating time, lines
and peak memory (the process's maximum RSS). Goal: ≤ 30 s on PostgreSQL, ≤ 1 GiB.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy.orm import Session  # noqa: E402

from bench.dataset import PERIOD, build, run_on_backends  # noqa: E402
from bench.figures import report  # noqa: E402
from billing_api.periods import month_period  # noqa: E402
from billing_api.rating.service import rate_period  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(label: str, url: str, customers: int, records: int) -> None:
    engine, tenant_id, load_s = build(url, customers, records)
    started = time.perf_counter()
    with Session(engine) as session:
        rated = rate_period(session, tenant_id, month_period(PERIOD))
    seconds = time.perf_counter() - started
    lines = sum(len(r.lines) for r in rated.values())
    total = sum(r.subtotal_minor for r in rated.values())
    print(
        f"{label:10} customers={len(rated):>6} records={records:>10} load={load_s:7.1f}s "
        f"rate={seconds:6.2f}s lines={lines:>7} total_minor={total} "
        f"peak_rss={peak_rss_mib():7.1f}MiB"
    )
    goal = 12 if label == "postgresql" else None
    report(f"{label}: rating, {records:,} records", seconds, "s", goal=goal, higher_is_better=False)
    report(f"{label}: rating peak memory", peak_rss_mib(), "MiB", goal=1024, higher_is_better=False)
    engine.dispose()


def main() -> None:
    run_on_backends(
        __doc__ or "",
        "goal: rate all customers in <= 30 s on PostgreSQL, peak memory <= 1024 MiB",
        run,
    )


if __name__ == "__main__":
    main()
