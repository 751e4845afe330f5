"""Switching and rollback under API faults (the emulator's fault hooks): what is left serving."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from errors import ReleaseError, RolloutError, TransientSystemError, VerificationError
from sandbox.procs import wait_until
from tests.release import helpers as h

pytestmark = pytest.mark.timeout(300)
PENDING = "veza-ops.veza.io/pending-release"


@pytest.fixture(scope="module")
def blocks(prefect_harness, sandbox_stack) -> str:
    return h.register_blocks(sandbox_stack)


@dataclass
class Prod:
    """A production namespace of its own (no staging: only the blue-green half runs)."""

    sandbox: Any
    namespace: str
    blocks: str
    tmp: Path
    apps: k8s.AppsV1Api
    core: k8s.CoreV1Api

    def catalogue(self, **env: Any) -> str:
        path = self.tmp / "catalogue.yaml"
        h.write_catalogue(path, staging_ns="unused", production_ns=self.namespace,
                          blocks=self.blocks, interval_s=1.0, intervals=2)
        data = yaml.safe_load(path.read_text())
        del data["environments"]["staging"]
        production = data["environments"]["production"]
        del production["staging_environment"]
        production.update(env)
        path.write_text(yaml.safe_dump(data))
        return str(path)

    def release(self, catalogue: str, version: str, **kwargs: Any) -> Any:
        from flows.release import release

        return release(version=version, environment="production", catalogue_path=catalogue,
                       skip_build=True, **kwargs)

    def faults(self, method: str, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return h.api_faults(self.apps, method, body)

    def replicas(self, deployment: str) -> tuple[int, int]:
        dep = self.apps.read_namespaced_deployment(deployment, self.namespace)
        return dep.spec.replicas, dep.status.ready_replicas or 0

    def selects(self, service: str) -> str:
        svc = self.core.read_namespaced_service(service, self.namespace)
        assert PENDING not in (svc.metadata.annotations or {})
        return str(svc.spec.selector["color"])

    def record(self) -> Any:
        from tasks.release.history import last_release

        return last_release(self.core, self.namespace)


@pytest.fixture
def prod(sandbox_stack, sandbox_seed, blocks, tmp_path) -> Any:
    apps, core = h.apis(sandbox_stack)
    env = Prod(sandbox_stack, sandbox_seed(staging=False)[1], blocks, tmp_path, apps, core)
    yield env
    env.faults("DELETE")


def push(prod: Prod, version: str, **bad: Any) -> None:
    """Every image of a version healthy, the backend's with ``bad`` behaviour (a p99 of
    900 ms passes the smoke test and fails the verification)."""
    from sandbox.registry import Behaviour

    h.push_all(prod.sandbox, version)
    prod.sandbox.registry.push(f"veza/backend-api:{version}", Behaviour(**bad))


BACKEND = ["veza-backend-api"]
SERVICES_PATCH = {"verb": "patch", "resource": "services", "error_rate": 1.0, "status": 500}


def test_switch_back_retried_until_the_fault_is_lifted(prod):
    """Item 1: PATCH of Services fails right after the switch, then is lifted: all back."""
    push(prod, "5.1.0", latency_ms=900)
    catalogue = prod.catalogue(switch_back_deadline_s=120)
    prod.faults("POST", {**SERVICES_PATCH, "skip": 1})  # the switch passes, nothing after
    errors: list[BaseException] = []

    def run() -> None:
        try:
            prod.release(catalogue, "5.1.0", services=BACKEND)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    # The hook's three tries failed, and the switch-back is retrying: lift the fault.
    wait_until(lambda: prod.faults("GET")[0]["hits"] >= 5, timeout=120,
               what="switch-back failing", interval=0.2)
    prod.faults("DELETE")
    thread.join(timeout=180)
    assert not thread.is_alive()
    assert errors and isinstance(errors[0], VerificationError)
    assert prod.selects("veza-backend-api") == "blue"
    assert prod.replicas("veza-backend-api-green")[0] == 0
    record = prod.record()
    assert record.outcome == "rolled-back"
    assert any(c.name == "rollback" and c.passed and "1 service(s) back" in c.detail
               for c in record.checks)


def test_switch_back_past_its_deadline_is_rollback_incomplete(prod):
    """Item 1: the fault persists past a short deadline: the new colour keeps serving."""
    from tasks.release.outcomes import record_outcome

    push(prod, "5.2.0", latency_ms=900)
    catalogue = prod.catalogue(switch_back_deadline_s=3)
    prod.faults("POST", {**SERVICES_PATCH, "skip": 1})
    with pytest.raises(ReleaseError, match="rollback incomplete") as failure:
        prod.release(catalogue, "5.2.0", services=BACKEND)
    assert "Service veza-backend-api still selects green" in str(failure.value)
    prod.faults("DELETE")
    svc = prod.core.read_namespaced_service("veza-backend-api", prod.namespace)
    assert svc.spec.selector["color"] == "green"
    assert prod.replicas("veza-backend-api-green") == (1, 1)  # never scaled under a Service
    record = prod.record()
    assert record.outcome == record_outcome("rollback-incomplete")
    assert "ROLLBACK INCOMPLETE" in record.reason and "veza-backend-api" in record.reason
    assert any(c.name == "rollback" and not c.passed and "veza-backend-api" in c.detail
               for c in record.checks)
    assert record.colours.get("veza-backend-api") != "blue"


def test_a_lost_switch_answer_is_still_switched_back(prod):
    """Item 2: the switch applies but its answer is lost once; the retry must not record
    green -> green: the failed verification puts the Service back on blue."""
    push(prod, "5.3.0", latency_ms=900)
    prod.faults("POST", {**SERVICES_PATCH, "after_apply": True, "times": 1})
    with pytest.raises(VerificationError):
        prod.release(prod.catalogue(), "5.3.0", services=BACKEND)
    assert prod.selects("veza-backend-api") == "blue"
    assert prod.replicas("veza-backend-api-green")[0] == 0
    assert prod.record().outcome == "rolled-back"


def test_a_switch_whose_every_answer_is_lost_counts_as_applied(prod):
    """Item 2: every try applies then fails: the switch raised, yet it is reverted."""
    push(prod, "5.4.0")
    prod.faults("POST", {**SERVICES_PATCH, "after_apply": True})
    with pytest.raises(TransientSystemError, match="switch service"):
        prod.release(prod.catalogue(), "5.4.0", services=BACKEND)
    prod.faults("DELETE")
    assert prod.selects("veza-backend-api") == "blue"
    assert prod.replicas("veza-backend-api-blue") == (1, 1)
    assert prod.replicas("veza-backend-api-green")[0] == 0
    assert prod.record().outcome == "rolled-back"


def test_scale_down_failing_after_the_commit_is_a_success_with_a_warning(prod):
    """Item 3: once committed, a failed scale-down of the old colour is a warning."""
    push(prod, "5.5.0")
    prod.faults("POST", {"verb": "patch", "resource": "deployments", "error_rate": 1.0})
    summary = prod.release(prod.catalogue(), "5.5.0", services=BACKEND)
    prod.faults("DELETE")
    assert summary.outcome == "succeeded"
    assert any("old colour not scaled down" in w for w in summary.warnings)
    assert prod.selects("veza-backend-api") == "green"
    assert prod.replicas("veza-backend-api-blue") == (1, 1)
    record = prod.record()
    assert record.outcome == "succeeded" and "with warnings" in (record.reason or "")
    assert any(c.name == "warning" and "veza-backend-api-blue" in c.detail
               for c in record.checks)


def test_a_prepare_failure_scales_every_new_colour_down_its_own_too(prod):
    """Item 5: the web's image never becomes ready: every green ends at 0, blue serves."""
    from sandbox.registry import Behaviour

    h.push_all(prod.sandbox, "5.6.0")
    prod.sandbox.registry.push("veza/web:5.6.0", Behaviour(never_ready=True))
    with pytest.raises(RolloutError):
        prod.release(prod.catalogue(rollout_timeout_s=8), "5.6.0")
    for service in h.ORDER:
        assert prod.selects(service) == "blue"
        assert prod.replicas(f"{service}-green")[0] == 0, service
        assert prod.replicas(f"{service}-blue") == (1, 1), service
    assert prod.record().outcome == "failed"


def test_reconcile_covers_every_service_of_the_catalogue(prod):
    """Item 4: a crashed release left the chat server on an uncommitted green; a release of
    the backend alone puts it back (reconcile looks at every service, not the run's)."""
    from tasks.release.switching import switch_selector

    switch_selector(prod.core, service="veza-chat-server", service_name="veza-chat-server",
                    namespace=prod.namespace, colour="green", pending_release="crashed-run",
                    from_colour="blue")
    push(prod, "5.7.0")
    summary = prod.release(prod.catalogue(), "5.7.0", services=BACKEND)
    assert summary.outcome == "succeeded"
    assert any(line.startswith("veza-chat-server:") and "never committed" in line
               for line in summary.reconciled)
    assert prod.selects("veza-chat-server") == "blue"
    assert prod.selects("veza-backend-api") == "green"
