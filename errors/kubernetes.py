"""The Kubernetes boundary: ApiException and urllib3 errors become veza-ops errors, no payload."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from errors import (
    AccessDeniedError,
    AuthenticationError,
    ConflictError,
    ExternalSystemError,
    NotFoundError,
    PermanentSystemError,
    TransientSystemError,
    UnreachableError,
)
from errors.boundary import clip, translating

SYSTEM = "kubernetes"


def _status_body(exc: ApiException) -> dict[str, object]:
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body.strip().startswith("{"):
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _detail(exc: ApiException) -> str:
    """Summarise an API error without echoing the request or response payload."""
    status = _status_body(exc)
    reason = str(status.get("reason") or exc.reason or "").strip()
    if exc.status == 422:
        # The message of an Invalid status quotes the rejected values: name fields only.
        details = status.get("details")
        causes = details.get("causes", []) if isinstance(details, dict) else []
        fields = sorted(
            {str(c.get("field")) for c in causes if isinstance(c, dict) and c.get("field")}
        )
        return clip(f"{reason or 'Invalid'}; fields: {', '.join(fields) or 'unknown'}")
    message = str(status.get("message") or "")
    return clip(f"{reason}: {message}" if message else reason or "no detail")


def translate_api_error(exc: BaseException, action: str) -> ExternalSystemError:
    """Map a Kubernetes client or transport error to the veza-ops error tree.

    Args:
        exc: what the ``kubernetes`` client raised.
        action: what was being done, e.g. ``"read Service veza-web in veza-production"``.

    Returns:
        The matching veza-ops error (not raised); its message never contains a payload.
    """
    if isinstance(exc, ApiException):
        code = exc.status or 0
        detail = f"{action}: HTTP {code} {_detail(exc)}"
        if code == 401:
            return AuthenticationError(
                SYSTEM, detail, hint="check the token or kubeconfig of the KubernetesCluster block"
            )
        if code == 403:
            return AccessDeniedError(
                SYSTEM, detail, hint="grant the service account this verb on this resource (RBAC)"
            )
        if code == 404:
            return NotFoundError(SYSTEM, detail, hint="check the object's name and namespace")
        if code == 409:
            return ConflictError(SYSTEM, detail, hint="re-read the object and try again")
        if code in (400, 422):
            return PermanentSystemError(
                SYSTEM, detail, hint="the request was refused as invalid; fix the named fields"
            )
        if code in (408, 410, 429) or code >= 500:
            return TransientSystemError(SYSTEM, detail, hint="retry; the API server is busy")
        if code == 0:
            return UnreachableError(SYSTEM, detail, hint="check the API server address")
        return PermanentSystemError(SYSTEM, detail)
    if isinstance(
        exc,
        urllib3.exceptions.MaxRetryError
        | urllib3.exceptions.NewConnectionError
        | urllib3.exceptions.ConnectTimeoutError
        | ConnectionRefusedError,
    ):
        return UnreachableError(
            SYSTEM,
            f"{action}: cannot reach the API server ({type(exc).__name__})",
            hint="check the cluster address in the kubeconfig and that the API server is up",
        )
    return TransientSystemError(
        SYSTEM,
        f"{action}: {type(exc).__name__}",
        hint="retry; the connection to the API server failed mid-request",
    )


TRANSLATED = (
    ApiException,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)


def translate_api_errors(action: str) -> AbstractContextManager[None]:
    """Context manager (and decorator) translating Kubernetes errors raised inside it.

    Args:
        action: what is being done, named in the error message.

    Returns:
        The boundary; it raises the translated error, never chained to the original.
    """
    return translating(TRANSLATED, lambda exc: translate_api_error(exc, action))


def is_status(exc: BaseException, code: int) -> bool:
    """Tell whether ``exc`` is an ApiException with HTTP status ``code``.

    Args:
        exc: any exception.
        code: HTTP status code.

    Returns:
        True on a match.
    """
    return isinstance(exc, ApiException) and exc.status == code
