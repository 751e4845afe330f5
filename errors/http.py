"""The httpx boundary: transport errors and HTTP statuses become veza-ops errors, no payload."""

from __future__ import annotations

from contextlib import AbstractContextManager

import httpx

from errors import (
    AccessDeniedError,
    AuthenticationError,
    ExternalSystemError,
    PermanentSystemError,
    TransientSystemError,
    UnreachableError,
)
from errors.boundary import translating


def translate_http_error(exc: BaseException, *, system: str, action: str,
                         hint: str | None = None) -> ExternalSystemError:
    """Turn an httpx transport error into an :class:`UnreachableError`.

    The message names the action and the error's type only: httpx messages can carry the
    request URL, which for a Slack webhook is the credential.

    Args:
        exc: what httpx raised.
        system: the system's name as the operator knows it ("Prometheus", "Slack").
        action: what we were doing, e.g. ``GET /api/v1/query``.
        hint: what to check next.

    Returns:
        The error to raise ``from None``.
    """
    if isinstance(exc, httpx.TimeoutException):
        return UnreachableError(system, f"{action}: timed out", hint=hint)
    return UnreachableError(system, f"{action}: cannot reach ({type(exc).__name__})",
                            hint=hint)


def translate_http_errors(*, system: str, action: str, hint: str | None = None
                          ) -> AbstractContextManager[None]:
    """Translate httpx transport errors raised inside the block (see translate_http_error).

    Args:
        system: the system's name.
        action: what we were doing.
        hint: what to check next.

    Returns:
        The boundary; it raises the translated error, never chained to the original.
    """
    return translating((httpx.HTTPError,), lambda exc: translate_http_error(
        exc, system=system, action=action, hint=hint))


def raise_for_status(status: int, *, system: str, message: str, auth_hint: str,
                     client_hint: str | None = None) -> None:
    """Raise the veza-ops error an HTTP status means; return for statuses below 400.

    Args:
        status: the HTTP status code.
        system: the system's name.
        message: what to say, already naming the action and status (no secrets).
        auth_hint: what to do on 401/403 (usually: the block's credentials).
        client_hint: what to do on other 4xx.

    Raises:
        AuthenticationError: on 401.
        AccessDeniedError: on 403.
        TransientSystemError: on 429 and 5xx.
        PermanentSystemError: on other 4xx.
    """
    if status < 400:
        return
    if status == 401:
        raise AuthenticationError(system, message, hint=auth_hint)
    if status == 403:
        raise AccessDeniedError(system, message, hint=auth_hint)
    if status == 429 or status >= 500:
        raise TransientSystemError(system, message)
    raise PermanentSystemError(system, message, hint=client_hint)
