"""The release flow end to end on the sandbox: promotion, automatic rollback, safety gates."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s

from errors import (
    InvalidInputError,
    LockHeldError,
    PreflightError,
    RolloutError,
    SmokeTestError,
    VerificationError,
)
from sandbox.procs import wait_until
from tests.events import read_events, related
from tests.release import helpers as h

pytestmark = pytest.mark.timeout(420)
TRIVIAL_E2E = ["{python}", "-c", "pass"]


@dataclass
class Env:
    sandbox: Any
    staging: str
    production: str
    blocks: str
    tmp: Path
    apps: k8s.AppsV1Api
    core: k8s.CoreV1Api

    def catalogue(self, **kwargs: Any) -> str:
        path = self.tmp / "catalogue.yaml"
        h.write_catalogue(path, staging_ns=self.staging, production_ns=self.production,
                          blocks=self.blocks, **kwargs)
        return str(path)

    def url(self, namespace: str, service: str) -> str:
        svc = self.core.read_namespaced_service(service, namespace)
        return str(svc.metadata.annotations["sandbox.veza.io/url"])  # type: ignore[union-attr,index]


@pytest.fixture(scope="module")
def blocks(prefect_harness, sandbox_stack) -> str:
    return h.register_blocks(sandbox_stack)


def make_env(sandbox: Any, pair: tuple[str, str], blocks: str, tmp: Path) -> Env:
    apps, core = h.apis(sandbox)
    return Env(sandbox, pair[0], pair[1], blocks, tmp, apps, core)


@pytest.fixture
def env(sandbox_stack, sandbox_namespaces, blocks, tmp_path) -> Env:
    """A fresh pair, one replica per Deployment: the release changes it."""
    return make_env(sandbox_stack, sandbox_namespaces, blocks, tmp_path)


@pytest.fixture
def shared_env(sandbox_stack, sandbox_shared_namespaces, blocks, tmp_path) -> Env:
    """The session's shared pair: only for runs that change nothing."""
    return make_env(sandbox_stack, sandbox_shared_namespaces, blocks, tmp_path)


@pytest.fixture(scope="class")
def rolled_back_env(sandbox_stack, blocks, tmp_path_factory) -> Iterator[Env]:
    """One production namespace for the releases that are rolled back: each leaves it as it
    found it (blue serving 1.0.0, which each asserts), so they share it; deleted after them.
    No staging: what they test happens in production (their catalogue has no staging)."""
    from tests.fixtures.sandbox import seeder

    seed, clean = seeder(sandbox_stack)
    try:
        yield make_env(sandbox_stack, seed(staging=False), blocks,
                       tmp_path_factory.mktemp("rolled-back"))
    finally:
        clean()


@pytest.fixture
def no_cluster(monkeypatch) -> None:
    """Any attempt to reach a system fails the test: the input must be refused before."""
    import flows.release

    def connect(*_: Any) -> Any:
        raise AssertionError("the flow connected to an environment")

    monkeypatch.setattr(flows.release, "connect", connect)


def run_release(catalogue: str, version: str, **kwargs: Any) -> Any:
    from flows.release import release

    return release(version=version, environment="production", catalogue_path=catalogue,
                   **kwargs)


def served_image(url: str, path: str = "/api/v1/tracks") -> str:
    return str(httpx.get(url + path, timeout=5).json()["image"])


def api_logs() -> str:
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        while batch := client.read_logs(limit=200, offset=len(messages)):
            messages += [log.message for log in batch]
    return "\n".join(messages)


