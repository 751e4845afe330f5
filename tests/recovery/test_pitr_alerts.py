"""pitr-check alerts once per incident: the verdicts (pure), then real pitr-check runs against a
missing bucket on a real Prefect server, its Variable and the automation's alert runs."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tasks.alerting import build_alert_message, make_alert
from tasks.recovery.pitr.incident import (
    OPENED,
    RESOLVED,
    IncidentState,
    incident_event,
    next_incident,
    variable_name,
)
from tests.fixtures.pitr import make_repo

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
DEADLINE_S = 180


def test_an_incident_opens_on_the_first_failure_and_resolves_on_the_first_pass() -> None:
    every = timedelta(minutes=5)
    state: IncidentState | None = None
    seen = []
    for i, passed in enumerate([True, False, False, False, True, True, False]):
        previous = state
        state, transition = next_incident(
            previous, passed=passed, problems=[] if passed else [f"gap {i}"],
            now=T0 + i * every, run_id=f"run-{i}")
        seen.append(transition)
        if transition == "opened":
            assert state.failing and state.since == T0 + i * every and state.opened_by == f"run-{i}"
    assert seen == ["quiet", "opened", "ongoing", "ongoing", "resolved", "quiet", "opened"]
    # a first run that fails is an incident too
    first, transition = next_incident(None, passed=False, problems=["no backup"], now=T0,
                                      run_id="r")
    assert transition == "opened" and first.problems == ["no backup"]
    # problems are kept short (a state message can be a page long)
    long, _ = next_incident(None, passed=False, problems=["x" * 5000] * 9, now=T0, run_id=None)
    assert len(long.problems) == 5 and all(len(p) == 300 for p in long.problems)


def test_only_opening_and_resolving_make_an_event_and_it_says_what_and_how_long() -> None:
    opened, _ = next_incident(None, passed=False, problems=["1 segment(s) MISSING"], now=T0,
                              run_id="r1")
    kwargs = {"repository_block": "veza-pitr", "stanza": "veza",
              "deployment": "pitr-check/every-5-min", "run_id": "r1", "run_name": "calm-owl"}
    event = incident_event("opened", opened, None, **kwargs)
    assert event is not None and event["event"] == OPENED
    assert event["resource"]["prefect.resource.id"] == "veza-ops.pitr-repository.veza-pitr"
    assert event["related"][0]["prefect.resource.id"] == "prefect.flow-run.r1"
    assert event["payload"]["reason"] == "1 segment(s) MISSING"
    assert event["payload"]["deployment"] == "pitr-check/every-5-min"
    ongoing, transition = next_incident(opened, passed=False, problems=["again"],
                                        now=T0 + timedelta(minutes=5), run_id="r2")
    assert incident_event(transition, ongoing, opened, **kwargs) is None
    resolved, transition = next_incident(ongoing, passed=True, problems=[],
                                         now=T0 + timedelta(minutes=35), run_id="r3")
    event = incident_event(transition, resolved, ongoing, **kwargs)
    assert event is not None and event["event"] == RESOLVED
    assert "after 35 min" in event["payload"]["reason"]
    assert event["payload"]["broken_since"] == T0.isoformat()
    assert variable_name("Veza PITR.prod") == "veza-ops-pitr-check-veza-pitr-prod"
    message = build_alert_message(make_alert(flow_name="pitr-check", state="Recovered",
                                             reason=event["payload"]["reason"]))
    assert message["text"].startswith(":white_check_mark:") and "after 35 min" in message["text"]


# --- real runs: the Variable, the events, the automation's alert runs -------------------------


def _wait_for(condition: Callable[[], Any], what: str) -> Any:
    end = time.monotonic() + DEADLINE_S
    while not (value := condition()):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)
    return value


@pytest.fixture()
def alert_deployment(prefect_harness: None) -> Iterator[tuple[str, Any]]:
    """A deployment of the alert flow of this test's own (no work pool: its runs stay
    Scheduled), and the incident automation pointing at it; both removed afterwards."""
    from prefect.client.orchestration import get_client

    from veza_ops.automations import ensure_pitr_incident_automation

    suffix = uuid.uuid4().hex[:8]
    with get_client(sync_client=True) as client:
        deployment_id = client.create_deployment(
            flow_id=client.create_flow_from_name("alert"), name=f"slack-{suffix}",
            entrypoint="flows/alert.py:alert")
    name = f"test pitr incident {suffix}"
    ensure_pitr_incident_automation(deployment=f"alert/slack-{suffix}", name=name,
                                    slack_block=f"slack-{suffix}")
    yield name, deployment_id
    with get_client(sync_client=True) as client:
        for automation in client.read_automations_by_name(name):
            client.delete_automation(automation.id)
        client.delete_deployment(deployment_id)


def _alert_runs(deployment_id: Any, run_ids: set[str]) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[deployment_id])))
    return [r for r in runs if r.parameters.get("flow_run_id") in run_ids]


def test_a_broken_archive_alerts_once_then_once_when_whole_again(
    alert_deployment: tuple[str, Any], s3_server: Any, s3_tls_front: Any, tmp_path: Path
) -> None:
    from prefect import flow
    from prefect.variables import Variable

    from flows.pitr_check import pitr_check
    from tasks.recovery.pitr.incident import track_incident_task

    _, deployment_id = alert_deployment
    ca = tmp_path / "ca.pem"
    ca.write_bytes(Path(s3_tls_front.ca_file).read_bytes())
    bucket = f"missing-{uuid.uuid4().hex[:8]}"
    block = f"pitr-incident-{uuid.uuid4().hex[:8]}"
    make_repo(s3_server, s3_tls_front, bucket, ca, secrets.token_urlsafe(24)).save(block)

    runs = []
    for _ in range(3):  # three scheduled runs of a broken archive: one incident
        state = pitr_check(block, return_state=True)
        assert state.is_failed()
        runs.append(str(state.state_details.flow_run_id))
    stored: Any = Variable.get(variable_name(block))
    assert stored["failing"] is True and stored["opened_by"] == runs[0]
    assert bucket in " ".join(stored["problems"])

    def failed_alerts() -> list[Any]:
        return [r for r in _alert_runs(deployment_id, set(runs))
                if r.parameters["state"] == "Failed"]

    (alert,) = _wait_for(failed_alerts, "the incident-opened alert run")
    assert alert.parameters["flow_run_id"] == runs[0]
    assert alert.parameters["flow_name"] == "pitr-check"
    assert bucket in alert.parameters["reason"]

    @flow(name="pitr-check")
    def passing_check() -> str:  # the verdict of a run that passed (tests/recovery/test_pitr_ops)
        return track_incident_task(block, passed=True, problems=[], now=datetime.now(UTC))

    judged = passing_check(return_state=True)
    assert judged.result() == "resolved"
    recovered_run = str(judged.state_details.flow_run_id)

    def recovered() -> list[Any]:
        return _alert_runs(deployment_id, {recovered_run})

    (alert,) = _wait_for(recovered, "the incident-resolved alert run")
    assert alert.parameters["state"] == "Recovered"
    assert "passes again" in alert.parameters["reason"]
    assert len(failed_alerts()) == 1  # runs 2 and 3 sent nothing
    after: Any = Variable.get(variable_name(block))
    assert after["failing"] is False
    Variable.unset(variable_name(block))
