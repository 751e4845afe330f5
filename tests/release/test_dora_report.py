"""The dora-report flow and `veza-ops metrics serve` on records kept in the sandbox's cluster."""

from __future__ import annotations

import argparse
import threading
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from kubernetes import client as k8s

from tests.release import helpers as h


@pytest.fixture
def records_namespace(sandbox_stack):
    """A bare namespace of the sandbox (no workload: records only), deleted afterwards."""
    _, core = h.apis(sandbox_stack)
    namespace = f"veza-dora-{uuid.uuid4().hex[:6]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    yield core, namespace
    core.delete_namespace(namespace)


def write_records(core, namespace: str) -> datetime:
    """Three good releases with commits, one rolled back, then a good one; returns now."""
    from tasks.release.history import ReleaseRecord, record_release

    now = datetime.now(UTC)
    plan = [(50, "succeeded", 20), (40, "succeeded", 40), (30, "rolled-back", None),
            (28, "succeeded", 30)]
    for i, (hours_ago, outcome, lead_min) in enumerate(plan):
        started = now - timedelta(hours=hours_ago)
        finished = started + timedelta(minutes=3)
        record_release(core, namespace, ReleaseRecord(
            id=ReleaseRecord.new_id(started, f"dora{i}"), environment="production",
            version=f"1.{i}.0", started_at=started, finished_at=finished, outcome=outcome,
            commit_sha=f"{i:040x}" if lead_min else None,
            commit_timestamp=finished - timedelta(minutes=lead_min) if lead_min else None))
    return now


def test_the_report_and_the_exporter_read_the_records_kept_in_the_cluster(
        sandbox_stack, prefect_harness, records_namespace, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prometheus_client.parser import text_string_to_metric_families

    from flows.dora_report import dora_report
    from veza_ops.metrics import serve

    core, namespace = records_namespace
    write_records(core, namespace)
    blocks = h.register_blocks(sandbox_stack)
    catalogue = h.write_catalogue(tmp_path / "catalogue.yaml", production_ns=namespace,
                                  staging_ns=f"nowhere-{uuid.uuid4().hex[:6]}", blocks=blocks)

    state = dora_report(environments=["production"], catalogue_path=str(catalogue),
                        return_state=True)
    seven, thirty = state.result()
    assert (seven.window_days, thirty.window_days) == (7, 30)
    assert (seven.attempts, seven.succeeded, seven.failed_changes) == (4, 3, 1)
    assert seven.metric("lead_time").value == pytest.approx(30 * 60)  # median of 20, 40, 30
    assert seven.metric("mttr").value == pytest.approx(2 * 3600)      # 30 h+3 min -> 28 h+3 min
    assert seven.metric("change_failure_rate").value == pytest.approx(0.25)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    text = next(str(a.data) for a in artifacts if a.key == "dora-report")
    assert "## production" in text and "30 min (met, n=3)" in text and "25.0 %" in text

    # The exporter: the same numbers, in the Prometheus text format.
    urls: list[str] = []
    stop = threading.Event()
    args = argparse.Namespace(catalogue=str(catalogue), environment=["production"],
                              address="127.0.0.1", port=0, window=[], refresh=30.0)
    server = threading.Thread(target=serve, kwargs={"args": args, "ready": urls.append,
                                                     "stop": stop})
    server.start()
    try:
        from sandbox.procs import wait_until

        wait_until(lambda: bool(urls), timeout=30, what="the exporter listening")
        body = httpx.get(urls[0], timeout=30).text
    finally:
        stop.set()
        server.join(timeout=30)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body) for s in family.samples}
    def sample(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"environment": "production", **labels}.items())))]

    assert sample("veza_dora_lead_time_seconds", window="7d") == pytest.approx(30 * 60)
    assert sample("veza_dora_change_failure_ratio", window="7d") == pytest.approx(0.25)
    assert sample("veza_dora_deployment_success_ratio", window="7d") == pytest.approx(0.75)
    assert sample("veza_dora_mttr_seconds", window="7d") == pytest.approx(2 * 3600, rel=1e-3)
    assert sample("veza_dora_target_met", window="7d", metric="lead_time") == 1.0
    assert sample("veza_dora_target_met", window="30d", metric="mttr") == 0.0
    assert sample("veza_dora_releases", window="30d", result="failed_change") == 1.0
    assert sample("veza_dora_up") == 1.0


def test_the_exporter_reads_an_unreachable_api_as_down_not_as_an_error(tmp_path):
    """The Prefect API gone (the blocks cannot be loaded): the environment is reported down
    (veza_dora_up 0 comes from the errors), the scrape itself does not fail."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from sandbox.procs import free_port
    from tests.release import helpers as h
    from veza_ops.metrics import catalogue_reader

    catalogue = h.write_catalogue(tmp_path / "c.yaml", staging_ns="veza-staging-x",
                                  production_ns="veza-production-x", blocks="no-such-block")
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        reports, errors = catalogue_reader(str(catalogue), ["production"], windows=[7])()
    assert reports == [] and list(errors) == ["production"]
