"""pitr-check incidents: one alert when the archive breaks, one when it is whole again.

pitr-check runs every 5 minutes; a broken archive fails every run until someone repairs it.
Each run's verdict goes through :func:`next_incident` (pure) with the previous verdict, kept in
a Prefect Variable (``veza-ops-pitr-check-<repository block>``, on the server: it survives
worker and server restarts). Only a change sends an event:
``veza-ops.pitr-check.incident-opened`` (first failed run after passing ones, or the first run
ever failing) and ``veza-ops.pitr-check.incident-resolved`` (first passing run after failing
ones). The alert automation (``veza-ops automations install``) turns those two events into
Slack alerts; the failed runs themselves still fail (the run history tells the truth), but
the per-run failure alert leaves pitr-check out.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from errors import retry_on_transient
from tasks.events import PREFIX
from tasks.logs import ModuleLogger

logger = ModuleLogger(__name__)

FLOW = "pitr-check"
OPENED = f"{PREFIX}.{FLOW}.incident-opened"
RESOLVED = f"{PREFIX}.{FLOW}.incident-resolved"
MAX_PROBLEM = 300  # characters of each problem kept (the state message has the rest)
MAX_PROBLEMS = 5

Transition = Literal["opened", "ongoing", "resolved", "quiet"]


class IncidentState(BaseModel):
    """The last verdict of pitr-check for one repository block (the Variable's value)."""

    failing: bool = Field(description="The last run failed.")
    since: datetime = Field(description="When the current state (failing or passing) began.")
    problems: list[str] = Field(default_factory=list, description="The last failure's problems.")
    opened_by: str | None = Field(default=None, description="The run that opened the incident.")
    last_run_at: datetime = Field(description="When the last run was judged.")


def variable_name(repository_block: str) -> str:
    """The Prefect Variable holding a repository block's incident state (pure).

    Args:
        repository_block: the PgBackRestRepository block's name.

    Returns:
        ``veza-ops-pitr-check-<name>`` with anything but letters, digits, ``-`` and ``_``
        turned into ``-`` (a Variable name's alphabet), lower case, at most 255 characters.
    """
    safe = re.sub(r"[^a-z0-9_-]", "-", repository_block.lower())
    return f"{PREFIX}-{FLOW}-{safe}"[:255]


def next_incident(previous: IncidentState | None, *, passed: bool, problems: list[str],
                  now: datetime, run_id: str | None) -> tuple[IncidentState, Transition]:
    """The new state and what changed (pure).

    A failure after passing runs (or with no state yet: a first run that fails is an
    incident) opens an incident; more failures continue it, whatever their problems; the
    first passing run resolves it. Passing runs with nothing open are quiet.

    Args:
        previous: the stored state (None: never judged).
        passed: this run's verdict.
        problems: this run's problems (empty when it passed).
        now: when this run was judged.
        run_id: this run's id.

    Returns:
        (the state to store, the transition).
    """
    kept = [p[:MAX_PROBLEM] for p in problems[:MAX_PROBLEMS]]
    if not passed:
        if previous is not None and previous.failing:
            return (previous.model_copy(update={"problems": kept, "last_run_at": now}),
                    "ongoing")
        return (IncidentState(failing=True, since=now, problems=kept, opened_by=run_id,
                              last_run_at=now), "opened")
    if previous is not None and previous.failing:
        return IncidentState(failing=False, since=now, last_run_at=now), "resolved"
    since = previous.since if previous is not None else now
    return IncidentState(failing=False, since=since, last_run_at=now), "quiet"


def incident_event(transition: Transition, state: IncidentState, previous: IncidentState | None,
                   *, repository_block: str, stanza: str | None, deployment: str | None,
                   run_id: str | None, run_name: str | None) -> dict[str, Any] | None:
    """The event of an ``opened`` or ``resolved`` transition, as ``emit_event`` kwargs (pure).

    The resource is the repository block (``veza-ops.pitr-repository.<block>``); the flow
    run and its deployment are related. The payload has what the alert needs: the problems
    (the flow's own error texts, already free of secrets), since when, and for how long the
    archive was broken. No parameter, no secret.

    Args:
        transition: from :func:`next_incident`.
        state: the new state.
        previous: the state before this run.
        repository_block: the block's name.
        stanza: the stanza (None when the block could not be loaded).
        deployment: ``flow/deployment`` of the run, when it has one.
        run_id: the run's id.
        run_name: the run's name.

    Returns:
        ``{"event", "resource", "related", "payload"}``, or None for ``ongoing``/``quiet``.
    """
    if transition not in ("opened", "resolved"):
        return None
    resource = {"prefect.resource.id": f"{PREFIX}.pitr-repository.{repository_block}",
                "prefect.resource.name": repository_block}
    related: list[dict[str, str]] = []
    if run_id:
        related.append({"prefect.resource.id": f"prefect.flow-run.{run_id}",
                        "prefect.resource.role": "flow-run",
                        "prefect.resource.name": run_name or ""})
    payload: dict[str, Any] = {"stanza": stanza, "deployment": deployment or "",
                               "flow_run_name": run_name or "", "flow_run_id": run_id or ""}
    if transition == "opened":
        payload["problems"] = state.problems
        payload["reason"] = "; ".join(state.problems) or "the check failed"
        return {"event": OPENED, "resource": resource, "related": related, "payload": payload}
    assert previous is not None  # resolved only follows a failing state
    minutes = (state.since - previous.since).total_seconds() / 60
    payload["broken_since"] = previous.since.isoformat()
    payload["reason"] = (f"the WAL archive passes again after {minutes:.0f} min "
                         f"(failing since {previous.since:%Y-%m-%d %H:%M} UTC)")
    return {"event": RESOLVED, "resource": resource, "related": related, "payload": payload}


def _read(name: str) -> IncidentState | None:
    from prefect.variables import Variable

    value = Variable.get(name, default=None)
    if not isinstance(value, dict):
        return None
    try:
        return IncidentState.model_validate(value)
    except ValueError:
        logger.warning("ignoring the unreadable incident state in Variable %s", name)
        return None


@task(name="pitr-check-incident", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE)
def track_incident_task(repository_block: str, *, passed: bool, problems: list[str],
                        now: datetime, stanza: str | None = None) -> Transition:
    """Prefect task: judge this run against the stored state, send the event, store the state.

    The event goes before the new state is stored: if storing fails, the next run sends it
    again (an alert twice, never none).

    Args:
        repository_block: the block's name (keys the Variable).
        passed: this run's verdict.
        problems: this run's problems (or the error that stopped it).
        now: when this run was judged.
        stanza: the stanza, when known.

    Returns:
        The transition (``opened``, ``ongoing``, ``resolved`` or ``quiet``).
    """
    from prefect.events import emit_event
    from prefect.runtime import deployment as this_deployment
    from prefect.runtime import flow_run
    from prefect.variables import Variable

    name = variable_name(repository_block)
    previous = _read(name)
    state, transition = next_incident(previous, passed=passed, problems=problems, now=now,
                                      run_id=flow_run.id)
    deployment = f"{FLOW}/{this_deployment.name}" if this_deployment.name else None
    event = incident_event(transition, state, previous, repository_block=repository_block,
                           stanza=stanza, deployment=deployment, run_id=flow_run.id,
                           run_name=flow_run.name)
    if event is not None:
        emit_event(**event)
        logger.info("pitr-check incident %s for block %s", transition, repository_block)
    Variable.set(name, state.model_dump(mode="json"), overwrite=True)
    return transition
