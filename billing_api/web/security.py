"""Security headers of every page, in one place.

The Content-Security-Policy allows scripts, styles, fonts and fetches from the app itself
only: no inline script or style anywhere, so an injected `<script>` or `style=` attribute
does nothing. Images may also come over https (a brand's logo). Who may frame a page is the
`frame-ancestors` directive: nobody by default, or the sources a tenant lists for embedding
its portal (validated by `is_frame_source`, so a value can never add a directive).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Paths whose responses are pages or their assets (the JSON API keeps its own headers).
PAGE_PREFIXES = ("/portal", "/dashboard", "/static")

_BASE_POLICY = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' https: data:",
    "font-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
)

# A CSP host-source (scheme://host[:port][/path], wildcards as CSP allows) or 'self'. No
# spaces, semicolons, commas or quotes besides 'self': nothing that could end the directive.
_HOST_SOURCE = re.compile(
    r"^(?:https?://)?(?:\*\.)?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
    r"(?::(?:\d{1,5}|\*))?(?:/[A-Za-z0-9._~%!$&'()*+=:@/-]*)?$"
)


def is_frame_source(source: str) -> bool:
    """Whether `source` is one CSP source for `frame-ancestors`: 'self', or an https (or
    http on localhost) host source like `https://app.example.com` or `https://*.example.com`."""
    if source == "'self'":
        return True
    if not _HOST_SOURCE.fullmatch(source) or "'" in source:
        return False
    if source.startswith("http://"):
        host = source.removeprefix("http://").split("/")[0].split(":")[0]
        return host in ("localhost", "127.0.0.1")
    return source.startswith("https://")


def content_security_policy(frame_ancestors: Sequence[str] = ()) -> str:
    """The page CSP, framable only by `frame_ancestors` (each checked again here)."""
    sources = [s for s in frame_ancestors if is_frame_source(s)]
    frames = " ".join(sources) if sources else "'none'"
    return "; ".join((*_BASE_POLICY, f"frame-ancestors {frames}"))


def page_headers(frame_ancestors: Sequence[str] = (), *, private: bool = True) -> dict[str, str]:
    """Headers every page response carries; `private` pages are never cached."""
    headers = {
        "content-security-policy": content_security_policy(frame_ancestors),
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cross-origin-resource-policy": "same-origin",
        "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
    }
    if not frame_ancestors:
        headers["x-frame-options"] = "DENY"
    if private:
        headers["cache-control"] = "no-store"
    return headers


class PageSecurityHeaders:
    """ASGI middleware: responses under `prefixes` get `page_headers()` for each header a
    route did not set itself (a portal page sets its tenant's `frame-ancestors`; errors,
    redirects and static files get the defaults, static files stay cacheable)."""

    def __init__(self, app: ASGIApp, prefixes: Iterable[str] = PAGE_PREFIXES) -> None:
        self.app = app
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        private = not str(scope["path"]).startswith("/static")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in page_headers(private=private).items():
                    if name not in headers and not (
                        name == "x-frame-options" and "content-security-policy" in headers
                    ):
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
