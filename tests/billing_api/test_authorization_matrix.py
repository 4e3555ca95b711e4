"""Issue 8, "make the classes impossible": an authorization matrix generated from the
app's own routes, so a route added later is covered without anyone remembering to.

Every operation of the document is classified by how it authenticates: the admin key (every
`/api/v1` route but the few in OTHER_AUTHENTICATION, each with its reason), or a portal
token (every `/portal/api` route). Every admin route × {no credential, malformed header,
ingest key, revoked admin key} → 401 and nothing but the error; every id-addressed admin
route × another tenant's ids → 404; every collection read with the other tenant's key shows
none of the first tenant's data. Every portal route × {no token, malformed, tampered, an
admin key, a revoked token} → 401; another customer's or tenant's token finds nothing.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.settings import Settings
from agentmeter.tenants import create_tenant, issue_keys, revoke_key
from billing_api.app import create_app
from billing_api.jobs.service import enqueue
from billing_api.stripe.gateway import build_gateway

SECRET_NAME = "Acme Secret Holdings"
# Stripe on (so its routes do their work, not "Stripe is off"), at an address that refuses
# connections: no route here may need Stripe to answer.
SETTINGS = Settings(
    stripe_api_key="sk_test_matrix",
    stripe_api_base="http://127.0.0.1:9",
    stripe_connect_base="http://127.0.0.1:9",
    stripe_client_id="ca_matrix",
    stripe_webhook_secret="whsec_matrix",
)
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


BODIES.update({
    "PUT /api/v1/stripe/account": {"account_id": "acct_1Nv0FGQ9RKHgCVdK"},
    "PUT /api/v1/stripe/customers/{customer_id}": {"collection_method": "send_invoice"},
    "PATCH /api/v1/tenant": {},
    "PUT /api/v1/branding": {"name": "Brand"},
})  # fmt: skip

# The `/api/v1` operations that do not take the admin key, and what authenticates them
# instead. Anything else under `/api/v1` must answer 401 without a valid admin key.
OTHER_AUTHENTICATION = {
    "POST /api/v1/stripe/webhooks": "Stripe calls it: the Stripe-Signature over the raw body",
    "GET /api/v1/stripe/connect/callback": "Stripe's OAuth redirect: the signed state names "
    "the tenant that started it",
}


@contextmanager
def matrix_client(engine: Engine, admin_key: str | None) -> Iterator[TestClient]:
    """A client of the app with Stripe on, authenticated with `admin_key` if given."""
    app = create_app(engine, CollectorRegistry(), SETTINGS, stripe=build_gateway(SETTINGS))
    headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
    with TestClient(app, headers=headers, raise_server_exceptions=False) as client:
        yield client


ADMIN_PREFIX = "/api/v1/"
PORTAL_PREFIX = "/portal/api/"  # a customer's portal token (Authorization: Bearer)


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code in (status, 201, 202), response.text
    return response.json() if response.content else None


def operations(client: TestClient) -> dict[str, list[tuple[str, str]]]:
    """(method, path template) of every operation the app's OpenAPI document lists (which
    the conformance test holds to what the routes do), by how it authenticates: "admin",
    "portal" or "other". A route whose body is required must have one in BODIES; a route
    that fits no class fails here, so a new kind of authentication must be declared."""
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    classes: dict[str, list[tuple[str, str]]] = {"admin": [], "portal": [], "other": []}
    for path, methods in paths.items():
        for method, operation in methods.items():
            route = (method.upper(), path)
            name = f"{route[0]} {path}"
            if operation.get("requestBody", {}).get("required"):
                assert name in BODIES, f"add a valid body for {route} to BODIES"
            if name in OTHER_AUTHENTICATION:
                classes["other"].append(route)
            elif path.startswith(ADMIN_PREFIX):
                classes["admin"].append(route)
            elif path.startswith(PORTAL_PREFIX):
                classes["portal"].append(route)
            else:
                raise AssertionError(f"{name}: how is it authenticated? Classify it here")
    assert {f"{m} {t}" for m, t in classes["other"]} == set(OTHER_AUTHENTICATION)
    assert len(classes["admin"]) > 40 and len(classes["portal"]) >= 5
    return classes


def api_routes(client: TestClient) -> list[tuple[str, str]]:
    """The operations that take the admin key."""
    return operations(client)["admin"]


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
    with matrix_client(engine, tenants["mine"]) as client:
        yield client


@pytest.fixture
def ids(engine: Engine, mine: TestClient) -> dict[str, str]:
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
    portal = ok(mine.post("/api/v1/customers/acme/portal-sessions"), 201)
    with Session(engine) as session, session.begin():
        tenant_id = ok(mine.get("/api/v1/tenant"))["id"]
        job_id = enqueue(session, "matrix.test", "one", tenant_id=tenant_id)
    return {
        "job_id": str(job_id),
        "session_id": portal["id"],
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
    with matrix_client(engine, None) as anonymous:
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
    with matrix_client(engine, tenants["theirs"]) as theirs:
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
    with matrix_client(engine, tenants["theirs"]) as theirs:
        reads = [t for m, t in api_routes(theirs) if m == "GET" and "{" not in t]
        for template in reads:
            answer = theirs.get(template)
            assert answer.status_code == 200, (template, answer.text)
            for value in (SECRET_NAME, *ids.values()):
                if len(value) > 1:  # the version number "1" is in any body
                    assert value not in answer.text, (template, value)


def test_routes_authenticated_otherwise_grant_nothing_to_an_admin_key(
    engine: Engine, ids: dict[str, str], mine: TestClient
) -> None:
    """The admin key is not their credential: without Stripe's signature or a state Stripe
    was given, they refuse (with the JSON error) and show nothing."""
    refusals = {
        "POST /api/v1/stripe/webhooks": mine.post(
            "/api/v1/stripe/webhooks",
            content=b'{"id": "evt_1", "type": "invoice.paid"}',
            headers={"stripe-signature": "t=1,v1=" + "0" * 64},
        ),
        "GET /api/v1/stripe/connect/callback": mine.get(
            "/api/v1/stripe/connect/callback", params={"state": "forged", "code": "ac_x"}
        ),
    }
    assert set(refusals) == set(OTHER_AUTHENTICATION)
    for route, answer in refusals.items():
        assert 400 <= answer.status_code < 500, (route, answer.text)
        assert answer.json()["error"]["code"], route
        assert SECRET_NAME not in answer.text and ids["invoice_id"] not in answer.text
    assert not ok(mine.get("/api/v1/stripe/account"))["connected"]


@pytest.fixture
def portal_tokens(
    engine: Engine, tenants: dict[str, str], ids: dict[str, str], mine: TestClient
) -> dict[str, str]:
    """Portal tokens: acme's (whose invoice is issued), another customer's of the same
    tenant, a customer's of the other tenant with acme's id, and a revoked one of acme's."""
    ok(mine.patch(f"/api/v1/exceptions/{ids['exception_id']}", json={
        "status": "waived", "note": "n"}))  # fmt: skip
    ok(mine.post(f"/api/v1/invoices/{ids['invoice_id']}/finalize"))
    ok(mine.post("/api/v1/customers", json={"id": "other", "name": "Other"}), 201)
    revoked = ok(mine.post("/api/v1/customers/acme/portal-sessions"), 201)
    assert mine.delete(f"/api/v1/portal-sessions/{revoked['id']}").status_code == 204

    def issue(client: TestClient, customer_id: str) -> str:
        token: str = ok(client.post(f"/api/v1/customers/{customer_id}/portal-sessions"), 201)[
            "token"
        ]
        return token

    with matrix_client(engine, tenants["theirs"]) as theirs:
        ok(theirs.post("/api/v1/customers", json={"id": "acme", "name": "Their Acme"}), 201)
        their_acme = issue(theirs, "acme")
    return {
        "acme": issue(mine, "acme"),
        "other": issue(mine, "other"),
        "their_acme": their_acme,
        "revoked": revoked["token"],
    }


