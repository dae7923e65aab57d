"""The API's error hierarchy and the handlers that turn every failure into one JSON shape.

`{"error": {"code", "message", "details"}}`, for our own errors, Litestar's, and anything unexpected (a 500
carrying the trace id and nothing internal).
"""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_413_REQUEST_ENTITY_TOO_LARGE
from loguru import logger

from shared.api import ErrorBody, ErrorDetail


class ApiError(Exception):
    """Root of every error the API raises on purpose; carries its status and code."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers: dict[str, str] = {}


class BadRequest(ApiError):
    status_code = 400
    code = "validation_error"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    """The key is valid but its scope does not cover this service or route."""

    status_code = 403
    code = "forbidden"


class RateLimited(ApiError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, details: Any = None, *, retry_after: float) -> None:
        super().__init__(message, details)
        self.headers = {"Retry-After": str(max(1, round(retry_after + 0.5)))}


class DatabaseUnavailable(ApiError):
    status_code = 503
    code = "database_unavailable"


_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    429: "rate_limited",
    503: "service_unavailable",
}


def error_response(
    status_code: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details))
    return Response(content=body, status_code=status_code, media_type=MediaType.JSON, headers=headers)


def api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[ErrorBody]:
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers or None)


def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    if isinstance(exc, ValidationException):
        extra = exc.extra if isinstance(exc.extra, list) else None
        first = extra[0] if extra and isinstance(extra[0], dict) else {}
        message = str(first.get("message") or exc.detail)
        if first.get("key") not in (None, "data"):  # "data" is the whole body: no field to name
            message = f"{first['key']}: {message}"
        return error_response(HTTP_400_BAD_REQUEST, "validation_error", message, extra)
    if exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        # A body over the limit is a client error like any other malformed body: one shape, one status.
        return error_response(HTTP_400_BAD_REQUEST, "body_too_large", "request body exceeds the size limit")
    if exc.status_code == HTTP_400_BAD_REQUEST:
        return error_response(HTTP_400_BAD_REQUEST, "malformed_request", str(exc.detail))
    code = _CODES_BY_STATUS.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    trace_id = request.scope.get("state", {}).get("trace_id")
    logger.bind(error_type=type(exc).__name__).exception("unhandled error")
    return error_response(500, "internal_error", "internal error", {"trace_id": trace_id})
