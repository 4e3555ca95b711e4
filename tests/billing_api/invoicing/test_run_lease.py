"""Issue 8, defect 4: a billing run whose worker is SIGKILLed mid-run is reported
`interrupted` within the lease, can be resumed or superseded, and a new run of the period
completes; progress stays readable while a writer holds the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from agentmeter.settings import Settings
from agentmeter.tables import BillingRun, Customer, Invoice, PriceBook, PriceComponent, PriceVersion
from agentmeter.tenants import create_tenant
from billing_api.app import create_app
from billing_api.invoicing.leases import observed_status
from billing_api.invoicing.runs import CHUNK, execute_run, start_run
from billing_api.invoicing.states import RunStatus
from tests.billing_api.callers import staff

AGENTMETER = Path(sys.executable).with_name("agentmeter")
PERIOD = "2026-10"
CUSTOMERS = 4 * CHUNK  # four chunks: a kill after the first lands mid-run
LEASE_SECONDS = 1


def setup_tenant(engine: Engine) -> tuple[str, str]:
    """A tenant with CUSTOMERS registered customers on a 49.00 USD flat fee."""
    tenant = create_tenant(engine, "builder")
    book_id, version_id = uuid.uuid4().hex, uuid.uuid4().hex
    with Session(engine) as session, session.begin():
        session.add(
            PriceBook(
                id=book_id, tenant_id=tenant.tenant_id, name="b", currency="USD", is_default=True
            )
        )
        session.add_all(
            Customer(tenant_id=tenant.tenant_id, id=f"c{n:05d}", name=f"Customer {n}")
            for n in range(CUSTOMERS)
        )
        session.flush()
        session.add(
            PriceVersion(
                id=version_id,
                book_id=book_id,
                number=1,
                effective_from=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )
        session.flush()
        session.add(
            PriceComponent(
                id=uuid.uuid4().hex,
                version_id=version_id,
                position=0,
                name="platform",
                filters={},
                charge="flat_fee",
                amount=Decimal("49.00"),
            )
        )
    return tenant.tenant_id, tenant.admin_key


def kill_bill_mid_run(database_url: str, tenant_id: str) -> None:
    """Start `agentmeter bill`, SIGKILL it once its first chunk is committed."""
    env = {
        **os.environ,
        "AGENTMETER_DATABASE_URL": database_url,
        "AGENTMETER_RUN_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    process = subprocess.Popen(
        [str(AGENTMETER), "bill", "--period", PERIOD, "--tenant", tenant_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    seen = b""
    while f"{CHUNK}/{CUSTOMERS}".encode() not in seen:  # the progress bar after chunk 1
        byte = process.stderr.read(1)
        assert byte, f"bill exited early: {seen!r}"
        seen += byte
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def the_run(engine: Engine, tenant_id: str) -> BillingRun:
    with Session(engine) as session:
        return session.scalars(
            select(BillingRun)
            .where(BillingRun.tenant_id == tenant_id)
            .order_by(BillingRun.created_at)
        ).first()  # type: ignore[return-value]


def invoice_count(engine: Engine, tenant_id: str) -> tuple[int, int]:
    """(invoices, distinct customers invoiced) for the period."""
    with Session(engine) as session:
        row = session.execute(
            select(func.count(), func.count(func.distinct(Invoice.customer_id))).where(
                Invoice.tenant_id == tenant_id, Invoice.period == PERIOD
            )
        ).one()
    return int(row[0]), int(row[1])


@pytest.fixture
def killed(engine: Engine, database_url: str) -> tuple[str, str, str]:
    """A tenant whose billing run of PERIOD was SIGKILLed mid-run: (tenant, admin key, run)."""
    tenant_id, admin_key = setup_tenant(engine)
    kill_bill_mid_run(database_url, tenant_id)
    run = the_run(engine, tenant_id)
    assert run.status == "running"
    assert 0 < run.processed_customers < CUSTOMERS == run.total_customers
    assert run.holder and run.heartbeat_at is not None
    return tenant_id, admin_key, run.id


@pytest.fixture
def api(engine: Engine, killed: tuple[str, str, str]) -> Iterator[TestClient]:
    settings = Settings(run_lease_seconds=LEASE_SECONDS)
    app = create_app(engine, CollectorRegistry(), settings)
    with TestClient(app, headers={"authorization": f"Bearer {killed[1]}"}) as client:
        yield client


def poll(api: TestClient, run_id: str, until: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        run: dict[str, Any] = api.get(f"/api/v1/billing-runs/{run_id}").json()
        if run["status"] in until or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def test_killed_run_reads_interrupted_then_resumes(
    engine: Engine, killed: tuple[str, str, str], api: TestClient
) -> None:
    tenant_id, _, run_id = killed
    run = poll(api, run_id, {RunStatus.INTERRUPTED})
    assert run["status"] == RunStatus.INTERRUPTED
    assert 0 < run["processed_customers"] < CUSTOMERS

    resumed = api.post(f"/api/v1/billing-runs/{run_id}/resume")
    assert resumed.status_code == 202, resumed.text
    assert resumed.json()["status"] == "running"
    # A second resume while it works is refused.
    again = api.post(f"/api/v1/billing-runs/{run_id}/resume")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"

    run = poll(api, run_id, {"completed", "failed"})
    assert (run["status"], run["processed_customers"], run["drafted"]) == (
        "completed",
        CUSTOMERS,
        CUSTOMERS,
    )
    assert invoice_count(engine, tenant_id) == (CUSTOMERS, CUSTOMERS)  # none twice


def test_new_run_supersedes_the_interrupted_one(
    engine: Engine, killed: tuple[str, str, str], api: TestClient
) -> None:
    tenant_id, _, run_id = killed
    assert poll(api, run_id, {RunStatus.INTERRUPTED})["status"] == RunStatus.INTERRUPTED
    new = api.post("/api/v1/billing-runs", json={"period": PERIOD})
    assert new.status_code == 202, new.text
    done = poll(api, new.json()["id"], {"completed", "failed"})
    assert (done["status"], done["drafted"]) == ("completed", CUSTOMERS)
    old = api.get(f"/api/v1/billing-runs/{run_id}").json()
    assert old["status"] == "superseded"
    assert new.json()["id"] in old["error"]
    assert api.post(f"/api/v1/billing-runs/{run_id}/resume").status_code == 409
    assert invoice_count(engine, tenant_id) == (CUSTOMERS, CUSTOMERS)


def test_superseded_worker_stops_at_its_next_chunk(engine: Engine) -> None:
    """A worker that was only stuck past its lease finds the run taken and writes no more."""
    tenant_id, _ = setup_tenant(engine)
    lease = timedelta(seconds=LEASE_SECONDS)
    with Session(engine) as session, session.begin():
        run_id = start_run(session, staff(tenant_id), PERIOD, lease=lease).id
    with Session(engine) as session, session.begin():
        # As if a worker had claimed it and then stalled for longer than the lease.
        session.execute(
            update(BillingRun)
            .where(BillingRun.id == run_id)
            .values(holder="stalled", heartbeat_at=datetime.now(UTC) - 2 * lease)
        )
    with Session(engine) as session, session.begin():
        stale = session.get(BillingRun, run_id)
        assert stale is not None
        assert observed_status(stale, datetime.now(UTC), lease) == RunStatus.INTERRUPTED
        new_id = start_run(session, staff(tenant_id), PERIOD, lease=lease).id
    with Session(engine) as session:
        stale = session.get(BillingRun, run_id)
        assert stale is not None and (stale.status, stale.holder) == ("superseded", "")
    with pytest.raises(Exception, match="not running"):
        execute_run(engine, tenant_id, run_id, lease=lease)
    assert execute_run(engine, tenant_id, new_id, lease=lease).status == "completed"


def test_progress_is_readable_while_a_writer_holds_sqlite(
    engine: Engine, database_url: str
) -> None:
    """GET /billing-runs/{id} answers while another connection holds the write lock (as a
    run's chunk does); before, it waited for the writer."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the write lock that readers must not wait for is SQLite's")
    tenant_id, admin_key = setup_tenant(engine)
    with Session(engine) as session, session.begin():
        run_id = start_run(session, staff(tenant_id), PERIOD).id
    # Queued behind the writer, the GET would wait the busy timeout and answer 503.
    app = create_app(engine, CollectorRegistry(), Settings())
    with (
        TestClient(app, headers={"authorization": f"Bearer {admin_key}"}) as api,
        Session(engine) as writer,
        writer.begin(),
    ):
        writer.execute(update(BillingRun).where(BillingRun.id == run_id).values(drafted=7))
        answer = api.get(f"/api/v1/billing-runs/{run_id}")
        assert answer.status_code == 200, answer.text
        assert (answer.json()["status"], answer.json()["drafted"]) == ("running", 0)
