"""The crash-rollback automation, created on the Prefect test harness and read back."""

from __future__ import annotations


def test_crashed_release_runs_the_rollback_deployment(prefect_harness):
    from prefect.client.orchestration import get_client

    from veza_ops.automations import (
        CRASH_ROLLBACK_AUTOMATION_NAME,
        ensure_crash_rollback_automation,
    )

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("rollback")
        deployment_id = client.create_deployment(flow_id=flow_id, name="production",
                                                 entrypoint="flows/rollback.py:rollback")
        for old in client.read_automations_by_name(CRASH_ROLLBACK_AUTOMATION_NAME):
            client.delete_automation(old.id)
    created = ensure_crash_rollback_automation()
    try:
        assert ensure_crash_rollback_automation() == created  # idempotent

        with get_client(sync_client=True) as client:
            automation = client.read_automation(created)
        assert automation is not None and automation.enabled
        trigger = automation.trigger
        assert trigger.expect == {"prefect.flow-run.Crashed"}
        assert trigger.posture == "Reactive" and trigger.threshold == 1
        assert trigger.match.get("prefect.resource.id") == ["prefect.flow-run.*"]
        assert trigger.match_related.get("prefect.resource.role") == ["flow"]
        assert trigger.match_related.get("prefect.resource.name") == ["release"]
        (action,) = automation.actions
        assert action.type == "run-deployment" and action.source == "selected"
        assert action.deployment_id == deployment_id
        assert "flow_run.parameters.environment" in str(action.parameters["environment"])
        triggered_by = str(action.parameters["triggered_by"])
        assert "automation: release" in triggered_by and "flow_run.name" in triggered_by
    finally:  # it would act on other tests' crashed releases (the suite shares one server)
        with get_client(sync_client=True) as client:
            client.delete_automation(created)
