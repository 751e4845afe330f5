"""The canary settings of a catalogue environment: steps, approval gates (validated, pure)."""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Approval = Literal["none", "before-production", "every-step"]
Traffic = Literal["mesh", "replicas"]


class CanaryStep(BaseModel):
    """One canary step of the catalogue: a weight, and whether an operator approves it first.

    Written as a plain weight (``25``) or as ``{weight: 50, approve: true}``.

    Attributes:
        weight: the canary's share (%) at this step.
        approve: the flow pauses before this step until an operator approves it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: int
    approve: bool = False


def _entry(value: Any) -> Any:
    return {"weight": value} if isinstance(value, int) and not isinstance(value, bool) else value


StepEntry = Annotated[CanaryStep, BeforeValidator(_entry)]
DEFAULT_STEPS = [CanaryStep(weight=w) for w in (5, 25, 50, 100)]


def check_canary_steps(steps: list[CanaryStep]) -> list[CanaryStep]:
    """Refuse canary weights that are not strictly increasing percentages ending at 100.

    Args:
        steps: the steps of the canary, in order.

    Returns:
        The steps.

    Raises:
        ValueError: empty, a weight outside 1..100, not increasing, or not ending at 100
            (a canary that never reaches 100 % is never promoted).
    """
    weights = [s.weight for s in steps]
    if not weights:
        raise ValueError("at least one step (the last is 100)")
    if any(not 1 <= w <= 100 for w in weights):
        raise ValueError(f"every weight is a percentage in 1..100, got {weights}")
    if any(b <= a for a, b in pairwise(weights)):
        raise ValueError(f"weights must increase strictly, got {weights}")
    if weights[-1] != 100:
        raise ValueError(f"the last step must be 100 (the canary takes all traffic before "
                         f"promotion), got {weights}")
    return steps


def gated(steps: list[CanaryStep], approval: Approval) -> list[int]:
    """The weights before which the flow waits for an operator (pure).

    Args:
        steps: the environment's steps.
        approval: ``none`` (only steps marked ``approve``), ``before-production`` (also the
            first step: nothing reaches production traffic unapproved) or ``every-step``.

    Returns:
        The gated weights, in step order.
    """
    return [s.weight for i, s in enumerate(steps)
            if s.approve or approval == "every-step"
            or (approval == "before-production" and i == 0)]


APPROVAL_TIMEOUT = Field(
    default=3600, ge=1,
    description="Seconds an approval gate waits; no decision by then rolls back to 0 %.")
APPROVAL_POLL = Field(
    default=5, ge=1, description="Seconds between two reads of a paused run's state.")
DEFAULT_TRAFFIC: Traffic = "mesh"
CANARY_TRAFFIC = Field(
    default=DEFAULT_TRAFFIC,
    description="How a canary's share is set: mesh (Istio VirtualService weights, exact; the "
    "cluster needs Istio's CRDs) or replicas (no mesh, coarse: canary pods / all pods).")
ACCEPTANCE_PLACEHOLDERS = frozenset({"version", "python"})
ACCEPTANCE_COMMAND = Field(
    default=None,
    description="Argv run against the canaries once up and smoke-tested, before any traffic "
    "shifts ({version}, {python}; VEZA_CANARY_<SERVICE>_URL); non-zero: canaries down.")
ACCEPTANCE_TIMEOUT = Field(default=300.0, gt=0,
                           description="Seconds the acceptance command may run.")
