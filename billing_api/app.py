"""The FastAPI application: REST API, health endpoints."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from agentmeter.db import read_only
from agentmeter.settings import Settings
from billing_api.budgets.endpoints import router as budgets_router
from billing_api.credits.endpoints import router as credits_router
from billing_api.customers.endpoints import router as customers_router
from billing_api.dashboard import router as dashboard_router
from billing_api.errors import error_response, install_error_handlers
from billing_api.guards import require_encodable_json
from billing_api.invoicing.endpoints import router as invoicing_router
from billing_api.jobs.endpoints import router as jobs_router
from billing_api.jobs.kinds import job_registry
from billing_api.jobs.waker import JobWaker
from billing_api.meters.endpoints import router as meters_router
from billing_api.openapi import install_error_responses
from billing_api.portal.endpoints import admin as portal_admin_router
from billing_api.portal.endpoints import customer_api as portal_api_router
from billing_api.portal.pages import router as portal_pages_router
from billing_api.portal.sessions import PortalTokens
from billing_api.pricing.endpoints import router as pricing_router
from billing_api.rating.endpoints import router as rating_router
from billing_api.stripe.endpoints import router as stripe_router
from billing_api.stripe.gateway import StripeGateway
from billing_api.tenant.endpoints import router as tenant_router
from billing_api.usage.endpoints import router as usage_router
from billing_api.web import install_pages
from billing_api.web.secrets import signing_keys
from billing_api.webhooks.endpoints import router as webhooks_router

# Audiences of the page layer: each package has a templates/ folder (see billing_api.web).
PAGE_PACKAGES = ("billing_api.portal", "billing_api.dashboard")


def create_app(
    engine: Engine,
    registry: CollectorRegistry,
    settings: Settings | None = None,
    stripe: StripeGateway | None = None,
) -> FastAPI:
    """The billing API over `engine` (already migrated); `/metrics` exposes `registry`;
    `settings` default to the environment's; `stripe` is the process's Stripe gateway
    (None: Stripe is off)."""
    app = FastAPI(
        title="AgentMeter", version="0.1.0", dependencies=[Depends(require_encodable_json)]
    )
    app.state.engine = engine
    app.state.stripe = stripe
    app.state.settings = settings = settings or Settings()
    # Runs queued jobs a person waits for (billing runs) without waiting for serve's loop.
    app.state.jobs = JobWaker(engine, job_registry())
    install_error_handlers(app)
    install_error_responses(app)
    app.include_router(customers_router)
    app.include_router(pricing_router)
    app.include_router(usage_router)
    app.include_router(rating_router)
    app.include_router(credits_router)
    app.include_router(budgets_router)
    app.include_router(webhooks_router)
    app.include_router(jobs_router)
    app.include_router(invoicing_router)
    app.include_router(meters_router)
    app.include_router(stripe_router)
    app.include_router(tenant_router)
    secrets = signing_keys(engine, settings)
    secure = (settings.public_url or "").startswith("https://")
    install_pages(app, PAGE_PACKAGES, secrets, secure=secure)
    app.state.portal_tokens = PortalTokens(secrets)
    app.include_router(portal_admin_router)
    app.include_router(portal_api_router)
    app.include_router(portal_pages_router)
    app.include_router(dashboard_router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False, response_model=None)
    def readyz() -> dict[str, str] | JSONResponse:
        try:
            with read_only(engine) as connection:
                # A real table, so a missing or replaced database file shows.
                connection.execute(text("SELECT count(*) FROM alembic_version"))
        except SQLAlchemyError:  # whatever the cause, this process cannot serve now
            return error_response(503, "unavailable", "store unreachable")
        return {"status": "ready"}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
