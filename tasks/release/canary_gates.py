"""Approval gates of a canary: the flow run pauses until an operator approves or rejects a step.

The run pauses with Prefect's ``pause_flow_run(wait_for_input=CanaryDecision)``: the Prefect
UI shows the run as Paused with a form (approve, who, why), and the API resumes it the same
way (``resume_flow_run(run_id, run_input={...})``, or ``veza-ops approve|reject RUN_ID``). The
process keeps running meanwhile (a blocking pause), so the release Lease keeps being renewed.

A rejection, or no decision within ``approval_timeout_s``, raises :class:`ApprovalError`; the
caller then puts every service back to 0 % canary, as for a failed analysis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Running
from pydantic import Field

from errors import ApprovalError
from tasks.release.canary_analysis import Step
from tasks.release.catalogue import EnvironmentSpec
from tasks.release.logs import get_logger
from tasks.release.redaction import redact


class CanaryDecision(RunInput):
    """An operator's decision at a canary approval gate (the form the Prefect UI shows)."""

    approve: bool = Field(description="true: write this step's weight and go on; false: put "
                          "every service back to 0 % canary and stop the release")
    approved_by: str = Field(min_length=1, max_length=100,
                             description="Who decides (recorded in the release record)")
    reason: str = Field(default="", max_length=500, description="Why (recorded)")


def _back_to_running() -> None:
    """After a pause timed out the run is still Paused: no task could run the rollback."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(context.flow_run.id, Running(), force=True)


def await_approval(step: Step, env: EnvironmentSpec, *, pause: Callable[..., Any] = pause_flow_run,
                   resume_after_timeout: Callable[[], None] = _back_to_running) -> str:
    """Pause the flow run until an operator decides on a canary step.

    Args:
        step: the step about to start (its weight is not written yet).
        env: the environment (``approval_timeout_s``, ``approval_poll_s``).
        pause: Prefect's ``pause_flow_run`` (injected in tests).
        resume_after_timeout: puts a timed-out run back to Running (injected in tests).

    Returns:
        The sentence recorded as the gate's check (who approved, and why).

    Raises:
        ApprovalError: rejected, or no decision within ``approval_timeout_s``.
    """
    what = f"canary step {step.number} at {step.weight} %"
    log = get_logger(__name__)
    log.warning("%s waits up to %d s for an operator: resume the run in the Prefect UI (approve "
                "or reject), or `veza-ops approve|reject RUN_ID`", what, env.approval_timeout_s)
    try:
        decision: CanaryDecision = pause(
            wait_for_input=CanaryDecision, timeout=env.approval_timeout_s,
            poll_interval=env.approval_poll_s, key=f"canary-step-{step.number}")
    except FlowPauseTimeout:
        resume_after_timeout()
        raise ApprovalError(f"no decision on {what} within {env.approval_timeout_s} s",
                            hint="every service was put back to 0 % canary; release again "
                            "and approve in time") from None
    who = redact(decision.approved_by)
    why = f": {redact(decision.reason)}" if decision.reason else ""
    if not decision.approve:
        raise ApprovalError(f"{what} rejected by {who}{why}",
                            hint="every service was put back to 0 % canary")
    log.info("%s approved by %s%s", what, who, why)
    return f"approved by {who}{why}"
