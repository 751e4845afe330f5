"""Server-side automations veza-ops needs on a self-hosted Prefect server.

Self-hosted servers have no built-in zombie detection: a flow whose process dies (SIGKILL, node
loss) stays Running for ever. With ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` set on the worker (the
demo and the README set 30), this automation marks a run Crashed after 90 s without a heartbeat,
which lets the next release or a rollback proceed (a Crashed holder's release lock is taken at
once). A second automation then runs the ``rollback`` deployment for a crashed release's
environment, so nobody has to notice the crash.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any, TextIO

ZOMBIE_AUTOMATION_NAME = "veza-ops: crash zombie flow runs"
CRASH_ROLLBACK_AUTOMATION_NAME = "veza-ops: roll back crashed releases"
ROLLBACK_DEPLOYMENT = "rollback/production"
HEARTBEAT_FREQUENCY_S = 30


class SetupError(Exception):
    """Something the automations need is not on the Prefect server; says what to do."""


def ensure_backup_limit(database: str) -> str:
    """Create (or repair) the global concurrency limit the backups of ``database`` share.

    Every run of ``backup/nightly-full`` and ``backup/hourly`` for this database takes its one
    slot, strictly: without the limit a backup fails rather than run unguarded. An existing
    limit is set back to one active slot (more would let two backups of the database overlap).

    Args:
        database: the database name (the PostgresDatabase block's ``dbname``).

    Returns:
        The limit's name, ``veza-ops-backup-<database>``.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    from tasks.recovery.backup_slot import backup_limit_name

    name = backup_limit_name(database)
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=1, active=True))
            return name
        if existing.limit != 1 or not existing.active:
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=1, active=True))
    return name


def ensure_zombie_automation(*, within_s: int = 90) -> str:
    """Create the zombie-run automation unless one with the same name exists.

    Args:
        within_s: seconds without a heartbeat before a run is marked Crashed.

    Returns:
        The automation's id.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    automation = AutomationCore(
        name=ZOMBIE_AUTOMATION_NAME,
        description="Marks flow runs Crashed when their heartbeats stop (self-hosted servers).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[
            ChangeFlowRunState(
                name=None,
                force=False,
                state=StateType.CRASHED,
                message=f"No heartbeat for {within_s}s: the flow process died (veza-ops).",
            )
        ],
    )
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(ZOMBIE_AUTOMATION_NAME)
        if existing:
            return str(existing[0].id)
        return str(client.create_automation(automation))



def ensure_crash_rollback_automation(*, deployment: str = ROLLBACK_DEPLOYMENT) -> str:
    """Create the automation that rolls back a crashed release, unless it exists.

    When a flow run of the ``release`` flow enters Crashed, the ``rollback`` deployment runs
    for that run's environment, with ``triggered_by`` naming the crashed run (recorded and
    announced, so the rollback says it was automatic).

    Args:
        deployment: the rollback deployment, ``flow/deployment``.

    Returns:
        The automation's id.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(CRASH_ROLLBACK_AUTOMATION_NAME)
        if existing:
            return str(existing[0].id)
        deployment_id = _deployment_id(client, deployment)
        automation = AutomationCore(
            name=CRASH_ROLLBACK_AUTOMATION_NAME,
            description="Runs the rollback deployment for a release run that crashed.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Crashed"},
                match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
                match_related=ResourceSpecification({"prefect.resource.role": "flow",
                                                     "prefect.resource.name": "release"}),
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=[RunDeployment(
                source="selected",
                deployment_id=deployment_id,
                job_variables=None,
                parameters={
                    "environment": "{{ flow_run.parameters.environment }}",
                    "triggered_by": "automation: release {{ flow_run.name }} crashed",
                },
            )],
        )
        return str(client.create_automation(automation))


# --- alerts: failed, crashed or missing recovery runs -> the `alert` deployment -> Slack ----

ALERT_DEPLOYMENT = "alert/slack"
NIGHTLY_DEPLOYMENT = "backup/nightly-full"
# pitr-check (every 5 minutes) alerts once per incident instead: PITR_INCIDENT_AUTOMATION_NAME
ALERTED_FLOWS = ("backup", "prune-backups", "restore-test", "pitr-backup", "pitr-expire")
FAILURE_ALERT_AUTOMATION_NAME = "veza-ops: alert on failed backup, prune or restore-test runs"
PITR_INCIDENT_AUTOMATION_NAME = "veza-ops: alert when the WAL archive breaks and is whole again"
PITR_CRASH_AUTOMATION_NAME = "veza-ops: alert on crashed pitr-check runs"
PITR_INCIDENT_EVENTS = ("veza-ops.pitr-check.incident-opened",
                        "veza-ops.pitr-check.incident-resolved")
