"""Sign-in, sign-out and the staff users page (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from agentmeter.clock import utcnow
from billing_api.dashboard import accounts
from billing_api.dashboard.accounts import ThrottledError
from billing_api.dashboard.http import (
    PREFIX,
    SESSION_COOKIE,
    DashboardRoute,
    StaffCaller,
    render,
    safe_next,
    secure_cookies,
    see_other,
    session_policy,
)
from billing_api.deps import DbSession

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)


def _login_page(request: Request, next_path: str, message: str | None, status: int) -> Response:
    return render(
        request,
        None,
        "login.html",
        page="login",
        title="Sign in",
        context={"next": safe_next(next_path), "message": message},
        status=status,
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    """The sign-in form."""
    return _login_page(request, next or "", None, 200)


@router.post("/login", response_model=None)
def login(
    request: Request,
    session: DbSession,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Check the e-mail and password; on success set the session cookie and go on."""
    settings = request.app.state.settings
    try:
        token = accounts.sign_in(session, email, password, session_policy(settings), utcnow())
    except ThrottledError as error:
        return _login_page(request, next, error.message, 429)
    if token is None:
        return _login_page(request, next, "Wrong e-mail or password, or account disabled.", 401)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        path=PREFIX,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(settings),
    )
    return response


@router.post("/logout")
def logout(request: Request, session: DbSession) -> RedirectResponse:
    """End the session and forget the cookie."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        accounts.sign_out(session, token)
    response = see_other("/login")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.get("/users", response_class=HTMLResponse)
def users(request: Request, session: DbSession, caller: StaffCaller) -> Response:
    """Staff users of the tenant (admins only)."""
    listed = accounts.list_users(session, caller)
    context = {"users": listed}
    return render(request, caller, "users.html", page="users", title="Users", context=context)


@router.post("/users/{user_id}/disable")
def disable_user(session: DbSession, caller: StaffCaller, user_id: str) -> RedirectResponse:
    """Disable a user; its sessions end at once."""
    accounts.set_disabled(session, caller, user_id, True, utcnow())
    return see_other("/users")


@router.post("/users/{user_id}/enable")
def enable_user(session: DbSession, caller: StaffCaller, user_id: str) -> RedirectResponse:
    """Let a disabled user sign in again."""
    accounts.set_disabled(session, caller, user_id, False, utcnow())
    return see_other("/users")
