"""The OpenAPI document describes every answer the API gives, errors included.

FastAPI documents only the success answer and its own 422 shape; every error of this API is
`{"error": {"code", "message"}}` (`billing_api.errors`), so each operation under `/api/v1`
and under the portal's customer API `/portal/api` lists the error statuses it can give with
that schema, added here once rather than on each route.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

API_PREFIX = "/api/v1/"
PORTAL_API_PREFIX = "/portal/api/"

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}

ERROR_ANSWERS = {
    "400": "The request is refused as a whole (e.g. a webhook URL that is not public)",
    "401": "Missing, malformed, unknown or revoked admin key",
    "404": "No such resource for this tenant (another tenant's ids are not found either)",
    "409": "The resource's state does not allow this now (e.g. the invoice is finalized)",
    "422": "The body, path or query does not validate; the message says which field",
    "429": "Too many requests for this key; retry after `Retry-After` seconds",
    "503": "The store is unavailable; retry after `Retry-After` seconds",
}

# The portal's customer API: a portal token instead of the admin key, reads only.
PORTAL_ERROR_ANSWERS = {
    "401": "Missing, invalid, expired or revoked portal token",
    "404": "No such resource for this customer (another customer's ids are not found either)",
    "422": ERROR_ANSWERS["422"],
    "429": "Too many requests for this token; retry after `Retry-After` seconds",
    "503": ERROR_ANSWERS["503"],
}


# Routes Stripe calls, authenticated by a signature or a signed state, never an admin key.
STRIPE_PATHS = ("/api/v1/stripe/webhooks", "/api/v1/stripe/connect/callback")
STRIPE_ERROR_ANSWERS = {
    "400": "The signature (webhooks) or the OAuth state or code (callback) is refused",
    "409": "Stripe is off on this server (no platform key)",
    "422": ERROR_ANSWERS["422"],
    "429": ERROR_ANSWERS["429"],
    "503": ERROR_ANSWERS["503"],
}


def error_answers(path: str) -> dict[str, str] | None:
    """The error statuses (with descriptions) the operations at `path` can answer, or None
    for a path outside the JSON APIs."""
    if path in STRIPE_PATHS:
        return STRIPE_ERROR_ANSWERS
    if path.startswith(API_PREFIX):
        return ERROR_ANSWERS
    if path.startswith(PORTAL_API_PREFIX):
        return PORTAL_ERROR_ANSWERS
    return None


def _with_errors(schema: dict[str, Any]) -> dict[str, Any]:
    schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    # FastAPI's own validation error shapes are not what the API answers.
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)
    reference = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema.get("paths", {}).items():
        answers = error_answers(path)
        if answers is None:
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in answers.items():
                responses[status] = {
                    "description": description,
                    "content": {"application/json": {"schema": reference}},
                }
    return schema


def install_error_responses(app: FastAPI) -> None:
    """Make `app.openapi()` list the error answers of every JSON API operation."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_errors(
                get_openapi(title=app.title, version=app.version, routes=app.routes)
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
