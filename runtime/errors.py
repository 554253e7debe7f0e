"""Errors that become JSON responses ``{"code": ..., "detail": ...}``."""

from __future__ import annotations


class ApiError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    status = 500
    code = "internal_error"

    def __init__(self, detail: str, *, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or []


class InvalidRequest(ApiError):
    """The request itself is malformed (bad JSON, missing/wrong-typed fields)."""

    status = 400
    code = "invalid_request"


class InvalidInput(ApiError):
    """A well-formed request whose inputs do not fit the model."""

    status = 422
    code = "invalid_input"


class Unauthenticated(ApiError):
    """The call does not carry this instance's credential."""

    status = 401
    code = "unauthenticated"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers=[(b"www-authenticate", b'Bearer realm="modelbay-runtime"')])


class NotFound(ApiError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers=[(b"retry-after", b"1")])


class ModelError(ApiError):
    """The model's own code failed (or returned something unusable)."""

    status = 500
    code = "model_error"


class CallerGone(Exception):
    """The caller hung up before its call was answered: there is no one to answer."""
