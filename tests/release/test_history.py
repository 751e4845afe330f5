"""Release records in the cluster's ConfigMap: write, update, prune to the newest N, markdown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kubernetes import client

from tasks.release.history import (
    CONFIGMAP_NAME,
    CheckRecord,
    ReleaseRecord,
    last_release,
    record_release,
    release_history,
)

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def record(i: int, **overrides) -> ReleaseRecord:
    started = T0 + timedelta(minutes=i)
    values = {
        "id": ReleaseRecord.new_id(started, f"run{i:03d}"),
        "environment": "production",
        "version": f"1.{i}.0",
        "images": {"veza-web": f"veza/web:1.{i}.0"},
        "previous_images": {"veza-web": f"veza/web:1.{i - 1}.0"},
        "colours": {"veza-web": "green"},
        "previous_colours": {"veza-web": "blue"},
        "triggered_by": "ci",
        "started_at": started,
        "finished_at": started + timedelta(seconds=95),
        "outcome": "succeeded",
        "checks": [CheckRecord(name="preflight", passed=True, detail="7/7")],
        "timings": {"build": 30.0, "production": 60.0},
    }
    values.update(overrides)
    return ReleaseRecord(**values)


def test_records_are_kept_in_the_configmap_and_updated_by_id(k8s_api_client, k8s_namespace):
    core = client.CoreV1Api(k8s_api_client)
    assert last_release(core, k8s_namespace) is None
    running = record(1, outcome="running", finished_at=None)
    record_release(core, k8s_namespace, running)
    record_release(core, k8s_namespace, record(1, outcome="rolled-back", reason="p99 900 ms"))
    record_release(core, k8s_namespace, record(2))
    stored = core.read_namespaced_config_map(CONFIGMAP_NAME, k8s_namespace)
    assert sorted(stored.data) == [record(1).id, record(2).id]
    newest = last_release(core, k8s_namespace)
    assert newest is not None and newest.version == "1.2.0"
    assert newest.images == {"veza-web": "veza/web:1.2.0"}
    assert newest.started_at == record(2).started_at
    rolled_back = last_release(core, k8s_namespace, outcome="rolled-back")
    assert rolled_back is not None and rolled_back.reason == "p99 900 ms"


def test_only_the_newest_are_kept(k8s_api_client, k8s_namespace):
    core = client.CoreV1Api(k8s_api_client)
    for i in range(1, 8):
        record_release(core, k8s_namespace, record(i), keep=5)
    history = release_history(core, k8s_namespace)
    assert [r.version for r in history] == [f"1.{i}.0" for i in range(3, 8)]


def test_two_runs_started_in_the_same_second_are_ordered_by_their_start(
        k8s_api_client, k8s_namespace):
    """Ids carry the second only: a rollback whose suffix sorts first is still the newest."""
    core = client.CoreV1Api(k8s_api_client)
    first = record(1, id=ReleaseRecord.new_id(T0, "canary"), started_at=T0)
    later = T0 + timedelta(milliseconds=600)
    rollback = record(2, id=ReleaseRecord.new_id(later, "50bc1dc2"), kind="rollback",
                      started_at=later)
    assert rollback.id < first.id  # the case: same second, suffix "5..." before "c..."
    record_release(core, k8s_namespace, first)
    record_release(core, k8s_namespace, rollback)
    newest = last_release(core, k8s_namespace)
    assert newest is not None and newest.kind == "rollback"
    assert [r.id for r in release_history(core, k8s_namespace)] == [first.id, rollback.id]


def test_an_unreadable_entry_is_skipped(k8s_api_client, k8s_namespace):
    core = client.CoreV1Api(k8s_api_client)
    record_release(core, k8s_namespace, record(1))
    core.patch_namespaced_config_map(
        CONFIGMAP_NAME, k8s_namespace, {"data": {"20261127T120000Z-bad": "{not json"}}
    )
    assert [r.version for r in release_history(core, k8s_namespace)] == ["1.1.0"]


def test_markdown_names_everything():
    text = record(3, outcome="rolled-back", reason="veza-web: success rate 0.8").to_markdown()
    for fact in (
        "1.3.0",
        "production",
        "rolled-back",
        "veza/web:1.3.0",
        "veza/web:1.2.0",
        "green",
        "blue",
        "preflight",
        "success rate 0.8",
        "95.0 s",
        "| build | 30.0 |",
    ):
        assert fact in text
