"""CustomResourceDefinitions through the official client: registration, CRUD, patches, watch."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kubernetes import client, watch

pytestmark = pytest.mark.timeout(60)

JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


def _crd(group: str, *, plural: str = "widgets", kind: str = "Widget") -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "kind": kind, "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object",
                                               "x-kubernetes-preserve-unknown-fields": True}},
            }],
        },
    }


def _widget(name: str, size: int, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"size": size, "ports": [80, 443]}}


@pytest.fixture
def group(k8s_api_client) -> Any:
    """A fresh API group with a Widget CRD, deleted afterwards."""
    ext = client.ApiextensionsV1Api(k8s_api_client)
    name = f"t{uuid.uuid4().hex[:8]}.veza.io"
    ext.create_custom_resource_definition(_crd(name))
    yield name
    try:
        ext.delete_custom_resource_definition(f"widgets.{name}")
    except client.ApiException as exc:
        if exc.status != 404:
            raise


def _status(exc_info: pytest.ExceptionInfo[client.ApiException]) -> dict[str, Any]:
    return json.loads(exc_info.value.body)


def test_a_created_crd_is_established_and_discovered(k8s_api_client, group):
    ext = client.ApiextensionsV1Api(k8s_api_client)
    crd = ext.read_custom_resource_definition(f"widgets.{group}")
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd.status.accepted_names.kind == "Widget"
    assert crd.spec.names.singular == "widget" and crd.spec.names.list_kind == "WidgetList"
    listed = [c.metadata.name for c in ext.list_custom_resource_definition().items]
    assert f"widgets.{group}" in listed
    groups = {g.name: g for g in client.ApisApi(k8s_api_client).get_api_versions().groups}
    assert group in groups and groups[group].preferred_version.version == "v1"
    assert "apiextensions.k8s.io" in groups
    resources = client.CustomObjectsApi(k8s_api_client).get_api_resources(group, "v1").resources
    widgets = next(r for r in resources if r.name == "widgets")
    assert widgets.kind == "Widget" and widgets.namespaced and widgets.short_names == ["wd"]
    assert "widgets/status" in {r.name for r in resources}
    ext_names = {r.name for r in ext.get_api_resources().resources}
    assert "customresourcedefinitions" in ext_names


def test_custom_objects_crud_selectors_and_patches(k8s_api_client, k8s_namespace, group):
    custom, ns = client.CustomObjectsApi(k8s_api_client), k8s_namespace
    args = (group, "v1", ns, "widgets")
    made = custom.create_namespaced_custom_object(*args, _widget("a", 1, {"tier": "x"}))
    custom.create_namespaced_custom_object(*args, _widget("b", 2, {"tier": "y"}))
    assert made["apiVersion"] == f"{group}/v1" and made["kind"] == "Widget"
    assert made["metadata"]["generation"] == 1 and made["metadata"]["uid"]
    with pytest.raises(client.ApiException) as exc_info:
        custom.create_namespaced_custom_object(*args, _widget("a", 1))
    assert exc_info.value.status == 409
    assert _status(exc_info)["message"] == f'widgets.{group} "a" already exists'

    got = custom.get_namespaced_custom_object(*args, "a")
    assert got["spec"] == {"size": 1, "ports": [80, 443]}
    listed = custom.list_namespaced_custom_object(*args, label_selector="tier=y")
    assert listed["kind"] == "WidgetList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["b"]
    everywhere = custom.list_cluster_custom_object(group, "v1", "widgets")
    assert {i["metadata"]["name"] for i in everywhere["items"]} >= {"a", "b"}

    # A dict body goes as a JSON merge patch: lists replace, null deletes.
    merged = custom.patch_namespaced_custom_object(
        *args, "a", {"spec": {"ports": [8080], "color": "red"}, "metadata": {
            "labels": {"tier": None}}})
    assert merged["spec"] == {"size": 1, "ports": [8080], "color": "red"}
    assert "tier" not in (merged["metadata"].get("labels") or {})
    assert merged["metadata"]["generation"] == 2
    assert int(merged["metadata"]["resourceVersion"]) > int(got["metadata"]["resourceVersion"])
    patched = custom.patch_namespaced_custom_object(
        *args, "a", [{"op": "replace", "path": "/spec/size", "value": 5},
                     {"op": "remove", "path": "/spec/color"}], _content_type=JSON_PATCH)
    assert patched["spec"] == {"size": 5, "ports": [8080]}
    assert patched["metadata"]["generation"] == 3
    with pytest.raises(client.ApiException) as exc_info:
        custom.patch_namespaced_custom_object(*args, "a", {"spec": {"size": 6}},
                                              _content_type=STRATEGIC)
    assert exc_info.value.status == 415
    assert _status(exc_info)["reason"] == "UnsupportedMediaType"

    # The status subresource: status is ignored on the main resource, written on /status.
    ignored = custom.patch_namespaced_custom_object(*args, "a", {"status": {"ok": True}})
    assert "ok" not in (ignored.get("status") or {})
    status = custom.patch_namespaced_custom_object_status(*args, "a", {"status": {"ok": True}})
    assert status["status"] == {"ok": True} and status["metadata"]["generation"] == 3

    replaced = custom.replace_namespaced_custom_object(
        *args, "b", {**custom.get_namespaced_custom_object(*args, "b"), "spec": {"size": 9}})
    assert replaced["spec"] == {"size": 9}
    custom.delete_namespaced_custom_object(*args, "b")
    with pytest.raises(client.ApiException) as exc_info:
        custom.get_namespaced_custom_object(*args, "b")
    assert exc_info.value.status == 404


def test_watch_custom_objects(k8s_api_client, k8s_namespace, group):
    custom, ns = client.CustomObjectsApi(k8s_api_client), k8s_namespace
    args = (group, "v1", ns, "widgets")
    custom.create_namespaced_custom_object(*args, _widget("w", 1))
    seen: list[tuple[str, str, int]] = []
    stream = watch.Watch().stream(custom.list_namespaced_custom_object, *args,
                                  timeout_seconds=20)
    for event in stream:
        obj = event["object"]
        seen.append((event["type"], obj["metadata"]["name"], obj["spec"]["size"]))
        if len(seen) == 1:
            custom.patch_namespaced_custom_object(*args, "w", {"spec": {"size": 2}})
        elif len(seen) == 2:
            custom.delete_namespaced_custom_object(*args, "w")
        else:
            break
    assert seen == [("ADDED", "w", 1), ("MODIFIED", "w", 2), ("DELETED", "w", 2)]


def test_deleting_the_crd_deletes_its_objects_and_unregisters_it(k8s_api_client, k8s_namespace,
                                                                  group):
    ext = client.ApiextensionsV1Api(k8s_api_client)
    custom, ns = client.CustomObjectsApi(k8s_api_client), k8s_namespace
    custom.create_namespaced_custom_object(group, "v1", ns, "widgets", _widget("doomed", 1))
    ext.delete_custom_resource_definition(f"widgets.{group}")
    with pytest.raises(client.ApiException) as exc_info:
        custom.list_namespaced_custom_object(group, "v1", ns, "widgets")
    assert exc_info.value.status == 404
    groups = {g.name for g in client.ApisApi(k8s_api_client).get_api_versions().groups}
    assert group not in groups
    # Re-created, the CRD starts empty: its objects really went.
    ext.create_custom_resource_definition(_crd(group))
    items = custom.list_namespaced_custom_object(group, "v1", ns, "widgets")["items"]
    assert items == []


def test_invalid_and_conflicting_crds_are_refused(k8s_api_client):
    ext = client.ApiextensionsV1Api(k8s_api_client)
    bad = _crd("nodots")
    with pytest.raises(client.ApiException) as exc_info:
        ext.create_custom_resource_definition(bad)
    assert exc_info.value.status == 422
    assert "spec.group" in _status(exc_info)["message"]
    wrong_name = _crd("x.veza.io")
    wrong_name["metadata"]["name"] = "other.x.veza.io"
    with pytest.raises(client.ApiException) as exc_info:
        ext.create_custom_resource_definition(wrong_name)
    assert "metadata.name" in _status(exc_info)["message"]
    builtin = _crd("apps.k8s.io.test", plural="deployments", kind="Deployment")
    builtin["spec"]["group"] = "apps"
    builtin["metadata"]["name"] = "deployments.apps"
    with pytest.raises(client.ApiException) as exc_info:
        ext.create_custom_resource_definition(builtin)
    assert exc_info.value.status == 422


def test_istio_crds_are_installed_at_start(k8s_api_client, k8s_namespace):
    ext = client.ApiextensionsV1Api(k8s_api_client)
    for name, short in (("virtualservices", "vs"), ("destinationrules", "dr")):
        crd = ext.read_custom_resource_definition(f"{name}.networking.istio.io")
        assert crd.spec.names.short_names == [short]
        assert {c.type for c in crd.status.conditions} == {"Established", "NamesAccepted"}
    custom = client.CustomObjectsApi(k8s_api_client)
    vs = {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
          "metadata": {"name": "api"}, "spec": {"hosts": ["api"]}}
    custom.create_namespaced_custom_object("networking.istio.io", "v1beta1", k8s_namespace,
                                           "virtualservices", vs)
    as_v1 = custom.get_namespaced_custom_object("networking.istio.io", "v1", k8s_namespace,
                                                "virtualservices", "api")
    assert as_v1["apiVersion"] == "networking.istio.io/v1"  # every version reads the same object
    preferred = next(g for g in client.ApisApi(k8s_api_client).get_api_versions().groups
                     if g.name == "networking.istio.io").preferred_version.version
    assert preferred == "v1"
