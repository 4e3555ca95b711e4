"""`agentmeter serve` runs the Stripe outbox in its background loop, and a server killed
in the middle of a push (SIGKILL, no shutdown) leaves nothing duplicated on Stripe."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import StripeJob
from billing_api.app import create_app
from billing_api.stripe.gateway import StripeGateway
from billing_api.stripe.outbox import LEASE, run_due_jobs
from tests.billing_api.stripe.conftest import (
    ACCOUNT,
    EARLY_FINALIZE,
    TOTALS,
    Month,
    draft_month,
    stripe_settings,
)
from tests.conftest import RunningServer
from tests.fake_stripe import FakeStripe
from tests.polling import wait_until


@pytest.fixture
def served_month(
    engine: Engine, database_url: str, fake: FakeStripe, gateway: StripeGateway, tmp_path: Path
) -> Iterator[tuple[Month, RunningServer]]:
    with TestClient(create_app(engine, CollectorRegistry(), stripe=gateway)) as client:
        month = draft_month(engine, lambda: client)
    settings = stripe_settings(fake)
    env = {
        "AGENTMETER_STRIPE_API_KEY": settings.stripe_api_key or "",
        "AGENTMETER_STRIPE_API_BASE": fake.url,
        "AGENTMETER_STRIPE_CONNECT_BASE": fake.url,
        "AGENTMETER_STRIPE_WEBHOOK_SECRET": settings.stripe_webhook_secret or "",
        "AGENTMETER_STRIPE_TIMEOUT_SECONDS": "5",
        "AGENTMETER_BACKGROUND_INTERVAL_SECONDS": "0.2",
    }
    server = RunningServer(
        database_url=database_url, tenant=month.tenant, log_path=tmp_path / "serve.log", env=env
    )
    server.start()
    try:
        yield month, server
    finally:
        server.stop()


def _api(server: RunningServer) -> httpx.Client:
    return httpx.Client(base_url=server.api_url, headers=server.admin_headers, timeout=10)


def _job_status(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return [job.status for job in session.scalars(select(StripeJob).order_by(StripeJob.id))]


class TestServe:
    def test_a_killed_push_resumes_without_duplicates(
        self,
        served_month: tuple[Month, RunningServer],
        fake: FakeStripe,
        engine: Engine,
        gateway: StripeGateway,
    ) -> None:
        month, server = served_month
        release = fake.hold("POST /v1/invoiceitems")
        with _api(server) as api:
            assert (
                api.put("/api/v1/stripe/account", json={"account_id": ACCOUNT}).status_code == 200
            )
            finalized = api.post(
                f"/api/v1/invoices/{month.invoices['acme']}/finalize", json=EARLY_FINALIZE
            )
            assert finalized.json()["stripe_sync_status"] == "pending"
        # The serve loop claims the job, makes the customer and the invoice, and is killed
        # while Stripe is adding the first line (which Stripe completes).
        wait_until(lambda: fake.held("POST /v1/invoiceitems"), timeout=30, what="a held item")
        server.kill()
        release.set()
        assert _job_status(engine) == ["running"]
        assert len(fake.objects(ACCOUNT, "invoice_items")) == 1

        server.start()
        with _api(server) as api:
            # Its claim holds until the lease runs out; then any worker resumes it.
            report = run_due_jobs(engine, gateway, utcnow() + LEASE + timedelta(seconds=1))
            assert report.done == 1
            acme = api.get(f"/api/v1/invoices/{month.invoices['acme']}").json()
            assert acme["stripe_sync_status"] == "synced"
            assert len(fake.objects(ACCOUNT, "customers")) == 1
            (remote,) = fake.objects(ACCOUNT, "invoices")
            assert len(fake.objects(ACCOUNT, "invoice_items")) == 3
            assert (remote["id"], remote["total"], remote["status"]) == (
                acme["stripe_invoice_id"],
                TOTALS["acme"],
                "open",
            )

            # The restarted server's own loop pushes what is finalized next.
            api.post(f"/api/v1/invoices/{month.invoices['globex']}/finalize", json=EARLY_FINALIZE)
            wait_until(
                lambda: (
                    api.get(f"/api/v1/invoices/{month.invoices['globex']}").json()[
                        "stripe_sync_status"
                    ]
                    == "synced"
                ),
                timeout=30,
                what="globex synced by the serve loop",
            )
        assert len(fake.objects(ACCOUNT, "invoices")) == 2
