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

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from agentmeter.clock import utcnow  # noqa: E402
from agentmeter.settings import Settings  # noqa: E402
from agentmeter.tenants import issue_keys  # noqa: E402
from bench.dataset import build, fresh_postgres  # noqa: E402
from bench.portal import percentile  # noqa: E402
from billing_api.app import create_app  # noqa: E402

CUSTOMER = "cust-00000"


def _reads(now: datetime) -> list[tuple[str, str]]:
    month = datetime(now.year, now.month, 1, tzinfo=UTC)
    next_month = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
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
    now = utcnow()
    end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    engine, tenant_id, load_s = build(
        url, customers, records, start=end - timedelta(days=365), end=end
    )
    admin_key = issue_keys(engine, tenant_id).admin_key
    app = create_app(engine, CollectorRegistry(), Settings(database_url=url))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    print(f"{label}: {records:,} records, {customers:,} customers (load {load_s:.1f} s)")
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
        for name, path in _reads(now):
            samples = []
            for n in range(requests + 2):
                began = time.perf_counter()
                response = client.get(path)
                elapsed = (time.perf_counter() - began) * 1000
                assert response.status_code == 200, (path, response.status_code, response.text)
                if n >= 2:
                    samples.append(elapsed)
            print(
                f"  {name:28} p50={percentile(samples, 0.5):7.1f} ms  "
                f"p99={percentile(samples, 0.99):7.1f} ms  max={max(samples):7.1f} ms  "
                f"({requests} requests, {len(response.content):,} bytes)"
            )
    server.should_exit = True
    thread.join()
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    args = parser.parse_args()
    print("goal: each read in <= 100 ms p99 on PostgreSQL (10 M records)")
    if args.backend in ("both", "postgresql"):
        base = os.environ.get("AGENTMETER_TEST_POSTGRES_URL")
        if base:
            run("postgresql", fresh_postgres(base), args.customers, args.records, args.requests)
        else:
            print("postgresql: skipped (set AGENTMETER_TEST_POSTGRES_URL; see scripts/test.sh)")
    if args.backend in ("both", "sqlite"):
        with tempfile.TemporaryDirectory() as directory:
            url = f"sqlite:///{directory}/bench.db"
            run("sqlite", url, args.customers, args.records, args.requests)


if __name__ == "__main__":
    main()
