"""Every API error is JSON: ``{"code": ..., "detail": ...}`` (+ ``fields`` for validation).

Services raise the domain errors below (codes of API.md, no HTTP); the handler is the one
place that maps them, DRF's own exceptions, Django's and unexpected ones to that shape.
"""

import errno
import logging
import sys

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpResponse, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class DomainError(Exception):
    """What a service raises when a request cannot be done, in the words of API.md.

    Services know nothing of HTTP: ``api_exception_handler`` (the edge) gives each kind its
    status below. ``field`` names the input at fault; ``retry_after`` is in seconds.
    """

    code = "invalid_request"
    default_detail = "The request is not valid."
    retry_after: int | None = None

    def __init__(self, detail: str | None = None, *, field: str | None = None, retry_after: int | None = None):
        self.detail = detail or self.default_detail
        self.field = field
        if retry_after is not None:
            self.retry_after = max(1, retry_after)
        super().__init__(self.detail)


class InvalidRequest(DomainError):
    code = "invalid_request"


class Forbidden(DomainError):
    code = "forbidden"
    default_detail = "You do not have permission to do this."


class NotFound(DomainError):
    code = "not_found"
    default_detail = "Not found."


class Conflict(DomainError):
    code = "conflict"
    default_detail = "The request conflicts with the current state."


class PayloadTooLarge(DomainError):
    code = "payload_too_large"
    default_detail = "The request body is too large."


class InvalidInput(DomainError):
    code = "invalid_input"
    default_detail = "The inputs do not fit the model."


class TooManyCalls(DomainError):
    """A plan's quota or rate refuses the call for now (see ``retry_after``)."""

    code = "rate_limited"


class QuotaExceeded(TooManyCalls):
    code = "quota_exceeded"
    default_detail = "The plan's quota for this period is used up."


class RateLimited(TooManyCalls):
    code = "rate_limited"
    default_detail = "Too many calls per second for this plan."
    retry_after = 1


class TooManyInFlight(TooManyCalls):
    """More calls in flight than an organization, a service or a plan may have at once,
    and the bounded queue behind the cap is full or the wait in it ran out."""

    code = "too_many_in_flight"
    default_detail = "Too many calls in flight at once; try again shortly."
    retry_after = 1


class Unavailable(DomainError):
    code = "unavailable"
    default_detail = "No ready instance can take the call; try again shortly."
    retry_after = 1


class DatabaseUnavailable(DomainError):
    """The database did not serve the request (restarting, unreachable, a transaction it
    had to abort); the caller may send it again after ``retry_after``."""

    code = "database_unavailable"
    default_detail = "The database could not serve this request right now; try again shortly."
    retry_after = 5


class InsufficientStorage(DomainError):
    """The disk (or a quota) this server writes to is full: what the request was writing
    has been removed again."""

    code = "insufficient_storage"
    default_detail = "The server has no room to store this upload; nothing was kept."


def is_disk_full(error: BaseException) -> bool:
    """Whether a write failed for want of room: a full file system or an exhausted quota."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


class UpstreamTimeout(DomainError):
    code = "upstream_timeout"
    default_detail = "The model instance did not answer in time."


class ModelError(DomainError):
    """The model failed on the call (its own error stays with its publisher, in the logs)."""

    code = "model_error"
    default_detail = "The app failed on this input."


# The one place where a domain error becomes an HTTP status.
HTTP_STATUS: dict[type[DomainError], int] = {
    InvalidRequest: 400,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    InvalidInput: 422,
    TooManyCalls: 429,
    Unavailable: 503,
    DatabaseUnavailable: 503,
    UpstreamTimeout: 504,
    ModelError: 502,
    InsufficientStorage: 507,
}


def http_status(error: DomainError) -> int:
    return next(status for kind, status in HTTP_STATUS.items() if isinstance(error, kind))


# DRF's exception class -> our machine code.
_CODES = {
    exceptions.ValidationError: "invalid_request",
    exceptions.ParseError: "invalid_request",
    exceptions.NotAuthenticated: "unauthenticated",
    exceptions.AuthenticationFailed: "unauthenticated",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
}


def error_body(code: str, detail: str, fields: dict | None = None) -> dict:
    body = {"code": code, "detail": detail}
    if fields:
        body["fields"] = fields
    return body


def _flatten_fields(data, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested ``{field: [errors]}`` (or lists of them) as ``{"a.b": ["..."]}``.

    A nested serializer's own errors (its ``non_field_errors``) name the field holding it.
    """
    fields: dict[str, list[str]] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            name = f"{prefix}{key}" if key != "non_field_errors" else prefix.rstrip(".") or "non_field_errors"
            fields.update(_flatten_fields(value, f"{name}."))
    elif isinstance(data, list) and data and all(not isinstance(v, (dict, list)) for v in data):
        fields[prefix.rstrip(".") or "non_field_errors"] = [str(v) for v in data]
    elif isinstance(data, list):
        for index, value in enumerate(data):
            fields.update(_flatten_fields(value, f"{prefix}{index}."))
    else:
        fields[prefix.rstrip(".") or "non_field_errors"] = [str(data)]
    return fields


