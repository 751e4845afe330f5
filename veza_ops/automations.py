"""Server-side automations veza-ops needs on a self-hosted Prefect server.

Self-hosted servers have no built-in zombie detection: a flow whose process dies (SIGKILL, node
loss) stays Running for ever. With ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` set on the worker (the
demo and the README set 30), this automation marks a run Crashed after 90 s without a heartbeat,
which lets the next release or a rollback proceed (a Crashed holder's release lock is taken at
once). A second automation then runs the ``rollback`` deployment for a crashed release's
environment, so nobody has to notice the crash.
"""

from __future__ import annotations

from datetime import timedelta

ZOMBIE_AUTOMATION_NAME = "veza-ops: crash zombie flow runs"
CRASH_ROLLBACK_AUTOMATION_NAME = "veza-ops: roll back crashed releases"
ROLLBACK_DEPLOYMENT = "rollback/production"
HEARTBEAT_FREQUENCY_S = 30


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
        deployment_id = client.read_deployment_by_name(deployment).id
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
