"""Budgets against real estimates, threshold alerts recorded once per period, and their
signed webhooks delivered to a real local HTTP server (with retries), on each backend."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agentmeter.tables import (
    BudgetAlert,
    Customer,
    PriceBook,
    PriceComponent,
    PriceVersion,
    WebhookDelivery,
    to_unix_nano,
)
from agentmeter.tenants import create_tenant
from billing_api.budgets import service as budgets
from billing_api.budgets.schemas import BudgetSet
from billing_api.periods import period_containing
from billing_api.webhooks import service as webhooks
from billing_api.webhooks.delivery import (
    SIGNATURE_HEADER,
    deliver_due,
    retry_delay,
    signature,
    verify_signature,
)
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord
from tests.billing_api.callers import staff
from tests.billing_api.inprocess import api_client
from tests.conftest import RunningServer

NOW = datetime(2026, 11, 15, 12, tzinfo=UTC)
NOVEMBER = period_containing(NOW)
# The price: 10.00 USD per million input tokens.
MILLION = 1_000_000


@pytest.fixture(autouse=True)
def _webhooks_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver below listens on loopback over http: allowed only by this setting."""
    monkeypatch.setenv("AGENTMETER_WEBHOOK_ALLOW_PRIVATE", "true")


# --- A real webhook receiver -------------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP server on port 0 that records each POST and answers `status`."""

    status: int = 200
    delay: float = 0.0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            time.sleep(state.delay)
            with state.lock:
                state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(state.status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{http.server_address[1]}/hooks/agentmeter"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        http.shutdown()
        http.server_close()
        thread.join(timeout=10)


def assert_signed(secret: str, headers: dict[str, str], body: bytes) -> None:
    """Verify as a receiver would, independently of AgentMeter's own helper."""
    parts = dict(item.split("=", 1) for item in headers[SIGNATURE_HEADER.lower()].split(","))
    expected = hmac.new(
        secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    assert abs(time.time() - int(parts["t"])) < 300
    assert headers["content-type"] == "application/json"


# --- Pricing and usage as rows -----------------------------------------------------------


def setup_tenant(engine: Engine, tenant_id: str | None = None) -> str:
    """A tenant (created unless given) with customer "acme" and a default USD price book of
    one per_unit component: input tokens at 10.00 per million."""
    tenant_id = tenant_id or create_tenant(engine, "budgets").tenant_id
    book_id, version_id = uuid.uuid4().hex, uuid.uuid4().hex
    with Session(engine) as session, session.begin():
        session.add(Customer(tenant_id=tenant_id, id="acme", name="Acme"))
        session.add(
            PriceBook(
                id=book_id, tenant_id=tenant_id, name="Standard", currency="USD", is_default=True
            )
        )
        session.flush()
        session.add(
            PriceVersion(
                id=version_id,
                book_id=book_id,
                number=1,
                effective_from=datetime(2020, 1, 1, tzinfo=UTC),
            )
        )
        session.flush()
        session.add(
            PriceComponent(
                id=uuid.uuid4().hex,
                version_id=version_id,
                position=0,
                name="input",
                meter="input_tokens",
                filters={},
                charge="per_unit",
                unit_price=Decimal("10"),
                per_units=MILLION,
            )
        )
    return tenant_id


def use(engine: Engine, tenant_id: str, tokens: int, at: datetime, customer: str = "acme") -> None:
    record = UsageRecord(
        trace_id=uuid.uuid4().hex,
        span_id=uuid.uuid4().hex[:16],
        meter="input_tokens",
        quantity=tokens,
        customer_id=customer,
        time_unix_nano=to_unix_nano(at),
        provider="openai",
        model="gpt-4o",
        operation="chat",
    )
    SqlUsageSink(engine).write(tenant_id, UsageBatch([record]))


def set_budget(engine: Engine, tenant_id: str, limit: str = "100.00", **fields: Any) -> None:
    body = BudgetSet.model_validate({"limit": limit, "currency": "USD", **fields})
    with Session(engine) as session, session.begin():
        budgets.put_budget(
            session,
            staff(tenant_id),
            "acme",
            currency=body.currency,
            limit_minor=body.limit_minor,
            thresholds=body.thresholds,
            now=NOW,
        )


def evaluate(engine: Engine, tenant_id: str, now: datetime = NOW) -> budgets.BudgetStatus:
    with Session(engine) as session, session.begin():
        return budgets.evaluate_budget(session, staff(tenant_id), "acme", now)


def alerts(engine: Engine, tenant_id: str) -> list[tuple[datetime, int]]:
    with Session(engine) as session:
        rows = session.execute(
            select(BudgetAlert.period_start, BudgetAlert.threshold)
            .where(BudgetAlert.tenant_id == tenant_id)
            .order_by(BudgetAlert.period_start, BudgetAlert.threshold)
        )
        return [(start, threshold) for start, threshold in rows]


def deliveries(engine: Engine, tenant_id: str) -> list[WebhookDelivery]:
    """The tenant's outbox in the order events were recorded (thresholds ascending)."""
    with Session(engine) as session:
        rows = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant_id)
        ).all()
    return sorted(rows, key=lambda d: (d.created_at, d.payload["data"].get("threshold", 0)))


