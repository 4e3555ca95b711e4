"""The one error hierarchy of the API, rendered as `{"error": {"code", "message"}}`."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentmeter.money import InexactAmountError
from otel_processor.usage import StoreUnavailableError


class ApiError(Exception):
    """An error a client caused or can act on. Subclasses fix the status and code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """The JSON body every API error has."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, including FastAPI's own, in the one JSON shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        return error_response(422, "validation_error", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return error_response(error.status_code, code, str(error.detail))

    @app.exception_handler(InexactAmountError)
    async def _inexact(_: Request, error: InexactAmountError) -> JSONResponse:
        # Money entered finer than its currency's minor unit, found once the currency is.
        return error_response(422, UnprocessableError.code, str(error))

    @app.exception_handler(StoreUnavailableError)
    async def _unavailable(_: Request, error: StoreUnavailableError) -> JSONResponse:
        response = error_response(503, "unavailable", str(error))
        response.headers["retry-after"] = "2"
        return response


class ForbiddenError(ApiError):
    """The caller is known but its role may not do this."""

    status = 403
    code = "forbidden"
