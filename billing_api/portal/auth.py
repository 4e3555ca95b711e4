"""Resolving the portal's caller: a portal token from `Authorization: Bearer` (the JSON API
for builders' own apps) or from the short-lived session cookie that opening a link sets."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from agentmeter.clock import utcnow
from billing_api.auth import Caller
from billing_api.deps import DbSession
from billing_api.errors import UnauthorizedError
from billing_api.portal.sessions import InvalidPortalToken, PortalTokens
from billing_api.web import PageError
from otel_processor.receiver.service import bearer_token

COOKIE = "agentmeter_portal"
COOKIE_PATH = "/portal"
# The cookie outlives no session and lasts at most this long: open the link again after.
COOKIE_MAX_AGE_SECONDS = 2 * 3600
INVALID = "This link is invalid, has expired or was revoked. Ask for a new one."


def tokens(request: Request) -> PortalTokens:
    """The app's portal token signer (built from the server's secrets at start)."""
    portal_tokens: PortalTokens = request.app.state.portal_tokens
    return portal_tokens


def _resolve(request: Request, session: DbSession) -> Caller | None:
    token = bearer_token(request.headers.get("authorization")) or request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        caller, _ = tokens(request).caller(session, token, utcnow())
    except InvalidPortalToken:
        return None
    return caller


def api_caller(request: Request, session: DbSession) -> Caller:
    """The customer of a JSON API request; 401 JSON without a valid token."""
    caller = _resolve(request, session)
    if caller is None:
        raise UnauthorizedError("missing, invalid, expired or revoked portal token")
    return caller


def page_caller(request: Request, session: DbSession) -> Caller:
    """The customer of a page request; the 401 page without a valid session cookie."""
    caller = _resolve(request, session)
    if caller is None:
        raise PageError(401, "Link not valid", INVALID)
    return caller


PortalApiCaller = Annotated[Caller, Depends(api_caller)]
PortalPageCaller = Annotated[Caller, Depends(page_caller)]
