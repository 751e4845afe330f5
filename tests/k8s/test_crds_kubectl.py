"""Real kubectl on custom resources: apply a CRD and its objects, get, patch, delete."""

from __future__ import annotations

import json
import uuid

import pytest

pytestmark = pytest.mark.timeout(120)

VIRTUAL_SERVICE = """\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: api
  labels: {app: api}
spec:
  hosts: [api]
  http:
    - route:
        - destination: {host: api, subset: stable}
          weight: 100
        - destination: {host: api, subset: canary}
          weight: 0
"""


def test_kubectl_apply_get_patch_delete_a_virtual_service(kubectl, k8s_namespace):
    ns = k8s_namespace
    out = kubectl("apply", "-n", ns, "-f", "-", input=VIRTUAL_SERVICE).stdout
    assert "virtualservice.networking.istio.io/api created" in out
    got = json.loads(kubectl("get", "virtualservices", "-n", ns, "-o", "json").stdout)
    assert got["kind"] == "List" or got["kind"].endswith("List")
    [vs] = got["items"]
    assert vs["spec"]["http"][0]["route"][1]["weight"] == 0
    table = kubectl("get", "vs", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "GATEWAYS", "HOSTS", "AGE"]
    assert table[1].split()[:3] == ["api", "<none>", '["api"]']

    weights = {"spec": {"http": [{"route": [
        {"destination": {"host": "api", "subset": "stable"}, "weight": 80},
        {"destination": {"host": "api", "subset": "canary"}, "weight": 20}]}]}}
    kubectl("patch", "virtualservice", "api", "-n", ns, "--type", "merge",
            "-p", json.dumps(weights))
    vs = json.loads(kubectl("get", "vs", "api", "-n", ns, "-o", "json").stdout)
    assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [80, 20]
    assert vs["metadata"]["generation"] == 2

    # Re-applying the manifest (client-side apply: a JSON merge patch) restores the weights.
    out = kubectl("apply", "-n", ns, "-f", "-", input=VIRTUAL_SERVICE).stdout
    assert "configured" in out
    vs = json.loads(kubectl("get", "vs", "api", "-n", ns, "-o", "json").stdout)
    assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [100, 0]

    refused = kubectl("patch", "vs", "api", "-n", ns, "--type", "strategic", "-p",
                      '{"spec": {"hosts": ["x"]}}', check=False)
    assert refused.returncode != 0
    assert "is not supported by" in refused.stderr and "unknown format" in refused.stderr

    kubectl("delete", "vs", "api", "-n", ns)
    assert kubectl("get", "vs", "-n", ns).stderr.startswith("No resources found")


def test_kubectl_applies_a_new_crd_then_its_objects(kubectl, k8s_namespace):
    ns, group = k8s_namespace, f"k{uuid.uuid4().hex[:8]}.veza.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gadgets.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "gadgets", "kind": "Gadget", "shortNames": ["gd"]},
                 "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {
                                   "type": "object",
                                   "x-kubernetes-preserve-unknown-fields": True}}}]},
    }
    kubectl("apply", "-f", "-", input=json.dumps(crd))
    kubectl("wait", "--for", "condition=Established", f"crd/gadgets.{group}", "--timeout=20s")
    assert f"gadgets.{group}" in kubectl("get", "crds").stdout
    gadget = {"apiVersion": f"{group}/v1alpha1", "kind": "Gadget",
              "metadata": {"name": "g1"}, "spec": {"n": 1}}
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(gadget))
    assert kubectl("get", "gd", "-n", ns, "-o", "name").stdout.strip() == f"gadget.{group}/g1"
    resources = kubectl("api-resources", f"--api-group={group}").stdout
    assert "gadgets" in resources and "Gadget" in resources
    kubectl("delete", "crd", f"gadgets.{group}")
    gone = kubectl("get", f"gadgets.{group}", "-n", ns, check=False)
    assert gone.returncode != 0


def test_aggregated_discovery_lists_custom_resources(kubectl, k8s_server):
    import urllib.request

    request = urllib.request.Request(f"{k8s_server.url}/apis", headers={
        "Authorization": f"Bearer {k8s_server.token}",
        "Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                  "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert "as=APIGroupDiscoveryList" in response.headers["Content-Type"]
        doc = json.loads(response.read())
    assert doc["kind"] == "APIGroupDiscoveryList"
    istio = next(i for i in doc["items"] if i["metadata"]["name"] == "networking.istio.io")
    assert [v["version"] for v in istio["versions"]] == ["v1", "v1beta1", "v1alpha3"]
    vs = next(r for r in istio["versions"][0]["resources"] if r["resource"] == "virtualservices")
    assert vs["shortNames"] == ["vs"] and vs["scope"] == "Namespaced"
    assert vs["responseKind"] == {"group": "networking.istio.io", "version": "v1",
                                  "kind": "VirtualService"}
    # kubectl takes everything from the two aggregated documents: no per-group-version request.
    result = kubectl("api-resources", "-v=6")
    assert "virtualservices" in result.stdout and "rolebindings" in result.stdout
    paths = [line.split(" GET ")[1].split()[0].split("?")[0]
             for line in result.stderr.splitlines() if " GET " in line]
    assert paths and {p.rsplit("/", 1)[1] for p in paths} == {"api", "apis"}, paths
