"""Issue 8, defect 11: the meter registry. A price naming a meter nobody declared or sent
is refused with a hint; canonical, declared and usage meters are accepted; `per_units`
defaults to 1 for components and provider costs alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import count
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from agentmeter.tables import to_unix_nano
from agentmeter.tenants import create_tenant
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord
from tests.billing_api.inprocess import api_client


@pytest.fixture
def tenant(engine: Engine) -> tuple[str, str]:
    created = create_tenant(engine, "t")
    return created.tenant_id, created.admin_key


@pytest.fixture
def api(engine: Engine, tenant: tuple[str, str]) -> Iterator[TestClient]:
    with api_client(engine, tenant[1]) as client:
        yield client


_books = count()


def version(api: TestClient, *components: dict[str, Any]) -> Any:
    name = f"book {next(_books)}"
    book = api.post("/api/v1/price-books", json={"name": name, "currency": "USD"}).json()
    body = {"effective_from": "2026-01-01T00:00:00Z", "components": list(components)}
    return api.post(f"/api/v1/price-books/{book['id']}/versions", json=body)


def per_unit(meter: str, **extra: Any) -> dict[str, Any]:
    return {"name": meter, "meter": meter, "charge": "per_unit", "unit_price": "1", **extra}


def test_misspelt_meter_is_refused_with_a_hint(api: TestClient) -> None:
    answer = version(api, per_unit("input_token"))
    assert answer.status_code == 422, answer.text
    message = answer.json()["error"]["message"]
    assert "unknown meter 'input_token': did you mean input_tokens" in message
    assert "POST /api/v1/meters" in message
    cost = {
        "provider": "openai",
        "model": "gpt-4o",
        "meter": "output_token",
        "unit_cost_usd": "1",
        "effective_from": "2026-01-01T00:00:00Z",
    }
    refused = api.post("/api/v1/provider-costs", json=cost)
    assert refused.status_code == 422 and "did you mean output_tokens" in refused.text


def test_declared_meter_is_accepted(api: TestClient) -> None:
    assert version(api, per_unit("web_searches")).status_code == 422
    declared = api.post("/api/v1/meters", json={"name": "web_searches", "description": "Bing"})
    assert declared.status_code == 201, declared.text
    assert declared.json()["origin"] == "declared"
    assert api.post("/api/v1/meters", json={"name": "web_searches"}).status_code == 409
    assert api.post("/api/v1/meters", json={"name": "input_tokens"}).status_code == 409
    assert api.post("/api/v1/meters", json={"name": "Web Searches"}).status_code == 422
    assert version(api, per_unit("web_searches")).status_code == 201
    # The hint also offers declared meters.
    assert "did you mean web_searches" in version(api, per_unit("web_search")).text


def test_meter_found_in_usage_is_accepted_and_listed(
    api: TestClient, engine: Engine, tenant: tuple[str, str]
) -> None:
    at = to_unix_nano(datetime(2026, 11, 2, tzinfo=UTC))
    record = UsageRecord("a" * 32, "b" * 16, "gpu_seconds", 12, "acme", at, source="custom")
    SqlUsageSink(engine).write(tenant[0], UsageBatch([record]))
    listed = {m["name"]: m["origin"] for m in api.get("/api/v1/meters").json()}
    assert listed["input_tokens"] == "canonical" and listed["gpu_seconds"] == "usage"
    assert version(api, per_unit("gpu_seconds")).status_code == 201
    listed = {m["name"]: m["origin"] for m in api.get("/api/v1/meters").json()}
    assert listed["gpu_seconds"] == "usage"


def test_per_units_defaults_to_one_everywhere(api: TestClient) -> None:
    created = version(api, per_unit("input_tokens"))
    assert created.status_code == 201, created.text
    assert created.json()["components"][0]["per_units"] == 1
    cost = {
        "provider": "openai",
        "model": "gpt-4o",
        "meter": "input_tokens",
        "unit_cost_usd": "0.0000025",
        "effective_from": "2026-01-01T00:00:00Z",
    }
    assert api.post("/api/v1/provider-costs", json=cost).json()["per_units"] == 1


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("web-searches", id="hyphen"),
        pytest.param("web searches", id="space"),
        pytest.param("w" * 200, id="longer-than-the-column"),
    ],
)
def test_malformed_meter_names_are_refused_by_pricing_and_meters(
    api: TestClient, name: str
) -> None:
    """Issue 14: the pricing API matched only a prefix of the meter name (`.match`), so these
    passed its check (the last one overflowing the column on PostgreSQL); both APIs now
    refuse them with the same rule as spans (`otel_processor.usage.is_meter_name`)."""
    component = version(api, per_unit(name))
    assert component.status_code == 422, component.text
    assert "custom meter name matching" in component.json()["error"]["message"]
    cost = {
        "provider": "openai",
        "model": "gpt-4o",
        "meter": name,
        "unit_cost_usd": "1",
        "effective_from": "2026-01-01T00:00:00Z",
    }
    refused = api.post("/api/v1/provider-costs", json=cost)
    assert refused.status_code == 422, refused.text
    assert "custom meter name matching" in refused.json()["error"]["message"]
    declared = api.post("/api/v1/meters", json={"name": name})
    assert declared.status_code == 422, declared.text
    assert declared.json()["error"]["code"] == "validation_error"
    assert name not in {meter["name"] for meter in api.get("/api/v1/meters").json()}
