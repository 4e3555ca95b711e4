"""CSRF protection of page forms, once, by middleware (asgi-csrf, as Datasette uses it).

A signed random token sits in a `csrftoken` cookie; every unsafe request to a page path
(POST, PUT, PATCH, DELETE under `/portal` or `/dashboard`) must repeat it in the form field
`csrftoken` or the `x-csrftoken` header (htmx sends it from `hx-headers`), else 403. The
JSON API under `/api` is not a page: it authenticates with a Bearer key, no cookie.
Templates get the token from `csrf_token()`; the base template's `csrf_field()` macro puts
it in a form.
"""

from __future__ import annotations

from collections.abc import Sequence

from asgi_csrf import asgi_csrf
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

FORM_PREFIXES = ("/portal", "/dashboard")


class CsrfMiddleware:
    """`asgi_csrf` limited to page paths, signing with the server's secrets."""

    def __init__(self, app: ASGIApp, secrets: Sequence[str], secure: bool = False) -> None:
        self.app = asgi_csrf(
            app,
            signing_secret=list(secrets),
            skip_if_scope=lambda scope: not str(scope["path"]).startswith(FORM_PREFIXES),
            cookie_secure=secure,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def csrf_token(request: Request) -> str:
    """The token forms of this response must send back (sets the cookie if missing)."""
    token: str = request.scope["csrftoken"]()
    return token
