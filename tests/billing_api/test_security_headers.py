"""Issue 8: security headers on every HTML page, from one middleware — the printable
invoice today, and any page added later."""

from __future__ import annotations

import time

from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from agentmeter.settings import Settings
from agentmeter.tenants import create_tenant
from billing_api.app import create_app
from billing_api.web.security import page_headers
from tests.billing_api.inprocess import api_client


def assert_page_headers(headers: dict[str, str]) -> None:
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in headers["content-security-policy"].split("; ")
    }
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]  # no inline script, no eval, no CDN
    assert "'unsafe-inline'" not in policy["style-src"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


def test_printable_invoice(engine: Engine) -> None:
    with api_client(engine, create_tenant(engine, "t").admin_key) as api:
        api.post("/api/v1/customers", json={"id": "acme", "name": "Acme"})
        book = {"name": "b", "currency": "USD", "is_default": True}
        book_id = api.post("/api/v1/price-books", json=book).json()["id"]
        version = {
            "effective_from": "2026-01-01T00:00:00Z",
            "components": [{"name": "platform", "charge": "flat_fee", "amount": "10"}],
        }
        api.post(f"/api/v1/price-books/{book_id}/versions", json=version)
        run = api.post("/api/v1/billing-runs", json={"period": "2026-10"}).json()
        while api.get(f"/api/v1/billing-runs/{run['id']}").json()["status"] == "running":
            time.sleep(0.05)
        (invoice,) = api.get("/api/v1/invoices").json()
        page = api.get(f"/api/v1/invoices/{invoice['id']}/invoice.html")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert_page_headers(dict(page.headers))
        # Its one inline <style> block is allowed by hash, nothing else inline.
        assert "'sha256-" in page.headers["content-security-policy"]
        assert "<script" not in page.text
        json_answer = api.get(f"/api/v1/invoices/{invoice['id']}")
        assert json_answer.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" not in json_answer.headers


def test_a_page_added_later_gets_them_too(engine: Engine) -> None:
    app = create_app(engine, CollectorRegistry(), Settings())

    @app.get("/portal/new-page", response_class=HTMLResponse)
    def new_page() -> str:
        return "<!doctype html><title>new</title><p>hello</p>"

    with TestClient(app) as client:
        answer = client.get("/portal/new-page")
        assert_page_headers(dict(answer.headers))
        missing = client.get("/no-such-page")
        assert missing.headers["x-content-type-options"] == "nosniff"


def test_a_page_that_frames_itself_keeps_its_choice(engine: Engine) -> None:
    """A route that sets its own CSP (a tenant's embedding sources) gets no DENY on top,
    and the defaults it did not set are still added."""
    app = create_app(engine, CollectorRegistry(), Settings())
    embeddable = page_headers(["https://app.example.com"])

    @app.get("/portal/embedded", response_class=HTMLResponse)
    def embedded() -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><title>e</title>",
            headers={"content-security-policy": embeddable["content-security-policy"]},
        )

    with TestClient(app) as client:
        answer = client.get("/portal/embedded")
        assert answer.headers["content-security-policy"].endswith(
            "frame-ancestors https://app.example.com"
        )
        assert "x-frame-options" not in answer.headers
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