def _validation_response(exc: exceptions.ValidationError) -> Response:
    fields = _flatten_fields(exc.detail)
    first_field, messages = next(iter(fields.items()))
    detail = messages[0] if first_field == "non_field_errors" else f"{first_field}: {messages[0]}"
    return Response(error_body("invalid_request", detail, fields), status=400)


def _domain_response(error: DomainError) -> Response:
    fields = {error.field: [error.detail]} if error.field else None
    headers = {"Retry-After": str(int(error.retry_after))} if error.retry_after else {}
    return Response(error_body(error.code, error.detail, fields), status=http_status(error), headers=headers)


def api_exception_handler(exc, context):
    if isinstance(exc, DomainError):
        return _domain_response(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        return _domain_response(PayloadTooLarge())
    elif isinstance(exc, (OperationalError, InterfaceError)):  # the database is away (restarting)
        logger.warning("The database failed a request in %s: %s", context.get("view"), exc)
        return _domain_response(DatabaseUnavailable())
    elif is_disk_full(exc):  # a write no service turned into InsufficientStorage itself
        logger.warning("The disk is full, in %s: %s", context.get("view"), exc)
        return _domain_response(InsufficientStorage("The server has no room left on its disk; try again later."))
    if isinstance(exc, exceptions.ValidationError):
        return _validation_response(exc)
    if not isinstance(exc, exceptions.APIException):
        logger.exception("Unhandled error in %s", context.get("view"))
        return Response(error_body("server_error", "An unexpected error happened on our side."), status=500)
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), None) or exc.default_code
    detail = str(exc.detail)
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    wait = getattr(exc, "wait", None)
    if wait:
        headers["Retry-After"] = str(int(wait))
    return Response(error_body(code, detail), status=exc.status_code, headers=headers)


def _is_api_path(path: str) -> bool:
    return path.startswith("/api/") or path.startswith("/v2/")


def json_404(request, exception=None):
    if _is_api_path(request.path):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def json_500(request):
    if isinstance(sys.exc_info()[1], (OperationalError, InterfaceError)):
        return _database_away(request)
    if _is_api_path(request.path):
        return JsonResponse(error_body("server_error", "An unexpected error happened on our side."), status=500)
    from django.views.defaults import server_error

    return server_error(request)


def _database_away(request):
    """What a request the database failed outside a DRF view gets (a console page, a
    middleware's query): 503 with Retry-After, not 500."""
    logger.warning("The database failed %s: %s", request.path, sys.exc_info()[1])
    error = DatabaseUnavailable()
    if _is_api_path(request.path):
        response = JsonResponse(error_body(error.code, str(error.detail)), status=503)
    else:
        from django.template import loader

        response = HttpResponse(loader.render_to_string("503.html"), status=503)
    response["Retry-After"] = str(error.retry_after)
    return response


def json_400(request, exception=None):
    if _is_api_path(request.path):
        if isinstance(exception, RequestDataTooBig):
            return JsonResponse(error_body("payload_too_large", "The request body is too large."), status=413)
        return JsonResponse(error_body("invalid_request", "Bad request."), status=400)
    from django.views.defaults import bad_request

    return bad_request(request, exception)


def json_403(request, exception=None):
    if _is_api_path(request.path):
        return JsonResponse(error_body("forbidden", "Forbidden."), status=403)
    from django.views.defaults import permission_denied

    return permission_denied(request, exception)
