"""Rating throughput: every customer's month rated at once, on SQLite and PostgreSQL.

    scripts/test.sh --exec python bench/rating.py [--customers 10000] [--records 10000000]

PostgreSQL comes from AGENTMETER_TEST_POSTGRES_URL (scripts/test.sh --exec starts one);
without it only SQLite runs. Prints load time (not part of the figure), rating time, lines
and peak memory (the process's maximum RSS). Goal: ≤ 30 s on PostgreSQL, ≤ 1 GiB.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy.orm import Session  # noqa: E402

from bench.dataset import PERIOD, build, fresh_postgres  # noqa: E402
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
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    args = parser.parse_args()
    print("goal: rate all customers in <= 30 s on PostgreSQL, peak memory <= 1024 MiB")
    if args.backend in ("both", "postgresql"):
        base = os.environ.get("AGENTMETER_TEST_POSTGRES_URL")
        if base:
            run("postgresql", fresh_postgres(base), args.customers, args.records)
        else:
            print(
                "postgresql: skipped (set AGENTMETER_TEST_POSTGRES_URL; see scripts/test.sh --exec)"
            )
    if args.backend in ("both", "sqlite"):
        with tempfile.TemporaryDirectory() as directory:
            run("sqlite", f"sqlite:///{directory}/bench.db", args.customers, args.records)


if __name__ == "__main__":
    main()
