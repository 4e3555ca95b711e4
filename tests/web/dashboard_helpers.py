"""Helpers of the dashboard tests: a tenant with staff users, signing in, forging posts."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from playwright.sync_api import Page, expect
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.tenants import NewTenant, create_tenant
from billing_api.dashboard.accounts import create_user

PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Staff:
    """A tenant and one user of each staff role (e-mail addresses)."""

    tenant: NewTenant
    admin: str
    billing: str
    viewer: str


def make_staff(engine: Engine, name: str = "Builder", tenant: NewTenant | None = None) -> Staff:
    """A tenant (new, or `tenant`) with an admin, a billing and a viewer user, all with
    `PASSWORD`."""
    tenant = tenant or create_tenant(engine, name)
    emails = {role: f"{role}@{name.lower()}.test" for role in ("admin", "billing", "viewer")}
    with Session(engine) as session, session.begin():
        for role, email in emails.items():
            create_user(session, tenant.tenant_id, email, PASSWORD, role)
    return Staff(tenant=tenant, **emails)


def sign_in(page: Page, base_url: str, email: str, password: str = PASSWORD) -> None:
    """Sign in through the form and wait for the overview."""
    page.goto(f"{base_url}/dashboard/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("body.dashboard-overview")).to_be_visible()


def browser_client(page: Page, base_url: str) -> httpx.Client:
    """An HTTP client carrying the browser's cookies (session and CSRF), to forge requests
    the pages would never send."""
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    return httpx.Client(base_url=base_url, cookies=cookies, follow_redirects=False, timeout=30)


def csrf(client: httpx.Client) -> dict[str, str]:
    """The form field asgi-csrf expects, from the cookie it set."""
    return {"csrftoken": client.cookies["csrftoken"]}