def tampered(token: str) -> str:
    """`token` with one character of its middle changed."""
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]


def test_every_portal_route_refuses_without_a_valid_portal_token(
    engine: Engine, tenants: dict[str, str], ids: dict[str, str], portal_tokens: dict[str, str]
) -> None:
    credentials = [
        None,
        "Basic YWRtaW46YWRtaW4=",
        "Bearer",
        "Bearer am_not_a_token",
        f"Bearer {tampered(portal_tokens['acme'])}",
        f"Bearer {portal_tokens['revoked']}",
        f"Bearer {tenants['mine']}",  # an admin key is not a portal token
        f"Bearer {tenants['ingest']}",
    ]
    with matrix_client(engine, None) as anonymous:
        routes = operations(anonymous)["portal"]
        for (method, template), credential in itertools.product(routes, credentials):
            headers = {} if credential is None else {"authorization": credential}
            answer = anonymous.request(method, fill(template, ids), headers=headers)
            assert answer.status_code == 401, (method, template, credential, answer.text)
            assert answer.json()["error"]["code"] == "unauthenticated"
            assert SECRET_NAME not in answer.text and ids["invoice_id"] not in answer.text
        # The valid token reaches every route (the refusals above are about the token).
        for method, template in routes:
            answer = anonymous.request(method, fill(template, ids), headers={
                "authorization": f"Bearer {portal_tokens['acme']}"})  # fmt: skip
            assert answer.status_code == 200, (method, template, answer.text)


def test_another_customers_portal_token_finds_nothing(
    engine: Engine, ids: dict[str, str], portal_tokens: dict[str, str]
) -> None:
    with matrix_client(engine, None) as anonymous:
        routes = operations(anonymous)["portal"]
        acme = {"authorization": f"Bearer {portal_tokens['acme']}"}
        own = anonymous.get(f"/portal/api/invoices/{ids['invoice_id']}", headers=acme)
        assert own.status_code == 200 and own.json()["id"] == ids["invoice_id"]
        for holder in ("other", "their_acme"):
            headers = {"authorization": f"Bearer {portal_tokens[holder]}"}
            for method, template in routes:
                answer = anonymous.request(method, fill(template, ids), headers=headers)
                expected = 404 if "{" in template else 200
                assert answer.status_code == expected, (holder, template, answer.text)
                assert SECRET_NAME not in answer.text, (holder, template)
                if "{" not in template:  # a 404 may name the id it was asked for
                    assert ids["invoice_id"] not in answer.text, (holder, template)
