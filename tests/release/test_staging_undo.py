"""Staging undo under faults (issue 9, item 9): every service of the release back on its
previous version after ANY failure once staging changed, the undo retried, and the cause kept.

Faults on the Kubernetes API are the emulator's fault hooks (``/sandbox/faults``); bad images
come from the sandbox registry. Only the staging environment is released (its own catalogue,
strategy ``rolling``): production is not involved.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from errors import E2EError, RolloutError, TransientSystemError
from sandbox.procs import wait_until
from tests.release import helpers as h

pytestmark = pytest.mark.timeout(300)
FAILING_E2E = ["{python}", "-c", "raise SystemExit(3)"]


@pytest.fixture(scope="module")
def blocks(prefect_harness, sandbox_stack) -> str:
    return h.register_blocks(sandbox_stack)


@dataclass
class Staging:
    """A staging namespace of its own, released on its own (strategy ``rolling``)."""

    sandbox: Any
    namespace: str
    blocks: str
    tmp: Path
    apps: k8s.AppsV1Api
    core: k8s.CoreV1Api

    def catalogue(self, e2e_command: list[str] | None = None, **env: Any) -> str:
        path = self.tmp / "catalogue.yaml"
        h.write_catalogue(path, staging_ns=self.namespace, production_ns="unused",
                          blocks=self.blocks, e2e_command=e2e_command or ["{python}", "-c", ""])
        data = yaml.safe_load(path.read_text())
        del data["environments"]["production"]
        data["environments"]["staging"].update(env)
        path.write_text(yaml.safe_dump(data))
        return str(path)

    def release(self, catalogue: str, version: str, **kwargs: Any) -> Any:
        from flows.release import release

        return release(version=version, environment="staging", catalogue_path=catalogue,
                       skip_build=True, **kwargs)

    def faults(self, method: str, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return h.api_faults(self.apps, method, body)

    def image(self, service: str) -> str:
        dep = self.apps.read_namespaced_deployment(f"{service}-blue", self.namespace)
        return str(dep.spec.template.spec.containers[0].image)

    def images(self) -> dict[str, str]:
        return {service: self.image(service) for service in h.ORDER}

    def wait_rolled_out(self) -> None:
        from tasks.release.rollout import rollout_status

        for service in h.ORDER:
            wait_until(lambda s=service: rollout_status(self.apps.read_namespaced_deployment(
                f"{s}-blue", self.namespace)).done, timeout=60, what=f"{service} rolled out",
                interval=0.2)

    def record(self) -> Any:
        from tasks.release.history import last_release

        return last_release(self.core, self.namespace)


@pytest.fixture
def staging(sandbox_stack, sandbox_seed, blocks, tmp_path) -> Any:
    apps, core = h.apis(sandbox_stack)
    env = Staging(sandbox_stack, sandbox_seed()[0], blocks, tmp_path, apps, core)
    yield env
    env.faults("DELETE")


PREVIOUS = {s: f"{repo}:1.0.0" for s, (repo, _, _) in h.SERVICES.items()}


def undo_checks(record: Any) -> dict[str, Any]:
    return {c.name.removeprefix("staging undo "): c for c in record.checks
            if c.name.startswith("staging undo ")}


def test_third_service_failing_undoes_the_two_that_rolled_out(staging):
    """(a) The stream server (3 of 4) never becomes ready: the back end and chat server,
    which rolled out fine, go back to 1.0.0 too (so does the web)."""
    from sandbox.registry import Behaviour

    h.push_all(staging.sandbox, "6.1.0")
    staging.sandbox.registry.push("veza/stream-server:6.1.0", Behaviour(never_ready=True))
    with pytest.raises(RolloutError, match="veza-stream-server") as failure:
        staging.release(staging.catalogue(), "6.1.0")
    assert "staging undone" in str(failure.value)
    assert staging.images() == PREVIOUS
    staging.wait_rolled_out()
    record = staging.record()
    assert record.outcome == "failed"
    assert record.reason.startswith("rollout of deployment")
    checks = undo_checks(record)
    assert set(checks) == set(h.ORDER)
    assert all(c.passed for c in checks.values())
    assert "veza/backend-api:1.0.0" in checks["veza-backend-api"].detail


def test_an_api_error_while_polling_is_undone(staging):
    """(b) A 500 on reading the Deployment while its rollout is polled (more than the poll
    tolerates): the error is the cause, and the web is back on 1.0.0."""
    from sandbox.registry import Behaviour

    staging.sandbox.registry.push("veza/web:6.2.0", Behaviour(never_ready=True))
    catalogue = staging.catalogue(rollout_timeout_s=120)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            staging.release(catalogue, "6.2.0", services=["veza-web"])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: staging.image("veza-web") == "veza/web:6.2.0", timeout=120,
               what="the new image set", interval=0.1)
    staging.faults("POST", {"verb": "get", "resource": "deployments", "error_rate": 1.0,
                            "times": 8})
    thread.join(timeout=200)
    assert not thread.is_alive()
    staging.faults("DELETE")
    assert errors and isinstance(errors[0], TransientSystemError), errors
    assert "read deployment" in str(errors[0]) and "staging undone" in str(errors[0])
    assert staging.image("veza-web") == "veza/web:1.0.0"
    staging.wait_rolled_out()
    record = staging.record()
    assert record.outcome == "failed" and "sandbox fault" in record.reason
    assert undo_checks(record)["veza-web"].passed


def test_e2e_failure_puts_every_staging_service_back(staging):
    """(c) Every service rolls out, then E2E fails: staging is back on 1.0.0 everywhere."""
    h.push_all(staging.sandbox, "6.3.0")
    with pytest.raises(E2EError):
        staging.release(staging.catalogue(e2e_command=FAILING_E2E), "6.3.0")
    assert staging.images() == PREVIOUS
    staging.wait_rolled_out()
    record = staging.record()
    assert record.outcome == "failed" and record.reason.startswith("E2E against staging")
    assert any(c.name == "e2e staging" and not c.passed for c in record.checks)
    assert all(c.passed for c in undo_checks(record).values())
    assert set(undo_checks(record)) == set(h.ORDER)


def test_a_failing_undo_never_hides_the_cause(staging):
    """(d) The web never becomes ready, and every undo write fails (500) past the undo's
    deadline: the run reports the rollout failure, with the failed undo listed beside it."""
    from sandbox.registry import Behaviour

    staging.sandbox.registry.push("veza/web:6.4.0", Behaviour(never_ready=True))
    catalogue = staging.catalogue(rollout_timeout_s=8, undo_deadline_s=3)
    staging.faults("POST", {"verb": "update", "resource": "deployments", "error_rate": 1.0})
    with pytest.raises(RolloutError, match=r"veza-web-blue.*not ready") as failure:
        staging.release(catalogue, "6.4.0", services=["veza-web"])
    message = str(failure.value)
    assert "staging undo FAILED" in message and "veza-web" in message
    assert staging.faults("GET")[0]["hits"] >= 2  # the undo was retried
    staging.faults("DELETE")
    assert staging.image("veza-web") == "veza/web:6.4.0"  # left, and said so
    record = staging.record()
    assert record.outcome == "failed"
    assert record.reason.startswith("rollout of deployment")
    assert "staging undo FAILED" in record.reason
    check = undo_checks(record)["veza-web"]
    assert not check.passed and "sandbox fault" in check.detail
