"""Locks under faults: a finished holder's lock taken at once; renewals failing lose the lock."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client

from errors import LockHeldError
from tasks.release.leases import LEASE_NAME, RUN_ANNOTATION
from tasks.release.locking import acquire_release_lock, keep_lock, release_lock
from tests.release import helpers as h


@pytest.fixture
def sandbox_namespaces(sandbox_seed) -> tuple[str, str]:
    """Production alone (``("", production)``): these releases are about production, so
    they skip staging and E2E (the catalogue then has no staging environment)."""
    return sandbox_seed(staging=False)


@pytest.fixture()
def coordination(k8s_api_client) -> client.CoordinationV1Api:
    return client.CoordinationV1Api(k8s_api_client)


@pytest.mark.parametrize("state", ["CRASHED", "FAILED", "CANCELLED", "COMPLETED", None])
def test_a_finished_holders_lock_is_taken_at_once(coordination, k8s_namespace, state):
    acquire_release_lock(coordination, k8s_namespace, "release/killed", 900, run_id="run-1")
    stored = coordination.read_namespaced_lease(LEASE_NAME, k8s_namespace)
    assert stored.metadata.annotations[RUN_ANNOTATION] == "run-1"
    asked: list[str] = []

    def holder_state(run_id: str) -> str | None:
        asked.append(run_id)
        return state

    lock = acquire_release_lock(coordination, k8s_namespace, "rollback/next", 900,
                                run_id="run-2", holder_state=holder_state)
    assert asked == ["run-1"] and lock.holder == "rollback/next"
    assert lock.took_over is not None and "release/killed" in lock.took_over
    assert ("gone" if state is None else state) in lock.took_over
    stored = coordination.read_namespaced_lease(LEASE_NAME, k8s_namespace)
    assert stored.spec.holder_identity == "rollback/next"
    assert stored.metadata.annotations[RUN_ANNOTATION] == "run-2"
    release_lock(lock)


@pytest.mark.parametrize("state", ["RUNNING", "PENDING", "UNKNOWN"])
def test_a_live_holder_keeps_its_lock(coordination, k8s_namespace, state):
    first = acquire_release_lock(coordination, k8s_namespace, "release/alive", 900,
                                 run_id="run-1")
    with pytest.raises(LockHeldError, match="release/alive"):
        acquire_release_lock(coordination, k8s_namespace, "release/next", 900,
                             run_id="run-2", holder_state=lambda _: state)
    release_lock(first)


def test_renewals_failing_for_a_third_of_the_ttl_lose_the_lock(coordination, k8s_namespace,
                                                               k8s_server):
    import httpx

    from sandbox.procs import wait_until

    headers = {"Authorization": f"Bearer {k8s_server.token}"}
    lock = acquire_release_lock(coordination, k8s_namespace, "release/r", 6)
    with keep_lock(lock, every_s=0.5) as lost:
        for verb in ("update", "patch"):
            httpx.post(f"{k8s_server.url}/sandbox/faults", headers=headers, json={
                "verb": verb, "resource": "leases", "error_rate": 1.0}).raise_for_status()
        try:
            wait_until(lost.is_set, timeout=60, what="the lock given up as lost", interval=0.1)
        finally:
            httpx.delete(f"{k8s_server.url}/sandbox/faults", headers=headers).raise_for_status()
    release_lock(lock)


@pytest.mark.timeout(420)
def test_lease_updates_failing_during_verification_roll_the_release_back(
        prefect_harness, sandbox_stack, sandbox_namespaces, tmp_path):
    from flows.release import release
    from sandbox.procs import wait_until
    from tasks.release.history import last_release

    staging, production = sandbox_namespaces
    apps, core = h.apis(sandbox_stack)
    blocks = h.register_blocks(sandbox_stack)
    # Long verifications (8 x 1 s per service): the renewals fail for longer than ttl/3
    # while the first service is verified.
    catalogue = h.write_catalogue(tmp_path / "c.yaml", staging_ns=staging,
                                  production_ns=production, blocks=blocks,
                                  e2e_command=["{python}", "-c", "pass"], intervals=8,
                                  keep_old_colour_s=0, lock_ttl_s=6, lock_wait_s=0)
    h.push_all(sandbox_stack, "4.1.0")
    injected = threading.Event()

    def break_renewals_at_first_switch() -> None:
        wait_until(lambda: h.selected(core, production, "veza-backend-api") == "green",
                   timeout=300, what="the first switch", interval=0.2)
        for verb in ("update", "patch"):
            sandbox_stack.set_api_faults(verb=verb, resource="leases", error_rate=1.0)
        injected.set()

    watcher = threading.Thread(target=break_renewals_at_first_switch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(LockHeldError, match="lock was lost"):
            release(version="4.1.0", environment="production", catalogue_path=str(catalogue),
                    skip_build=True)
    finally:
        watcher.join(timeout=330)
        sandbox_stack.clear_api_faults()
    assert injected.is_set()
    record = last_release(core, production)
    assert record is not None and record.outcome == "rolled-back"
    assert "lock was lost" in (record.reason or "")
    assert h.selectors(core, production) == {s: "blue" for s in h.ORDER}
    assert {n: i for n, (i, _) in h.images(apps, production, "blue").items()} == {
        n: f"{repo}:1.0.0" for n, (repo, _, _) in h.SERVICES.items()}