MISSED_NIGHTLY_AUTOMATION_NAME = "veza-ops: alert when no nightly backup completes in 25 h"
MISSED_NIGHTLY_WITHIN = timedelta(hours=25)


def _jinja(template: str) -> dict[str, str]:
    # An explicit jinja placeholder renders to a plain string (a bare "{{ x }}" would be
    # rendered through `tojson`, which refuses a missing object such as a run's deployment).
    return {"__prefect_kind": "jinja", "template": template}


def _comparable(automation: Any) -> dict[str, Any]:
    fields = {"name", "description", "enabled", "trigger", "actions", "actions_on_trigger",
              "actions_on_resolve"}
    data: dict[str, Any] = automation.model_dump(mode="json", include=fields)
    data["trigger"].pop("id", None)
    return data


def _alert_action(deployment_id: Any, parameters: dict[str, Any],
                  slack_block: str | None) -> Any:
    """The action of every alert automation: run the alert deployment with ``parameters``.

    Args:
        deployment_id: the alert deployment's id.
        parameters: the alert flow's parameters (Jinja templates or values).
        slack_block: a SlackWebhook block name to pass; None keeps the deployment's own.

    Returns:
        A ``RunDeployment`` action.
    """
    from prefect.events.actions import RunDeployment

    if slack_block:
        parameters = {**parameters, "slack_block": slack_block}
    return RunDeployment(source="selected", deployment_id=deployment_id,
                         job_variables=None, parameters=parameters)


