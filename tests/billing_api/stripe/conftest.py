"""Fixtures of the Stripe tests: the fake Stripe on loopback, the gateway the app builds
from settings pointing at it, the API in process, and a tenant with a month to bill.

The month (USD, cents; price book of tests/billing_api/test_late_usage.py: input 3.00 and
output 12.00 per 10^6 tokens, platform fee 49.00):
- acme (acme@example.test): 1 234 567 input → 370, 345 678 output → 415, fee 4900 = 5685
- globex (charged automatically): 2 000 000 input → 600, 250 001 output → 300,
  fee 4900 = 5800
- initech: 10 000 input → 3, fee 4900 = 4903, less 10.00 prepaid credit = 3903
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.settings import Settings
from agentmeter.tables import (
    Customer,
    PriceBook,
    PriceComponent,
    PriceVersion,
    to_unix_nano,
)
from agentmeter.tenants import NewTenant, create_tenant
from billing_api.app import create_app
from billing_api.invoicing.runs import execute_run, start_run
from billing_api.stripe.gateway import StripeGateway, build_gateway
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord
from tests.billing_api.callers import staff
from tests.billing_api.test_late_usage import COMPONENTS
from tests.fake_stripe import API_KEY, CLIENT_ID, WEBHOOK_SECRET, FakeStripe, fake_stripe_serving

ACCOUNT = "acct_1AgentMeterTest"
PERIOD = "2026-11"
# November is still open while these tests run in it: finalize it early, as an operator may.
EARLY_FINALIZE = {"before_period_end": True, "reason": "Stripe push tests"}
# Customer → (input tokens, output tokens) in November, and what each invoice totals.
USAGE = {"acme": (1_234_567, 345_678), "globex": (2_000_000, 250_001), "initech": (10_000, 0)}
TOTALS = {"acme": 5685, "globex": 5800, "initech": 3903}
SUBTOTALS = {"acme": 5685, "globex": 5800, "initech": 4903}
CLIENT_TIMEOUT = 1.5


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with fake_stripe_serving() as running:
        running.add_account(ACCOUNT)
        yield running


def stripe_settings(fake: FakeStripe, **overrides: Any) -> Settings:
    """Settings that point the app's one Stripe client at the fake."""
    return Settings(
        stripe_api_key=API_KEY,
        stripe_api_base=fake.url,
        stripe_connect_base=fake.url,
        stripe_client_id=CLIENT_ID,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_timeout_seconds=CLIENT_TIMEOUT,
        **overrides,
    )


@pytest.fixture
def gateway(fake: FakeStripe) -> StripeGateway:
    built = build_gateway(stripe_settings(fake))
    assert built is not None
    return built


@dataclass
class Month:
    """A tenant with November drafted for acme, globex and initech, and an API client."""

    tenant: NewTenant
    api: TestClient
    invoices: dict[str, str]  # customer → invoice id

    @property
    def tenant_id(self) -> str:
        return self.tenant.tenant_id

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.api.get(path, headers=self._auth, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.api.post(path, headers=self._auth, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.api.put(path, headers=self._auth, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.api.delete(path, headers=self._auth, **kwargs)

    @property
    def _auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tenant.admin_key}"}

    def invoice(self, customer: str) -> dict[str, Any]:
        response = self.get(f"/api/v1/invoices/{self.invoices[customer]}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def finalize(self, customer: str) -> dict[str, Any]:
        response = self.post(
            f"/api/v1/invoices/{self.invoices[customer]}/finalize", json=EARLY_FINALIZE
        )
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def connect(self) -> None:
        response = self.put("/api/v1/stripe/account", json={"account_id": ACCOUNT})
        assert response.status_code == 200, response.text


def draft_month(engine: Engine, api_for: Any) -> Month:
    tenant = create_tenant(engine, "stripe builder")
    book_id, version_id = uuid.uuid4().hex, uuid.uuid4().hex
    with Session(engine) as session, session.begin():
        session.add(
            PriceBook(
                id=book_id, tenant_id=tenant.tenant_id, name="standard", currency="USD",
                is_default=True,
            )
        )  # fmt: skip
        session.add(
            Customer(
                tenant_id=tenant.tenant_id, id="acme", name="Acme Inc", email="acme@example.test"
            )
        )
        session.add(Customer(tenant_id=tenant.tenant_id, id="globex", name="Globex Corp"))
        session.add(Customer(tenant_id=tenant.tenant_id, id="initech", name="Initech"))
        session.flush()
        session.add(
            PriceVersion(
                id=version_id, book_id=book_id, number=1,
                effective_from=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )  # fmt: skip
        session.flush()
        session.add_all(
            PriceComponent(id=uuid.uuid4().hex, version_id=version_id, position=p, filters={}, **f)
            for p, f in enumerate(COMPONENTS)
        )
    at = to_unix_nano(datetime(2026, 11, 10, tzinfo=UTC))
    records = []
    for customer, (input_tokens, output_tokens) in USAGE.items():
        trace, span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        common = {"provider": "openai", "model": "gpt-4o", "operation": "chat"}
        records.append(
            UsageRecord(trace, span, "input_tokens", input_tokens, customer, at, **common)
        )
        if output_tokens:
            records.append(
                UsageRecord(trace, span, "output_tokens", output_tokens, customer, at, **common)
            )
    SqlUsageSink(engine).write(tenant.tenant_id, UsageBatch(records))
    month = Month(tenant, api_for(), {})
    granted = month.post(
        "/api/v1/customers/initech/credits",
        json={"amount": "10.00", "currency": "USD", "expires_at": "2027-06-01T00:00:00Z"},
    )
    assert granted.status_code == 201, granted.text
    with Session(engine) as session, session.begin():
        run_id = start_run(session, staff(tenant.tenant_id), PERIOD).id
    assert execute_run(engine, tenant.tenant_id, run_id).status == "completed"
    for invoice in month.get("/api/v1/invoices", params={"period": PERIOD}).json():
        month.invoices[invoice["customer_id"]] = invoice["id"]
    assert set(month.invoices) == set(USAGE)
    return month


@pytest.fixture
def month(engine: Engine, gateway: StripeGateway) -> Iterator[Month]:
    app = create_app(engine, CollectorRegistry(), stripe=gateway)
    with TestClient(app) as client:
        yield draft_month(engine, lambda: client)
