"""The keep-old-colour window on the sandbox: preempted by a rollback, watched for regressions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config

from errors import VerificationError
from sandbox.procs import wait_until
from tasks.release.history import last_release, release_history
from tasks.release.leases import LEASE_NAME
from tasks.release.preemption import KEEP_WINDOW, PHASE_ANNOTATION
from tests.release import helpers as h

TWO = ["veza-backend-api", "veza-web"]  # "all services together" needs two, not four



@pytest.fixture
def sandbox_namespaces(sandbox_seed) -> tuple[str, str]:
    """Production alone (``("", production)``): these releases are about production, so
    they skip staging and E2E (the catalogue then has no staging environment)."""
    return sandbox_seed(staging=False)

@pytest.fixture(scope="module")
def blocks(prefect_harness, sandbox_stack) -> str:
    return h.register_blocks(sandbox_stack)


def keep_window_entered(sandbox, namespace: str) -> Callable[[], bool]:
    api = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    coordination = k8s.CoordinationV1Api(api)

    def entered() -> bool:
        try:
            lease = coordination.read_namespaced_lease(LEASE_NAME, namespace)
        except k8s.ApiException:
            return False
        return (lease.metadata.annotations or {}).get(PHASE_ANNOTATION) == KEEP_WINDOW

    return entered


def release_in_thread(catalogue: str, version: str) -> tuple[Any, list[Any]]:
    from flows.release import release

    return h.in_thread(lambda: release(version=version, environment="production",
                                     catalogue_path=catalogue, services=TWO, skip_build=True))


def test_a_rollback_preempts_the_keep_window(sandbox_stack, sandbox_namespaces, blocks,
                                             tmp_path):
    from flows.rollback import rollback

    staging, production = sandbox_namespaces
    _, core = h.apis(sandbox_stack)
    catalogue = str(h.write_catalogue(tmp_path / "c.yaml", staging_ns=staging,
                                      production_ns=production, blocks=blocks,
                                      e2e_command=["{python}", "-c", "pass"],
                                      keep_old_colour_s=600.0, lock_ttl_s=900))
    h.push_all(sandbox_stack, "8.1.0")
    thread, out = release_in_thread(catalogue, "8.1.0")
    wait_until(keep_window_entered(sandbox_stack, production), timeout=180,
               what="the release's keep-old-colour window", interval=0.2)
    assert {s: c for s, c in h.selectors(core, production).items() if s in TWO} == {
        s: "green" for s in TWO}

    # The release holds the lock (ttl 900 s, no wait): the rollback preempts it instead.
    summary = rollback(environment="production", catalogue_path=catalogue)
    thread.join(timeout=60)
    assert not thread.is_alive(), "the release did not stop its window"
    (released,) = out
    assert not isinstance(released, BaseException), released
    assert released.outcome == "succeeded"  # it was committed; the rollback is its own record
    assert all(s.colour == "blue" for s in summary.services.values())
    assert h.selectors(core, production) == {s: "blue" for s in h.ORDER}
    # The old colour was left running for the rollback: an instant switch, no redeploy.
    assert {o.service: o.switched for o in summary.services.values()} == {s: True for s in TWO}
    records = {r.kind: r for r in release_history(core, production)}
    assert records["rollback"].outcome == "succeeded"
    assert any(c.name == "preempted" and "release/" in c.detail
               for c in records["rollback"].checks)
    assert records["release"].outcome == "succeeded"
    assert any(c.name == "keep-old-colour window" and "preempted by rollback/" in c.detail
               for c in records["release"].checks)


def test_a_regression_in_the_keep_window_rolls_every_service_back(
        sandbox_stack, sandbox_namespaces, blocks, tmp_path):
    staging, production = sandbox_namespaces
    apps, core = h.apis(sandbox_stack)
    catalogue = str(h.write_catalogue(tmp_path / "c.yaml", staging_ns=staging,
                                      production_ns=production, blocks=blocks,
                                      e2e_command=["{python}", "-c", "pass"],
                                      keep_old_colour_s=600.0))
    h.push_all(sandbox_stack, "8.2.0")
    thread, out = release_in_thread(catalogue, "8.2.0")
    wait_until(keep_window_entered(sandbox_stack, production), timeout=180,
               what="the release's keep-old-colour window", interval=0.2)
    # The last service's new pods die after the commit.
    apps.patch_namespaced_deployment_scale("veza-web-green", production,
                                           {"spec": {"replicas": 0}})
    thread.join(timeout=120)
    assert not thread.is_alive()
    (failed,) = out
    assert isinstance(failed, VerificationError), failed
    assert "post-promotion watch: veza-web (green): no ready endpoint" in str(failed)
    # Every service back on its old colour together, the first one too; blue still up.
    assert h.selectors(core, production) == {s: "blue" for s in h.ORDER}
    assert all(n == 1 for _, n in h.images(apps, production, "blue").values())
    record = last_release(core, production)
    assert record is not None and record.outcome == "rolled-back"
    assert "post-promotion watch" in (record.reason or "")
