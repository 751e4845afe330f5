"""Alerts: the automations on a real Prefect API, the alert flow against a local Slack receiver,
and a Failed backup run turned into an alert end to end (the harness runs the triggers and
actions services)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.release.test_notify import SECRET_PATH, Receiver

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 180


def wait_for(condition: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    end = time.monotonic() + deadline_s
    while not (value := condition()):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)
    return value


@pytest.fixture(scope="module")
def prefect_harness(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A Prefect server of this module's own: the automations installed here (the zombie one
    crashes any run without a heartbeat, the failure alert fires on any failed backup) would
    act on the runs of tests sharing the suite's server."""
    from tests.fixtures.prefect import own_server_harness

    with own_server_harness(pg_server, tmp_path_factory.mktemp("prefect-alerts")):
        yield


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    rec.thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


@pytest.fixture()
def slack_block(prefect_harness: None, receiver: Receiver) -> str:
    from pydantic import SecretStr

    from blocks.slack import SlackWebhook

    name = f"slack-{uuid.uuid4().hex[:8]}"
    SlackWebhook(url=SecretStr(receiver.url)).save(name)
    return name


def _deploy(flow_name: str, name: str, entrypoint: str, **parameters: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(flow_name)
        return client.create_deployment(flow_id=flow_id, name=name, entrypoint=entrypoint,
                                        path=str(PROJECT_ROOT), parameters=parameters)


@pytest.fixture()
def deployments(prefect_harness: None) -> dict[str, Any]:
    """alert/slack, backup/nightly-full and rollback/production, as prefect.yaml names them."""
    return {
        "alert/slack": _deploy("alert", "slack", "flows/alert.py:alert"),
        "backup/nightly-full": _deploy("backup", "nightly-full",
                                       "flows/backup.py:backup_flow", kind="full"),
        "rollback/production": _deploy("rollback", "production", "flows/rollback.py:rollback"),
    }


@pytest.fixture()
def cleanup_automations(prefect_harness: None) -> Iterator[list[str]]:
    """Names of automations to delete afterwards (they would fire on other tests' runs)."""
    from prefect.client.orchestration import get_client

    names: list[str] = []
    yield names
    with get_client(sync_client=True) as client:
        for name in names:
            for automation in client.read_automations_by_name(name):
                client.delete_automation(automation.id)


def _alert_runs(deployment_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[deployment_id])))


