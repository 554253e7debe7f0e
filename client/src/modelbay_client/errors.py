"""What can go wrong talking to Modelbay, as exceptions a script can tell apart."""

from __future__ import annotations

from typing import Any

import httpx


class ModelbayError(Exception):
    """The base of every error the client raises."""


class NotConfigured(ModelbayError):
    """No site URL or API key: neither given, nor in the environment, nor saved by ``modelbay login``."""


class ConnectionFailed(ModelbayError):
    """The site could not be reached, or the connection broke before an answer."""


class WaitTimedOut(ModelbayError):
    """A wait (a service becoming ready, a release ending) passed its time limit."""


class OperationFailed(ModelbayError):
    """What was waited for ended badly: the service failed, the release was rolled back."""


# Answers worth trying again after Retry-After: the call was refused before it ran.
RETRYABLE_CODES = frozenset({"rate_limited", "too_many_in_flight", "unavailable"})


class ApiError(ModelbayError):
    """The API's JSON error: ``{"code", "detail", "fields"?}`` with its HTTP status."""

    def __init__(
        self,
        *,
        status: int,
        code: str,
        detail: str,
        fields: dict[str, list[str]] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.status, self.code, self.detail = status, code, detail
        self.fields = fields or {}
        self.retry_after_s = retry_after_s
        super().__init__(str(self))

    def __str__(self) -> str:
        fields = "".join(
            f"\n  {name}: {' '.join(messages)}"
            for name, messages in self.fields.items()
            if " ".join(messages) != self.detail  # a single field's message is often the detail itself
        )
        return f"{self.code}: {self.detail}{fields}"

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES and self.retry_after_s is not None

    def as_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"status": self.status, "code": self.code, "detail": self.detail}
        if self.fields:
            error["fields"] = self.fields
        if self.retry_after_s is not None:
            error["retry_after_s"] = self.retry_after_s
        return error

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The error a failed answer carries; a body that is not the API's JSON (a proxy's page)
        still gives its status and the start of its text."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "code" not in body:
            text = " ".join(response.text.split())[:200] or response.reason_phrase
            return cls(status=response.status_code, code=f"http_{response.status_code}", detail=text)
        return cls(
            status=response.status_code,
            code=str(body["code"]),
            detail=str(body.get("detail", "")),
            fields=body.get("fields"),
            retry_after_s=_seconds(response.headers.get("Retry-After")),
        )


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the API sends seconds
