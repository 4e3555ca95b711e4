"""Issue 8, defect 6: bad admin input answers a 4xx JSON error, never a 500 — each case
reported, and the rest of their class (unbounded numbers, times and text that reach the
database)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from agentmeter.tenants import create_tenant
from tests.billing_api.inprocess import api_client


@pytest.fixture
def api(engine: Engine) -> Iterator[TestClient]:
    with api_client(engine, create_tenant(engine, "t").admin_key) as client:
        yield client


def refused(response: Any, status: int = 422) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    message: str = body["error"]["message"]
    return message


@pytest.mark.parametrize(
    ("period", "says"),
    [
        pytest.param("0000-01", "year must be", id="year 0"),
        pytest.param("9999-12", "year must be", id="year 9999"),
        pytest.param("1969-12", "year must be", id="before usage times"),
        pytest.param("١٢٣٤-10", "pattern", id="arabic-indic digits"),
        pytest.param("２０２６-10", "pattern", id="fullwidth digits"),
        pytest.param("2026-10\n", "pattern", id="trailing newline"),
        pytest.param("2199-01", "has not begun", id="future month"),
    ],
)
def test_billing_run_periods(api: TestClient, period: str, says: str) -> None:
    assert says in refused(api.post("/api/v1/billing-runs", json={"period": period}))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"review_threshold_minor": 2**63}, id="threshold 2^63"),
        pytest.param({"review_threshold_minor": -1}, id="threshold negative"),
        pytest.param({"spike_factor": None}, id="spike factor null"),
        pytest.param({"margin_floor_percent": None}, id="margin floor null"),
        pytest.param({"invoice_prefix": None}, id="prefix null"),
        pytest.param({"late_usage_policy": None}, id="policy null"),
        pytest.param({"spike_factor": "1e100"}, id="spike factor huge"),
        pytest.param({"margin_floor_percent": "1e-100"}, id="margin floor tiny"),
    ],
)
def test_billing_settings(api: TestClient, body: dict[str, Any]) -> None:
    refused(api.patch("/api/v1/billing-settings", json=body))
    settings = api.get("/api/v1/billing-settings").json()
    assert (settings["spike_factor"], settings["margin_floor_percent"]) == ("3", "0")


def test_billing_settings_null_threshold_means_none(api: TestClient) -> None:
    assert api.patch("/api/v1/billing-settings", json={"review_threshold_minor": 100}).is_success
    cleared = api.patch("/api/v1/billing-settings", json={"review_threshold_minor": None})
    assert cleared.status_code == 200 and cleared.json()["review_threshold_minor"] is None


def draft_invoice(api: TestClient) -> str:
    assert api.post("/api/v1/customers", json={"id": "acme", "name": "Acme"}).is_success
    book = {"name": "b", "currency": "USD", "is_default": True}
    book_id = api.post("/api/v1/price-books", json=book).json()["id"]
    version = {
        "effective_from": "2026-01-01T00:00:00Z",
        "components": [{"name": "platform", "charge": "flat_fee", "amount": "10"}],
    }
    assert api.post(f"/api/v1/price-books/{book_id}/versions", json=version).is_success
    run = api.post("/api/v1/billing-runs", json={"period": "2026-10"}).json()
    for _ in range(600):
        if api.get(f"/api/v1/billing-runs/{run['id']}").json()["status"] != "running":
            break
        time.sleep(0.05)
    (invoice,) = api.get("/api/v1/invoices", params={"period": "2026-10"}).json()
    invoice_id: str = invoice["id"]
    return invoice_id


def test_manual_line_amounts(api: TestClient) -> None:
    url = f"/api/v1/invoices/{draft_invoice(api)}/lines"
    line = {"description": "x", "reason": "r"}
    # Each factor within bounds, the product not.
    assert "must not exceed" in refused(
        api.post(url, json={**line, "quantity": "1e12", "unit_price": "1e12"})
    )
    refused(api.post(url, json={**line, "quantity": "1", "unit_price": "1e-100"}))
    refused(api.post(url, json={**line, "quantity": "1e-100", "unit_price": "1"}))
    added = api.post(url, json={**line, "quantity": "1000000", "unit_price": "1000000"})
    assert added.status_code == 201, added.text


def test_lone_surrogate_anywhere_in_a_body(api: TestClient) -> None:
    run = api.post("/api/v1/billing-runs", json={"period": "2026-10"}).json()
    raw = '{"trace_ids": ["\\ud800"], "customer_id": "acme"}'
    url = f"/api/v1/billing-runs/{run['id']}/assign-unattributed"
    headers = {"content-type": "application/json"}
    assert "lone surrogate" in refused(api.post(url, content=raw, headers=headers))
    customer = '{"id": "a\\udfff", "name": "x"}'
    refused(api.post("/api/v1/customers", content=customer, headers=headers))
    # A proper pair is text like any other.
    pair = '{"id": "emoji-\\ud83d\\ude00", "name": "x"}'
    assert api.post("/api/v1/customers", content=pair, headers=headers).status_code == 201


@pytest.mark.parametrize(
    "moment",
    ["0557-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1969-12-31T23:59:59Z"],
)
def test_times_outside_what_is_stored(api: TestClient, moment: str) -> None:
    cost = {
        "provider": "openai",
        "model": "gpt-4o",
        "meter": "input_tokens",
        "unit_cost_usd": "1",
        "effective_from": moment,
    }
    assert "must be from 1970-01-01" in refused(api.post("/api/v1/provider-costs", json=cost))
    refused(api.get("/api/v1/usage", params={"start": moment}))
    book = api.post("/api/v1/price-books", json={"name": "b", "currency": "USD"}).json()
    version = {"effective_from": moment, "components": []}
    refused(api.post(f"/api/v1/price-books/{book['id']}/versions", json=version))
    assert api.post("/api/v1/customers", json={"id": "acme", "name": "A"}).is_success
    refused(api.get("/api/v1/customers/acme/credits/balance", params={"at": moment}))


def test_absurd_version_number_is_not_found_or_refused(api: TestClient) -> None:
    book = api.post("/api/v1/price-books", json={"name": "b", "currency": "USD"}).json()
    refused(api.get(f"/api/v1/price-books/{book['id']}/versions/{2**70}"))
    refused(api.get(f"/api/v1/price-books/{book['id']}/versions/0"))
    refused(api.get(f"/api/v1/price-books/{book['id']}/versions/1"), 404)
