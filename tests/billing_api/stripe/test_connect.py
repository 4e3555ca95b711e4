"""Connecting a tenant's Stripe account: directly (an account onboarded elsewhere) or by
OAuth, with a state that names the tenant, works once and expires."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import StripeOAuthState
from agentmeter.tenants import create_tenant
from billing_api.app import create_app
from tests.billing_api.stripe.conftest import ACCOUNT, Month
from tests.fake_stripe import CLIENT_ID, FakeStripe

CALLBACK = "/api/v1/stripe/connect/callback"


def _state(url: str) -> str:
    (state,) = parse_qs(urlsplit(url).query)["state"]
    return state


class TestAccount:
    def test_connect_show_disconnect(self, month: Month) -> None:
        assert month.get("/api/v1/stripe/account").json()["connected"] is False
        connected = month.put("/api/v1/stripe/account", json={"account_id": ACCOUNT})
        assert connected.status_code == 200
        shown = month.get("/api/v1/stripe/account").json()
        assert shown["stripe_enabled"] and shown["connected"]
        assert (shown["account_id"], shown["connected_via"]) == (ACCOUNT, "api")
        assert month.delete("/api/v1/stripe/account").status_code == 204
        assert month.get("/api/v1/stripe/account").json()["account_id"] is None
        assert month.delete("/api/v1/stripe/account").status_code == 404

    def test_an_account_the_platform_cannot_reach_is_refused(self, month: Month) -> None:
        response = month.put("/api/v1/stripe/account", json={"account_id": "acct_notours"})
        assert response.status_code == 400
        assert "not connected to this platform" in response.json()["error"]["message"]
        assert (
            month.put("/api/v1/stripe/account", json={"account_id": "cus_123"}).status_code == 422
        )

    def test_one_account_serves_one_tenant(self, month: Month, engine: Engine) -> None:
        month.connect()
        other = create_tenant(engine, "another builder")
        response = month.api.put(
            "/api/v1/stripe/account",
            json={"account_id": ACCOUNT},
            headers={"authorization": f"Bearer {other.admin_key}"},
        )
        assert response.status_code == 409

    def test_stripe_off_says_so(self, engine: Engine) -> None:
        tenant = create_tenant(engine, "no stripe")
        auth = {"authorization": f"Bearer {tenant.admin_key}"}
        with TestClient(create_app(engine, CollectorRegistry())) as client:
            shown = client.get("/api/v1/stripe/account", headers=auth).json()
            assert shown["stripe_enabled"] is False
            refused = client.put(
                "/api/v1/stripe/account", json={"account_id": ACCOUNT}, headers=auth
            )
            assert refused.status_code == 409
            assert refused.json()["error"]["code"] == "stripe_not_configured"
            assert client.get("/api/v1/stripe/connect", headers=auth).status_code == 409

    def test_needs_the_admin_key(self, month: Month) -> None:
        assert month.api.get("/api/v1/stripe/account").status_code == 401
        assert month.api.get("/api/v1/stripe/connect").status_code == 401


class TestOAuth:
    def test_the_callback_connects_the_tenant_of_the_state(
        self, month: Month, fake: FakeStripe
    ) -> None:
        url = month.get("/api/v1/stripe/connect").json()["url"]
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{fake.url}/oauth/authorize"
        query = parse_qs(parts.query)
        assert query["client_id"] == [CLIENT_ID]
        assert query["response_type"] == ["code"]
        assert query["scope"] == ["read_write"]
        code = fake.authorize("acct_1ViaOAuth")
        # Stripe redirects the builder's browser: no admin key, the state names the tenant.
        response = month.api.get(CALLBACK, params={"state": _state(url), "code": code})
        assert response.status_code == 200, response.text
        assert response.json()["account_id"] == "acct_1ViaOAuth"
        shown = month.get("/api/v1/stripe/account").json()
        assert (shown["account_id"], shown["connected_via"]) == ("acct_1ViaOAuth", "oauth")

    def test_a_state_works_once(self, month: Month, fake: FakeStripe) -> None:
        state = _state(month.get("/api/v1/stripe/connect").json()["url"])
        first = month.api.get(CALLBACK, params={"state": state, "code": fake.authorize("acct_1A")})
        assert first.status_code == 200
        again = month.api.get(CALLBACK, params={"state": state, "code": fake.authorize("acct_1B")})
        assert again.status_code == 400
        assert again.json()["error"]["code"] == "invalid_state"
        assert month.get("/api/v1/stripe/account").json()["account_id"] == "acct_1A"

    def test_an_expired_or_unknown_state_is_refused(
        self, month: Month, fake: FakeStripe, engine: Engine
    ) -> None:
        state = _state(month.get("/api/v1/stripe/connect").json()["url"])
        with Session(engine) as session, session.begin():
            session.execute(
                update(StripeOAuthState).values(expires_at=utcnow() - timedelta(seconds=1))
            )
        code = fake.authorize("acct_1Late")
        assert month.api.get(CALLBACK, params={"state": state, "code": code}).status_code == 400
        assert month.api.get(CALLBACK, params={"state": "forged", "code": code}).status_code == 400
        assert month.get("/api/v1/stripe/account").json()["connected"] is False

    def test_a_refused_code_or_denial_is_a_400(self, month: Month) -> None:
        state = _state(month.get("/api/v1/stripe/connect").json()["url"])
        bad = month.api.get(CALLBACK, params={"state": state, "code": "ac_made_up"})
        assert bad.status_code == 400
        assert "refused" in bad.json()["error"]["message"]
        denied = month.api.get(
            CALLBACK,
            params={"state": state, "error": "access_denied", "error_description": "no thanks"},
        )
        assert denied.status_code == 400
        assert "no thanks" in denied.json()["error"]["message"]