# --- Budgets and alerts ------------------------------------------------------------------


class TestEvaluate:
    def test_spend_against_limit(self, engine: Engine) -> None:
        tenant_id = setup_tenant(engine)
        set_budget(engine, tenant_id)
        use(engine, tenant_id, 4 * MILLION, NOW - timedelta(days=1))
        use(engine, tenant_id, 9 * MILLION, NOVEMBER.start - timedelta(seconds=1))  # October

        status = evaluate(engine, tenant_id)
        assert (status.spent_minor, status.limit_minor, status.remaining_minor) == (
            4000,
            10000,
            6000,
        )
        assert status.within_limit and status.percent_used == Decimal("40.00")
        assert status.crossed == [] and status.period == NOVEMBER

        use(engine, tenant_id, 7 * MILLION, NOW)
        status = evaluate(engine, tenant_id)
        assert status.spent_minor == 11000 and status.remaining_minor == 0
        assert not status.within_limit and status.percent_used == Decimal("110.00")
        assert status.crossed == [50, 80, 100]

    def test_alerts_once_per_threshold_per_period(self, engine: Engine) -> None:
        tenant_id = setup_tenant(engine)
        set_budget(engine, tenant_id, thresholds=[50, 80, 100, 150])
        use(engine, tenant_id, 9 * MILLION, NOW - timedelta(hours=1))
        for _ in range(3):
            assert evaluate(engine, tenant_id).crossed == [50, 80]
        assert budgets.sweep_budgets(engine, NOW) == 0
        assert alerts(engine, tenant_id) == [(NOVEMBER.start, 50), (NOVEMBER.start, 80)]

        use(engine, tenant_id, 3 * MILLION, NOW)  # 120.00 of 100.00
        assert budgets.sweep_budgets(engine, NOW) == 1
        assert evaluate(engine, tenant_id).newly_alerted == []
        assert [t for _, t in alerts(engine, tenant_id)] == [50, 80, 100]

        # The next period starts over.
        december = NOW + timedelta(days=30)
        use(engine, tenant_id, 6 * MILLION, december)
        status = evaluate(engine, tenant_id, december)
        assert status.crossed == [50] and status.newly_alerted == [50]
        assert alerts(engine, tenant_id)[-1] == (status.period.start, 50)
        assert status.period.start == datetime(2026, 12, 1, tzinfo=UTC)

        events = deliveries(engine, tenant_id)
        assert [e.event_type for e in events] == ["budget.threshold_crossed"] * 4
        assert [e.payload["data"]["threshold"] for e in events] == [50, 80, 100, 50]
        assert all(e.status == "skipped" for e in events)  # no endpoint configured
        first = events[0].payload
        assert set(first) == {"id", "type", "created_at", "data"} and first["id"] == events[0].id
        assert first["data"] == {
            "customer_id": "acme",
            "threshold": 50,
            "currency": "USD",
            "limit": "100.00",
            "limit_minor": 10000,
            "spent": "90.00",
            "spent_minor": 9000,
            "percent_used": "90.00",
            "period_start": NOVEMBER.start.isoformat(),
            "period_end": NOVEMBER.end.isoformat(),
        }

    def test_concurrent_evaluations_alert_once(self, engine: Engine) -> None:
        tenant_id = setup_tenant(engine)
        set_budget(engine, tenant_id)
        use(engine, tenant_id, 10 * MILLION, NOW)
        barrier = threading.Barrier(6)
        new: list[int] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                barrier.wait(timeout=30)
                new.extend(evaluate(engine, tenant_id).newly_alerted)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=run) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors
        assert sorted(new) == [50, 80, 100]
        assert [t for _, t in alerts(engine, tenant_id)] == [50, 80, 100]
        assert len(deliveries(engine, tenant_id)) == 3

    def test_thresholds_exact_in_minor_units(self) -> None:
        assert budgets.crossed_thresholds(4999, 10000, [50, 100]) == []
        assert budgets.crossed_thresholds(5000, 10000, [50, 100]) == [50]
        assert budgets.crossed_thresholds(1, 3, [33, 34]) == [33]
        assert budgets.crossed_thresholds(30000, 10000, [100, 300, 1000]) == [100, 300]


