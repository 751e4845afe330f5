"""`veza-ops status`, `history` and `--version` on a seeded production namespace of the sandbox."""

from __future__ import annotations

import argparse
import io
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client as k8s

from sandbox.procs import wait_until
from tests.release import helpers as h
from tests.screen import Screen


def catalogue_for(sandbox, namespace: str, tmp_path) -> str:
    blocks = h.register_blocks(sandbox)
    return str(h.write_catalogue(tmp_path / "catalogue.yaml", production_ns=namespace,
                                 staging_ns=f"nowhere-{uuid.uuid4().hex[:6]}", blocks=blocks))


@pytest.fixture
def production(sandbox_stack, sandbox_seed, prefect_harness, tmp_path):
    """A seeded production namespace (no staging, no traffic), its catalogue and core API."""
    namespace = sandbox_seed(staging=False, traffic=False)[1]
    return namespace, catalogue_for(sandbox_stack, namespace, tmp_path), h.apis(sandbox_stack)[1]


@pytest.fixture
def records_only(sandbox_stack, prefect_harness, tmp_path):
    """A bare namespace (records, no workload), its catalogue and core API; deleted after."""
    core = h.apis(sandbox_stack)[1]
    namespace = f"veza-history-{uuid.uuid4().hex[:6]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    yield namespace, catalogue_for(sandbox_stack, namespace, tmp_path), core
    core.delete_namespace(namespace)


def write_records(core, namespace: str) -> list:
    from tasks.release.history import ReleaseRecord, record_release

    now = datetime.now(UTC)
    records = []
    for i, (outcome, reason) in enumerate([("succeeded", None),
                                           ("rolled-back", "veza-web: p99 900 ms")]):
        started = now - timedelta(minutes=30 - 10 * i)
        record = ReleaseRecord(
            id=ReleaseRecord.new_id(started, f"cock{i}"), environment="production",
            version=f"1.{i + 1}.0", started_at=started, outcome=outcome, reason=reason,
            finished_at=started + timedelta(minutes=2), triggered_by="ci",
            commit_sha=("ab", "cd")[i] * 20)
        record_release(core, namespace, record)
        records.append(record)
    return records


def take_lease(sandbox, namespace: str, holder: str) -> None:
    from kubernetes import config

    api = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(sandbox.kubeconfig), context="sandbox")
    k8s.CoordinationV1Api(api).create_namespaced_lease(namespace, k8s.V1Lease(
        metadata=k8s.V1ObjectMeta(name="veza-ops-release-lock",
                                  annotations={"veza-ops.veza.io/flow-run-id": "run-123"}),
        spec=k8s.V1LeaseSpec(holder_identity=holder, lease_duration_seconds=900,
                             acquire_time=datetime.now(UTC), renew_time=datetime.now(UTC))))


def status_args(catalogue: str, **kw) -> argparse.Namespace:
    return argparse.Namespace(**{"environment": "production", "catalogue": catalogue,
                                 "watch": False, "interval": 0.2, "json": False, **kw})


def test_status_shows_colours_images_readiness_pending_switch_lock_and_last_release(
        production, sandbox_stack):
    from veza_ops.cockpit import run_status_command

    namespace, catalogue, core = production
    records = write_records(core, namespace)
    take_lease(sandbox_stack, namespace, "release/20261202T100000Z-abcdef12")
    core.patch_namespaced_service("veza-web", namespace, {"metadata": {"annotations": {
        "veza-ops.veza.io/pending-release": "20261202T100000Z-abcdef12"}}})

    out = io.StringIO()
    assert run_status_command(status_args(catalogue), out=out) == 0
    text = out.getvalue()
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:6]}
    assert sorted(rows) == sorted(h.ORDER)
    for service, (repo, _, _) in h.SERVICES.items():
        assert rows[service][1:4] == ["blue", f"{repo}:1.0.0", "1/1"]
    assert rows["veza-web"][4] == "20261202T100000Z-abcdef12"
    assert rows["veza-backend-api"][4] == "-"
    assert "lock: held by release/20261202T100000Z-abcdef12 (run run-123)" in text
    assert "expires in 14 min" in text or "expires in 15 min" in text
    assert f"last release: 1.2.0 rolled-back ({records[1].id}" in text

    out = io.StringIO()
    assert run_status_command(status_args(catalogue, json=True), out=out) == 0
    doc = json.loads(out.getvalue())
    assert doc["lock"]["holder"].startswith("release/") and doc["lock"]["expired"] is False
    assert doc["last_release"]["id"] == records[1].id
    assert {s["service"]: s["ready"] for s in doc["services"]} == dict.fromkeys(h.ORDER, 1)

    # --watch refreshes: the lock freed and a switch made show up without restarting it
    screen, stop = Screen(), threading.Event()
    watcher = threading.Thread(target=run_status_command,
                               args=(status_args(catalogue, watch=True),),
                               kwargs={"out": screen, "stop": stop})
    watcher.start()
    try:
        wait_until(lambda: "lock: held" in screen.text(), timeout=60, what="a first frame")
        k8s.CoordinationV1Api(core.api_client).delete_namespaced_lease(
            "veza-ops-release-lock", namespace)
        core.patch_namespaced_service("veza-web", namespace,
                                      {"spec": {"selector": {"color": "green"}}})
        wait_until(lambda: "lock: free" in screen.text(), timeout=60, what="a later frame")
        wait_until(lambda: "veza-web: Deployment veza-web-green missing" in screen.text(),
                   timeout=60, what="the switch in a frame")
    finally:
        stop.set()
        watcher.join(timeout=60)
    assert not watcher.is_alive()


def test_history_lists_the_newest_records_first(records_only, capsys):
    from veza_ops.cockpit import run_history_command

    namespace, catalogue, core = records_only
    records = write_records(core, namespace)
    args = argparse.Namespace(environment="production", catalogue=catalogue, count=10,
                              json=False)
    out = io.StringIO()
    assert run_history_command(args, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:4] == ["ID", "KIND", "VERSION", "OUTCOME"]
    assert [line.split()[0] for line in lines[1:]] == [records[1].id, records[0].id]
    assert "veza-web: p99 900 ms" in lines[1] and "cdcdcdcdcdcd" in lines[1]

    out = io.StringIO()
    args.count, args.json = 1, True
    assert run_history_command(args, out=out) == 0
    doc = json.loads(out.getvalue())
    assert [(r["id"], r["commit_sha"]) for r in doc] == [(records[1].id, "cd" * 20)]

    args.environment = "moon"
    assert run_history_command(args, out=io.StringIO()) == 2
    assert "environment" in capsys.readouterr().err


def test_version_is_the_installed_distributions(capsys):
    from veza_ops.cli import main, version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"veza-ops {version()}"
    assert version() == "0.1.0" or version().count(".") >= 2
