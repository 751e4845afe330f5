"""Service proxies honour Istio VirtualService weights over DestinationRule subsets."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
import uuid
from collections import Counter
from typing import Any

import pytest
from kubernetes import client

from sandbox.k8s.controllers.mesh import Backends, pick, service_of
from sandbox.procs import wait_until

pytestmark = pytest.mark.timeout(120)

ISTIO = ("networking.istio.io", "v1beta1")
URL_ANNOTATION = "sandbox.veza.io/url"


def _deployment(name: str, image: str, labels: dict[str, str], replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                "name": "api", "image": image, "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080},
                                   "periodSeconds": 1, "timeoutSeconds": 5},
            }]}},
        },
    }


def _routes(stable: int, canary: int, subset: str = "canary") -> dict[str, Any]:
    return {"spec": {"http": [{"route": [
        {"destination": {"host": "api", "subset": "stable"}, "weight": stable},
        {"destination": {"host": "api.{ns}.svc.cluster.local", "subset": subset},
         "weight": canary},
    ]}]}}


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _images(url: str, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        code, body = _get(url)
        seen[body.get("image", f"HTTP {code}") if code == 200 else f"HTTP {code}"] += 1
    return seen


@pytest.fixture
def canary_setup(k8s_api_client, k8s_namespace, k8s_registry) -> dict[str, str]:
    """Two tracks of one app (2 stable pods, 1 canary) behind a Service selecting stable."""
    from sandbox.registry import Behaviour

    ns, tag = k8s_namespace, uuid.uuid4().hex[:6]
    apps, core = client.AppsV1Api(k8s_api_client), client.CoreV1Api(k8s_api_client)
    images = {t: f"veza/backend-api:{t}-{tag}" for t in ("stable", "canary")}
    for track, replicas in (("stable", 2), ("canary", 1)):
        k8s_registry.push(images[track], Behaviour())
        apps.create_namespaced_deployment(ns, _deployment(
            f"api-{track}", images[track], {"app": "api", "track": track}, replicas))
    # Istio's advice for canaries: the Service selects both tracks (by app only), the
    # DestinationRule's subsets filter its endpoints by version.
    core.create_namespaced_service(ns, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
        "spec": {"selector": {"app": "api"},
                 "ports": [{"port": 8080, "targetPort": 8080}]}})
    # The blue-green convention: a Service selecting one track only.
    core.create_namespaced_service(ns, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "api-stable"},
        "spec": {"selector": {"app": "api", "track": "stable"},
                 "ports": [{"port": 8080, "targetPort": 8080}]}})

    def ready() -> bool:
        return all((apps.read_namespaced_deployment(f"api-{t}", ns).status.ready_replicas or 0)
                   == r for t, r in (("stable", 2), ("canary", 1)))

    wait_until(ready, timeout=90, what="both tracks ready")
    urls = {s: wait_until(lambda s=s: (core.read_namespaced_service(s, ns).metadata.annotations
                                       or {}).get(URL_ANNOTATION), timeout=30,
                          what=f"{s} URL") for s in ("api", "api-stable")}
    custom = client.CustomObjectsApi(k8s_api_client)
    for host in urls:
        custom.create_namespaced_custom_object(*ISTIO, ns, "destinationrules", {
            "apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
            "metadata": {"name": host},
            "spec": {"host": host, "subsets": [
                {"name": "stable", "labels": {"track": "stable"}},
                {"name": "canary", "labels": {"track": "canary"}},
                {"name": "nobody", "labels": {"track": "none"}}]}})
    return {"ns": ns, "url": f"{urls['api']}/api/v1/tracks",
            "stable_only_url": f"{urls['api-stable']}/api/v1/tracks", **images}


def _within_binomial_bound(k: int, n: int, p: float, sds: float = 4.5) -> bool:
    return abs(k / n - p) <= sds * math.sqrt(p * (1 - p) / n)


def test_virtual_service_weights_split_traffic_between_subsets(k8s_api_client, canary_setup):
    ns, url = canary_setup["ns"], canary_setup["url"]
    stable, canary = canary_setup["stable"], canary_setup["canary"]
    custom = client.CustomObjectsApi(k8s_api_client)
    # Without a VirtualService: the Service's own selector (both tracks), round-robin.
    assert set(_images(url, 12)) == {stable, canary}
    pods = {_get(url)[1]["pod"] for _ in range(6)}
    assert len(pods) == 3

    vs = {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
          "metadata": {"name": "api"}, "spec": {"hosts": ["api"]}}
    vs["spec"].update(json.loads(json.dumps(_routes(80, 20)["spec"]).replace("{ns}", ns)))
    custom.create_namespaced_custom_object(*ISTIO, ns, "virtualservices", vs)
    n = 400
    seen = _images(url, n)
    assert set(seen) == {stable, canary}, seen
    # 20% to the canary: |k/n - p| <= 4.5 sd of a binomial(400, 0.2), i.e. within 0.09.
    assert _within_binomial_bound(seen[canary], n, 0.2), seen

    def set_weights(stable_weight: int, canary_weight: int, subset: str = "canary") -> None:
        patch = json.loads(json.dumps(_routes(stable_weight, canary_weight, subset))
                           .replace("{ns}", ns))
        custom.patch_namespaced_custom_object(*ISTIO, ns, "virtualservices", "api", patch)

    # The proxy reads the VirtualService on every request: the next request already obeys.
    set_weights(100, 0)
    assert _images(url, 100) == Counter({stable: 100})
    set_weights(0, 100)
    assert _images(url, 100) == Counter({canary: 100})
    # A subset with no ready endpoint: 503, as Envoy's "no healthy upstream".
    set_weights(0, 100, subset="nobody")
    code, body = _get(url)
    assert code == 503 and "no healthy upstream" in body["error"]
    # Deleting the VirtualService restores the Service's own routing.
    custom.delete_namespaced_custom_object(*ISTIO, ns, "virtualservices", "api")
    assert set(_images(url, 12)) == {stable, canary}


def test_a_subset_only_filters_the_services_own_endpoints(k8s_api_client, canary_setup):
    """As in Istio: a subset outside the Service's selector is empty, it never widens it."""
    ns, url = canary_setup["ns"], canary_setup["stable_only_url"]
    custom = client.CustomObjectsApi(k8s_api_client)
    vs = {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
          "metadata": {"name": "api-stable"}, "spec": {"hosts": ["api-stable"], "http": [
              {"route": [{"destination": {"host": "api-stable", "subset": "canary"},
                          "weight": 100}]}]}}
    custom.create_namespaced_custom_object(*ISTIO, ns, "virtualservices", vs)
    # The canary pods are ready and carry the subset's labels, but the Service selects
    # track=stable: the canary subset of api-stable has no endpoint.
    seen = _images(url, 10)
    assert seen == Counter({"HTTP 503": 10}), seen
    code, body = _get(url)
    assert code == 503 and "no healthy upstream" in body["error"]
    # The subset inside the selector gets its pods.
    custom.patch_namespaced_custom_object(*ISTIO, ns, "virtualservices", "api-stable", {
        "spec": {"http": [{"route": [{"destination": {"host": "api-stable",
                                                      "subset": "stable"}}]}]}})
    assert _images(url, 10) == Counter({canary_setup["stable"]: 10})


