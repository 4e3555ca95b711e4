"""The builder's side of the portal over the REST API, in process: the brand (validated
strictly, since every field lands in a page, a stylesheet or a CSP header) and portal
sessions (bounded lifetimes, registered customers only, admin key required)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.settings import Settings
from agentmeter.tables import Customer
from agentmeter.tenants import create_tenant
from billing_api.app import create_app
from billing_api.auth import Caller, Role
from billing_api.portal.sessions import InvalidPortalToken, PortalTokens

FULL_BRAND: dict[str, Any] = {
    "name": "Acme Agents",
    "logo_url": "https://cdn.acme.example/logo.svg",
    "primary_color": "#AA3300",
    "support_email": "help@acme.example",
    "support_url": "https://acme.example/support",
    "locale": "de_DE",
    "frame_ancestors": ["https://app.acme.example", "'self'"],
}


@pytest.fixture
def client(engine: Engine) -> Iterator[tuple[TestClient, dict[str, str]]]:
    tenant = create_tenant(engine, "builder")
    settings = Settings(public_url="https://billing.acme.example/")
    with TestClient(create_app(engine, CollectorRegistry(), settings)) as test_client:
        yield test_client, {"authorization": f"Bearer {tenant.admin_key}"}


class TestBranding:
    def test_put_then_get_returns_the_normalized_brand(
        self, client: tuple[TestClient, dict[str, str]]
    ) -> None:
        http, admin = client
        assert http.get("/api/v1/branding", headers=admin).json() == {
            "name": None, "logo_url": None, "primary_color": None, "support_email": None,
            "support_url": None, "locale": None, "frame_ancestors": [],
        }  # fmt: skip
        put = http.put("/api/v1/branding", json=FULL_BRAND, headers=admin)
        assert put.status_code == 200, put.text
        expected = {**FULL_BRAND, "primary_color": "#aa3300", "locale": "de-DE"}
        assert put.json() == expected
        assert http.get("/api/v1/branding", headers=admin).json() == expected
        # PUT replaces: what is left out is cleared.
        cleared = http.put("/api/v1/branding", json={"name": "Acme"}, headers=admin).json()
        assert cleared["logo_url"] is None and cleared["frame_ancestors"] == []

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            pytest.param("primary_color", "red", id="colour name"),
            pytest.param("primary_color", "#aa330", id="colour too short"),
            pytest.param("primary_color", "#aa3300; } body { display:none", id="css injection"),
            pytest.param("logo_url", "http://acme.example/logo.png", id="logo over http"),
            pytest.param("logo_url", "javascript:alert(1)", id="logo javascript"),
            pytest.param("logo_url", 'https://a.example/x" onerror="alert(1)', id="logo quote"),
            pytest.param("support_url", "https://", id="url without host"),
            pytest.param("support_email", "<script>@x.example", id="email markup"),
            pytest.param("support_email", "not-an-email", id="email without at"),
            pytest.param("locale", "xx-YY", id="unknown locale"),
            pytest.param("name", "", id="empty name"),
            pytest.param("name", "Acme\x00", id="control character"),
            pytest.param("frame_ancestors", ["https://a.example; script-src *"], id="directive"),
            pytest.param("frame_ancestors", ["*"], id="anyone"),
            pytest.param("frame_ancestors", ["https://a.example https://b"], id="two in one"),
            pytest.param("frame_ancestors", ["'unsafe-inline'"], id="keyword"),
            pytest.param("frame_ancestors", ["https://a.example"] * 17, id="too many"),
            pytest.param("unknown", "x", id="unknown field"),
        ],
    )
    def test_bad_fields_are_refused_and_change_nothing(
        self, client: tuple[TestClient, dict[str, str]], field: str, value: object
    ) -> None:
        http, admin = client
        http.put("/api/v1/branding", json=FULL_BRAND, headers=admin)
        response = http.put("/api/v1/branding", json={**FULL_BRAND, field: value}, headers=admin)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "validation_error"
        assert field in response.json()["error"]["message"]
        kept = http.get("/api/v1/branding", headers=admin).json()
        assert kept["frame_ancestors"] == FULL_BRAND["frame_ancestors"]

    def test_needs_the_admin_key(self, client: tuple[TestClient, dict[str, str]]) -> None:
        http, _ = client
        assert http.get("/api/v1/branding").status_code == 401
        assert http.put("/api/v1/branding", json=FULL_BRAND).status_code == 401


class TestPortalSessions:
    def test_link_uses_the_public_url_and_the_asked_lifetime(
        self, client: tuple[TestClient, dict[str, str]]
    ) -> None:
        http, admin = client
        http.post("/api/v1/customers", json={"id": "acme", "name": "Acme"}, headers=admin)
        before = datetime.now().astimezone()
        response = http.post(
            "/api/v1/customers/acme/portal-sessions", json={"expires_in": 3600}, headers=admin
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == {"id", "url", "token", "expires_at"}
        assert body["url"] == f"https://billing.acme.example/portal/open?token={body['token']}"
        lifetime = datetime.fromisoformat(body["expires_at"]) - before
        assert 3590 <= lifetime.total_seconds() <= 3610
        default = http.post("/api/v1/customers/acme/portal-sessions", headers=admin).json()
        lifetime = datetime.fromisoformat(default["expires_at"]) - before
        assert 86_390 <= lifetime.total_seconds() <= 86_410

    @pytest.mark.parametrize("expires_in", [0, 59, 30 * 86_400 + 1, "soon"])
    def test_lifetime_is_bounded(
        self, client: tuple[TestClient, dict[str, str]], expires_in: object
    ) -> None:
        http, admin = client
        http.post("/api/v1/customers", json={"id": "acme", "name": "Acme"}, headers=admin)
        response = http.post(
            "/api/v1/customers/acme/portal-sessions",
            json={"expires_in": expires_in},
            headers=admin,
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "validation_error"

    def test_only_registered_customers_and_admins(
        self, client: tuple[TestClient, dict[str, str]]
    ) -> None:
        http, admin = client
        response = http.post("/api/v1/customers/ghost/portal-sessions", headers=admin)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert http.post("/api/v1/customers/ghost/portal-sessions").status_code == 401


class TestSecretRotation:
    """Links signed with a secret keep working while it is still listed (newest last signs)
    and stop once it is dropped."""

    def test_rotate_in_then_out(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "builder")
        caller = Caller(tenant_id=tenant.tenant_id, actor="admin", role=Role.ADMIN)
        now = utcnow()
        with Session(engine) as session, session.begin():
            session.add(Customer(tenant_id=tenant.tenant_id, id="acme", name="Acme"))
        with Session(engine) as session, session.begin():
            old = PortalTokens(["old-secret"]).issue(
                session, caller, "acme", timedelta(hours=1), now
            )
        with Session(engine) as session:
            rotated = PortalTokens(["old-secret", "new-secret"])
            scoped, _ = rotated.caller(session, old.token, now)
            assert (scoped.customer_id, scoped.role) == ("acme", Role.CUSTOMER)
            assert not scoped.sees_internal_figures
            with pytest.raises(InvalidPortalToken):
                PortalTokens(["new-secret"]).caller(session, old.token, now)
            with pytest.raises(InvalidPortalToken):
                rotated.caller(session, old.token, now + timedelta(hours=1))
