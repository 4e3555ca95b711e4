"""Issue 8, "make the classes impossible": an authorization matrix generated from the
app's own routes, so a route added later is covered without anyone remembering to.

Every `/api/v1` route × {no credential, malformed header, ingest key, revoked admin key}
→ 401 and nothing but the error; every id-addressed route × another tenant's ids → 404;
every collection read with the other tenant's key shows none of the first tenant's data.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from agentmeter.tenants import create_tenant, issue_keys, revoke_key
from tests.billing_api.inprocess import api_client

SECRET_NAME = "Acme Secret Holdings"
COMPONENT = {"name": "platform", "charge": "flat_fee", "amount": "10"}

# A valid body for each write route, so an id-addressed one reaches its lookup (a body
# FastAPI refuses would answer 422 before the tenant's ids are looked at).
BODIES: dict[str, Any] = {
    "POST /api/v1/customers": {"id": "acme", "name": "x"},
    "POST /api/v1/price-books": {"name": "b2", "currency": "USD"},
    "PATCH /api/v1/price-books/{book_id}": {"name": "renamed"},
    "POST /api/v1/price-books/{book_id}/versions": {
        "effective_from": "2026-06-01T00:00:00Z",
        "components": [COMPONENT],
    },
    "PUT /api/v1/price-books/{book_id}/versions/{number}/components": {"components": [COMPONENT]},
    "PUT /api/v1/customers/{customer_id}/price-book": {"price_book_id": None},
    "POST /api/v1/customers/{customer_id}/overrides": {
        "effective_from": "2026-01-01T00:00:00Z",
        "components": [COMPONENT],
    },
    "POST /api/v1/provider-costs": {
        "provider": "p",
        "model": "m",
        "meter": "input_tokens",
        "unit_cost_usd": "1",
        "effective_from": "2026-02-01T00:00:00Z",
    },
    "POST /api/v1/customers/{customer_id}/credits": {"amount": "5", "currency": "USD"},
    "POST /api/v1/customers/{customer_id}/credits/{grant_id}/void": {"reason": "r"},
    "PUT /api/v1/customers/{customer_id}/budget": {"limit": "100", "currency": "USD"},
    "PUT /api/v1/webhook": {"url": "https://93.184.215.14/hook"},
    "POST /api/v1/billing-runs": {"period": "2026-09"},
    "POST /api/v1/billing-runs/{run_id}/register-customer": {"customer_id": "new", "name": "N"},
    "POST /api/v1/billing-runs/{run_id}/map-customer": {
        "from_customer_id": "acme",
        "to_customer_id": "acme",
    },
    "POST /api/v1/billing-runs/{run_id}/assign-unattributed": {
        "trace_ids": ["a" * 32],
        "customer_id": "acme",
    },
    "POST /api/v1/invoices/{invoice_id}/lines": {"description": "d", "unit_price": "1"},
    "PATCH /api/v1/invoices/{invoice_id}/lines/{line_id}": {"amount": "1", "reason": "r"},
    "POST /api/v1/invoices/{invoice_id}/void": {"reason": "r"},
    "POST /api/v1/invoices/{invoice_id}/credit-notes": {"reason": "r"},
    "PATCH /api/v1/exceptions/{exception_id}": {"status": "waived", "note": "n"},
    "PATCH /api/v1/billing-settings": {"invoice_prefix": "X"},
    "POST /api/v1/meters": {"name": "web_searches"},
}


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code in (status, 201, 202), response.text
    return response.json() if response.content else None


def api_routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path template) of every API operation the app serves: its OpenAPI
    document, which the conformance test holds to what the routes do. A route whose body
    is required must have one in BODIES."""
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    routes = []
    for path, operations in paths.items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            route = (method.upper(), path)
            if operation.get("requestBody", {}).get("required"):
                assert f"{route[0]} {path}" in BODIES, f"add a valid body for {route} to BODIES"
            routes.append(route)
    assert len(routes) > 40
    return routes


@pytest.fixture
def tenants(engine: Engine) -> dict[str, str]:
    """Keys: mine (admin), theirs (admin), ingest (mine), revoked (an admin key of mine)."""
    mine = create_tenant(engine, "mine")
    theirs = create_tenant(engine, "theirs")
    revoked = issue_keys(engine, mine.tenant_id).admin_key
    assert revoke_key(engine, revoked)
    return {
        "mine": mine.admin_key,
        "theirs": theirs.admin_key,
        "ingest": mine.ingest_key,
        "revoked": revoked,
    }


@pytest.fixture
def mine(engine: Engine, tenants: dict[str, str]) -> Iterator[TestClient]:
    with api_client(engine, tenants["mine"]) as client:
        yield client