def test_good_release_promoted_end_to_end(sandbox_stack, sandbox_seed, blocks, tmp_path,
                                          monkeypatch, capfd):
    """Priority 1 (+10, secrets never in logs): build, staging, E2E, blue-green, commit.

    Two replicas per Deployment: the new colour must copy the live colour's scale.
    """
    from sandbox.registry import REGISTRY_ENV
    from tasks.release.history import last_release

    env = make_env(sandbox_stack, sandbox_seed(replicas=2), blocks, tmp_path)

    monkeypatch.setenv(REGISTRY_ENV, str(env.sandbox.registry.path))
    build = {"push": ["{python}", "-m", "sandbox.registry", "push", "{image}"],
             "inspect": ["{python}", "-m", "sandbox.registry", "inspect", "{image}"],
             "cwd": str(Path(__file__).resolve().parents[2])}
    catalogue = env.catalogue(build=build, keep_old_colour_s=1.0)
    summary = run_release(catalogue, "2.1.0", build_env_passthrough=[REGISTRY_ENV])

    assert summary.outcome == "succeeded"
    assert h.selectors(env.core, env.production) == {s: "green" for s in h.ORDER}
    green = h.images(env.apps, env.production, "green")
    assert all(img == f"{h.SERVICES[s][0]}:2.1.0" and n == 2 for s, (img, n) in green.items())
    assert served_image(env.url(env.production, "veza-backend-api")) == "veza/backend-api:2.1.0"
    assert all(n == 0 for _, n in h.images(env.apps, env.production, "blue").values())
    record = last_release(env.core, env.production)
    assert record is not None and record.outcome == "succeeded" and record.version == "2.1.0"
    assert record.colours == {s: "green" for s in h.ORDER}
    assert record.previous_images["veza-web"] == "veza/web:1.0.0"
    staging = env.apps.read_namespaced_deployment("veza-web-blue", env.staging)
    assert staging.spec.template.spec.containers[0].image == "veza/web:2.1.0"

    vault = env.sandbox.vault_client()
    values = []
    for environment in ("staging", "production"):
        for service in h.ORDER:
            data = vault.secrets.kv.v2.read_secret_version(
                path=f"veza/{environment}/{service}", mount_point="secret",
                raise_on_deleted_version=True)["data"]["data"]
            values += [v for v in data.values() if len(str(v)) >= 8]
    assert values
    out, err = capfd.readouterr()
    logs = out + err + api_logs()
    assert "veza-web-secrets-" in logs and "traffic switched" in logs
    leaked = [v for v in values if v in logs]
    assert leaked == []


