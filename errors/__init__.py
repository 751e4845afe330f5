"""The one error tree of veza-ops; library errors are translated into it at each boundary.

Every error says what went wrong and what to do next. ``transient`` carries the retry
decision: Prefect retries a task only when the error it raised is transient (see
:func:`retry_on_transient`).
"""

from __future__ import annotations

from typing import Any


class VezaOpsError(Exception):
    """Base of every error raised by veza-ops."""

    transient: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} -- {hint}" if hint else message)


# --- bad input: permanent, raised before anything is changed -------------------------


class InvalidInputError(VezaOpsError):
    """A parameter, block field or catalogue entry is wrong; names the field and the fix."""

    def __init__(self, field: str, problem: str, *, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem}", hint=fix)


class BlockNotFoundError(InvalidInputError):
    """A block named in a parameter is not registered."""

    def __init__(self, field: str, block_type: str, name: str) -> None:
        super().__init__(
            field,
            f"no {block_type} block named {name!r} is registered",
            fix=(
                f"register it (see `veza-ops blocks --help` or the README) or pass the name "
                f"of an existing {block_type} block"
            ),
        )


# --- external systems ---------------------------------------------------------------


class ExternalSystemError(VezaOpsError):
    """An external system (database, S3, Kubernetes, Vault, Prometheus...) failed."""

    def __init__(self, system: str, message: str, *, hint: str | None = None) -> None:
        self.system = system
        super().__init__(f"{system}: {message}", hint=hint)


class TransientSystemError(ExternalSystemError):
    """A failure that may pass on its own (timeouts, 5xx, connection refused)."""

    transient = True


class UnreachableError(TransientSystemError):
    """The system could not be reached at all."""


class ConflictError(TransientSystemError):
    """The object changed under us (stale resourceVersion); re-read and try again."""


class PermanentSystemError(ExternalSystemError):
    """A failure that will not pass by retrying (auth, missing object, refused request)."""


class AuthenticationError(PermanentSystemError):
    """Credentials were refused."""


class AccessDeniedError(PermanentSystemError):
    """Credentials were accepted but lack a permission."""


class NotFoundError(PermanentSystemError):
    """A named object does not exist."""


class SealedError(PermanentSystemError):
    """Vault is sealed."""


# --- recovery -----------------------------------------------------------------------


class RecoveryError(VezaOpsError):
    """A backup, prune or restore step failed."""


class PipelineError(RecoveryError):
    """A process of a streaming pipeline exited non-zero or was killed."""

    transient = True


class IntegrityError(RecoveryError):
    """Data does not match what was recorded (checksum, size, row counts)."""


class RestoreRefusedError(RecoveryError):
    """A restore would overwrite data without an explicit confirmation."""


class BackupBusyError(RecoveryError):
    """Another backup of the same database held its concurrency slot for all of the wait."""


class ArchiveCheckError(RecoveryError):
    """The WAL archive is broken (a segment missing) or its newest WAL is too old (RPO)."""


class DiskFullError(RecoveryError):
    """The restore host lacks the disk space a backup needs (not corruption)."""


# --- release ------------------------------------------------------------------------


class ReleaseError(VezaOpsError):
    """A release step failed."""


class PreflightError(ReleaseError):
    """The pre-deployment checklist is not satisfied."""


class LockHeldError(ReleaseError):
    """Another release holds the environment's lock."""


class RolloutError(ReleaseError):
    """A rollout did not become ready (deadline exceeded, pods failing)."""


class VerificationError(ReleaseError):
    """Metrics analysis judged the new version unhealthy."""


class SmokeTestError(ReleaseError):
    """The new pods failed their smoke test before receiving traffic."""


class ApprovalError(ReleaseError):
    """An operator rejected a release step, or no decision came before the gate's timeout."""


def is_transient(exc: BaseException | None) -> bool:
    """Tell whether an exception is worth retrying.

    Args:
        exc: the exception raised by a task, or None.

    Returns:
        True for transient veza-ops errors, False for everything else.
    """
    return isinstance(exc, VezaOpsError) and exc.transient


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the task raised a transient error.

    Args:
        task: the Prefect task (unused).
        task_run: the task run (unused).
        state: the failed state whose exception decides.

    Returns:
        True when the failure is transient.
    """
    try:
        state.result()
    except BaseException as exc:  # we only classify it
        return is_transient(exc)
    return False


class BuildError(ReleaseError):
    """A build step (test, lint, scan, build, push, inspect) of a service failed."""


class E2EError(ReleaseError):
    """The end-to-end tests against staging failed."""
