"""Stripe's Connect webhooks drive `payment_status`: verified on the raw body, stored once
per event id, processed from the store; bad ones change nothing.

Events come from the fake Stripe as its invoices change (finalize, pay, void, …) and are
signed as Stripe signs them: `Stripe-Signature: t=<unix>,v1=<HMAC-SHA256 of "t.body">`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from agentmeter.tables import StripeEvent
from billing_api.stripe.events import process_events, store_event
from billing_api.stripe.gateway import StripeGateway
from billing_api.stripe.outbox import run_due_jobs
from tests.billing_api.stripe.conftest import ACCOUNT, Month
from tests.fake_stripe import FakeStripe, sign_webhook

WEBHOOKS = "/api/v1/stripe/webhooks"


def _send(month: Month, event: dict[str, Any], **sign: Any) -> Any:
    body = json.dumps(event).encode()
    return month.api.post(
        WEBHOOKS,
        content=body,
        headers={
            "Stripe-Signature": sign_webhook(body, **sign),
            "content-type": "application/json",
        },
    )


def _pushed(month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway) -> str:
    """acme's invoice, finalized and pushed; its Stripe id."""
    month.connect()
    month.finalize("acme")
    assert run_due_jobs(engine, gateway).done == 1
    stripe_id: str = month.invoice("acme")["stripe_invoice_id"]
    return stripe_id


def _stored(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(StripeEvent)) or 0


def _event(fake: FakeStripe, kind: str) -> dict[str, Any]:
    return next(e for e in reversed(fake.events) if e["type"] == kind)


class TestPaymentStatus:
    def test_status_follows_the_invoice_events(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        stripe_id = _pushed(month, fake, engine, gateway)
        finalized = _send(month, _event(fake, "invoice.finalized"))
        assert finalized.status_code == 200
        assert finalized.json() == {"received": True, "duplicate": False}
        assert month.invoice("acme")["payment_status"] == "unpaid"

        assert _send(month, fake.fail_payment(ACCOUNT, stripe_id)).status_code == 200
        assert month.invoice("acme")["payment_status"] == "payment_failed"
        paid = fake.pay(ACCOUNT, stripe_id)
        assert _send(month, paid).status_code == 200
        assert month.invoice("acme")["payment_status"] == "paid"

        # A replay (same event id) is acknowledged and changes nothing.
        replay = _send(month, paid)
        assert replay.status_code == 200
        assert replay.json()["duplicate"] is True
        # An older event arriving late does not undo "paid".
        late = {**fake.fail_payment(ACCOUNT, stripe_id), "created": paid["created"] - 60}
        _send(month, late)
        assert month.invoice("acme")["payment_status"] == "paid"

    def test_uncollectible_then_voided(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        stripe_id = _pushed(month, fake, engine, gateway)
        _send(month, fake.mark_uncollectible(ACCOUNT, stripe_id))
        assert month.invoice("acme")["payment_status"] == "uncollectible"
        # Voided on Stripe by the builder: our payment status follows.
        with fake.lock:
            fake.accounts[ACCOUNT].invoices[stripe_id]["status"] = "void"
        voided = {**_event(fake, "invoice.marked_uncollectible"), "id": "evt_voided_by_hand"}
        voided["type"] = "invoice.voided"
        _send(month, voided)
        assert month.invoice("acme")["payment_status"] == "void"

    def test_our_void_reaches_stripe_and_its_event_agrees(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        _pushed(month, fake, engine, gateway)
        month.post(f"/api/v1/invoices/{month.invoices['acme']}/void", json={"reason": "typo"})
        run_due_jobs(engine, gateway)
        assert _send(month, _event(fake, "invoice.voided")).status_code == 200
        ours = month.invoice("acme")
        assert (ours["status"], ours["payment_status"]) == ("void", "void")

    def test_events_are_processed_from_the_store(
        self, month: Month, fake: FakeStripe, engine: Engine, gateway: StripeGateway
    ) -> None:
        stripe_id = _pushed(month, fake, engine, gateway)
        paid = fake.pay(ACCOUNT, stripe_id)
        with Session(engine) as session, session.begin():
            assert store_event(session, paid)  # stored, as by a request whose process died
        assert month.invoice("acme")["payment_status"] == "unpaid"
        assert process_events(engine).processed == 1
        assert month.invoice("acme")["payment_status"] == "paid"
        assert process_events(engine).processed == 0


class TestBadWebhooks:
    @pytest.mark.parametrize(
        "tamper",
        [
            pytest.param(
                lambda body, header: (body, header.replace("v1=", "v1=00")), id="signature"
            ),
            pytest.param(lambda body, header: (body + b" ", header), id="body-changed"),
            pytest.param(lambda body, header: (body, ""), id="no-signature"),
            pytest.param(
                lambda body, header: (body, sign_webhook(body, secret="whsec_other")),
                id="other-secret",
            ),
            pytest.param(
                lambda body, header: (body, sign_webhook(body, timestamp=int(time.time()) - 3600)),
                id="too-old",
            ),
            pytest.param(
                lambda body, header: (b"\xff\xfe", sign_webhook(b"\xff\xfe")), id="not-utf8"
            ),
            pytest.param(
                lambda body, header: (b"[1, 2]", sign_webhook(b"[1, 2]")), id="not-an-event"
            ),
            pytest.param(lambda body, header: (b"{", sign_webhook(b"{")), id="not-json"),
        ],
    )
    def test_is_refused_with_400_and_changes_nothing(
        self,
        month: Month,
        fake: FakeStripe,
        engine: Engine,
        gateway: StripeGateway,
        tamper: Any,
    ) -> None:
        stripe_id = _pushed(month, fake, engine, gateway)
        body = json.dumps(fake.pay(ACCOUNT, stripe_id)).encode()
        body, header = tamper(body, sign_webhook(body))
        headers = {"content-type": "application/json"}
        if header:
            headers["Stripe-Signature"] = header
        response = month.api.post(WEBHOOKS, content=body, headers=headers)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_signature"
        assert _stored(engine) == 0
        assert month.invoice("acme")["payment_status"] == "unpaid"

    def test_an_unknown_account_is_acknowledged_logged_and_ignored(
        self,
        month: Month,
        fake: FakeStripe,
        engine: Engine,
        gateway: StripeGateway,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        stripe_id = _pushed(month, fake, engine, gateway)
        stranger = {**fake.pay(ACCOUNT, stripe_id), "account": "acct_someoneelse"}
        with caplog.at_level(logging.WARNING, logger="agentmeter.stripe"):
            response = _send(month, stranger)
        assert response.status_code == 200
        assert "unknown account acct_someoneelse" in caplog.text
        assert month.invoice("acme")["payment_status"] == "unpaid"
        with Session(engine) as session:
            stored = session.get(StripeEvent, stranger["id"])
            assert stored is not None and stored.status == "ignored"

    def test_webhooks_are_off_without_a_secret(self, month: Month) -> None:
        month.api.app.state.stripe.webhook_secret = None  # type: ignore[attr-defined]
        body = b"{}"
        response = month.api.post(
            WEBHOOKS, content=body, headers={"Stripe-Signature": sign_webhook(body)}
        )
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "stripe_not_configured"
