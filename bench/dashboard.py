"""Dashboard page latency at scale, on PostgreSQL and SQLite.

    scripts/test.sh --exec python bench/dashboard.py [--customers 10000] [--records 10000000]
        [--requests 100] [--backend both|sqlite|postgresql]

The same year of usage as `bench/portal.py` (bench/dataset.py's generator; loading is not
measured). A staff user of the billing role signs in through the login form; then each page
is requested `--requests` times in turn after two warm-ups, one at a time: the overview (the
period so far of every customer: rated revenue, provider cost and margin), its trend data,
the customers list, one customer's page (its estimate and usage), and the billing page.
The billing page's period holds a draft of every customer (bench/billing_drafts.py).
Prints p50, p99 and max per page in milliseconds. Goal (issue 13): ≤ 100 ms p99 on
PostgreSQL at 10 M records. No timing is asserted anywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy.orm import Session  # noqa: E402

from bench.billing_drafts import add_drafts  # noqa: E402
from bench.dataset import build, run_on_backends  # noqa: E402
from bench.reads import app_client, time_reads, twelve_months  # noqa: E402
from billing_api.dashboard.accounts import create_user  # noqa: E402

CUSTOMER = "cust-00000"
EMAIL, PASSWORD = "billing@bench.test", "a long bench password"
PAGES = (
    ("overview", "/dashboard/"),
    ("overview trend data", "/dashboard/overview/trend.json"),
    ("customers", "/dashboard/customers"),
    ("one customer", f"/dashboard/customers/{CUSTOMER}"),
    ("billing", "/dashboard/billing"),
    ("customers, page 2", "/dashboard/customers?page=2"),
    ("customers, searched", "/dashboard/customers?q=CUST-0001"),
    ("billing, drafts page 2", "/dashboard/billing?page=2"),
)


def run(label: str, url: str, customers: int, records: int, requests: int) -> None:
    start, end = twelve_months()
    engine, tenant_id, load_s = build(url, customers, records, start=start, end=end)
    with Session(engine) as session, session.begin():
        create_user(session, tenant_id, EMAIL, PASSWORD, "billing")
    drafts = add_drafts(engine, tenant_id)
    print(f"{label}: {records:,} records, {customers:,} customers, {drafts:,} drafts "
          f"(load {load_s:.1f} s)")  # fmt: skip
    form = {"email": EMAIL, "password": PASSWORD}
    with app_client(
        engine, url, sign_in=lambda client: client.post("/dashboard/login", data=form)
    ) as client:
        time_reads(client, PAGES, requests, label=label, records=records, what="dashboard")
    engine.dispose()


def main() -> None:
    run_on_backends(
        __doc__ or "",
        "goal: a dashboard page in <= 100 ms p99 on PostgreSQL (year of usage, 10 M records)",
        run,
        requests=True,
    )


if __name__ == "__main__":
    main()