# --- Webhook delivery -------------------------------------------------------------------


def endpoint(engine: Engine, tenant_id: str, url: str) -> str:
    with Session(engine) as session, session.begin():
        return webhooks.set_endpoint(session, staff(tenant_id), url, allow_private=True)


class TestDelivery:
    def test_delivered_and_signed(self, engine: Engine, receiver: Receiver) -> None:
        tenant_id = setup_tenant(engine)
        secret = endpoint(engine, tenant_id, receiver.url)
        set_budget(engine, tenant_id)
        use(engine, tenant_id, 8 * MILLION, NOW)
        evaluate(engine, tenant_id)

        report = deliver_due(engine, NOW)
        assert (report.delivered, report.retrying, report.failed) == (2, 0, 0)
        assert len(receiver.requests) == 2
        for headers, body in receiver.requests:
            assert_signed(secret, headers, body)
            assert verify_signature(secret, body, headers[SIGNATURE_HEADER.lower()])
            assert not verify_signature(secret, body + b" ", headers[SIGNATURE_HEADER.lower()])
            assert not verify_signature("whsec_other", body, headers[SIGNATURE_HEADER.lower()])
        events = receiver.events()
        assert [e["type"] for e in events] == ["budget.threshold_crossed"] * 2
        assert sorted(e["data"]["threshold"] for e in events) == [50, 80]

        stored = deliveries(engine, tenant_id)
        assert {d.id for d in stored} == {e["id"] for e in events}
        assert all(d.status == "delivered" and d.attempts == 1 for d in stored)
        assert all(d.delivered_at is not None for d in stored)
        assert deliver_due(engine, NOW + timedelta(days=1)).delivered == 0
        assert len(receiver.requests) == 2

    def test_failing_receiver_retried_with_backoff_then_failed(
        self, engine: Engine, receiver: Receiver
    ) -> None:
        tenant_id = setup_tenant(engine)
        endpoint(engine, tenant_id, receiver.url)
        receiver.status = 500
        with Session(engine) as session, session.begin():
            webhooks.enqueue_event(session, tenant_id, "test.event", {"n": 1}, now=NOW)

        def state() -> tuple[str, int, datetime, str]:
            (delivery,) = deliveries(engine, tenant_id)
            return delivery.status, delivery.attempts, delivery.next_attempt_at, delivery.last_error

        moment = NOW
        for attempt in (1, 2, 3):
            report = deliver_due(engine, moment, max_attempts=4)
            assert report.retrying == 1
            status, attempts, next_attempt_at, error = state()
            assert (status, attempts) == ("pending", attempt)
            assert next_attempt_at == moment + retry_delay(attempt)
            assert error.startswith("HTTP 500")
            # Not due before its time.
            assert deliver_due(engine, next_attempt_at - timedelta(seconds=1)).retrying == 0
            assert len(receiver.requests) == attempt
            moment = next_attempt_at
        assert [retry_delay(a) for a in (1, 2, 3)] == [
            timedelta(seconds=30),
            timedelta(seconds=60),
            timedelta(seconds=120),
        ]
        assert deliver_due(engine, moment, max_attempts=4).failed == 1
        assert state()[:2] == ("failed", 4)
        assert deliver_due(engine, moment + timedelta(days=30)).failed == 0
        assert len(receiver.requests) == 4

    def test_unreachable_receiver(self, engine: Engine) -> None:
        tenant_id = setup_tenant(engine)
        endpoint(engine, tenant_id, "http://127.0.0.1:9/closed")
        with Session(engine) as session, session.begin():
            webhooks.enqueue_event(session, tenant_id, "test.event", {}, now=NOW)
        assert deliver_due(engine, NOW).retrying == 1
        (delivery,) = deliveries(engine, tenant_id)
        assert delivery.status == "pending" and "Connect" in delivery.last_error

    def test_two_workers_send_each_event_once(self, engine: Engine, receiver: Receiver) -> None:
        tenant_id = setup_tenant(engine)
        endpoint(engine, tenant_id, receiver.url)
        receiver.delay = 0.2
        with Session(engine) as session, session.begin():
            for n in range(6):
                webhooks.enqueue_event(session, tenant_id, "test.event", {"n": n}, now=NOW)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                barrier.wait(timeout=30)
                deliver_due(engine, NOW)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors
        assert sorted(e["data"]["n"] for e in receiver.events()) == list(range(6))
        assert all(
            d.status == "delivered" and d.attempts == 1 for d in deliveries(engine, tenant_id)
        )

    def test_signature_helpers(self) -> None:
        header = signature("whsec_x", b'{"a":1}', 1_700_000_000)
        assert header.startswith("t=1700000000,v1=")
        assert verify_signature("whsec_x", b'{"a":1}', header, now=1_700_000_100)
        assert not verify_signature("whsec_x", b'{"a":1}', header, now=1_700_001_000)  # replay
        assert not verify_signature("whsec_x", b'{"a":1}', "v1=abc", now=1_700_000_000)