def _create_or_update(automation: Any) -> str:
    """Create ``automation``, or bring the one of the same name up to date; return its id.

    An automation that already matches is left alone (updating it would restart a
    proactive trigger's window).
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(automation.name)
        if not existing:
            return str(client.create_automation(automation))
        first = existing[0]
        if _comparable(first) != _comparable(automation):
            client.update_automation(first.id, automation)
        return str(first.id)


def _deployment_id(client: Any, name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name).id
    except ObjectNotFound:
        raise SetupError(
            f"the deployment {name!r} does not exist on this Prefect server; deploy first "
            "(`prefect deploy --all` from the project root)"
        ) from None


def ensure_failure_alert_automation(
    *, deployment: str = ALERT_DEPLOYMENT, flows: tuple[str, ...] = ALERTED_FLOWS,
    slack_block: str | None = None, name: str = FAILURE_ALERT_AUTOMATION_NAME,
    states: tuple[str, ...] = ("Failed", "Crashed"),
) -> str:
    """Create or update the automation that alerts on a Failed or Crashed recovery run.

    Any run of the ``backup``, ``prune-backups``, ``restore-test`` or PITR (``pitr-backup``,
    ``pitr-expire``) flow entering Failed or Crashed runs the alert
    deployment with the run's flow, deployment, state, name, id and state message rendered
    into its parameters (no secret: names only). The ``alert`` flow itself is not watched,
    so a failing webhook cannot loop. The automation keeps its name (an existing one is
    updated in place, not duplicated).

    Args:
        deployment: the alert deployment, ``flow/deployment``.
        flows: the flow names watched.
        slack_block: a SlackWebhook block name to pass (default: the deployment's own).
        name: the automation's name.
        states: the run states that alert (``PITR_CRASH_AUTOMATION_NAME``: Crashed only).

    Returns:
        The automation's id.

    Raises:
        SetupError: the alert deployment is not deployed (the message says how).
    """
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    parameters: dict[str, Any] = {
        "flow_name": _jinja("{{ flow.name }}"),
        "state": _jinja("{{ flow_run.state.name }}"),
        "deployment": _jinja(
            "{% if deployment %}{{ flow.name }}/{{ deployment.name }}{% endif %}"),
        "flow_run_name": _jinja("{{ flow_run.name }}"),
        "flow_run_id": _jinja("{{ flow_run.id }}"),
        "reason": _jinja("{{ flow_run.state.message or '' }}"),
    }
    with get_client(sync_client=True) as client:
        deployment_id = _deployment_id(client, deployment)
    automation = AutomationCore(
        name=name,
        description=f"Posts a Slack alert (alert deployment) when a {', '.join(flows)} run "
                    f"enters {' or '.join(states)}.",
        trigger=EventTrigger(
            expect={f"prefect.flow-run.{state}" for state in states},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification({"prefect.resource.role": "flow",
                                                 "prefect.resource.name": list(flows)}),
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[_alert_action(deployment_id, parameters, slack_block)],
    )
    return _create_or_update(automation)


def ensure_pitr_incident_automation(
    *, deployment: str = ALERT_DEPLOYMENT, slack_block: str | None = None,
    name: str = PITR_INCIDENT_AUTOMATION_NAME,
) -> str:
    """Create or update the automation that alerts once per WAL archive incident.

    pitr-check runs every 5 minutes and fails as long as the archive is broken; its runs
    send ``veza-ops.pitr-check.incident-opened`` only for the first failure and
    ``...-resolved`` for the first pass after failures (the previous verdict is kept in a
    Prefect Variable: :mod:`tasks.recovery.pitr.incident`). This automation runs the alert
    deployment on each of those events: state ``Failed`` (the problems as the reason) or
    ``Recovered`` (how long it was broken), with the run's deployment, name and id.

    Args:
        deployment: the alert deployment, ``flow/deployment``.
        slack_block: a SlackWebhook block name to pass (default: the deployment's own).
        name: the automation's name.

    Returns:
        The automation's id.

    Raises:
        SetupError: the alert deployment is not deployed (the message says how).
    """
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    parameters: dict[str, Any] = {
        "flow_name": "pitr-check",
        "state": _jinja("{% if 'resolved' in event.event %}Recovered{% else %}Failed"
                        "{% endif %}"),
        "deployment": _jinja("{{ event.payload.deployment }}"),
        "flow_run_name": _jinja("{{ event.payload.flow_run_name }}"),
        "flow_run_id": _jinja("{{ event.payload.flow_run_id }}"),
        "reason": _jinja("{{ event.payload.reason }}"),
    }
    with get_client(sync_client=True) as client:
        deployment_id = _deployment_id(client, deployment)
    automation = AutomationCore(
        name=name,
        description="Posts a Slack alert when pitr-check finds the WAL archive broken (once "
                    "per incident, not every 5 minutes) and when it passes again.",
        trigger=EventTrigger(
            expect=set(PITR_INCIDENT_EVENTS),
            match=ResourceSpecification({"prefect.resource.id": "veza-ops.pitr-repository.*"}),
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[_alert_action(deployment_id, parameters, slack_block)],
    )
    return _create_or_update(automation)


def ensure_missed_nightly_automation(
    *, deployment: str = ALERT_DEPLOYMENT, nightly: str = NIGHTLY_DEPLOYMENT,
    within: timedelta = MISSED_NIGHTLY_WITHIN, slack_block: str | None = None,
    name: str = MISSED_NIGHTLY_AUTOMATION_NAME,
) -> str:
    """Create or update the automation that alerts when the nightly backup stops completing.

    A proactive trigger: it fires when no ``prefect.flow-run.Completed`` event of a run of
    the ``nightly`` deployment arrives within ``within`` (25 h: the nightly runs every 24 h,
    plus an hour of slack), whatever the reason (schedule paused, worker down, runs
    failing or stuck). The window starts when the automation is installed and again after
    each firing, so a long outage alerts once per window.

    Args:
        deployment: the alert deployment, ``flow/deployment``.
        nightly: the watched deployment, ``flow/deployment``.
        within: how long without a Completed run before alerting (at least 10 s).
        slack_block: a SlackWebhook block name to pass (default: the deployment's own).
        name: the automation's name.

    Returns:
        The automation's id.

    Raises:
        SetupError: a deployment is not deployed (the message says how).
    """
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    with get_client(sync_client=True) as client:
        alert_id = _deployment_id(client, deployment)
        nightly_id = _deployment_id(client, nightly)
    hours = within.total_seconds() / 3600
    parameters: dict[str, Any] = {
        "flow_name": nightly.split("/", 1)[0],
        "state": "Missed",
        "deployment": nightly,
        "reason": f"no Completed run of {nightly} within {hours:g} h: check its schedule, "
                  "the worker and its latest runs",
    }
    automation = AutomationCore(
        name=name,
        description=f"Posts a Slack alert when {nightly} has no Completed run within "
                    f"{hours:g} h.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Completed"},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification({
                "prefect.resource.id": f"prefect.deployment.{nightly_id}",
                "prefect.resource.role": "deployment",
            }),
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[_alert_action(alert_id, parameters, slack_block)],
    )
    return _create_or_update(automation)


# --- `veza-ops automations install` -------------------------------------------------------


def install_automations(
    *, databases: list[str], slack_block: str | None = None, out: TextIO | None = None
) -> dict[str, str]:
    """Install everything the server side of veza-ops needs; safe to run again.

    The zombie-run and crash-rollback automations, the failure, PITR-incident, crashed
    pitr-check and missed-nightly alert automations, and the backup concurrency limit of
    each database.

    Args:
        databases: database names (``dbname``) whose backups need a concurrency limit.
        slack_block: SlackWebhook block name the alerts post through (default: the alert
            deployment's own parameter, ``veza-slack``).
        out: where one line per installed item goes (default: standard output).

    Returns:
        What was installed: name -> automation id or limit name.

    Raises:
        SetupError: a needed deployment is missing.
    """
    done = {
        ZOMBIE_AUTOMATION_NAME: ensure_zombie_automation(),
        CRASH_ROLLBACK_AUTOMATION_NAME: ensure_crash_rollback_automation(),
        FAILURE_ALERT_AUTOMATION_NAME: ensure_failure_alert_automation(slack_block=slack_block),
        PITR_INCIDENT_AUTOMATION_NAME: ensure_pitr_incident_automation(slack_block=slack_block),
        PITR_CRASH_AUTOMATION_NAME: ensure_failure_alert_automation(
            slack_block=slack_block, flows=("pitr-check",), states=("Crashed",),
            name=PITR_CRASH_AUTOMATION_NAME),
        MISSED_NIGHTLY_AUTOMATION_NAME: ensure_missed_nightly_automation(
            slack_block=slack_block),
    }
    for database in databases:
        name = ensure_backup_limit(database)
        done[name] = name
    out = out if out is not None else sys.stdout
    for key, value in done.items():
        kind = "concurrency limit" if key == value else f"automation {value}"
        print(f"installed {key!r} ({kind})", file=out)
    return done


def add_automations_command(subparsers: Any) -> None:
    """Register ``veza-ops automations install`` on an argparse subparsers object.

    Args:
        subparsers: the object returned by ``add_subparsers``.
    """
    p = subparsers.add_parser(
        "automations", help="install the Prefect automations and limits veza-ops needs")
    sub = p.add_subparsers(dest="automations_command", required=True)
    install = sub.add_parser(
        "install",
        help="on the server PREFECT_API_URL points at (after `prefect deploy --all`): zombie "
        "and crash-rollback automations, Slack alerts on failed/crashed backup, prune and "
        "restore-test runs and on a missed nightly backup, the backup concurrency limit",
    )
    install.add_argument(
        "--database-block", action="append", default=None, metavar="NAME",
        help="PostgresDatabase block whose database gets a backup concurrency limit "
        "(repeatable; default: veza-db)")
    install.add_argument(
        "--database", action="append", default=[], metavar="DBNAME",
        help="a database name to create the backup concurrency limit for, without a block "
        "(repeatable)")
    install.add_argument(
        "--slack-block", default=None, metavar="NAME",
        help="SlackWebhook block the alerts post through (default: the alert/slack "
        "deployment's `slack_block`, veza-slack)")


def run_automations_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Execute ``veza-ops automations install`` from parsed arguments.

    Args:
        args: parsed arguments.
        out: where progress goes (default: standard output).

    Returns:
        0, or 2 with a one-line reason when something it needs is missing.
    """
    from blocks.loading import load_block
    from blocks.postgres import PostgresDatabase
    from errors import BlockNotFoundError

    databases = list(args.database)
    block_names = args.database_block or ([] if databases else ["veza-db"])
    try:
        for name in block_names:
            databases.append(load_block(PostgresDatabase, name, field="--database-block").dbname)
        install_automations(databases=databases, slack_block=args.slack_block, out=out)
    except (SetupError, BlockNotFoundError) as error:
        print(f"veza-ops automations: {error}", file=sys.stderr)
        return 2
    return 0
