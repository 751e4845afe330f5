"""Kubernetes API errors, each rendering the Status object the real API server returns."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered to the client as a ``Status`` object."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        """Render the error as a Kubernetes ``Status`` dict.

        Returns:
            The Status object (kind, apiVersion, status Failure, message, reason, code).
        """
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(kind: str, name: str, group: str = "") -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": kind}
    if group:
        details["group"] = group
    return details


def _qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


class NotFound(ApiError):
    """The object does not exist (404)."""

    def __init__(self, plural: str, name: str, *, group: str = "") -> None:
        super().__init__(
            404,
            "NotFound",
            f'{_qualified(plural, group)} "{name}" not found',
            _details(plural, name, group),
        )


class AlreadyExists(ApiError):
    """An object with that name already exists (409)."""

    def __init__(self, plural: str, name: str, *, group: str = "") -> None:
        super().__init__(
            409,
            "AlreadyExists",
            f'{_qualified(plural, group)} "{name}" already exists',
            _details(plural, name, group),
        )


class Conflict(ApiError):
    """The update was based on a stale resourceVersion (409)."""

    def __init__(self, plural: str, name: str, *, group: str = "") -> None:
        super().__init__(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {_qualified(plural, group)} "{name}": the object '
            "has been modified; please apply your changes to the latest version and try again",
            _details(plural, name, group),
        )


class Invalid(ApiError):
    """The object failed validation (422); ``causes`` name each bad field."""

    def __init__(
        self, kind: str, name: str, causes: list[dict[str, str]], *, group: str = ""
    ) -> None:
        qualified = f"{kind}.{group}" if group else kind
        parts = "; ".join(f"{c['field']}: {c['message']}" for c in causes)
        count = f"[{parts}]" if len(causes) > 1 else parts
        details = _details(kind, name, group)
        details["causes"] = causes
        super().__init__(422, "Invalid", f'{qualified} "{name}" is invalid: {count}', details)
        self.causes = causes


class Gone(ApiError):
    """The requested resourceVersion is older than the watch history (410)."""

    def __init__(self, message: str = "too old resource version") -> None:
        super().__init__(410, "Expired", message)


class BadRequest(ApiError):
    """The request cannot be understood (400)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "BadRequest", message)


class Unauthorized(ApiError):
    """No valid bearer token (401)."""

    def __init__(self) -> None:
        super().__init__(401, "Unauthorized", "Unauthorized")


class MethodNotAllowed(ApiError):
    """The verb is not supported on this path (405)."""

    def __init__(self, message: str) -> None:
        super().__init__(405, "MethodNotAllowed", message)


class UnsupportedMediaType(ApiError):
    """The patch content type is not supported (415)."""

    def __init__(self, content_type: str, hint: str = "") -> None:
        super().__init__(415, "UnsupportedMediaType", f"the body of the request was in an "
                         f"unknown format - accepted media types include: application/json, "
                         f"application/json-patch+json, application/merge-patch+json, "
                         f"application/strategic-merge-patch+json, application/apply-patch+yaml "
                         f"(got {content_type!r}){hint}")


def invalid_cause(field: str, message: str, reason: str = "FieldValueInvalid") -> dict[str, str]:
    """Build one entry of ``details.causes`` for an :class:`Invalid` error.

    Args:
        field: the dotted path of the bad field, e.g. ``metadata.name``.
        message: what is wrong, as the real API phrases it.
        reason: ``FieldValueInvalid``, ``FieldValueRequired`` or ``FieldValueForbidden``.

    Returns:
        The cause dict.
    """
    return {"reason": reason, "message": message, "field": field}
