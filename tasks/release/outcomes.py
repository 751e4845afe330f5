"""What a run returns and how it ended: the summary models and the outcome decisions (pure)."""

from __future__ import annotations

from typing import cast, get_args

from pydantic import BaseModel, Field

from tasks.release import history


class ServiceOutcome(BaseModel):
    """What happened to one service in a release."""

    service: str
    image: str
    previous_image: str | None = None
    colour: str | None = None
    previous_colour: str | None = None
    secret: str | None = None
    switched: bool = False
    verified: bool = False


class ReleaseSummary(BaseModel):
    """The value a release or rollback run returns."""

    release_id: str
    environment: str
    version: str
    outcome: str
    dry_run: bool = False
    plan: list[str] = Field(default_factory=list)
    services: dict[str, ServiceOutcome] = Field(default_factory=dict)
    reason: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    reconciled: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


ROLLBACK_INCOMPLETE = "rollback-incomplete"


def record_outcome(outcome: str) -> history.Outcome:
    """The outcome as the history record can hold it.

    Args:
        outcome: the run's outcome.

    Returns:
        It, or ``failed`` while the record's outcomes do not include it (a rollback left
        incomplete is then named in the record's reason and checks).
    """
    return cast(history.Outcome, outcome if outcome in get_args(history.Outcome) else "failed")


def run_outcome(*, committed: bool, incomplete: bool, switched: bool,
                cancelled: bool = False) -> str:
    """The outcome of a run that raised (pure).

    Args:
        committed: the new colours were committed (traffic on them, for good).
        incomplete: a switch-back left some Service on a new colour.
        switched: some traffic was switched (or a switch was attempted).
        cancelled: the run was cancelled or terminated (Prefect's ``TerminationSignal``,
            ``KeyboardInterrupt``, ``SystemExit``), not failed: what it switched was put back
            on the way out (the record's ``rollback`` check says how far).

    Returns:
        ``succeeded`` once committed (what failed after is a warning),
        ``rollback-incomplete``, ``cancelled``, ``rolled-back`` or ``failed``.
    """
    if committed:
        return "succeeded"
    if incomplete:
        return ROLLBACK_INCOMPLETE
    if cancelled:
        return "cancelled"
    return "rolled-back" if switched else "failed"


def left_sentence(left: dict[str, str]) -> str:
    """Name each Service a switch-back left on the new colour.

    Args:
        left: Service name to the colour it still selects.

    Returns:
        e.g. ``Service veza-web still selects green``.
    """
    return "; ".join(f"Service {n} still selects {c}" for n, c in sorted(left.items()))
