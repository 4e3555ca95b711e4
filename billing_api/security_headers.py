"""Security headers on every HTML page, set once by middleware so a page added later
cannot forget them.

The policy allows no script except the app's own files, no inline script at all, styles
from the app (plus inline `<style>` blocks a page declares by hash), images from the app
and https (brand logos), and no framing (clickjacking). A page with inline styles passes
their hashes with `page_headers`; the middleware fills in whatever a page did not set.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_STYLE_BLOCK = re.compile(r"<style>(.*?)</style>", re.DOTALL)


def content_security_policy(style_hashes: Iterable[str] = ()) -> str:
    """The one CSP of HTML pages; `style_hashes` are 'sha256-…' sources of inline styles."""
    styles = " ".join(["'self'", *(f"'{h}'" for h in style_hashes)])
    return (
        "default-src 'none'; script-src 'self'; "
        f"style-src {styles}; img-src 'self' https: data:; font-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


def page_headers(html: str) -> dict[str, str]:
    """Headers for `html` whose inline `<style>` blocks are allowed by their hashes."""
    hashes = [
        "sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        for block in _STYLE_BLOCK.findall(html)
    ]
    return {"content-security-policy": content_security_policy(hashes)}


BASELINE = {
    "content-security-policy": content_security_policy(),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


class SecurityHeadersMiddleware:
    """ASGI middleware: every `text/html` answer gets `BASELINE` headers it lacks; every
    answer gets `X-Content-Type-Options: nosniff`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.decode().lower() for name, _ in headers}
                content_type = dict(headers).get(b"content-type", b"").decode()
                wanted = (
                    BASELINE
                    if content_type.startswith("text/html")
                    else {"x-content-type-options": "nosniff"}
                )
                headers += [
                    (name.encode(), value.encode())
                    for name, value in wanted.items()
                    if name not in present
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
