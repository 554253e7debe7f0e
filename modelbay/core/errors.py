"""Every API error is JSON: ``{"code": ..., "detail": ...}`` (+ ``fields`` for validation).

The exception classes below carry the codes of API.md; the handler turns DRF's own
exceptions, Django's and unexpected ones into that shape.
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "The request body is too large."


class InvalidInput(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "invalid_input"
    default_detail = "The inputs do not fit the model."


class Unavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "unavailable"
    default_detail = "No ready instance can take the call; try again shortly."
    retry_after = 1


class UpstreamTimeout(exceptions.APIException):
    status_code = status.HTTP_504_GATEWAY_TIMEOUT
    default_code = "upstream_timeout"
    default_detail = "The model instance did not answer in time."


class ApiError(exceptions.APIException):
    """An error with any status and code of API.md, raised by services."""

    def __init__(self, status_code: int, code: str, detail: str, *, field: str | None = None):
        super().__init__(detail, code)
        self.status_code = status_code
        self.default_code = code
        self.field = field


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


def api_exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    if isinstance(exc, exceptions.ValidationError):
        return _validation_response(exc)
    if not isinstance(exc, exceptions.APIException):
        logger.exception("Unhandled error in %s", context.get("view"))
        return Response(error_body("server_error", "An unexpected error happened on our side."), status=500)
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), None) or exc.default_code
    detail = str(exc.detail)
    field = getattr(exc, "field", None)
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    wait = getattr(exc, "wait", None) or getattr(exc, "retry_after", None)
    if wait:
        headers["Retry-After"] = str(int(wait))
    fields = {field: [detail]} if field else None
    return Response(error_body(code, detail, fields), status=exc.status_code, headers=headers)


def _is_api_path(path: str) -> bool:
    return path.startswith("/api/") or path.startswith("/v2/")


def json_404(request, exception=None):
    if _is_api_path(request.path):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def json_500(request):
    if _is_api_path(request.path):
        return JsonResponse(error_body("server_error", "An unexpected error happened on our side."), status=500)
    from django.views.defaults import server_error

    return server_error(request)


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