def _execute(flow_run_id: Any) -> subprocess.CompletedProcess[str]:
    """Run a flow run the way a process worker does: `python -m prefect.engine`."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-m", "prefect.engine", str(flow_run_id)],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


# --- the message ---------------------------------------------------------------------------


def test_alert_message_names_flow_deployment_state_and_run():
    from tasks.alerting import build_alert_message, flow_run_link, make_alert

    alert = make_alert(flow_name="backup", state="Failed", deployment="backup/nightly-full",
                       flow_run_name="clever-otter", flow_run_id="1234", reason="x" * 900)
    link = flow_run_link("1234", "http://prefect.local/")
    message = build_alert_message(alert, link=link)
    flat = json.dumps(message)
    for fact in ("backup/nightly-full", "Failed", "clever-otter",
                 "http://prefect.local/runs/flow-run/1234"):
        assert fact in flat
    assert "backup/nightly-full" in message["text"] and "Failed" in message["text"]
    assert len(alert.reason) == 500  # a traceback-sized message is cut


def test_alert_of_a_run_without_deployment_or_message():
    from tasks.alerting import build_alert_message, make_alert

    alert = make_alert(flow_name="prune-backups", state="Crashed", deployment="",
                       flow_run_name="r1", reason="None")
    assert alert.reason == "" and alert.deployment == ""
    assert "flow prune-backups run r1: Crashed" in build_alert_message(alert)["text"]
    missed = make_alert(flow_name="backup", state="Missed", deployment="backup/nightly-full",
                        reason="no Completed run of backup/nightly-full within 25 h")
    assert "no Completed run" in build_alert_message(missed)["text"]


# --- the automations, read back ---------------------------------------------------------------


def test_alert_automations_are_idempotent_and_read_back(deployments, cleanup_automations):
    from prefect.client.orchestration import get_client

    from veza_ops.automations import (
        FAILURE_ALERT_AUTOMATION_NAME,
        MISSED_NIGHTLY_AUTOMATION_NAME,
        ensure_failure_alert_automation,
        ensure_missed_nightly_automation,
    )

    cleanup_automations += [FAILURE_ALERT_AUTOMATION_NAME, MISSED_NIGHTLY_AUTOMATION_NAME]
    failure = ensure_failure_alert_automation()
    missed = ensure_missed_nightly_automation()
    assert ensure_failure_alert_automation() == failure
    assert ensure_missed_nightly_automation() == missed
    assert ensure_failure_alert_automation(slack_block="other-slack") == failure  # updated

    with get_client(sync_client=True) as client:
        assert len(client.read_automations_by_name(FAILURE_ALERT_AUTOMATION_NAME)) == 1
        assert len(client.read_automations_by_name(MISSED_NIGHTLY_AUTOMATION_NAME)) == 1
        on_failure = client.read_automation(failure)
        on_missed = client.read_automation(missed)

    trigger = on_failure.trigger
    assert on_failure.enabled and trigger.posture == "Reactive" and trigger.threshold == 1
    assert trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert trigger.match.get("prefect.resource.id") == ["prefect.flow-run.*"]
    assert trigger.match_related.get("prefect.resource.role") == ["flow"]
    assert sorted(trigger.match_related.get("prefect.resource.name")) == [
        "backup", "pitr-backup", "pitr-expire", "prune-backups", "restore-test"]  # pitr-check:
    # once per incident (tests/recovery/test_pitr_alerts.py)
    (action,) = on_failure.actions
    assert action.type == "run-deployment" and action.source == "selected"
    assert action.deployment_id == deployments["alert/slack"]
    params = action.parameters
    assert params["slack_block"] == "other-slack"
    for name, needle in (("flow_name", "flow.name"), ("state", "flow_run.state.name"),
                         ("deployment", "deployment.name"), ("flow_run_name", "flow_run.name"),
                         ("flow_run_id", "flow_run.id"), ("reason", "flow_run.state.message")):
        assert needle in params[name]["template"], name

    trigger = on_missed.trigger
    assert on_missed.enabled and trigger.posture == "Proactive" and trigger.threshold == 1
    assert trigger.expect == {"prefect.flow-run.Completed"}
    assert trigger.within == timedelta(hours=25)
    nightly = f"prefect.deployment.{deployments['backup/nightly-full']}"
    assert trigger.match_related.get("prefect.resource.id") == [nightly]
    assert trigger.match_related.get("prefect.resource.role") == ["deployment"]
    (action,) = on_missed.actions
    assert action.deployment_id == deployments["alert/slack"]
    assert action.parameters["state"] == "Missed"
    assert action.parameters["deployment"] == "backup/nightly-full"


def test_missing_alert_deployment_is_a_clear_setup_error(prefect_harness):
    from veza_ops.automations import SetupError, ensure_failure_alert_automation

    with pytest.raises(SetupError, match="prefect deploy --all") as err:
        ensure_failure_alert_automation(deployment="alert/no-such-deployment",
                                        name=f"t-{uuid.uuid4().hex[:6]}")
    assert "alert/no-such-deployment" in str(err.value)


# --- the alert flow ----------------------------------------------------------------------------


def _logs_and_parameters(flow_run_id: Any) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return json.dumps(run.parameters) + "\n".join(log.message for log in logs)


def test_alert_flow_posts_the_facts_and_no_secret(slack_block, receiver, caplog):
    from flows.alert import alert

    state = alert(flow_name="backup", state="Failed", deployment="backup/hourly",
                  flow_run_name="brave-heron", flow_run_id=str(uuid.uuid4()),
                  reason="postgres: login refused", slack_block=slack_block, return_state=True)
    assert state.is_completed()
    (body,) = receiver.bodies
    flat = json.dumps(body)
    for fact in ("backup/hourly", "Failed", "brave-heron", "login refused"):
        assert fact in flat
    text = _logs_and_parameters(state.state_details.flow_run_id) + caplog.text
    assert "alert posted" in text
    assert SECRET_PATH not in text and "very-secret-webhook-token" not in text


def test_alert_flow_fails_on_unknown_slack_block(prefect_harness):
    from errors import BlockNotFoundError
    from flows.alert import alert

    with pytest.raises(BlockNotFoundError) as err:
        alert(flow_name="backup", state="Failed", slack_block="no-such-slack")
    assert err.value.field == "slack_block"


# --- end to end: a Failed backup run -> the automation -> an alert run -> Slack -----------------


def test_failed_backup_run_alerts_on_slack_end_to_end(
    deployments, cleanup_automations, slack_block, receiver
):
    from prefect.client.orchestration import get_client

    from veza_ops.automations import ensure_failure_alert_automation

    name = f"test failure alert {uuid.uuid4().hex[:6]}"
    cleanup_automations.append(name)
    ensure_failure_alert_automation(name=name, slack_block=slack_block)
    with get_client(sync_client=True) as client:
        backup = client.create_flow_run_from_deployment(
            deployments["backup/nightly-full"],
            parameters={"database_block": "no-such-db", "store_block": "no-such-store",
                        "encryption_block": "no-such-key"})
    done = _execute(backup.id)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(backup.id).state.is_failed(), done.stderr[-2000:]

    def alert_run() -> Any:
        return next((r for r in _alert_runs(deployments["alert/slack"])
                     if r.parameters.get("flow_run_id") == str(backup.id)), None)

    run = wait_for(alert_run, "the automation to create the alert run")
    assert run.parameters["flow_name"] == "backup"
    assert run.parameters["deployment"] == "backup/nightly-full"
    assert run.parameters["state"] == "Failed"
    assert run.parameters["flow_run_name"] == backup.name
    assert "no-such-db" in run.parameters["reason"]  # the state message: what went wrong
    assert run.parameters["slack_block"] == slack_block

    done = _execute(run.id)
    assert done.returncode == 0, done.stderr[-2000:]
    (body,) = receiver.bodies
    flat = json.dumps(body)
    for fact in ("backup/nightly-full", "Failed", backup.name, str(backup.id)):
        assert fact in flat
    assert "very-secret-webhook-token" not in _logs_and_parameters(run.id) + done.stderr


def test_missed_nightly_fires_when_no_run_completes_in_the_window(
    deployments, cleanup_automations
):
    """The real trigger shape with a 10 s window (the minimum) instead of 25 h."""
    from veza_ops.automations import ensure_missed_nightly_automation

    nightly = f"nightly-{uuid.uuid4().hex[:6]}"
    nightly_id = _deploy("backup", nightly, "flows/backup.py:backup_flow")
    name = f"test missed nightly {uuid.uuid4().hex[:6]}"
    cleanup_automations.append(name)
    ensure_missed_nightly_automation(nightly=f"backup/{nightly}", name=name,
                                     within=timedelta(seconds=10))

    def alert_run() -> Any:
        return next((r for r in _alert_runs(deployments["alert/slack"])
                     if r.parameters.get("deployment") == f"backup/{nightly}"), None)

    run = wait_for(alert_run, "the missed-nightly automation to fire")
    assert run.parameters["state"] == "Missed" and run.parameters["flow_name"] == "backup"
    assert "no Completed run" in run.parameters["reason"]
    assert nightly_id  # the watched deployment exists; it never completed


# --- the command ---------------------------------------------------------------------------


def test_automations_install_command(deployments, cleanup_automations, capsys):
    from prefect.client.orchestration import get_client

    from tasks.recovery.backup_slot import backup_limit_name
    from veza_ops import automations as a
    from veza_ops.cli import main

    cleanup_automations += [a.ZOMBIE_AUTOMATION_NAME, a.CRASH_ROLLBACK_AUTOMATION_NAME,
                            a.FAILURE_ALERT_AUTOMATION_NAME, a.MISSED_NIGHTLY_AUTOMATION_NAME,
                            a.PITR_INCIDENT_AUTOMATION_NAME, a.PITR_CRASH_AUTOMATION_NAME]
    database = f"veza_{uuid.uuid4().hex[:8]}"
    argv = ["automations", "install", "--database", database, "--slack-block", "ops-slack"]
    assert main(argv) == 0
    assert main(argv) == 0  # idempotent
    out = capsys.readouterr().out
    for name in (a.FAILURE_ALERT_AUTOMATION_NAME, a.MISSED_NIGHTLY_AUTOMATION_NAME,
                 a.PITR_INCIDENT_AUTOMATION_NAME, backup_limit_name(database)):
        assert name in out
    with get_client(sync_client=True) as client:
        for name in cleanup_automations:
            assert len(client.read_automations_by_name(name)) == 1, name
        (failure,) = client.read_automations_by_name(a.FAILURE_ALERT_AUTOMATION_NAME)
        assert client.read_global_concurrency_limit_by_name(backup_limit_name(database)).limit == 1
        (crash,) = client.read_automations_by_name(a.PITR_CRASH_AUTOMATION_NAME)
        (incident,) = client.read_automations_by_name(a.PITR_INCIDENT_AUTOMATION_NAME)
    assert failure.actions[0].parameters["slack_block"] == "ops-slack"
    # pitr-check: a crash alerts per run, a failure once per incident (test_pitr_alerts.py)
    assert crash.trigger.expect == {"prefect.flow-run.Crashed"}
    assert crash.trigger.match_related.get("prefect.resource.name") == ["pitr-check"]
    assert incident.trigger.expect == {"veza-ops.pitr-check.incident-opened",
                                       "veza-ops.pitr-check.incident-resolved"}
    assert incident.actions[0].parameters["slack_block"] == "ops-slack"

    assert main(["automations", "install", "--database-block", "no-such-db"]) == 2
    err = capsys.readouterr().err
    assert "--database-block" in err and "no-such-db" in err
