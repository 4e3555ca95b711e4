"""Dashboard page latency at scale, on PostgreSQL and SQLite.

    scripts/test.sh --exec python bench/dashboard.py [--customers 10000] [--records 10000000]
        [--requests 100] [--backend both|sqlite|postgresql]

The same year of usage as `bench/portal.py` (bench/dataset.py's generator; loading is not
measured). A staff user of the billing role signs in through the login form; then each page
is requested `--requests` times in turn after two warm-ups, one at a time: the overview (the
period so far of every customer: rated revenue, provider cost and margin), its trend data,
the customers list, one customer's page (its estimate and usage), and the billing page.
The billing page's period holds a draft of every customer (bench/billing_drafts.py).
The overview's figures come from the rated-month cache (billing_api/rating/cache.py): the
first view fills it (timed once); then the first view after new usage, and after a price
change, is timed.
Prints p50, p99 and max per page in milliseconds. Goal (issue 13): ≤ 100 ms p99 on
PostgreSQL at 10 M records. No timing is asserted anywhere.
"""

from __future__ import annotations

import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import Engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from agentmeter.clock import utcnow  # noqa: E402
from agentmeter.tables import to_unix_nano  # noqa: E402
from bench.billing_drafts import add_drafts  # noqa: E402
from bench.dataset import build, run_on_backends  # noqa: E402
from bench.reads import app_client, percentile, time_reads, twelve_months  # noqa: E402
from billing_api.auth import Caller, Role  # noqa: E402
from billing_api.dashboard.accounts import create_user  # noqa: E402
from billing_api.periods import period_containing  # noqa: E402
from billing_api.pricing.components import ChargeModel, Component  # noqa: E402
from billing_api.pricing.service import create_override  # noqa: E402
from exporter.sql_sink import SqlUsageSink  # noqa: E402
from otel_processor.usage import UsageBatch, UsageRecord  # noqa: E402

CUSTOMER = "cust-00000"
CACHE_TABLES = ("rating_changes", "rated_customer_months", "rated_customer_month_usage",
                "rated_month_totals", "rated_months", "rating_cache_generations")  # fmt: skip
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
        fill_cache(client, engine)
        time_reads(client, PAGES, requests, label=label, records=records, what="dashboard")
        time_catching_up(client, engine, tenant_id)
    engine.dispose()


def fill_cache(client: httpx.Client, engine: Engine) -> None:
    """The first view rates every customer for the overview's six months and fills the
    rated-month cache; then, as after the load, the state autovacuum keeps the store in
    (the cache's tables analyzed, the change rows it consumed vacuumed away)."""
    began = time.perf_counter()
    assert client.get("/dashboard/").status_code == 200
    print(f"  {'first overview (fills cache)':28} {(time.perf_counter() - began) * 1000:7.1f} ms")
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in CACHE_TABLES:
                connection.exec_driver_sql(f"VACUUM (ANALYZE) {table}")


def _timed_overview(client: httpx.Client) -> float:
    began = time.perf_counter()
    response = client.get("/dashboard/")
    assert response.status_code == 200, response.text
    return (time.perf_counter() - began) * 1000


def time_catching_up(client: httpx.Client, engine: Engine, tenant_id: str) -> None:
    """The overview's first view after what its cache must catch up with (the figures
    above are views with nothing new): new usage of 100 customers this month, five times,
    and a price change (every customer, every month the overview and its trend show)."""
    sink = SqlUsageSink(engine)
    now = to_unix_nano(utcnow())
    samples = []
    for round_ in range(5):
        sink.write(tenant_id, UsageBatch([
            UsageRecord(trace_id=uuid.uuid4().hex, span_id=uuid.uuid4().hex[:16],
                        meter="input_tokens", quantity=1000, customer_id=f"cust-{n:05d}",
                        time_unix_nano=now, provider="openai", model="gpt-4o")
            for n in range(round_ * 100, round_ * 100 + 100)
        ]))  # fmt: skip
        samples.append(_timed_overview(client))
    p50 = percentile(samples, 0.5)
    print(f"  {'overview after ingest':28} p50={p50:7.1f} ms  max={max(samples):7.1f} ms  "
          "(100 customers' new usage before each of 5 views)")  # fmt: skip
    with Session(engine) as session, session.begin():
        caller = Caller(tenant_id=tenant_id, actor="bench", role=Role.ADMIN)
        flat = Component(name="support", meter=None, charge=ChargeModel.FLAT_FEE,
                         amount=Decimal("5"))  # fmt: skip
        create_override(session, caller, CUSTOMER, period_containing(utcnow()).start, [flat])
    print(
        f"  {'overview after a price change':28} {_timed_overview(client):7.1f} ms  "
        "(one view: every customer rated again for this month and the trend's six)"
    )


def main() -> None:
    run_on_backends(
        __doc__ or "",
        "goal: a dashboard page in <= 100 ms p99 on PostgreSQL (year of usage, 10 M records)",
        run,
        requests=True,
    )


if __name__ == "__main__":
    main()
