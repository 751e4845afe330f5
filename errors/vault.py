"""The Vault boundary: hvac and requests errors become veza-ops errors, without payloads."""

from __future__ import annotations

from contextlib import AbstractContextManager

import hvac.exceptions
import requests

from errors import (
    AuthenticationError,
    ExternalSystemError,
    NotFoundError,
    PermanentSystemError,
    SealedError,
    TransientSystemError,
    UnreachableError,
)
from errors.boundary import clip, translating

SYSTEM = "vault"


def translate_vault_error(exc: BaseException, action: str) -> ExternalSystemError:
    """Map an hvac or transport error to the veza-ops error tree.

    Args:
        exc: what hvac (or requests underneath) raised.
        action: what was being done, e.g. ``"read secret/veza/staging/veza-web"``; an action
            starting with ``"log in"`` turns a 400 answer into an AuthenticationError.

    Returns:
        The matching veza-ops error (not raised); Vault's error list is clipped, no payload.
    """
    if isinstance(exc, hvac.exceptions.VaultError):
        errors = exc.errors if isinstance(exc.errors, list) else []
        detail = f"{action}: {type(exc).__name__}"
        if errors:
            detail += f" ({clip('; '.join(str(e) for e in errors))})"
        login_refused = isinstance(exc, hvac.exceptions.InvalidRequest) and action.startswith(
            "log in"
        )  # Vault answers 400 "invalid role or secret ID" to a bad AppRole login
        if login_refused or isinstance(
            exc, hvac.exceptions.Unauthorized | hvac.exceptions.Forbidden
        ):
            return AuthenticationError(
                SYSTEM, detail, hint="check the token or AppRole of the VaultServer block"
            )
        if isinstance(exc, hvac.exceptions.VaultDown):
            return SealedError(SYSTEM, detail, hint="unseal Vault (vault operator unseal)")
        if isinstance(exc, hvac.exceptions.VaultNotInitialized):
            return SealedError(SYSTEM, detail, hint="initialise and unseal Vault")
        if isinstance(exc, hvac.exceptions.InvalidPath):
            return NotFoundError(
                SYSTEM,
                detail,
                hint="write the secret at this path or fix the catalogue's vault_path",
            )
        if isinstance(
            exc,
            hvac.exceptions.InternalServerError
            | hvac.exceptions.BadGateway
            | hvac.exceptions.RateLimitExceeded,
        ):
            return TransientSystemError(SYSTEM, detail, hint="retry; Vault is busy")
        return PermanentSystemError(SYSTEM, detail)
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        return UnreachableError(
            SYSTEM,
            f"{action}: cannot reach Vault ({type(exc).__name__})",
            hint="check the address of the VaultServer block and that Vault is up",
        )
    return TransientSystemError(SYSTEM, f"{action}: {type(exc).__name__}", hint="retry")


TRANSLATED = (hvac.exceptions.VaultError, requests.exceptions.RequestException, OSError)


def translate_vault_errors(action: str) -> AbstractContextManager[None]:
    """Context manager (and decorator) translating Vault errors raised inside it.

    Args:
        action: what is being done, named in the error message.

    Returns:
        The boundary; it raises the translated error, never chained to the original.
    """
    return translating(TRANSLATED, lambda exc: translate_vault_error(exc, action))
