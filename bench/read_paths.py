"""Read-path latency at scale: the usage API and the customer estimate, on PostgreSQL and SQLite.

    scripts/test.sh --exec python bench/read_paths.py [--customers 10000] [--records 10000000]
        [--requests 100] [--backend both|sqlite|postgresql]

The store holds `--records` usage records of `--customers` customers spread evenly over the
twelve months up to the end of the current month (bench/dataset.py's generator, loaded by
COPY or executemany; loading is not measured). The app runs under uvicorn on port 0 in
this process; one httpx client with the tenant's admin key requests each read `--requests`
times in turn after two warm-up requests, one at a time, for customer `cust-00000`:

- usage of the current month grouped by day and model (`GET /api/v1/usage?customer_id=…
  &start=…&end=…&group_by=model&interval=day`),
- usage of the last twelve months grouped by meter,
- the running estimate of the current period (`GET /api/v1/customers/{id}/estimate`).

Prints p50, p99 and max per read in milliseconds. Goal (issue 13): ≤ 100 ms p99 on
PostgreSQL at 10 M records. `bench/portal.py` measures the portal's pages the same way.
No timing is asserted anywhere.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from agentmeter.tenants import issue_keys  # noqa: E402
from bench.dataset import build, run_on_backends  # noqa: E402
from bench.reads import app_client, time_reads, twelve_months  # noqa: E402

CUSTOMER = "cust-00000"


def _reads(next_month: datetime) -> list[tuple[str, str]]:
    """The reads, for the data up to `next_month` (the start of the month after this one)."""
    month = (next_month - timedelta(days=1)).replace(day=1)
    year_ago = next_month - timedelta(days=365)

    def usage(**params: str) -> str:
        return f"/api/v1/usage?{urlencode({'customer_id': CUSTOMER, **params})}"

    return [
        (
            "usage by day+model, month",
            usage(
                start=month.isoformat(),
                end=next_month.isoformat(),
                group_by="model",
                interval="day",
            ),
        ),
        (
            "usage by meter, 12 months",
            usage(start=year_ago.isoformat(), end=next_month.isoformat(), group_by="meter"),
        ),
        ("estimate, this period", f"/api/v1/customers/{CUSTOMER}/estimate"),
    ]


def run(label: str, url: str, customers: int, records: int, requests: int) -> None:
    start, end = twelve_months()
    engine, tenant_id, load_s = build(url, customers, records, start=start, end=end)
    admin_key = issue_keys(engine, tenant_id).admin_key
    print(f"{label}: {records:,} records, {customers:,} customers (load {load_s:.1f} s)")
    with app_client(engine, url, {"Authorization": f"Bearer {admin_key}"}) as client:
        time_reads(client, _reads(end), requests, label=label, records=records, what="read")
    engine.dispose()


def main() -> None:
    run_on_backends(
        __doc__ or "",
        "goal: each read in <= 100 ms p99 on PostgreSQL (10 M records)",
        run,
        requests=True,
    )


if __name__ == "__main__":
    main()
