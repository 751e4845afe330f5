"""A release whose process died still says so: its on_crashed hook emits the `failed` event."""

from __future__ import annotations

import uuid

from tests.events import read_events, related


def test_a_crashed_release_emits_a_failed_event(prefect_harness: None) -> None:
    from prefect.client.schemas.objects import FlowRun
    from prefect.states import Crashed

    from flows.release import _on_crashed, release

    environment = f"crash-{uuid.uuid4().hex[:8]}"  # an event resource no other test reads
    run = FlowRun(flow_id=uuid.uuid4(), name="release-crashed", parameters={
        "version": "4.5.6", "environment": environment, "services": ["veza-web"],
        "catalogue_path": "/nonexistent/catalogue.yaml"})  # the clean-up has nothing to reach
    _on_crashed(release, run, Crashed())  # what Prefect's runner calls once the process died
    (event,) = read_events(f"veza-ops.environment.{environment}",
                           until=lambda found: len(found) >= 1)
    assert event.event == "veza-ops.release.failed"
    assert event.payload["outcome"] == "crashed" and "crashed" in event.payload["reason"]
    assert related(event, "version") == ["4.5.6"] and related(event, "service") == ["veza-web"]
    assert f"prefect.flow-run.{run.id}" in [r.id for r in event.related if r.role == "flow-run"]
