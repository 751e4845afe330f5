"""The fault matrix on the Kubernetes API: a 5xx, then a timeout, at each step of a release.

A production release (no staging) of two services: the backend's new colour is cloned (no
idle colour), the chat server's idle colour (left at 0 by a release before) is scaled back up
with the new image, so one release goes through every step. Each step's first request of its
kind fails once (``times: 1``, through the emulator's fault hooks), all in the same release
(a release per step and fault cost minutes; each fault is counted): a 503, or a hang three
times the client's request timeout (the request is then never carried out). One namespace
for the module: the timeout case releases onto what the 5xx case left, asserted consistent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from sandbox.procs import wait_until
from tests.fixtures.sandbox import seeder
from tests.release import helpers as h
from tests.release.test_crash_recovery import seed_record

pytestmark = pytest.mark.timeout(300)
CLONED, SCALED = "veza-backend-api", "veza-chat-server"
RELEASED = [CLONED, SCALED]
CLIENT_TIMEOUT_S = 4
PENDING = "veza-ops.veza.io/pending-release"


# step -> the first request of its kind in it: verb, resource, requests let through before
STEPS = {
    "lock": ("create", "leases", 0),  # the release lock taken
    "secrets": ("create", "secrets", 0),  # prepare: Vault data into an immutable Secret
    "clone": ("create", "deployments", 0),  # prepare: the backend's new colour cloned
    "scale-up": ("update", "deployments", 0),  # prepare: the chat server's idle colour
    "switch": ("patch", "services", 0),  # the backend's switch
    "verification-read": ("get", "endpoints", 0),  # ready endpoints, each interval
    # the commit point: the record naming the new colours live, the run's third record write
    # (after "running" and after prepare)
    "commit": ("update", "configmaps", 2),
    "scale-down": ("patch", "deployments", 0),  # the old colour, after the commit
    "lease-renew": ("update", "leases", 0),
}
FAULTS = {
    "5xx": {"error_rate": 1.0, "status": 503},
    "timeout": {"error_rate": 1.0, "hang_ms": 3 * CLIENT_TIMEOUT_S * 1000},
}


@dataclass
class Prod:
    """The module's production namespace and how the tests look at it."""

    sandbox: Any
    namespace: str
    catalogue: Path
    apps: k8s.AppsV1Api
    core: k8s.CoreV1Api

    def release(self, version: str, services: list[str] = RELEASED) -> Any:
        from flows.release import release

        return release(version=version, environment="production",
                       catalogue_path=str(self.catalogue), skip_build=True, services=services)

    def faults(self, method: str, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return h.api_faults(self.apps, method, body)

    def serving(self) -> dict[str, tuple[str, str]]:
        """Service -> (colour, image tag) it serves; each one on ready pods, no pending mark."""
        out = {}
        for name in h.ORDER:
            svc = self.core.read_namespaced_service(name, self.namespace)
            assert PENDING not in (svc.metadata.annotations or {}), name
            colour = svc.spec.selector["color"]
            dep = self.apps.read_namespaced_deployment(f"{name}-{colour}", self.namespace)
            assert dep.spec.replicas >= 1, name
            assert (dep.status.ready_replicas or 0) == dep.spec.replicas, name
            out[name] = (colour, dep.spec.template.spec.containers[0].image.rsplit(":", 1)[1])
        return out

    def idle_colour(self, service: str, *, present: bool) -> None:
        """Make a service's idle colour's Deployment exist (at 0 replicas) or not."""
        from tasks.release.cloning import clone_for_colour

        live = self.serving()[service][0]
        idle = "green" if live == "blue" else "blue"
        name = f"{service}-{idle}"
        exists = name in {d.metadata.name for d in
                          self.apps.list_namespaced_deployment(self.namespace).items}
        if exists and not present:
            self.apps.delete_namespaced_deployment(name, self.namespace)
            wait_until(lambda: name not in {d.metadata.name for d in self.apps
                                            .list_namespaced_deployment(self.namespace).items},
                       timeout=30, what=f"{name} deleted", interval=0.2)
        elif present and not exists:
            body = self.apps.api_client.sanitize_for_serialization(
                self.apps.read_namespaced_deployment(f"{service}-{live}", self.namespace))
            container = body["spec"]["template"]["spec"]["containers"][0]
            clone = clone_for_colour(body, name=name, colour=idle, container=container["name"],
                                     image=container["image"], secret_prefix=f"{service}-",
                                     secret_name=None)
            clone["spec"]["replicas"] = 0
            self.apps.create_namespaced_deployment(self.namespace, clone)

    def record(self) -> Any:
        from tasks.release.history import last_release

        return last_release(self.core, self.namespace, kind="release")


@pytest.fixture(scope="module")
def prod(prefect_harness, sandbox_stack, tmp_path_factory) -> Any:
    seed, clean = seeder(sandbox_stack)
    try:
        namespace = seed(staging=False)[1]
        apps, core = h.apis(sandbox_stack)
        blocks = h.register_blocks(sandbox_stack, request_timeout_s=CLIENT_TIMEOUT_S)
        # a lease renewed every 3 s: every release renews it at least once
        catalogue = h.write_catalogue(
            tmp_path_factory.mktemp("matrix") / "catalogue.yaml", staging_ns="unused",
            staging=False, production_ns=namespace, blocks=blocks, intervals=1, lock_ttl_s=9)
        seed_record(core, namespace, "1.0.0", "0.9.0")  # the history exists: writes count
        yield Prod(sandbox_stack, namespace, catalogue, apps, core)
    finally:
        h.api_faults(h.apis(sandbox_stack)[0], "DELETE")
        clean()


@pytest.mark.parametrize("fault", list(FAULTS))
def test_one_api_fault_at_each_step_leaves_one_version_on_ready_pods(prod, fault):
    """Whatever the outcome, every Service selects ready pods of one version, without pending
    marks, and the record says which one; a failed release would converge on one rerun. One
    5xx or timeout at each step does not fail the release: each step retries its writes (the
    switch in its body, the others through Prefect; urllib3 retries the idempotent GET and
    PUT of a timeout itself)."""
    version = f"7.{list(FAULTS).index(fault)}.0"
    h.push_all(prod.sandbox, version)
    prod.idle_colour(CLONED, present=False)
    prod.idle_colour(SCALED, present=True)
    before = prod.serving()
    for verb, resource, skip in STEPS.values():
        prod.faults("POST", {"verb": verb, "resource": resource, "skip": skip, "times": 1,
                             **FAULTS[fault]})
    error: Exception | None = None
    try:
        prod.release(version)
    except Exception as exc:  # judged below, after the state and the record
        error = exc
    hits = {step: rule["hits"] for step, rule in zip(STEPS, prod.faults("GET"), strict=True)}
    prod.faults("DELETE")
    assert hits == dict.fromkeys(STEPS, 1), "a fault never hit its step"

    after, record = prod.serving(), prod.record()
    assert record.version == version
    assert {n: after[n] for n in h.ORDER if n not in RELEASED} == {
        n: before[n] for n in h.ORDER if n not in RELEASED}
    if record.outcome == "succeeded":
        assert {after[n][1] for n in RELEASED} == {version}
        assert record.colours == {n: after[n][0] for n in RELEASED}
    else:  # not released: still the versions before, and a rerun converges
        assert {n: after[n] for n in RELEASED} == {n: before[n] for n in RELEASED}
        prod.release(version)
        assert {prod.serving()[n][1] for n in RELEASED} == {version}
        assert prod.record().outcome == "succeeded"
    assert error is None and record.outcome == "succeeded", (record.outcome, record.reason)


# The commit point is one write, the record naming every new colour live (then the Services'
# pending marks are cleared): what decides whether a failure there is a rollback.
RECORD_TRIES = 4  # the record task's first try and its 3 retries
COMMIT_FAULTS = {
    # the commit point's record write fails every try (the final record write then passes)
    "record-write-fails": {"verb": "update", "resource": "configmaps", "skip": 2},
    # the marks cleared after it: every try of the first Service patch after the switch
    "marks-not-cleared": {"verb": "patch", "resource": "services", "skip": 1},
}


@pytest.mark.parametrize("case", list(COMMIT_FAULTS))
def test_the_commit_point_decides_rollback_or_success(prod, case):
    """The record cannot be written: nothing was committed, the release is rolled back (its
    Service back on the old colour). Written, then the marks cannot be cleared: committed, a
    success with a warning; the marks left behind name a committed release, so reconcile
    keeps the Service where it is (commit completed)."""
    from errors import TransientSystemError
    from tasks.release.catalogue import load_catalogue
    from tasks.release.reconcile import reconcile_environment

    version = f"7.{10 + list(COMMIT_FAULTS).index(case)}.0"
    h.push_all(prod.sandbox, version)
    before = prod.serving()[CLONED]
    prod.faults("POST", {**COMMIT_FAULTS[case], "error_rate": 1.0, "times": RECORD_TRIES})
    try:
        if case == "record-write-fails":
            with pytest.raises(TransientSystemError, match="ConfigMap"):
                prod.release(version, [CLONED])
        else:
            summary = prod.release(version, [CLONED])
        assert prod.faults("GET")[0]["hits"] == RECORD_TRIES
    finally:
        prod.faults("DELETE")
    record = prod.record()
    if case == "record-write-fails":
        assert prod.serving()[CLONED] == before
        assert record.outcome == "rolled-back" and record.colours == {}
        return
    assert summary.outcome == "succeeded" and record.outcome == "succeeded"
    assert any("pending marks" in w for w in summary.warnings)
    svc = prod.core.read_namespaced_service(CLONED, prod.namespace)
    assert svc.metadata.annotations[PENDING] == record.id  # left behind
    catalogue = load_catalogue(str(prod.catalogue))
    done, _ = reconcile_environment(prod.apps, prod.core, catalogue.environment("production"),
                                    catalogue.select())
    assert done == [f"{CLONED}: release {record.id} had committed; its switch to "
                    f"{record.colours[CLONED]} is kept (commit completed)"]
    assert prod.serving()[CLONED] == (record.colours[CLONED], version)
