"""Finalized invoices reach the connected Stripe account exactly once, with our amounts.

The fake Stripe (tests/fake_stripe.py) refuses unknown or missing parameters, calls on
connected objects without `Stripe-Account`, POSTs without an idempotency key, and reused
keys with other parameters; so every test here also checks that AgentMeter's calls are
ones Stripe would take. The month is the one of conftest.py (totals worked out there).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import StripeJob
from billing_api.stripe.gateway import StripeGateway
from billing_api.stripe.outbox import LEASE, run_due_jobs
from tests.billing_api.stripe.conftest import ACCOUNT, SUBTOTALS, TOTALS, Month
from tests.fake_stripe import FakeStripe


def _stripe_invoice(fake: FakeStripe, month: Month, customer: str) -> dict[str, Any]:
    stripe_id = month.invoice(customer)["stripe_invoice_id"]
    (found,) = [i for i in fake.objects(ACCOUNT, "invoices") if i["id"] == stripe_id]
    return found


def _stripe_exceptions(invoice: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (e["type"], e["status"]) for e in invoice["exceptions"] if e["type"].startswith("stripe")
    ]


def _later(minutes: int = 30) -> Any:
    return utcnow() + timedelta(minutes=minutes)


class TestMonthPushed:
    def test_every_invoice_lands_once_with_our_lines_and_total(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        month.connect()
        terms = month.put(
            "/api/v1/stripe/customers/globex", json={"collection_method": "charge_automatically"}
        )
        assert terms.status_code == 200, terms.text
        finalized = {customer: month.finalize(customer) for customer in TOTALS}
        assert {c: i["total_minor"] for c, i in finalized.items()} == TOTALS
        assert {i["stripe_sync_status"] for i in finalized.values()} == {"pending"}
        assert not fake.objects(ACCOUNT, "invoices")  # nothing is sent inside the request

        report = run_due_jobs(engine, gateway)

        assert (report.done, report.failed, report.retrying) == (3, 0, 0)
        for customer, total in TOTALS.items():
            ours = month.invoice(customer)
            assert ours["stripe_sync_status"] == "synced"
            assert ours["stripe_error"] == ""
            assert ours["payment_status"] == "unpaid"
            remote = _stripe_invoice(fake, month, customer)
            assert remote["total"] == total == ours["total_minor"]
            assert remote["status"] == "open"
            assert remote["currency"] == "usd"
            assert remote["metadata"]["agentmeter_invoice_id"] == ours["id"]
            # Each of our lines, at its exact amount; prepaid credit as a negative line.
            expected = [(line["description"], line["amount_minor"]) for line in ours["lines"]]
            if ours["credits_minor"]:
                expected.append(("Prepaid credit applied", -ours["credits_minor"]))
            assert [(x["description"], x["amount"]) for x in remote["lines"]["data"]] == expected
        assert sum(
            x["amount"] for x in _stripe_invoice(fake, month, "initech")["lines"]["data"]
        ) == (SUBTOTALS["initech"] - 1000)
        customers = {
            c["metadata"]["agentmeter_customer_id"]: c for c in fake.objects(ACCOUNT, "customers")
        }
        assert set(customers) == set(TOTALS)
        assert (customers["acme"]["name"], customers["acme"]["email"]) == (
            "Acme Inc",
            "acme@example.test",
        )
        assert customers["globex"]["email"] is None
        acme, globex = _stripe_invoice(fake, month, "acme"), _stripe_invoice(fake, month, "globex")
        assert (acme["collection_method"], acme["days_until_due"]) == ("send_invoice", 30)
        assert (globex["collection_method"], globex["days_until_due"]) == (
            "charge_automatically",
            None,
        )
        assert acme["application_fee_amount"] is None
        # Every call on the account named it and carried an idempotency key when it wrote.
        connected = [c for c in fake.calls if c.path.startswith(("/v1/invoice", "/v1/customers"))]
        assert connected and all(c.account == ACCOUNT for c in connected)
        assert all(c.idempotency_key for c in connected if c.method == "POST")

        # A second pass finds nothing to do.
        assert run_due_jobs(engine, gateway, _later()).done == 0
        assert len(fake.objects(ACCOUNT, "invoices")) == 3

    def test_the_platform_fee_is_a_share_of_the_total(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        response = month.put(
            "/api/v1/stripe/account",
            json={"account_id": ACCOUNT, "application_fee_percent": "2.5"},
        )
        assert response.json()["application_fee_percent"] == "2.5"
        month.finalize("acme")
        run_due_jobs(engine, gateway)
        # 2.5 % of 5685 = 142.125 → 142
        assert _stripe_invoice(fake, month, "acme")["application_fee_amount"] == 142

    def test_a_tenant_without_an_account_is_not_connected(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        assert month.finalize("acme")["stripe_sync_status"] == "not_connected"
        run_due_jobs(engine, gateway)
        assert fake.calls == []
        # Connecting later and asking for a sync pushes it.
        month.connect()
        queued = month.post(f"/api/v1/invoices/{month.invoices['acme']}/stripe-sync")
        assert queued.status_code == 202
        assert queued.json()["stripe_sync_status"] == "pending"
        run_due_jobs(engine, gateway)
        assert month.invoice("acme")["stripe_sync_status"] == "synced"


class TestRetries:
    def test_429_and_500_are_retried_with_backoff(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        month.connect()
        month.finalize("acme")
        fake.fail("POST /v1/invoices$", 429)
        first = run_due_jobs(engine, gateway)
        assert first.retrying == 1
        assert month.invoice("acme")["stripe_sync_status"] == "pending"
        # Not due again until the backoff has passed.
        assert run_due_jobs(engine, gateway).retrying == 0
        fake.fail("POST /v1/invoiceitems", 500)
        second = run_due_jobs(engine, gateway, _later(5))
        assert second.retrying == 1
        third = run_due_jobs(engine, gateway, _later(60))
        assert third.done == 1
        assert month.invoice("acme")["stripe_sync_status"] == "synced"
        assert len(fake.objects(ACCOUNT, "invoices")) == 1
        assert len(fake.objects(ACCOUNT, "invoice_items")) == 3
        assert _stripe_invoice(fake, month, "acme")["total"] == TOTALS["acme"]

    def test_a_lost_answer_is_asked_again_with_the_same_key(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        month.connect()
        month.finalize("acme")
        # Stripe makes the invoice but the answer comes after the client gave up.
        fake.delay("POST /v1/invoices$", 3.0)
        assert run_due_jobs(engine, gateway).retrying == 1
        assert len(fake.objects(ACCOUNT, "invoices")) == 1
        assert run_due_jobs(engine, gateway, _later()).done == 1
        assert len(fake.objects(ACCOUNT, "invoices")) == 1  # the replay, not a second one
        assert any(c.replayed and c.path == "/v1/invoices" for c in fake.calls)
        assert _stripe_invoice(fake, month, "acme")["status"] == "open"

    def test_a_worker_that_died_mid_push_is_resumed_without_duplicates(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        month.connect()
        month.finalize("acme")
        # A worker claims the job, makes the customer and the invoice, then dies.
        with Session(engine) as session, session.begin():
            job = session.scalars(select(StripeJob)).one()
            job.status, job.attempts = "running", 1
            job.next_attempt_at = utcnow() + LEASE
            job.progress = {"account": ACCOUNT}
        customer = gateway.create_customer(ACCOUNT, "dead-worker-customer", {"name": "Acme Inc"})
        assert run_due_jobs(engine, gateway).done == 0  # its lease still holds
        assert run_due_jobs(engine, gateway, utcnow() + LEASE + timedelta(seconds=1)).done == 1
        # The dead worker's customer was never recorded, so the resumed job made its own,
        # once; exactly one invoice with each line once.
        assert {c["id"] for c in fake.objects(ACCOUNT, "customers")} - {customer}
        assert len(fake.objects(ACCOUNT, "invoices")) == 1
        assert len(fake.objects(ACCOUNT, "invoice_items")) == 3


class TestPermanentFailures:
    def test_a_total_stripe_changed_is_an_exception_and_is_not_finalized(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        month.connect()
        month.finalize("acme")
        fake.accounts[ACCOUNT].surcharge = 7  # as if Stripe added tax
        assert run_due_jobs(engine, gateway).failed == 1
        ours = month.invoice("acme")
        assert ours["stripe_sync_status"] == "failed"
        assert "5692" in ours["stripe_error"] and "5685" in ours["stripe_error"]
        assert _stripe_exceptions(ours) == [("stripe_total_mismatch", "open")]
        assert _stripe_invoice(fake, month, "acme")["status"] == "draft"

        fake.accounts[ACCOUNT].surcharge = 0
        retried = month.post(f"/api/v1/invoices/{month.invoices['acme']}/stripe-sync")
        assert retried.json()["stripe_sync_status"] == "pending"
        assert run_due_jobs(engine, gateway).done == 1
        ours = month.invoice("acme")
        assert ours["stripe_sync_status"] == "synced" and ours["stripe_error"] == ""
        assert _stripe_exceptions(ours) == [("stripe_total_mismatch", "resolved")]
        assert _stripe_invoice(fake, month, "acme")["status"] == "open"
        assert len(fake.objects(ACCOUNT, "invoices")) == 1

    def test_retries_give_up_after_max_attempts(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        month.connect()
        month.finalize("acme")
        fake.fail("POST /v1/customers", 500, times=3)
        for hours in range(3):
            run_due_jobs(engine, gateway, utcnow() + timedelta(hours=7 * hours), max_attempts=3)
        ours = month.invoice("acme")
        assert ours["stripe_sync_status"] == "failed"
        assert "500" in ours["stripe_error"]
        assert _stripe_exceptions(ours) == [("stripe_sync_failed", "open")]


class TestVoidAndCreditNotes:
    def test_void_voids_the_stripe_invoice(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        month.connect()
        month.finalize("acme")
        run_due_jobs(engine, gateway)
        voided = month.post(
            f"/api/v1/invoices/{month.invoices['acme']}/void", json={"reason": "dup"}
        )
        assert voided.json()["payment_status"] == "void"
        assert voided.json()["stripe_sync_status"] == "pending"
        run_due_jobs(engine, gateway)
        assert _stripe_invoice(fake, month, "acme")["status"] == "void"
        assert month.invoice("acme")["stripe_sync_status"] == "synced"

    def test_void_before_the_push_ran_sends_nothing(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        month.connect()
        month.finalize("acme")
        month.post(f"/api/v1/invoices/{month.invoices['acme']}/void", json={"reason": "dup"})
        report = run_due_jobs(engine, gateway)
        assert fake.objects(ACCOUNT, "invoices") == []
        assert report.failed == 0
        assert run_due_jobs(engine, gateway, _later()).failed == 0

    def test_a_void_waits_for_its_push_in_backoff(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        month.connect()
        month.finalize("acme")
        fake.fail("POST /v1/invoices$", 503)
        assert run_due_jobs(engine, gateway).retrying == 1  # customer made, invoice not
        month.post(f"/api/v1/invoices/{month.invoices['acme']}/void", json={"reason": "dup"})
        assert run_due_jobs(engine, gateway).done == 0  # the void is not due before its push
        later = run_due_jobs(engine, gateway, _later())
        assert (later.done, later.failed) == (2, 0)
        assert fake.objects(ACCOUNT, "invoices") == []  # voided before reaching Stripe

    def test_credit_notes_become_stripe_credit_notes(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        month.connect()
        month.finalize("acme")
        path = f"/api/v1/invoices/{month.invoices['acme']}/credit-notes"
        assert month.post(path, json={"amount": "12.34", "reason": "outage"}).status_code == 201
        assert month.post(path, json={"reason": "the rest"}).status_code == 201
        run_due_jobs(engine, gateway)
        run_due_jobs(engine, gateway, _later())
        notes = fake.objects(ACCOUNT, "credit_notes")
        assert sorted(n["amount"] for n in notes) == [1234, TOTALS["acme"] - 1234]
        assert {n["invoice"] for n in notes} == {month.invoice("acme")["stripe_invoice_id"]}
        assert month.invoice("acme")["stripe_sync_status"] == "synced"


class TestSettings:
    def test_collection_terms_are_checked(self, month: Month) -> None:
        bad = month.put(
            "/api/v1/stripe/customers/acme",
            json={"collection_method": "charge_automatically", "days_until_due": 10},
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "bad_request"
        assert month.put("/api/v1/stripe/customers/nobody", json={}).status_code == 404
        assert (
            month.put("/api/v1/stripe/customers/acme", json={"collection_method": "x"}).status_code
            == 422
        )
        shown = month.get("/api/v1/stripe/customers/acme").json()
        assert (shown["collection_method"], shown["days_until_due"]) == ("send_invoice", 30)

    def test_fee_percent_is_validated(self, month: Month) -> None:
        response = month.put(
            "/api/v1/stripe/account",
            json={"account_id": ACCOUNT, "application_fee_percent": str(Decimal(101))},
        )
        assert response.status_code == 422