# --- The API ------------------------------------------------------------------------------


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


INVALID_BUDGETS: list[tuple[str, dict[str, Any]]] = [
    ("negative limit", {"limit": "-1", "currency": "USD"}),
    ("zero limit", {"limit": "0", "currency": "USD"}),
    ("limit below the minor unit", {"limit": "1.001", "currency": "USD"}),
    ("unknown currency", {"limit": "10", "currency": "XYZ"}),
    ("not the billing currency", {"limit": "10", "currency": "EUR"}),
    ("threshold zero", {"limit": "10", "currency": "USD", "thresholds": [0, 50]}),
    ("threshold above 1000", {"limit": "10", "currency": "USD", "thresholds": [50, 1001]}),
    ("thresholds descending", {"limit": "10", "currency": "USD", "thresholds": [80, 50]}),
    ("thresholds repeated", {"limit": "10", "currency": "USD", "thresholds": [50, 50]}),
    ("threshold not an integer", {"limit": "10", "currency": "USD", "thresholds": ["50"]}),
]


def test_budget_api(engine: Engine) -> None:
    # In-process: what is tested is the API's answers, not the server around it.
    tenant = create_tenant(engine, "budgets")
    tenant_id = setup_tenant(engine, tenant.tenant_id)
    now = datetime.now(UTC)
    use(engine, tenant_id, 4 * MILLION, now)
    with api_client(engine, tenant.admin_key) as api:
        assert api.get("/api/v1/customers/acme/budget").status_code == 404
        body = {"limit": "100", "currency": "usd", "thresholds": [50, 80, 100]}
        status = ok(api.put("/api/v1/customers/acme/budget", json=body))
        period = period_containing(now)
        assert status == {
            "customer_id": "acme",
            "currency": "USD",
            "limit": "100.00",
            "limit_minor": 10000,
            "spent": "40.00",
            "spent_minor": 4000,
            "remaining": "60.00",
            "remaining_minor": 6000,
            "period_start": period.start.isoformat().replace("+00:00", "Z"),
            "period_end": period.end.isoformat().replace("+00:00", "Z"),
            "within_limit": True,
            "percent_used": "40.00",
            "thresholds": [50, 80, 100],
            "thresholds_crossed": [],
        }

        use(engine, tenant_id, 7 * MILLION, now)
        for _ in range(3):
            status = ok(api.get("/api/v1/customers/acme/budget"))
            assert status["spent"] == "110.00" and status["remaining"] == "0.00"
            assert status["within_limit"] is False and status["percent_used"] == "110.00"
            assert status["thresholds_crossed"] == [50, 80, 100]
        outbox = ok(api.get("/api/v1/webhook/deliveries"))
        assert sorted(d["payload"]["data"]["threshold"] for d in outbox) == [50, 80, 100]
        assert ok(api.get("/api/v1/webhook/deliveries", params={"status": "pending"})) == []

        for case, invalid in INVALID_BUDGETS:
            response = api.put("/api/v1/customers/acme/budget", json=invalid)
            assert response.status_code == 422, (case, response.text)
            assert response.json()["error"]["code"] == "validation_error", case
        ghost = api.put("/api/v1/customers/ghost/budget", json={"limit": "1", "currency": "USD"})
        assert ghost.status_code == 404
        assert api.get("/api/v1/customers/ghost/budget").status_code == 404

        assert api.delete("/api/v1/customers/acme/budget").status_code == 204
        assert api.get("/api/v1/customers/acme/budget").status_code == 404
        assert api.delete("/api/v1/customers/acme/budget").status_code == 404


