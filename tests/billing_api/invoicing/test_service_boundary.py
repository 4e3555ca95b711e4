"""Invoicing's service boundary, on both backends: what a caller may see is decided by the
invoicing service from the caller; the audit log names the caller's actor, whatever a
client says; review registers customers by the customers service's rules; billing runs
started through the API are executed by the job worker, not a thread of the request.

Prices and helpers are those of test_late_usage.py (input 3.00 per 10^6 tokens, output
12.00 per 10^6, platform fee 49.00; usage stored with a provider cost where genai-prices
knows the model).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.tables import BillingRun
from agentmeter.tenants import create_tenant
from billing_api.auth import Caller, Role
from billing_api.errors import ForbiddenError, NotFoundError, UnprocessableError
from billing_api.invoicing import finalize as finalizing
from billing_api.invoicing import review, service
from billing_api.invoicing.exceptions import set_exception_status
from billing_api.invoicing.runs import RUN_JOB, resume_run, run_billing_run, start_run
from billing_api.invoicing.states import ExceptionStatus, InvoiceStatus
from billing_api.jobs.worker import ClaimedJob
from tests.billing_api.callers import staff
from tests.billing_api.inprocess import api_client
from tests.billing_api.test_late_usage import bill, finalize, setup_tenant, write_span

NOV = datetime(2026, 11, 10, tzinfo=UTC)


def customer_caller(tenant_id: str, customer_id: str) -> Caller:
    """A customer looking at its own portal."""
    return Caller(tenant_id=tenant_id, actor="portal", role=Role.CUSTOMER, customer_id=customer_id)


class TestWhoSeesWhat:
    def test_a_customer_never_gets_cost_or_margin_nor_drafts(self, engine: Engine) -> None:
        tenant_id = setup_tenant(engine)
        write_span(engine, tenant_id, NOV, 1_000_000, 100_000)
        draft = bill(engine, tenant_id, "2026-11")
        acme = customer_caller(tenant_id, "acme")
        with Session(engine) as session:
            # Staff see the builder's figures.
            full = service.get_invoice(session, staff(tenant_id), draft.id)
            assert full.internal is not None
            assert all(line.internal is not None for line in full.lines)
            # A draft is still the builder's: not found for its customer.
            with pytest.raises(NotFoundError):
                service.get_invoice(session, acme, draft.id)
            assert service.list_invoices(session, acme) == []
        finalize(engine, tenant_id, draft.id)
        with Session(engine) as session:
            seen = service.get_invoice(session, acme, draft.id)
            (listed,) = service.list_invoices(session, acme)
            # 1 000 000 × 3.00 / 10^6 = 300; 100 000 × 12.00 / 10^6 = 120; fee 4900.
            assert (seen.status, seen.subtotal_minor) == (InvoiceStatus.FINALIZED, 5320)
            assert listed == seen
            assert seen.internal is None
            assert [line.internal for line in seen.lines] == [None, None, None]
            # Another customer's invoice answers as an unknown one does.
            with pytest.raises(NotFoundError):
                service.get_invoice(session, customer_caller(tenant_id, "globex"), draft.id)
            # Asking for another customer's invoices by id gives nothing of theirs either.
            with pytest.raises(NotFoundError):
                service.list_invoices(session, acme, customer_id="globex")


class TestActor:
    def test_the_audit_log_names_the_callers_actor(self, engine: Engine) -> None:
        tenant_id = setup_tenant(engine)
        write_span(engine, tenant_id, NOV, 1_000_000)
        invoice = bill(engine, tenant_id, "2026-11")
        with Session(engine) as session, session.begin():
            review.rerate(session, staff(tenant_id, actor="amy@builder.test"), invoice.id)
        with Session(engine) as session:
            trail = service.audit_trail(session, staff(tenant_id), invoice.id)
            assert [(entry.action, entry.actor) for entry in trail] == [
                ("rerate", "amy@builder.test")
            ]


class TestRegisterThroughCustomers:
    def test_review_cannot_register_what_the_customers_api_refuses(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "boundary")
        with Session(engine) as session, session.begin():
            run_id = start_run(session, staff(tenant.tenant_id), "2026-11").id
        body = {"name": "Hooli", "email": "not an address"}
        with api_client(engine, tenant.admin_key) as api:
            direct = api.post("/api/v1/customers", json={"id": "hooli", **body})
            from_run = api.post(
                f"/api/v1/billing-runs/{run_id}/register-customer",
                json={"customer_id": "hooli", **body},
            )
            assert (direct.status_code, from_run.status_code) == (422, 422)
            assert from_run.json()["error"]["code"] == "validation_error"
            assert "email" in from_run.json()["error"]["message"]
            assert api.get("/api/v1/customers/hooli").status_code == 404
            # An id with surrounding spaces is refused the same way.
            spaced = api.post(
                f"/api/v1/billing-runs/{run_id}/register-customer",
                json={"customer_id": " hooli", "name": "Hooli"},
            )
            assert spaced.status_code == 422
        with Session(engine) as session, pytest.raises(UnprocessableError):
            review.register_customer(
                session, staff(tenant.tenant_id), "2026-11", customer_id="hooli", name="Hooli",
                email="still not an address",
            )  # fmt: skip


class TestBillingSettingsInput:
    def test_a_boolean_is_not_a_review_threshold(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "settings")
        with api_client(engine, tenant.admin_key) as api:
            refused = api.patch("/api/v1/billing-settings", json={"review_threshold_minor": False})
            assert refused.status_code == 422, refused.text
            taken = api.patch("/api/v1/billing-settings", json={"review_threshold_minor": 5000})
            assert taken.json()["review_threshold_minor"] == 5000


def poll_run(api: TestClient, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        run: dict[str, Any] = api.get(f"/api/v1/billing-runs/{run_id}").json()
        if run["status"] != "running" or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def poll_job(api: TestClient) -> dict[str, Any]:
    """The tenant's one billing-run job, once it has stopped running (or after 60 s)."""
    deadline = time.monotonic() + 60
    while True:
        (job,) = api.get("/api/v1/jobs", params={"kind": RUN_JOB}).json()
        if job["status"] != "running" or time.monotonic() > deadline:
            return dict(job)
        time.sleep(0.05)


