"""Rating throughput: every customer's month rated at once, on SQLite and PostgreSQL.

    scripts/test.sh --exec python bench/rating.py [--customers 10000] [--records 10000000]

PostgreSQL comes from AGENTMETER_TEST_POSTGRES_URL (scripts/test.sh --exec starts one);
without it only SQLite runs. Prints load time (not part of the figure), rating time, lines
and the memory of the rating alone (RSS when it starts, peak RSS during it; the load's
memory is not counted, see bench/memory.py). Goal (issue 13, at 10,000 customers / 10 M
records): no slower than before it, 12 s on PostgreSQL; ≤ 1 GiB.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy.orm import Session  # noqa: E402

from bench.dataset import PERIOD, build, run_on_backends  # noqa: E402
from bench.figures import report  # noqa: E402
from bench.memory import PeakRss  # noqa: E402
from billing_api.periods import month_period  # noqa: E402
from billing_api.rating.service import rate_period  # noqa: E402


def run(label: str, url: str, customers: int, records: int) -> None:
    engine, tenant_id, load_s = build(url, customers, records)
    with PeakRss() as rss:
        started = time.perf_counter()
        with Session(engine) as session:
            rated = rate_period(session, tenant_id, month_period(PERIOD))
        seconds = time.perf_counter() - started
    lines = sum(len(r.lines) for r in rated.values())
    total = sum(r.subtotal_minor for r in rated.values())
    print(
        f"{label:10} customers={len(rated):>6} records={records:>10} load={load_s:7.1f}s "
        f"rate={seconds:6.2f}s lines={lines:>7} total_minor={total} "
        f"{rss.result()}"
    )
    goal = 12 if label == "postgresql" else None
    report(f"{label}: rating, {records:,} records", seconds, "s", goal=goal, higher_is_better=False)
    report(
        f"{label}: rating peak memory",
        rss.result().peak_mib,
        "MiB",
        goal=1024,
        higher_is_better=False,
    )
    engine.dispose()


def main() -> None:
    run_on_backends(
        __doc__ or "",
        "goal: rate all customers in <= 12 s on PostgreSQL, peak memory <= 1024 MiB",
        run,
    )


if __name__ == "__main__":
    main()
