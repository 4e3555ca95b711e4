"""Issue 8, defects 7, 10 and 11: another tenant's or an unknown invoice's audit is 404;
CSV exports cannot carry formulas; invoice lists carry their exceptions; finalizing before
the period ends needs an audited reason; estimates for a past period."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from agentmeter.tenants import create_tenant
from tests.billing_api.inprocess import api_client

PERIOD = "2026-10"  # ended: finalizes without an override
CURRENT = "2026-11"


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def setup(api: TestClient) -> None:
    """acme and globex on a 10.00 USD flat fee, from 2026-01."""
    for customer in ("acme", "globex"):
        ok(api.post("/api/v1/customers", json={"id": customer, "name": customer}), 201)
    book = {"name": "b", "currency": "USD", "is_default": True}
    book_id = ok(api.post("/api/v1/price-books", json=book), 201)["id"]
    version = {
        "effective_from": "2026-01-01T00:00:00Z",
        "components": [{"name": "platform", "charge": "flat_fee", "amount": "10"}],
    }
    ok(api.post(f"/api/v1/price-books/{book_id}/versions", json=version), 201)


def run(api: TestClient, period: str) -> None:
    started = ok(api.post("/api/v1/billing-runs", json={"period": period}), 202)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = ok(api.get(f"/api/v1/billing-runs/{started['id']}"))
        if found["status"] != "running":
            assert found["status"] == "completed", found
            return
        time.sleep(0.05)
    raise AssertionError("run did not finish")


def invoices(api: TestClient, period: str) -> dict[str, Any]:
    listed = ok(api.get("/api/v1/invoices", params={"period": period}))
    return {i["customer_id"]: i for i in listed}


@pytest.fixture
def keys(engine: Engine) -> tuple[str, str]:
    return create_tenant(engine, "mine").admin_key, create_tenant(engine, "theirs").admin_key


@pytest.fixture
def api(engine: Engine, keys: tuple[str, str]) -> Iterator[TestClient]:
    with api_client(engine, keys[0]) as client:
        setup(client)
        yield client


@pytest.fixture
def other(engine: Engine, keys: tuple[str, str]) -> Iterator[TestClient]:
    with api_client(engine, keys[1]) as client:
        yield client


def test_audit_of_unknown_or_foreign_invoice_is_404(api: TestClient, other: TestClient) -> None:
    run(api, PERIOD)
    acme = invoices(api, PERIOD)["acme"]
    assert ok(api.get(f"/api/v1/invoices/{acme['id']}/audit")) == []
    for client, invoice_id in ((api, "no-such-invoice"), (other, acme["id"])):
        answer = client.get(f"/api/v1/invoices/{invoice_id}/audit")
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "not_found"


def test_invoice_list_carries_each_invoices_exceptions(api: TestClient) -> None:
    ok(api.patch("/api/v1/billing-settings", json={"review_threshold_minor": 500}))
    run(api, PERIOD)
    listed = invoices(api, PERIOD)
    for customer in ("acme", "globex"):
        single = ok(api.get(f"/api/v1/invoices/{listed[customer]['id']}"))
        assert single["exceptions"], single
        assert listed[customer]["exceptions"] == single["exceptions"]
        assert {e["type"] for e in single["exceptions"]} == {"total_above_review_threshold"}


def test_csv_export_neutralises_formulas(api: TestClient) -> None:
    run(api, PERIOD)
    invoice_id = invoices(api, PERIOD)["acme"]["id"]
    lines = f"/api/v1/invoices/{invoice_id}/lines"
    hostile = ['=HYPERLINK("http://evil.example","x")', "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    for description in hostile:
        line = {"description": description, "unit_price": "1", "reason": "r"}
        ok(api.post(lines, json=line), 201)
    ok(api.post(lines, json={"description": "goodwill", "unit_price": "5", "discount": True}), 201)
    exported = api.get(f"/api/v1/invoices/{invoice_id}/export.csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    by_description = {row["description"]: row for row in rows}
    for description in hostile:
        assert "'" + description in by_description, by_description.keys()
    # Numbers stay numbers: a discount's negative amount is not a formula.
    assert by_description["goodwill"]["amount"] == "-5.00"
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), row
            assert not cell.startswith("-") or cell.lstrip("-").replace(".", "").isdigit()


def test_finalizing_before_the_period_ends(api: TestClient) -> None:
    run(api, CURRENT)  # November 2026 ends 2026-12-01; the suite's clock is before that
    acme = invoices(api, CURRENT)["acme"]
    if acme["period_end"] <= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()):
        pytest.skip("the wall clock is past November 2026")
    url = f"/api/v1/invoices/{acme['id']}/finalize"
    refused = api.post(url)
    assert refused.status_code == 409 and "ends at" in refused.json()["error"]["message"]
    assert api.post(url, json={"before_period_end": True}).status_code == 422  # no reason
    final = ok(api.post(url, json={"before_period_end": True, "reason": "customer leaves"}))
    assert final["status"] == "finalized"
    (entry,) = ok(api.get(f"/api/v1/invoices/{acme['id']}/audit"))
    assert (entry["action"], entry["reason"]) == ("finalize", "customer leaves")
    assert entry["after"]["before_period_end"] is True


def test_finalizing_after_the_period_needs_no_override(api: TestClient) -> None:
    run(api, PERIOD)
    acme = invoices(api, PERIOD)["acme"]
    final = ok(api.post(f"/api/v1/invoices/{acme['id']}/finalize"))
    assert final["status"] == "finalized"
    (entry,) = ok(api.get(f"/api/v1/invoices/{acme['id']}/audit"))
    assert entry["after"]["before_period_end"] is False and entry["reason"] == ""


def test_estimate_of_a_given_period(api: TestClient) -> None:
    october = ok(api.get("/api/v1/customers/acme/estimate", params={"period": PERIOD}))
    assert october["period_start"].startswith("2026-10-01")
    assert october["period_end"].startswith("2026-11-01")
    current = ok(api.get("/api/v1/customers/acme/estimate"))
    assert current["period_start"] != october["period_start"]
    bad = api.get("/api/v1/customers/acme/estimate", params={"period": "2026-13"})
    assert bad.status_code == 422
