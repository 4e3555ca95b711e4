"""Per-key rate limit of the API: past it, 429 with `Retry-After` and the JSON error body.

Requests are counted per bearer token (API key or portal token), before authentication
and before any handler runs, so a client over its limit costs no database work. Requests
without a bearer token (pages with a session, health checks) are not counted here.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from agentmeter.ratelimit import KeyRateLimiter
from billing_api.errors import error_response
from otel_processor.receiver.service import bearer_token


class RateLimitedApi:
    """ASGI middleware that refuses requests of a key past `limiter`'s rate."""

    def __init__(self, app: ASGIApp, limiter: KeyRateLimiter) -> None:
        self._app = app
        self._limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            authorization = next(
                (v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"authorization"),
                None,
            )
            token = bearer_token(authorization)
            if token is not None and (wait := self._limiter.retry_after(token)) is not None:
                response = error_response(
                    429, "rate_limited", f"rate limit of this key exceeded; retry in {wait} s"
                )
                response.headers["retry-after"] = str(wait)
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)
