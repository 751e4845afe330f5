"""A canary release SIGKILLed mid-step, then run again: the cluster's state is the truth."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from tests.release import helpers as h
from tests.release.test_canary import TWO, canary_catalogue, canary_replicas, narrowed, weights

pytestmark = pytest.mark.timeout(480)


def test_sigkill_at_the_second_step_then_one_rerun_is_consistent(
        prefect_harness, sandbox_stack, sandbox_seed, tmp_path):
    """Killed once every weight is at 25 % (step 2: the canaries take traffic, the Services
    select both tracks). The state left is what the dead run wrote; one rerun (once Prefect
    knows the run crashed, as the zombie automation does) reconciles it first (weights to 0 %,
    Services narrowed, canaries down), then releases again to 100 %: every weight back at 0 %,
    the canaries at 0 replicas, the stable tracks on the version, the Lease given back, the
    killed run's record crashed and uncommitted."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    from flows.release import release
    from tasks.release.canary_service import STABLE_ANNOTATION
    from tasks.release.history import release_history
    from tasks.release.leases import LEASE_NAME

    production = sandbox_seed(rate=20.0, staging=False)[1]
    apps, core = h.apis(sandbox_stack)
    custom = k8s.CustomObjectsApi(apps.api_client)
    coordination = k8s.CoordinationV1Api(core.api_client)
    blocks = h.register_blocks(sandbox_stack)
    catalogue = canary_catalogue(tmp_path / "c.yaml", "", production, blocks,
                                 canary_steps=[5, 25, 100], lock_ttl_s=900)
    h.push_all(sandbox_stack, "4.7.0")

    def at_25() -> bool:
        try:
            return weights(custom, production) == {s: 25 for s in TWO}
        except k8s.ApiException:
            return False  # no VirtualService yet

    h.release_killed_when(at_25, what="every weight at 25 %", catalogue=catalogue,
                          version="4.7.0", workdir=tmp_path, services=TWO)

    # What the dead run left: traffic on the canaries, both tracks selected, its Lease.
    assert weights(custom, production) == {s: 25 for s in TWO}
    assert canary_replicas(apps, production) == {s: 1 for s in TWO}
    assert all(STABLE_ANNOTATION in (core.read_namespaced_service(s, production).metadata
                                     .annotations or {}) for s in TWO)
    coordination.read_namespaced_lease(LEASE_NAME, production)
    killed = next(r for r in release_history(core, production) if r.version == "4.7.0")
    assert killed.outcome == "running"
    with get_client(sync_client=True) as client:  # what the zombie automation does
        client.set_flow_run_state(killed.flow_run_id, Crashed(message="no heartbeat"),
                                  force=True)

    summary = release(version="4.7.0", environment="production", catalogue_path=catalogue,
                      services=TWO, skip_build=True)

    assert summary.outcome == "succeeded", summary.reason
    assert any("set to 0 %" in line for line in summary.reconciled), summary.reconciled
    assert weights(custom, production) == {s: 0 for s in TWO}
    assert canary_replicas(apps, production) == {s: 0 for s in TWO}
    assert narrowed(core, production) == {s: {"app": s, "color": "blue"} for s in TWO}
    assert {s: h.images(apps, production, "blue")[s][0] for s in TWO} == {
        "veza-backend-api": "veza/backend-api:4.7.0", "veza-web": "veza/web:4.7.0"}
    with pytest.raises(k8s.ApiException) as gone:
        coordination.read_namespaced_lease(LEASE_NAME, production)
    assert gone.value.status == 404
    history = release_history(core, production)
    dead = next(r for r in history if r.id == killed.id)
    assert dead.outcome == "crashed" and dead.colours == {}  # it never committed
    assert (history[-1].version, history[-1].outcome) == ("4.7.0", "succeeded")