class TestRolledBackReleases:
    """Releases that fail after switching: traffic is back on blue, as each asserts."""

    def test_error_rate_green_rolled_back(self, rolled_back_env):
        """Priority 2: a green answering 20 % errors is rolled back; blue keeps serving."""
        env = rolled_back_env
        h.push_all(env.sandbox, "2.2.0", error_rate=0.2)
        # Each measurement must hold enough requests that 20 % errors cannot pass by luck
        # (0.8^20 ~ 1 %, and three must pass): on a saturated machine the load generator once
        # sent so few that the first service promoted with 1.0. Fewer is no data, not a pass.
        catalogue = env.catalogue(e2e_command=TRIVIAL_E2E, interval_s=2.0, intervals=3,
                                  window_s=4.0, min_requests=20)
        with pytest.raises(VerificationError) as failure:
            try:
                run_release(catalogue, "2.2.0", skip_build=True)
            except SmokeTestError:  # five 500s in a row on one path (1 in 3,125 per path):
                run_release(catalogue, "2.2.0", skip_build=True)  # never switched; once more
        assert "veza-backend-api" in str(failure.value)
        assert "success rate" in str(failure.value)
        assert h.selectors(env.core, env.production) == {s: "blue" for s in h.ORDER}
        for service in h.ORDER:
            svc = env.core.read_namespaced_service(service, env.production)
            assert "veza-ops.veza.io/pending-release" not in (svc.metadata.annotations or {})
        assert served_image(env.url(env.production, "veza-backend-api")) == "veza/backend-api:1.0.0"
        assert all(n == 1 for _, n in h.images(env.apps, env.production, "blue").values())
        from tasks.release.history import last_release

        record = last_release(env.core, env.production)
        assert record is not None and record.outcome == "rolled-back"
        assert record.timings["restoration_s"] >= 0.0 and "detection_s" in record.timings
        events = read_events("veza-ops.environment.production",
                             where=lambda e: e.payload.get("release_id") == record.id,
                             until=lambda found: len(found) >= 2)
        assert [e.event for e in events] == ["veza-ops.release.started",
                                             "veza-ops.release.rolled-back"]
        assert related(events[1], "version") == ["2.2.0"]
        assert events[1].payload["outcome"] == "rolled-back"
        assert "success rate" in events[1].payload["reason"]

    def test_third_service_failing_rolls_back_the_first_two(self, rolled_back_env):
        """Priority 3: the stream server's p99 breaks the threshold after two switches."""
        env = rolled_back_env
        from sandbox.registry import Behaviour

        h.push_all(env.sandbox, "2.3.0")
        env.sandbox.registry.push("veza/stream-server:2.3.0", Behaviour(latency_ms=900))
        catalogue = env.catalogue(e2e_command=TRIVIAL_E2E, intervals=2)
        with pytest.raises(VerificationError, match=r"veza-stream-server.*p99"):
            run_release(catalogue, "2.3.0", skip_build=True)
        assert h.selectors(env.core, env.production) == {s: "blue" for s in h.ORDER}
        from tasks.release.history import last_release

        record = last_release(env.core, env.production)
        assert record is not None and record.outcome == "rolled-back"
        names = [c.name for c in record.checks]
        assert "verify veza-backend-api green" in names and "verify veza-chat-server green" in names
        assert any("3 service(s) back on their old colour" in c.detail for c in record.checks)

    def test_prometheus_stopped_during_verification_rolls_back(self, rolled_back_env):
        """Priority 5: silence is never a pass."""
        env = rolled_back_env
        h.push_all(env.sandbox, "2.5.0")
        # 2 s intervals: a new colour's first measurement has data before Prometheus stops.
        catalogue = env.catalogue(e2e_command=TRIVIAL_E2E, interval_s=2.0, intervals=3,
                                  max_no_data=1)
        thread, errors = h.in_thread(lambda: run_release(catalogue, "2.5.0", skip_build=True))
        try:
            wait_until(lambda: h.selected(env.core, env.production, "veza-backend-api") == "green",
                       timeout=120, what="first switch", interval=0.2)
            env.sandbox.stop_prometheus()
            thread.join(timeout=120)
        finally:
            env.sandbox.start_prometheus()
        assert not thread.is_alive()
        assert errors and isinstance(errors[0], VerificationError)
        assert "no data" in str(errors[0])
        assert h.selectors(env.core, env.production) == {s: "blue" for s in h.ORDER}

    def test_new_colour_pods_gone_after_the_switch_fail_that_interval(self, rolled_back_env):
        """Dead pods are not silence: no ready endpoint fails the interval at once."""
        env = rolled_back_env
        h.push_all(env.sandbox, "2.6.0")
        # Up to 6 silent intervals are tolerated: without the endpoint check the abort
        # would come only after (max_no_data + 1) x (failure_limit + 1) intervals.
        catalogue = env.catalogue(e2e_command=TRIVIAL_E2E, interval_s=1.0, intervals=30)
        thread, errors = h.in_thread(lambda: run_release(catalogue, "2.6.0", skip_build=True))
        wait_until(lambda: h.selected(env.core, env.production, "veza-backend-api") == "green",
                   timeout=120, what="first switch", interval=0.2)
        env.apps.patch_namespaced_deployment_scale(
            "veza-backend-api-green", env.production, {"spec": {"replicas": 0}})
        thread.join(timeout=120)
        assert not thread.is_alive()
        assert errors and isinstance(errors[0], VerificationError), errors
        assert "no ready endpoint for veza-backend-api (green)" in str(errors[0])
        assert h.selectors(env.core, env.production) == {s: "blue" for s in h.ORDER}


