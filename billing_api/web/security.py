"""Security headers of every page, in one place: the portal and dashboard pages, the
printable invoice, and any HTML answer added later (the middleware covers every `text/html`
response, so a page cannot forget them).

The Content-Security-Policy allows scripts, styles, fonts and fetches from the app itself
only: no inline script or style anywhere, so an injected `<script>` or `style=` attribute
does nothing. Images may also come over https (a brand's logo). Who may frame a page is the
`frame-ancestors` directive: nobody by default, or the sources a tenant lists for embedding
its portal (validated by `is_frame_source`, so a value can never add a directive).
"""

from __future__ import annotations

import base64
import hashlib
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


_STYLE_BLOCK = re.compile(r"<style>(.*?)</style>", re.DOTALL)


def content_security_policy(
    frame_ancestors: Sequence[str] = (), style_hashes: Iterable[str] = ()
) -> str:
    """The page CSP, framable only by `frame_ancestors` (each checked again here);
    `style_hashes` ('sha256-…') allow a standalone document's own inline `<style>` blocks."""
    sources = [s for s in frame_ancestors if is_frame_source(s)]
    frames = " ".join(sources) if sources else "'none'"
    policy = [
        " ".join(["style-src 'self'", *(f"'{h}'" for h in style_hashes)])
        if directive == "style-src 'self'"
        else directive
        for directive in _BASE_POLICY
    ]
    return "; ".join((*policy, f"frame-ancestors {frames}"))


def inline_style_hashes(html: str) -> list[str]:
    """CSP hash sources of the `<style>` blocks of `html` (a printable document that must
    stand alone when saved)."""
    return [
        "sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        for block in _STYLE_BLOCK.findall(html)
    ]


def page_headers(
    frame_ancestors: Sequence[str] = (), *, private: bool = True, html: str = ""
) -> dict[str, str]:
    """Headers every page response carries; `private` pages are never cached; the inline
    `<style>` blocks of `html`, if given, are allowed by hash."""
    headers = {
        "content-security-policy": content_security_policy(
            frame_ancestors, inline_style_hashes(html)
        ),
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
    """ASGI middleware: responses under `prefixes`, and every `text/html` response
    elsewhere, get `page_headers()` for each header a route did not set itself (a portal
    page sets its tenant's `frame-ancestors`; errors, redirects and static files get the
    defaults, static files stay cacheable). Every other response gets `nosniff`."""

    def __init__(self, app: ASGIApp, prefixes: Iterable[str] = PAGE_PREFIXES) -> None:
        self.app = app
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope["path"])
        page_path = path.startswith(self.prefixes)
        private = not path.startswith("/static")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                is_html = headers.get("content-type", "").startswith("text/html")
                wanted = (
                    page_headers(private=private)
                    if page_path or is_html
                    else {"x-content-type-options": "nosniff"}
                )
                # A route that set its own CSP chose who may frame it (a tenant's
                # embedding sources): DENY would contradict it. Decided before the defaults
                # are added, or the default CSP itself would suppress X-Frame-Options.
                if "content-security-policy" in headers:
                    wanted.pop("x-frame-options", None)
                for name, value in wanted.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