@pytest.fixture
def ids(mine: TestClient) -> dict[str, str]:
    """One of everything in tenant "mine", addressed by id."""
    ok(mine.post("/api/v1/customers", json={"id": "acme", "name": SECRET_NAME}), 201)
    book = ok(mine.post("/api/v1/price-books", json={"name": "b", "currency": "USD"}), 201)
    ok(mine.patch(f"/api/v1/price-books/{book['id']}", json={"is_default": True}))
    version = {"effective_from": "2026-01-01T00:00:00Z", "components": [COMPONENT]}
    ok(mine.post(f"/api/v1/price-books/{book['id']}/versions", json=version), 201)
    override = ok(mine.post("/api/v1/customers/acme/overrides", json=BODIES[
        "POST /api/v1/customers/{customer_id}/overrides"]), 201)  # fmt: skip
    cost = ok(mine.post("/api/v1/provider-costs", json=BODIES["POST /api/v1/provider-costs"]))
    grant = ok(mine.post("/api/v1/customers/acme/credits", json={"amount": "1", "currency": "USD"}))
    ok(mine.put("/api/v1/customers/acme/budget", json={"limit": "100", "currency": "USD"}))
    ok(mine.patch("/api/v1/billing-settings", json={"review_threshold_minor": 1}))
    run = ok(mine.post("/api/v1/billing-runs", json={"period": "2026-10"}), 202)
    deadline = time.monotonic() + 60
    while ok(mine.get(f"/api/v1/billing-runs/{run['id']}"))["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (invoice,) = ok(mine.get("/api/v1/invoices"))
    return {
        "customer_id": "acme",
        "book_id": book["id"],
        "number": "1",
        "override_id": override["id"],
        "cost_id": cost["id"],
        "grant_id": grant["id"],
        "run_id": run["id"],
        "invoice_id": invoice["id"],
        "line_id": invoice["lines"][0]["id"],
        "exception_id": invoice["exceptions"][0]["id"],
    }


def fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


def call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    body = BODIES.get(f"{method} {path}")
    return client.request(method, path, headers=headers, json=body)


@pytest.mark.parametrize(
    "credential",
    [
        pytest.param(None, id="none"),
        pytest.param("Basic YWRtaW46YWRtaW4=", id="basic"),
        pytest.param("Bearer", id="bearer without token"),
        pytest.param("Bearer   ", id="bearer blank"),
        pytest.param("Bearer am_not_a_key", id="unknown key"),
        pytest.param("ingest", id="ingest key"),
        pytest.param("revoked", id="revoked admin key"),
    ],
)
def test_every_route_refuses_without_a_valid_admin_key(
    engine: Engine, tenants: dict[str, str], ids: dict[str, str], credential: str | None
) -> None:
    if credential in ("ingest", "revoked"):
        credential = f"Bearer {tenants[credential]}"
    headers = {} if credential is None else {"authorization": credential}
    with api_client(engine, None) as anonymous:
        for method, template in api_routes(anonymous):
            path = fill(template, ids)
            answer = anonymous.request(method, path, headers=headers, json=BODIES.get(
                f"{method} {template}"))  # fmt: skip
            assert answer.status_code == 401, (method, template, answer.text)
            assert answer.json()["error"]["code"] == "unauthenticated"
            assert SECRET_NAME not in answer.text and ids["invoice_id"] not in answer.text


def test_another_tenants_ids_are_not_found(
    engine: Engine, tenants: dict[str, str], ids: dict[str, str], mine: TestClient
) -> None:
    before = ok(mine.get(f"/api/v1/invoices/{ids['invoice_id']}"))
    with api_client(engine, tenants["theirs"]) as theirs:
        addressed = [(m, t) for m, t in api_routes(theirs) if "{" in t]
        for method, template in addressed:
            answer = theirs.request(
                method, fill(template, ids), json=BODIES.get(f"{method} {template}")
            )
            assert answer.status_code == 404, (method, template, answer.text)
            assert SECRET_NAME not in answer.text
    # Nothing of mine changed.
    assert ok(mine.get(f"/api/v1/invoices/{ids['invoice_id']}")) == before


def test_collections_show_only_the_callers_data(
    engine: Engine, tenants: dict[str, str], ids: dict[str, str]
) -> None:
    with api_client(engine, tenants["theirs"]) as theirs:
        reads = [t for m, t in api_routes(theirs) if m == "GET" and "{" not in t]
        for template in reads:
            answer = theirs.get(template)
            assert answer.status_code == 200, (template, answer.text)
            for value in (SECRET_NAME, *ids.values()):
                if len(value) > 1:  # the version number "1" is in any body
                    assert value not in answer.text, (template, value)