def test_never_ready_image_stopped_in_staging(env):
    """Priority 4: staging is undone, production untouched."""
    from sandbox.registry import Behaviour

    h.push_all(env.sandbox, "2.4.0")
    env.sandbox.registry.push("veza/web:2.4.0", Behaviour(never_ready=True))
    before = h.snapshot(env.apps, env.core, env.production)
    catalogue = env.catalogue(rollout_timeout_s=8.0)
    # Only the web is released: the 8 s deadline is the never-ready image's, and a healthy
    # service on a loaded machine must not race it.
    with pytest.raises(RolloutError, match=r"veza-web-blue.*not ready.*undone"):
        run_release(catalogue, "2.4.0", skip_build=True, services=["veza-web"])
    web = env.apps.read_namespaced_deployment("veza-web-blue", env.staging)
    assert web.spec.template.spec.containers[0].image == "veza/web:1.0.0"
    from tasks.release.rollout import rollout_status

    wait_until(lambda: rollout_status(
        env.apps.read_namespaced_deployment("veza-web-blue", env.staging)).done,
        timeout=30, what="staging web rolled back", interval=0.2)
    page = httpx.get(env.url(env.staging, "veza-web") + "/", timeout=5).text
    assert "veza/web:1.0.0" in page and "veza/web:2.4.0" not in page
    after = h.snapshot(env.apps, env.core, env.production)
    # Production objects untouched; only the release history records the failure.
    assert after.pop("configmaps") == ["veza-ops-releases"]
    before.pop("configmaps")
    assert after == before
    from tasks.release.history import last_release

    record = last_release(env.core, env.production)
    assert record is not None and record.outcome == "failed"
    assert "veza-web-blue" in (record.reason or "")


def test_vault_sealed_changes_nothing(shared_env):
    """Priority 6: the preflight gate refuses before any change."""
    env = shared_env
    h.push_all(env.sandbox, "2.6.0")
    before = [h.snapshot(env.apps, env.core, ns) for ns in (env.staging, env.production)]
    env.sandbox.seal_vault()
    try:
        with pytest.raises(PreflightError, match="sealed"):
            run_release(env.catalogue(), "2.6.0", skip_build=True)
    finally:
        env.sandbox.unseal_vault()
    after = [h.snapshot(env.apps, env.core, ns) for ns in (env.staging, env.production)]
    assert after == before
    assert env.core.list_namespaced_config_map(
        env.production, field_selector="metadata.name=veza-ops-releases").items == []


def test_two_releases_do_not_interleave(env):
    """Priority 7: the second release fails fast naming the holder."""
    from tasks.release.locking import lock_holder

    h.push_all(env.sandbox, "2.7.0")
    # The first release holds its lock in E2E until the second one has been refused: its E2E
    # command waits for a file the test writes (a gate, not a timing assumption).
    gate = env.tmp / "second-refused"
    wait_for_gate = ("import os, sys, time\n"
                     "deadline = time.monotonic() + 120\n"
                     "while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:\n"
                     "    time.sleep(0.1)\n"
                     "sys.exit(0 if os.path.exists(sys.argv[1]) else 1)\n")
    catalogue = env.catalogue(e2e_command=["{python}", "-c", wait_for_gate, str(gate)],
                              intervals=1, keep_old_colour_s=0)
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(
        run_release(catalogue, "2.7.0", skip_build=True)))
    thread.start()
    coordination = k8s.CoordinationV1Api(env.core.api_client)
    try:
        holder = wait_until(lambda: lock_holder(coordination, env.production), timeout=60,
                            what="first release to take the lock", interval=0.2)
        with pytest.raises(LockHeldError, match=holder.split("/")[-1]):
            run_release(catalogue, "2.7.0", skip_build=True)
    finally:
        gate.touch()
    thread.join(timeout=180)
    assert done and done[0].outcome == "succeeded"
    assert h.selectors(env.core, env.production) == {s: "green" for s in h.ORDER}


