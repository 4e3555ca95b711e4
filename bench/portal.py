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

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from agentmeter.clock import utcnow  # noqa: E402
from agentmeter.settings import Settings  # noqa: E402
from agentmeter.tables import UsageRow  # noqa: E402
from bench.dataset import build, run_on_backends  # noqa: E402
from bench.reads import app_client, time_reads, twelve_months  # noqa: E402
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


def run(label: str, url: str, customers: int, records: int, requests: int) -> None:
    start, end = twelve_months()
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
    print(
        f"{label}: {records:,} records, {customers:,} customers, {CUSTOMER} has {mine:,} "
        f"records from {start.date()} to {end.date()} (load {load_s:.1f} s)"
    )
    with app_client(
        engine, url, sign_in=lambda client: client.get(f"/portal/open?token={issued.token}")
    ) as client:
        time_reads(client, PAGES, requests, label=label, records=records, what="portal")
    engine.dispose()


def main() -> None:
    run_on_backends(
        __doc__ or "",
        "goal: a portal page in <= 100 ms p99 on PostgreSQL (year of usage, 10 M records)",
        run,
        requests=True,
    )


if __name__ == "__main__":
    main()