def test_a_virtual_service_for_another_host_or_gateway_leaves_routing_alone(k8s_api_client,
                                                                            canary_setup):
    ns, url = canary_setup["ns"], canary_setup["url"]
    custom = client.CustomObjectsApi(k8s_api_client)
    for name, spec in (("other-host", {"hosts": ["web"]}),
                       ("edge-only", {"hosts": ["api"], "gateways": ["istio-system/edge"]})):
        routes = json.loads(json.dumps(_routes(0, 100)["spec"]).replace("{ns}", ns))
        custom.create_namespaced_custom_object(*ISTIO, ns, "virtualservices", {
            "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": name}, "spec": {**spec, **routes}})
    assert set(_images(url, 12)) == {canary_setup["stable"], canary_setup["canary"]}


def test_pick_by_weight_and_host_names():
    routes = [{"weight": 0, "n": "a"}, {"weight": 100, "n": "b"}]
    assert {pick(routes, d / 100)["n"] for d in range(100)} == {"b"}
    routes = [{"weight": 20, "n": "a"}, {"weight": 80, "n": "b"}]
    assert [pick(routes, d)["n"] for d in (0.0, 0.19, 0.2, 0.99)] == ["a", "a", "b", "b"]
    assert pick([{"n": "only"}], 0.5) == {"n": "only"}
    assert pick([{"weight": 0}, {"weight": 0}], 0.5) is None
    assert service_of("api", "ns") == "api"
    assert service_of("api.ns.svc.cluster.local", "ns") == "api"
    assert service_of("api.other.svc.cluster.local", "ns") is None
    assert service_of("example.com", "ns") is None
    assert Backends([]).pool == ""
