"""Portal page latency for a customer with a year of usage, on PostgreSQL and SQLite.

    scripts/test.sh --exec python bench/portal.py [--customers 10000] [--records 10000000]
        [--requests 100] [--backend both|sqlite|postgresql]

The store holds `--records` usage records of `--customers` customers spread evenly over
the twelve months up to the end of the current month (bench/dataset.py's generator, loaded
by COPY or executemany; loading is not measured), so customer `cust-00000` has a year of
usage: records / customers of them. The app runs under uvicorn on port 0 in this process;
one httpx client opens a portal link like a customer, then requests each page `--requests`
times in turn after two warm-up requests, one at a time. Prints p50, p99 and max per page
in milliseconds. Goal (issue 11): ≤ 100 ms p99 on PostgreSQL for a customer with a year of
usage and 10 M records in the store. No timing is asserted anywhere.
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

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from agentmeter.clock import utcnow  # noqa: E402
from agentmeter.settings import Settings  # noqa: E402
from agentmeter.tables import UsageRow  # noqa: E402
from bench.dataset import build, fresh_postgres  # noqa: E402
from bench.figures import report  # noqa: E402
from billing_api.app import create_app  # noqa: E402
from billing_api.auth import Caller, Role  # noqa: E402
from billing_api.portal.sessions import DEFAULT_EXPIRES_IN, PortalTokens  # noqa: E402
from billing_api.web.secrets import signing_keys  # noqa: E402

CUSTOMER = "cust-00000"
PAGES = (
    ("current period", "/portal/"),
    ("usage, this period", "/portal/usage"),
    ("usage, 12 months", "/portal/usage?range=last_12_months"),
    ("chart data, 12 months", "/portal/api/usage/daily?range=last_12_months"),
    ("usage CSV, 12 months", "/portal/usage.csv?range=last_12_months"),
    ("invoices", "/portal/invoices"),
)


def _year() -> tuple[datetime, datetime]:
    now = utcnow()
    end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return end - timedelta(days=365), end


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, int(-(-fraction * len(ordered) // 1)) - 1)]


def run(label: str, url: str, customers: int, records: int, requests: int) -> None:
    start, end = _year()
    engine, tenant_id, load_s = build(url, customers, records, start=start, end=end)
    settings = Settings(database_url=url)
    tokens = PortalTokens(signing_keys(engine, settings))
    with Session(engine) as session:
        mine = session.scalar(
            select(func.count()).where(
                UsageRow.tenant_id == tenant_id, UsageRow.customer_id == CUSTOMER
            )
        )
        caller = Caller(tenant_id=tenant_id, actor="bench", role=Role.ADMIN)
        issued = tokens.issue(session, caller, CUSTOMER, DEFAULT_EXPIRES_IN, utcnow())
        session.commit()
    app = create_app(engine, CollectorRegistry(), settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    print(
        f"{label}: {records:,} records, {customers:,} customers, {CUSTOMER} has {mine:,} "
        f"records from {start.date()} to {end.date()} (load {load_s:.1f} s)"
    )
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        opened = client.get(f"/portal/open?token={issued.token}")
        assert opened.status_code == 303, opened.text
        for name, path in PAGES:
            samples = []
            for n in range(requests + 2):
                began = time.perf_counter()
                response = client.get(path)
                elapsed = (time.perf_counter() - began) * 1000
                assert response.status_code == 200, (path, response.status_code)
                if n >= 2:
                    samples.append(elapsed)
            print(
                f"  {name:24} p50={percentile(samples, 0.5):7.1f} ms  "
                f"p99={percentile(samples, 0.99):7.1f} ms  max={max(samples):7.1f} ms  "
                f"({requests} requests, {len(response.content):,} bytes)"
            )
            report(f"{label}: portal {name} p99, {records:,} records", percentile(samples, 0.99),
                   "ms", goal=100 if label == "postgresql" else None,
                   higher_is_better=False)  # fmt: skip
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
    print("goal: a portal page in <= 100 ms p99 on PostgreSQL (year of usage, 10 M records)")
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
