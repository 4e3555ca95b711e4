"""The dashboard's HTTP glue: the session cookie, the `Caller` it resolves to, the route
class that turns refusals into pages, and rendering with the page layer.

Pages only translate: form fields in, a service call, a template out. Every refusal a
service raises (`ApiError`: 403 for a role, 404, 409, 422) becomes the page layer's error
page with the same status; a request without a live session is sent to the sign-in page
(htmx requests get an `HX-Redirect` to it).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.settings import Settings
from billing_api.auth import Caller, Role
from billing_api.dashboard.accounts import SessionPolicy, resolve_session
from billing_api.errors import ApiError, database_errors
from billing_api.web import PageError, Pages
from billing_api.web.formatting import LocaleFormat

PREFIX = "/dashboard"
SESSION_COOKIE = "agentmeter_dashboard"

_TITLES = {
    403: "Not allowed",
    404: "Not found",
    409: "Not possible now",
    422: "Not accepted",
    429: "Too many attempts",
}


class SignInRequired(Exception):
    """No live dashboard session on the request."""


def session_policy(settings: Settings) -> SessionPolicy:
    """Idle and absolute session lifetimes from the settings."""
    return SessionPolicy(
        idle=timedelta(minutes=settings.dashboard_idle_minutes),
        absolute=timedelta(hours=settings.dashboard_session_hours),
    )


def secure_cookies(settings: Settings) -> bool:
    """Cookies are marked Secure when the dashboard is served over https."""
    return (settings.public_url or "").startswith("https://")


def staff_caller(request: Request) -> Caller:
    """The caller of the request's dashboard session; `SignInRequired` without one.

    Resolving a session writes (it is touched, or deleted once expired), so it runs in a
    short transaction of its own that takes the write lock: a page's GET reads in a
    deferred SQLite transaction, which cannot turn into a writer once another connection
    (a worker, another request) has committed since its snapshot."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired
    policy = session_policy(request.app.state.settings)
    with database_errors(), Session(request.app.state.engine) as session, session.begin():
        caller = resolve_session(session, token, policy, utcnow())
    if caller is None:
        raise SignInRequired
    return caller


StaffCaller = Annotated[Caller, Depends(staff_caller)]


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path, never another site."""
    if target and target.startswith(f"{PREFIX}") and not target.startswith("//"):
        return target
    return f"{PREFIX}/"


class DashboardRoute(APIRoute):
    """Routes whose refusals render as pages (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                login = f"{PREFIX}/login?next={quote(request.url.path)}"
                if request.headers.get("hx-request"):
                    return Response(status_code=401, headers={"hx-redirect": login})
                return RedirectResponse(login, status_code=303)
            except ApiError as error:
                title = _TITLES.get(error.status, "Not possible")
                raise PageError(error.status, title, error.message) from error

        return handle


def render(
    request: Request,
    caller: Caller | None,
    template: str,
    *,
    page: str,
    title: str,
    context: Mapping[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    """A dashboard page: `page` names it in the body class and the navigation."""
    pages: Pages = request.app.state.pages
    return pages.render(
        request,
        f"dashboard/{template}",
        body_class=f"dashboard dashboard-{page}",
        title=f"{title} · AgentMeter",
        fmt=LocaleFormat(),
        context={
            "caller": caller,
            "page": page,
            "can_bill": caller is not None and caller.may(Role.BILLING),
            "is_admin": caller is not None and caller.may(),
            **(context or {}),
        },
        status=status,
    )


def fragment(request: Request, template: str, context: Mapping[str, Any]) -> HTMLResponse:
    """Part of a page, for htmx to swap in (the page renders the same template whole)."""
    pages: Pages = request.app.state.pages
    html = pages.environment.get_template(f"dashboard/{template}").render(
        fmt=LocaleFormat(), **context
    )
    return HTMLResponse(html)


def see_other(path: str) -> RedirectResponse:
    """After a successful form post: back to a page (Post/Redirect/Get)."""
    return RedirectResponse(f"{PREFIX}{path}", status_code=303)
