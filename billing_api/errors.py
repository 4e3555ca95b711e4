"""The one error hierarchy of the API, rendered as `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentmeter.db import is_retryable
from agentmeter.money import InexactAmountError

logger = logging.getLogger("agentmeter.api")


def validation_problems(errors: Sequence[Any]) -> str:
    """Pydantic's validation errors as one message: `field.path: problem; …`."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)


class ApiError(Exception):
    """An error a client caused or can act on. Subclasses fix the status and code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        """Response headers the error adds (none by default)."""
        return {}


class NotFoundError(ApiError):
    status = 404
    code = "not_found"


class ConflictError(ApiError):
    status = 409
    code = "conflict"


class UnprocessableError(ApiError):
    status = 422
    code = "validation_error"


class UnauthorizedError(ApiError):
    status = 401
    code = "unauthenticated"


class ServiceUnavailableError(ApiError):
    """The database cannot serve the request now (connection lost, locked, disk full); the
    same request may succeed later, so the answer says when to retry."""

    status = 503
    code = "unavailable"
    retry_after_seconds = 2

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after_seconds)}


@contextmanager
def database_errors() -> Iterator[None]:
    """Inside, a retryable database error (`agentmeter.db.is_retryable`) becomes
    `ServiceUnavailableError` (503 with Retry-After); any other propagates as the bug it
    is (500 `internal_error`, traceback logged)."""
    try:
        yield
    except SQLAlchemyError as error:
        if not is_retryable(error):
            raise
        logger.warning("database unavailable: %s", error)
        raise ServiceUnavailableError("database unavailable; retry") from None


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON body every API error has."""
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


class InternalErrors:
    """ASGI middleware: an exception no handler answered (a bug in the code or the schema)
    is logged with its traceback and answered 500 `internal_error`, its text never shown."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            logger.exception(
                "request failed", extra={"method": scope["method"], "path": scope["path"]}
            )
            if started:
                raise
            response = error_response(500, "internal_error", "internal error; see the server log")
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, including FastAPI's own and unexpected ones, in the one JSON
    shape."""
    app.add_middleware(InternalErrors)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.message, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, "validation_error", validation_problems(error.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return error_response(error.status_code, code, str(error.detail))

    @app.exception_handler(InexactAmountError)
    async def _inexact(_: Request, error: InexactAmountError) -> JSONResponse:
        # Money entered finer than its currency's minor unit, found once the currency is.
        return error_response(422, UnprocessableError.code, str(error))


class ForbiddenError(ApiError):
    """The caller is known but its role may not do this."""

    status = 403
    code = "forbidden"
