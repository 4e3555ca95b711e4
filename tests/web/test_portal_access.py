"""Who may open the portal: a tampered, foreign-signed, expired, revoked or missing token
sees the 401 page and nothing else; another customer's token sees only its own data and a
404 for anything of acme's; the JSON API answers the same with JSON errors. Unsafe requests
to pages need the CSRF token. Against a running server on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import httpx
from itsdangerous import URLSafeTimedSerializer
from playwright.sync_api import Page, expect
from sqlalchemy import Engine, update

from agentmeter.clock import utcnow
from agentmeter.tables import PortalSession
from tests.web.conftest import BrowserPage
from tests.web.portal_scenario import CUSTOMER, OTHER_CUSTOMER, XSS_NAME, Portal

SECRET_WORDS = ("Acme", "Globex", "$", "Invoice", "INV-")


def sees_nothing(page: Page) -> None:
    """The 401 page: no figure, no name, and no session cookie was set."""
    expect(page.locator("h1")).to_have_text("Link not valid")
    text = page.locator("body").inner_text()
    for word in SECRET_WORDS:
        assert word not in text, (word, text)
    assert not [c for c in page.context.cookies() if c["name"] == "agentmeter_portal"]


def test_bad_tokens_see_nothing(portal: Portal, engine: Engine, desktop: BrowserPage) -> None:
    page, api_url = desktop.page, portal.server.api_url

    # No cookie at all.
    response = page.goto(f"{api_url}/portal/")
    assert response is not None and response.status == 401
    sees_nothing(page)
    desktop.shot("no-session")

    # Tampered: one character of the signature changed.
    link = portal.link()
    token = link["token"]
    # Not the last character: its low bits are base64 padding, and changing only those
    # would leave the signature's bytes (and the token) valid.
    tampered = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    response = page.goto(f"{api_url}/portal/open?token={tampered}")
    assert response is not None and response.status == 401
    sees_nothing(page)
    desktop.shot("tampered")

    # Well-formed, naming a real session, but signed with another secret.
    forged = URLSafeTimedSerializer("not-the-server-secret", salt="agentmeter.portal-session")
    payload = {"s": link["id"], "t": portal.server.tenant.tenant_id, "c": CUSTOMER}
    response = page.goto(f"{api_url}/portal/open?token={forged.dumps(payload)}")
    assert response is not None and response.status == 401

    # Expired: the session's end has passed (the row says so; the signature is still good).
    expiring = portal.link(expires_in=60)
    with engine.begin() as connection:
        connection.execute(
            update(PortalSession)
            .where(PortalSession.id == expiring["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    response = page.goto(expiring["url"])
    assert response is not None and response.status == 401
    sees_nothing(page)

    # Revoked while in use: the cookie it set no longer opens anything.
    page.goto(link["url"])
    expect(page.locator(".customer-name")).to_have_text(XSS_NAME)
    portal.ok("DELETE", f"/api/v1/portal-sessions/{link['id']}")
    response = page.goto(f"{api_url}/portal/invoices/{portal.invoice_id}")
    assert response is not None and response.status == 401
    expect(page.locator("h1")).to_have_text("Link not valid")
    assert "INV-" not in page.content()
    bearer = {"authorization": f"Bearer {token}"}
    response_api = httpx.get(f"{api_url}/portal/api/estimate", headers=bearer)
    assert response_api.status_code == 401
    assert response_api.json()["error"]["code"] == "unauthenticated"
    # Revoking twice is harmless; an unknown id is not found.
    portal.ok("DELETE", f"/api/v1/portal-sessions/{link['id']}")
    assert portal.api("DELETE", "/api/v1/portal-sessions/nope").status_code == 404
    assert desktop.problems == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ] * len(desktop.problems)


def test_another_customer_sees_only_its_own(portal: Portal, desktop: BrowserPage) -> None:
    page, api_url = desktop.page, portal.server.api_url
    other = portal.link(OTHER_CUSTOMER)
    page.goto(other["url"])
    expect(page.locator(".customer-name")).to_have_text("Globex")
    estimate = portal.ok("GET", f"/api/v1/customers/{OTHER_CUSTOMER}/estimate")
    expect(page.locator("table.estimate .subtotal")).to_have_text(f"${estimate['subtotal']}")
    assert "Acme Inc" not in page.content()

    response = page.goto(f"{api_url}/portal/invoices/{portal.invoice_id}")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    assert "INV-" not in page.content() and "51.90" not in page.content()
    desktop.shot("other-customer-invoice")
    response = page.goto(f"{api_url}/portal/invoices/{portal.invoice_id}/download.json")
    assert response is not None and response.status == 404
    page.goto(f"{api_url}/portal/invoices")
    expect(page.locator("main")).to_contain_text("No invoices yet.")

    bearer = {"authorization": f"Bearer {other['token']}"}
    found = httpx.get(f"{api_url}/portal/api/invoices/{portal.invoice_id}", headers=bearer)
    assert found.status_code == 404
    assert found.json()["error"]["code"] == "not_found"
    assert httpx.get(f"{api_url}/portal/api/invoices", headers=bearer).json() == []
    usage = httpx.get(f"{api_url}/portal/api/usage", headers=bearer).json()["rows"]
    assert {row["customer_id"] for row in usage} == {OTHER_CUSTOMER}


def test_json_api_gives_the_page_figures_without_internals(portal: Portal) -> None:
    api_url = portal.server.api_url
    bearer = {"authorization": f"Bearer {portal.link()['token']}"}
    estimate = httpx.get(f"{api_url}/portal/api/estimate", headers=bearer).json()
    builder = portal.ok("GET", f"/api/v1/customers/{CUSTOMER}/estimate")
    assert [(line["description"], line["amount"]) for line in estimate["lines"]] == [
        (line["component"], line["amount"]) for line in builder["lines"]
    ]
    assert estimate["subtotal"] == builder["subtotal"] == "58.05"
    assert estimate["budget"] == {
        "limit": "100.00", "spent": "58.05", "percent_used": "58.05", "within_limit": True,
    }  # fmt: skip
    (invoice,) = httpx.get(f"{api_url}/portal/api/invoices", headers=bearer).json()
    assert invoice["total"] == portal.ok("GET", f"/api/v1/invoices/{portal.invoice_id}")["total"]
    assert invoice["payment_status"] == "unpaid"  # until Stripe reports a payment
    # Whether the invoice is paid is the customer's business; its Stripe copy's sync is not.
    assert not {"stripe_sync_status", "stripe_error", "stripe_invoice_id"} & set(invoice)
    daily = httpx.get(
        f"{api_url}/portal/api/usage/daily", params={"range": "last_period"}, headers=bearer
    ).json()
    assert {s["label"]: s["total"] for s in daily["series"]} == {
        "input_tokens": "600000", "output_tokens": "50000", "tool_calls": "1",
    }  # fmt: skip
    # Spans ended on the third day of the last period (UTC): every other day is zero.
    (input_series,) = [s for s in daily["series"] if s["label"] == "input_tokens"]
    assert daily["days"][2] == (portal.last_period.start + timedelta(days=2)).date().isoformat()
    assert [n for n, v in enumerate(input_series["values"]) if v != "0"] == [2]
    for body in (estimate, invoice, daily):
        text = str(body)
        assert "cost" not in text and "margin" not in text and "component_id" not in text
        assert "price_book" not in text and "stripe" not in text
    bad = httpx.get(f"{api_url}/portal/api/usage/daily", params={"by": "model"}, headers=bearer)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    bad = httpx.get(f"{api_url}/portal/api/usage", params={"range": "forever"}, headers=bearer)
    assert bad.status_code == 422


def test_page_posts_need_the_csrf_token(portal: Portal) -> None:
    api_url = portal.server.api_url
    with httpx.Client(base_url=api_url) as client:
        opened = client.get(portal.link()["url"].removeprefix(api_url))
        assert opened.status_code == 303
        page = client.get("/portal/")
        assert page.status_code == 200 and "csrftoken" in client.cookies
        refused = client.post("/portal/sign-out", data={})
        assert refused.status_code == 403
        token = page.text.split('name="csrftoken" value="')[1].split('"')[0]
        accepted = client.post("/portal/sign-out", data={"csrftoken": token})
        assert accepted.status_code == 303
        assert accepted.headers["location"] == "/portal/signed-out"
