"""Events of the runs (tasks/events.py): names, resources, and what the Prefect server keeps.

The flows' own events are checked where those flows already run: the release flow tests
(succeeded, rolled-back, rollback) and the recovery flow tests (backup, restore-test).
"""

from __future__ import annotations

import uuid

import pytest

from tasks.events import event_name, resources
from tests.events import read_events, related


def test_outcomes_map_onto_the_five_phases():
    assert event_name("release", "succeeded") == "veza-ops.release.succeeded"
    assert event_name("release", "rolled-back") == "veza-ops.release.rolled-back"
    assert event_name("release", "rollback-incomplete") == "veza-ops.release.failed"
    assert event_name("rollback", "crashed") == "veza-ops.rollback.failed"
    assert event_name("backup", "cancelled") == "veza-ops.backup.cancelled"


def test_resources_name_the_environment_version_services_and_run():
    resource, rel = resources(kind="environment", name="production", version="1.4.2",
                              services=["veza-web", "veza-chat-server"], run_id="abc")
    assert resource["prefect.resource.id"] == "veza-ops.environment.production"
    assert [(r["prefect.resource.role"], r["prefect.resource.id"]) for r in rel] == [
        ("version", "veza-ops.version.1.4.2"), ("service", "veza-ops.service.veza-web"),
        ("service", "veza-ops.service.veza-chat-server"), ("flow-run", "prefect.flow-run.abc")]


def test_a_run_emits_started_then_its_outcome_and_no_secret(prefect_harness):
    from prefect import flow

    from errors import ReleaseError
    from tasks.events import release_events, run_events
    from tasks.release.redaction import remember
    from tasks.release.report import ReleaseReport

    name = f"events-{uuid.uuid4().hex[:8]}"
    secret = f"s3cr3t-{uuid.uuid4().hex}"

    @flow(name="events-probe")
    def probe(fail: bool) -> None:
        remember({"TOKEN": secret})  # a value the run knows is secret (as Vault values are)
        with run_events("release", kind="environment", name=name,
                        details=lambda: {"version": "9.9.9", "services": ["veza-web"]}):
            if fail:
                raise ReleaseError(f"verification failed near {secret}")

    @flow(name="events-probe-release")
    def release_probe() -> None:
        report = ReleaseReport.start(kind="release", environment=name, version="9.9.10",
                                     triggered_by="test", run_id="probe",
                                     images={"veza-web": "veza/web:9.9.10"})
        with release_events(report):
            report.summary.outcome = "rolled-back"  # as report.running records it
            raise ReleaseError("verification of veza-web (green) failed")

    state = probe(fail=False, return_state=True)
    with pytest.raises(ReleaseError):
        probe(fail=True)
    with pytest.raises(ReleaseError):
        release_probe()
    events = read_events(f"veza-ops.environment.{name}", until=lambda found: len(found) >= 6)
    assert [e.event.rsplit(".", 1)[1] for e in events] == [
        "started", "succeeded", "started", "failed", "started", "rolled-back"]
    assert related(events[5], "version") == ["9.9.10"]
    assert events[5].payload["release_id"].endswith("-probe")
    done = events[1]
    assert related(done, "version") == ["9.9.9"] and related(done, "service") == ["veza-web"]
    assert f"prefect.flow-run.{state.state_details.flow_run_id}" in [
        r.id for r in done.related if r.role == "flow-run"]
    assert done.payload["outcome"] == "succeeded" and done.payload["duration_s"] >= 0
    failed = events[3]
    assert "verification failed" in failed.payload["reason"]
    assert secret not in failed.model_dump_json()
