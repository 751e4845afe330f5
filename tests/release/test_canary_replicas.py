"""Canary traffic without a mesh (``canary_traffic: replicas``): the arithmetic, the preflight
refusal of a mesh canary on a cluster without Istio's CRDs, and a release on the sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from errors import InvalidInputError, PreflightError, VerificationError
from tasks.release.canary_analysis import plan_lines
from tasks.release.canary_mesh import ISTIO
from tasks.release.canary_replicas import (
    canary_replicas,
    check_traffic,
    effective_share,
    mesh_served,
    replica_plan,
)
from tasks.release.canary_service import STABLE_ANNOTATION, serving_colour, widened
from tasks.release.catalogue import parse_catalogue
from tests.release import helpers as h
from tests.release.test_canary import canary_catalogue, catalogue_data

pytestmark = pytest.mark.timeout(420)


# --- pure ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("weight", "stable", "canary", "share"), [
    (5, 1, 1, 50), (50, 1, 1, 50), (100, 1, 1, 100),     # one stable pod: every step is 50 %
    (5, 10, 1, 9), (25, 10, 3, 23), (50, 10, 10, 50),    # 10 x 25/75 = 3.33 -> 3
    (25, 3, 1, 25), (50, 3, 3, 50), (100, 3, 3, 100),    # 3 x 25/75 = 1.0
    (20, 2, 1, 33), (60, 2, 3, 60), (75, 2, 6, 75),      # 2 x 20/80 = 0.5 rounds half up
    (5, 0, 1, 50),                                       # a stable at 0 counts as 1
])
def test_replica_arithmetic(weight, stable, canary, share):
    assert canary_replicas(weight, stable) == canary
    assert effective_share(weight, stable) == share


def test_replica_weight_outside_1_100_refused():
    with pytest.raises(ValueError, match=r"percentage in 1\.\.100"):
        canary_replicas(0, 3)


def test_traffic_from_the_catalogue_is_mesh_unless_told_and_always_said():
    env = parse_catalogue(catalogue_data()).environment("production")
    assert env.canary_traffic == "mesh"
    catalogue = parse_catalogue(catalogue_data(canary_traffic="replicas"))
    env = catalogue.environment("production")
    assert env.canary_traffic == "replicas"
    lines = plan_lines(env, catalogue.select(), "2.0.0")
    assert lines[0].startswith("production: canary traffic by replicas (coarse, no mesh)")
    assert replica_plan(env, 1).startswith("5 % -> 1 canary pod(s) (50 %)")
    with pytest.raises(InvalidInputError, match=r"environments\.production\.canary_traffic"):
        parse_catalogue(catalogue_data(canary_traffic="weights"))


def test_a_mesh_canary_without_istio_crds_is_refused_naming_the_field():
    mesh = parse_catalogue(catalogue_data()).environment("production")
    with pytest.raises(PreflightError) as refused:
        check_traffic(mesh, ["virtualservices", "destinationrules"])
    assert "environments.production.canary_traffic is mesh" in refused.value.message
    assert "virtualservices, destinationrules" in refused.value.message
    assert "set canary_traffic: replicas" in (refused.value.hint or "")
    assert check_traffic(mesh, []).startswith("mesh: Istio VirtualService weights")
    coarse = parse_catalogue(catalogue_data(canary_traffic="replicas")).environment("production")
    assert check_traffic(coarse, ["virtualservices"]).startswith("replicas (coarse")


def test_a_service_selecting_the_canary_alone_is_reconciled_to_its_stable_colour():
    def service(selector: dict[str, str], recorded: str | None) -> k8s.V1Service:
        annotations = {STABLE_ANNOTATION: recorded} if recorded else None
        return k8s.V1Service(metadata=k8s.V1ObjectMeta(annotations=annotations),
                             spec=k8s.V1ServiceSpec(selector=selector))

    at_100 = service({"app": "veza-web", "color": "canary"}, "blue")
    assert widened(at_100) == "blue" and serving_colour(at_100) == "blue"
    assert widened(service({"app": "veza-web", "color": "green"}, "blue")) is None
    assert widened(service({"app": "veza-web", "color": "canary"}, None)) is None


# --- on the sandbox ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blocks(prefect_harness, sandbox_stack) -> str:
    return h.register_blocks(sandbox_stack)


def replicas_catalogue(path: Path, production: str, blocks: str) -> str:
    canary_catalogue(path, "", production, blocks, canary_steps=[50, 100],
                     canary_traffic="replicas")
    return str(path)


def run(catalogue: str, version: str, services: list[str]) -> Any:
    from flows.release import release

    return release(version=version, environment="production", catalogue_path=catalogue,
                   services=services, skip_build=True)


def no_virtual_service(custom: k8s.CustomObjectsApi, namespace: str, name: str) -> bool:
    try:
        custom.get_namespaced_custom_object(*ISTIO, namespace, "virtualservices", name)
    except k8s.ApiException as exc:
        return exc.status == 404
    return False


def test_the_sandbox_serves_the_istio_kinds(sandbox_stack):
    apps, _ = h.apis(sandbox_stack)
    assert mesh_served(apps.api_client) == []


def test_a_replicas_canary_reaches_100_without_any_virtual_service(
        sandbox_stack, sandbox_seed, blocks, tmp_path):
    from tasks.release.history import last_release

    _, production = sandbox_seed(rate=20.0, staging=False)
    apps, core = h.apis(sandbox_stack)
    custom = k8s.CustomObjectsApi(apps.api_client)
    h.push_all(sandbox_stack, "4.8.0")
    two = ["veza-backend-api", "veza-web"]

    summary = run(replicas_catalogue(tmp_path / "c.yaml", production, blocks), "4.8.0", two)

    assert summary.outcome == "succeeded", summary.reason
    for s in two:
        assert no_virtual_service(custom, production, s)
        assert h.images(apps, production, "blue")[s] == (f"{h.SERVICES[s][0]}:4.8.0", 1)
        assert apps.read_namespaced_deployment(f"{s}-canary", production).spec.replicas == 0
        svc = core.read_namespaced_service(s, production)
        assert dict(svc.spec.selector) == {"app": s, "color": "blue"}
        assert STABLE_ANNOTATION not in (svc.metadata.annotations or {})
    record = last_release(core, production)
    assert record is not None and record.outcome == "succeeded"
    traffic = next(c for c in record.checks if c.name == "canary traffic")
    assert traffic.detail.startswith("replicas (coarse, no mesh)")
    assert "veza-web: 50 % -> 1 canary pod(s) (50 %), 100 % -> 1 canary pod(s) (100 %)" in (
        traffic.detail)
    steps = [c for c in record.checks if c.name.startswith("canary step")]
    # Both canaries were judged on traffic the Service spread over both tracks' pods.
    assert [(c.name, c.detail.count("promote")) for c in steps] == [
        ("canary step 1 at 50 %", 2), ("canary step 2 at 100 %", 2)]


def test_a_bad_replicas_canary_is_scaled_to_0_and_the_service_narrowed(
        sandbox_stack, sandbox_seed, blocks, tmp_path):
    from tasks.release.history import last_release

    _, production = sandbox_seed(rate=20.0, staging=False)
    apps, core = h.apis(sandbox_stack)
    h.push_all(sandbox_stack, "4.9.0", error_rate=1.0)
    path = replicas_catalogue(tmp_path / "c.yaml", production, blocks)
    data = yaml.safe_load(Path(path).read_text())
    assert data["environments"]["production"]["canary_traffic"] == "replicas"

    with pytest.raises(VerificationError, match="canary of veza-web at 50 % failed: success"):
        run(path, "4.9.0", ["veza-web"])

    assert apps.read_namespaced_deployment("veza-web-canary", production).spec.replicas == 0
    svc = core.read_namespaced_service("veza-web", production)
    assert dict(svc.spec.selector) == {"app": "veza-web", "color": "blue"}
    assert h.images(apps, production, "blue")["veza-web"] == ("veza/web:1.0.0", 1)
    record = last_release(core, production)
    assert record is not None and record.outcome == "rolled-back"
    assert next(c for c in record.checks if c.name == "rollback").passed