@pytest.fixture
def prod_env(sandbox_stack, sandbox_seed, blocks, tmp_path) -> Env:
    """A fresh production namespace alone (the catalogue has no staging)."""
    return make_env(sandbox_stack, sandbox_seed(staging=False), blocks, tmp_path)


def test_manual_rollback_after_good_release(prod_env):
    """Priority 9: the rollback flow scales the old colour back up and switches to it."""
    from flows.rollback import rollback
    from tasks.release.history import last_release

    env = prod_env
    h.push_all(env.sandbox, "2.9.0")
    catalogue = env.catalogue(e2e_command=TRIVIAL_E2E, intervals=1, keep_old_colour_s=0)
    released = run_release(catalogue, "2.9.0", skip_build=True)
    assert released.outcome == "succeeded"
    assert all(n == 0 for _, n in h.images(env.apps, env.production, "blue").values())
    summary = rollback(environment="production", catalogue_path=catalogue,
                       triggered_by="test")
    assert summary.outcome == "succeeded"
    assert h.selectors(env.core, env.production) == {s: "blue" for s in h.ORDER}
    assert all(img.endswith(":1.0.0") and n == 1
               for img, n in h.images(env.apps, env.production, "blue").values())
    assert served_image(env.url(env.production, "veza-backend-api")) == "veza/backend-api:1.0.0"
    record = last_release(env.core, env.production)
    assert record is not None and record.kind == "rollback" and record.outcome == "succeeded"
    ids = {released.release_id, record.id}
    events = read_events("veza-ops.environment.production",
                         where=lambda e: e.payload.get("release_id") in ids,
                         until=lambda found: len(found) >= 4)
    assert [e.event for e in events] == [
        "veza-ops.release.started", "veza-ops.release.succeeded",
        "veza-ops.rollback.started", "veza-ops.rollback.succeeded"]
    assert related(events[1], "version") == ["2.9.0"]
    assert sorted(related(events[1], "service")) == sorted(h.ORDER)
    assert related(events[3], "version") == [record.version]  # what it went back to


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"version": "bad version!"}, "version"),
    ({"environment": "moon"}, "environment"),
    ({"services": ["veza-nope"]}, "services"),
    ({"catalogue_path": "/nonexistent/catalogue.yaml"}, "catalogue"),
])
def test_bad_input_refused_before_any_change(no_cluster, tmp_path, kwargs, field):
    """Priority 10: every bad input names its field, before any system is reached."""
    from flows.release import release

    params = {"version": "3.0.0", "environment": "production", "skip_build": True,
              "catalogue_path": str(h.catalogue_without_cluster(tmp_path / "c.yaml")),
              **kwargs}
    with pytest.raises(InvalidInputError) as failure:
        release(**params)
    assert field in str(failure.value)


def test_unknown_block_and_bad_overrides_refused(prefect_harness, tmp_path):
    from flows.release import release

    bad = h.catalogue_without_cluster(tmp_path / "bad.yaml", blocks="no-such-block")
    with pytest.raises(InvalidInputError, match="kubernetes_block"):
        release(version="3.0.0", catalogue_path=str(bad), skip_build=True)
    with pytest.raises(Exception, match="interval_s"):
        release(version="3.0.0", catalogue_path=str(bad), skip_build=True,
                analysis={"interval_s": -1})  # type: ignore[call-overload]


def test_dry_run_prints_the_plan_and_changes_nothing(shared_env):
    from flows.release import release

    env = shared_env
    before = [h.snapshot(env.apps, env.core, ns) for ns in (env.staging, env.production)]
    summary = release(version="3.1.0", catalogue_path=env.catalogue(), dry_run=True)
    assert summary.outcome == "dry-run"
    assert any(line.startswith("build veza/web:3.1.0") for line in summary.plan)
    assert any("veza-backend-api live blue (veza/backend-api:1.0.0); clone to green" in line
               for line in summary.plan)
    after = [h.snapshot(env.apps, env.core, ns) for ns in (env.staging, env.production)]
    assert after == before
