"""The pgBackRest boundary: a failed ``pgbackrest`` run translated into the veza-ops error tree.

pgBackRest reports ``ERROR: [NNN]: message`` on stderr and exits with the code NNN
(src/build/error/error.yaml of pgBackRest). The message is redacted (every secret value of
the repository block replaced by ``***``) before it is clipped and put in an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from errors import (
    AccessDeniedError,
    AuthenticationError,
    ExternalSystemError,
    NotFoundError,
    PermanentSystemError,
    TransientSystemError,
    UnreachableError,
)
from errors.boundary import clip

SYSTEM = "pgBackRest"
MAX_PGBACKREST_DETAIL = 400
REDACTED = "***"

_ERROR_LINE = re.compile(r"ERROR: \[(\d{3})\]: (.*)")
# codes of pgBackRest's error.yaml
_HOST_CONNECT, _LOCK_ACQUIRE, _FILE_MISSING, _PATH_MISSING = 49, 50, 55, 73
_DB_CONNECT, _ARCHIVE_TIMEOUT, _CRYPTO, _SERVICE, _ACCESS = 56, 82, 95, 101, 105
_PATH_NOT_EMPTY, _PG_RUNNING, _FORMAT, _PROTOCOL = 40, 38, 29, 39


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in ``text`` by ``***`` (longest first).

    Args:
        text: a child's output.
        secrets: the values to hide (empty ones are ignored).

    Returns:
        The text without any of the values.
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def error_detail(output: str) -> tuple[int | None, str]:
    """The code and message of pgBackRest's first ``ERROR: [NNN]:`` line.

    Args:
        output: the (already redacted) stderr of the run.

    Returns:
        (code, message); (None, last non-empty line) when no error line is found.
    """
    for line in output.splitlines():
        match = _ERROR_LINE.search(line)
        if match:
            rest = output[output.index(line) + len(line):]
            # pgBackRest continues a message on indented lines (e.g. HINT)
            extra = " ".join(x.strip() for x in rest.splitlines() if x.startswith(" "))
            return int(match.group(1)), (match.group(2) + (" " + extra if extra else "")).strip()
    lines = [x.strip() for x in output.splitlines() if x.strip()]
    return None, lines[-1] if lines else ""


_NAMES = {
    "FormatError": _FORMAT, "CryptoError": _CRYPTO, "FileMissingError": _FILE_MISSING,
    "PathMissingError": _PATH_MISSING, "HostConnectError": _HOST_CONNECT,
    "ServiceError": _SERVICE, "AccessError": _ACCESS, "LockAcquireError": _LOCK_ACQUIRE,
}
_INFO_FILE = re.compile(r"unable to load info file '([^']+)'")


def _printable(text: str) -> str:
    """Drop what is not printable ASCII: a wrongly decrypted file prints as random bytes."""
    return "".join(ch if 32 <= ord(ch) < 127 else " " for ch in text)


def translate(
    command: str, returncode: int, output: str, *, secrets: Iterable[str], stanza: str
) -> ExternalSystemError:
    """Turn a failed pgBackRest run into a veza-ops error naming the fix.

    Args:
        command: the pgBackRest command (``backup``, ``restore``...).
        returncode: its exit status (pgBackRest exits with its error code).
        output: its stderr (not yet redacted).
        secrets: every secret value of the repository block.
        stanza: the stanza, for the messages.

    Returns:
        The error to raise (``from None``).
    """
    code, message = error_detail(redact(output, secrets))
    if code is None and 0 < returncode < 256:
        code = returncode
    return classify(command, code, message or f"exit status {returncode}", stanza=stanza)


def translate_status(
    command: str, status_message: str, *, secrets: Iterable[str], stanza: str
) -> ExternalSystemError:
    """Translate the status ``info --output=json`` reports for a repository it cannot read.

    ``info`` exits 0 even then; the message reads ``[FormatError] unable to load...``.

    Args:
        command: ``info``.
        status_message: the repository's (or the stanza's) status message.
        secrets: every secret value of the repository block.
        stanza: the stanza.

    Returns:
        The error to raise.
    """
    text = redact(status_message, secrets)
    match = re.match(r"\[(\w+)\]\s*(.*)", text, re.S)
    code = _NAMES.get(match.group(1)) if match else None
    return classify(command, code, match.group(2) if match else text, stanza=stanza)


def classify(command: str, code: int | None, message: str, *, stanza: str) -> ExternalSystemError:
    """The veza-ops error for a pgBackRest error code and its (redacted) message.

    A repository whose info files do not parse after decryption (``FormatError`` while
    loading an info file) was opened with the wrong cipher passphrase: aes-256-cbc has no
    authentication, so a wrong key decrypts into random bytes instead of failing. A
    ``CryptoError`` is an encrypted repository opened without a passphrase or the reverse.

    Args:
        command: the pgBackRest command.
        code: pgBackRest's error code, when known.
        message: its message (redacted).
        stanza: the stanza.

    Returns:
        The error to raise.
    """
    message = _printable(message)
    detail = clip(message, MAX_PGBACKREST_DETAIL)
    what = f"{command} (stanza {stanza}): [{code if code is not None else '?'}] {detail}"
    info_file = _INFO_FILE.search(message)
    if code == _CRYPTO or (code == _FORMAT and info_file):
        where = f"the info file {info_file.group(1)} " if info_file else "the repository "
        return AuthenticationError(
            SYSTEM,
            f"{command} (stanza {stanza}): {where}does not decrypt with the configured "
            f"cipher passphrase (pgBackRest error {code})",
            hint="check cipher_passphrase of the PgBackRestRepository block: it is fixed at "
            "stanza-create and cannot be changed",
        )
    if code in (_HOST_CONNECT, _SERVICE):
        return UnreachableError(SYSTEM, what, hint="check endpoint, port and TLS settings")
    if code == _ACCESS:
        return AccessDeniedError(
            SYSTEM, what, hint="check the credentials and their permissions on the bucket"
        )
    if (code in (_FILE_MISSING, _PATH_MISSING) and "info" in message) or (
        "missing stanza" in message
    ):
        return NotFoundError(SYSTEM, what, hint=f"run stanza-create for stanza {stanza} first")
    if code in (_LOCK_ACQUIRE, _ARCHIVE_TIMEOUT, _PROTOCOL):
        return TransientSystemError(SYSTEM, what)
    if code == _DB_CONNECT:
        return UnreachableError(
            SYSTEM, what, hint="check the host's port, socket_dir and user (pgBackRest "
            "connects through the Unix socket)",
        )
    if code in (_PATH_NOT_EMPTY, _PG_RUNNING):
        return PermanentSystemError(SYSTEM, what, hint="restore into a new, empty data directory")
    return PermanentSystemError(SYSTEM, what)