def test_background_sweep_delivers_signed_webhooks(
    server: RunningServer, engine: Engine, receiver: Receiver
) -> None:
    """`agentmeter serve` sweeps budgets and sends webhooks on its own, and stops cleanly."""
    server.stop()
    server.env["AGENTMETER_BACKGROUND_INTERVAL_SECONDS"] = "0.2"
    server.start()
    tenant_id = setup_tenant(engine, server.tenant.tenant_id)
    with httpx.Client(base_url=server.api_url, headers=server.admin_headers, timeout=30) as api:
        bad = api.put("/api/v1/webhook", json={"url": "ftp://example.com"})
        assert bad.status_code == 422
        first = ok(api.put("/api/v1/webhook", json={"url": receiver.url}))
        rotated = ok(api.put("/api/v1/webhook", json={"url": receiver.url}))
        assert rotated["secret"] != first["secret"] and rotated["secret"].startswith("whsec_")
        assert rotated["signature_header"] == SIGNATURE_HEADER
        assert ok(api.get("/api/v1/webhook")) == {"url": receiver.url}
        ok(api.put("/api/v1/customers/acme/budget", json={"limit": "100", "currency": "USD"}))
        use(engine, tenant_id, 9 * MILLION, datetime.now(UTC))  # 90 %: crosses 50 and 80

        deadline = time.monotonic() + 30
        while len(receiver.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # nothing more arrives
        assert sorted(e["data"]["threshold"] for e in receiver.events()) == [50, 80]
        for headers, body in receiver.requests:
            assert_signed(rotated["secret"], headers, body)

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            outbox = ok(api.get("/api/v1/webhook/deliveries"))
            if all(d["status"] == "delivered" for d in outbox):
                break
            time.sleep(0.1)
        assert [(d["status"], d["attempts"]) for d in outbox] == [("delivered", 1)] * 2
    server.stop()
    assert server.process is not None and server.process.returncode == 0
    assert server.log_path is not None
    assert "Traceback" not in server.log_path.read_text()
