"""The builder's dashboard (issue 12): staff sign in and see usage, revenue, cost and
margin, manage customers, prices, billing runs and keys — in the browser.

Built on the page layer (`billing_api.web`): templates in `templates/dashboard/`, routes
in the `*_pages` modules, which only translate between forms and the domain services the
REST API uses; who may do what is `billing_api.auth.Role` (the services check it), staff
accounts and sessions are `accounts`.
"""

from fastapi import APIRouter

from billing_api.dashboard.account_pages import router as account_router
from billing_api.dashboard.billing_pages import router as billing_router
from billing_api.dashboard.customer_pages import router as customer_router
from billing_api.dashboard.overview_pages import router as overview_router
from billing_api.dashboard.pricing_pages import router as pricing_router
from billing_api.dashboard.settings_pages import router as settings_router

router = APIRouter()
router.include_router(account_router)
router.include_router(overview_router)
router.include_router(customer_router)
router.include_router(billing_router)
router.include_router(pricing_router)
router.include_router(settings_router)

__all__ = ["router"]