class TestRunsAsJobs:
    def test_a_run_started_by_the_api_is_executed_by_a_job(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "jobs")
        with api_client(engine, tenant.admin_key) as api:
            started = api.post("/api/v1/billing-runs", json={"period": "2026-11"})
            assert (started.status_code, started.json()["status"]) == (202, "running")
            assert poll_run(api, started.json()["id"])["status"] == "completed"
            # The run commits its completion, then the job runner marks the job done in a
            # transaction of its own: a read between the two sees the job still running.
            job = poll_job(api)
            assert (job["status"], job["attempts"]) == ("done", 1)

    def test_a_job_whose_worker_died_leaves_the_run_to_be_resumed(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "jobs")
        with Session(engine) as session, session.begin():
            run_id = start_run(session, staff(tenant.tenant_id), "2026-11", queue=False).id
        again = ClaimedJob(
            id=0,
            kind=RUN_JOB,
            key=run_id,
            tenant_id=tenant.tenant_id,
            payload={"run_id": run_id, "lease_seconds": 60},
            attempts=2,  # the first attempt's worker died
            max_attempts=10,
            holder="next-worker",
            lease=timedelta(minutes=1),
            engine=engine,
        )
        run_billing_run(engine, again)
        with Session(engine) as session:
            run = session.get(BillingRun, run_id)
            assert run is not None and (run.status, run.holder) == ("running", "")


# Each invoicing write, called with arguments it would otherwise refuse for other reasons.
INVOICING_WRITES: list[Any] = [
    lambda s, c: review.adjust_line(s, c, "inv", "line", amount=Decimal(1), reason="x"),
    lambda s, c: review.rerate(s, c, "inv"),
    lambda s, c: review.remove_line(s, c, "inv", "line", reason="x"),
    lambda s, c: review.register_customer(s, c, "2026-11", customer_id="x", name="X", email=None),
    lambda s, c: review.map_customer(s, c, "2026-11", from_id="x", to_id="y"),
    lambda s, c: review.assign_unattributed(s, c, "2026-11", trace_ids=["t"], customer_id="x"),
    lambda s, c: finalizing.finalize_invoice(s, c, "inv", now=NOV),
    lambda s, c: finalizing.void_invoice(s, c, "inv", reason="x", now=NOV),
    lambda s, c: finalizing.create_credit_note(s, c, "inv", amount=None, reason="x", now=NOV),
    lambda s, c: set_exception_status(
        s, c, "exc", status=ExceptionStatus.WAIVED, note="x", now=NOV
    ),
    lambda s, c: start_run(s, c, "2026-11"),
    lambda s, c: resume_run(s, c, "run", now=NOV, lease=timedelta(minutes=1)),
]


class TestRoles:
    """Every invoicing write checks the caller's role itself: a viewer or a customer is
    refused (403) before anything is read or written, whatever the entry point."""

    @pytest.mark.parametrize("role", [Role.VIEWER, Role.CUSTOMER])
    @pytest.mark.parametrize("write", INVOICING_WRITES)
    def test_only_billing_staff_write(self, engine: Engine, role: Role, write: Any) -> None:
        tenant_id = setup_tenant(engine)
        caller = Caller(
            tenant_id=tenant_id,
            actor="someone",
            role=role,
            customer_id="acme" if role is Role.CUSTOMER else None,
        )
        with Session(engine) as session, session.begin(), pytest.raises(ForbiddenError):
            write(session, caller)
