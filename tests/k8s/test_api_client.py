"""The official kubernetes client against the API emulator: verbs, selectors, errors, patches."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest
from kubernetes import client, watch

from sandbox.procs import wait_until

pytestmark = pytest.mark.timeout(60)


def _deployment(name: str, *, labels: dict[str, str] | None = None, replicas: int = 1,
                image: str = "veza/unknown:1") -> client.V1Deployment:
    labels = labels or {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[
                    client.V1Container(name="main", image=image,
                                       ports=[client.V1ContainerPort(container_port=8080)]),
                    client.V1Container(name="sidecar", image="veza/sidecar:1"),
                ]),
            ),
        ),
    )


def _with_cluster_ip(service: client.V1Service) -> client.V1Service | None:
    return service if service.spec.cluster_ip else None


def _error(exc_info: pytest.ExceptionInfo[client.ApiException]) -> dict:
    return json.loads(exc_info.value.body)


def test_discovery_documents(k8s_api_client):
    assert client.VersionApi(k8s_api_client).get_code().major == "1"
    assert client.CoreApi(k8s_api_client).get_api_versions().versions == ["v1"]
    groups = {g.name for g in client.ApisApi(k8s_api_client).get_api_versions().groups}
    assert {"apps", "coordination.k8s.io"} <= groups
    names = {r.name for r in client.AppsV1Api(k8s_api_client).get_api_resources().resources}
    assert {"deployments", "deployments/scale", "deployments/status", "replicasets"} <= names


def test_requests_without_the_token_get_401(k8s_server):
    with pytest.raises(urllib.error.HTTPError) as exc_info:
        urllib.request.urlopen(f"{k8s_server.url}/api/v1/namespaces", timeout=5)
    assert exc_info.value.code == 401
    assert json.loads(exc_info.value.read())["reason"] == "Unauthorized"


def test_crud_on_configmaps_secrets_services_endpoints_events_leases(k8s_api_client,
                                                                     k8s_namespace):
    core = client.CoreV1Api(k8s_api_client)
    coord = client.CoordinationV1Api(k8s_api_client)
    ns = k8s_namespace
    meta = client.V1ObjectMeta(name="thing", labels={"kind": "test"})
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta, data={"a": "1"}))
    core.create_namespaced_secret(ns, client.V1Secret(metadata=meta, string_data={"k": "v"}))
    core.create_namespaced_service(ns, client.V1Service(
        metadata=meta, spec=client.V1ServiceSpec(
            selector={"app": "x"}, ports=[client.V1ServicePort(port=80, target_port=8080)])))
    # (the Endpoints controller owns "thing"'s endpoints; these are hand-made ones)
    core.create_namespaced_endpoints(ns, client.V1Endpoints(
        metadata=client.V1ObjectMeta(name="manual"), subsets=[]))
    core.create_namespaced_event(ns, client.CoreV1Event(
        metadata=meta, involved_object=client.V1ObjectReference(kind="Pod", name="p"),
        reason="Tested", message="hello", type="Normal"))
    coord.create_namespaced_lease(ns, client.V1Lease(
        metadata=meta, spec=client.V1LeaseSpec(holder_identity="me")))

    secret = core.read_namespaced_secret("thing", ns)
    assert base64.b64decode(secret.data["k"]) == b"v"  # stringData folded into data
    assert secret.type == "Opaque"
    service = wait_until(lambda: _with_cluster_ip(core.read_namespaced_service("thing", ns)),
                         timeout=30, what="a clusterIP for the Service")
    assert service.spec.ports[0].target_port == 8080
    allocated = service.spec.cluster_ip
    service.spec.cluster_ip = None
    service.spec.cluster_ips = None
    service.spec.selector = {"app": "y"}
    replaced_service = core.replace_namespaced_service("thing", ns, service)
    assert replaced_service.spec.selector == {"app": "y"}
    assert replaced_service.spec.cluster_ip == allocated  # kept through a replace without it
    assert coord.read_namespaced_lease("thing", ns).spec.holder_identity == "me"
    assert core.read_namespaced_event("thing", ns).reason == "Tested"

    cm = core.read_namespaced_config_map("thing", ns)
    assert cm.metadata.uid and cm.metadata.creation_timestamp and cm.metadata.resource_version
    cm.data = {"a": "2"}
    replaced = core.replace_namespaced_config_map("thing", ns, cm)
    assert replaced.data == {"a": "2"}
    assert int(replaced.metadata.resource_version) > int(cm.metadata.resource_version)

    for delete in (core.delete_namespaced_config_map, core.delete_namespaced_secret,
                   core.delete_namespaced_service, core.delete_namespaced_event,
                   coord.delete_namespaced_lease):
        delete("thing", ns)
    core.delete_namespaced_endpoints("manual", ns)
    assert core.list_namespaced_config_map(ns).items == []
    assert core.list_namespaced_secret(ns).items == []
    assert core.list_namespaced_service(ns).items == []


def test_crud_on_pods_replicasets_and_deployments(k8s_api_client, k8s_namespace):
    core, apps, ns = client.CoreV1Api(k8s_api_client), client.AppsV1Api(k8s_api_client), \
        k8s_namespace
    pod = core.create_namespaced_pod(ns, client.V1Pod(
        metadata=client.V1ObjectMeta(generate_name="solo-"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="veza/x:1")])))
    assert pod.metadata.name.startswith("solo-") and len(pod.metadata.name) == 10
    assert pod.status.phase in ("Pending", "Running", "Failed")
    created = apps.create_namespaced_deployment(ns, _deployment("web"))
    assert created.metadata.generation == 1
    assert created.spec.strategy.type == "RollingUpdate"  # defaulted like the real API
    assert apps.read_namespaced_deployment("web", ns).spec.template.spec.containers[0].name \
        == "main"
    rs = client.V1ReplicaSet(
        metadata=client.V1ObjectMeta(name="lonely", labels={"app": "lonely"}),
        spec=client.V1ReplicaSetSpec(
            replicas=0, selector=client.V1LabelSelector(match_labels={"app": "lonely"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "lonely"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")]))))
    apps.create_namespaced_replica_set(ns, rs)
    assert apps.read_namespaced_replica_set("lonely", ns).spec.replicas == 0
    apps.delete_namespaced_replica_set("lonely", ns)
    apps.delete_namespaced_deployment("web", ns)
    core.delete_namespaced_pod(pod.metadata.name, ns)
    with pytest.raises(client.ApiException) as exc_info:
        apps.read_namespaced_deployment("web", ns)
    assert exc_info.value.status == 404


def test_label_and_field_selectors(k8s_api_client, k8s_namespace):
    core, ns = client.CoreV1Api(k8s_api_client), k8s_namespace
    for name, labels in [("a", {"app": "web", "color": "blue"}),
                         ("b", {"app": "web", "color": "green"}),
                         ("c", {"app": "api"})]:
        core.create_namespaced_config_map(ns, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name, labels=labels)))

    def names(**kwargs: str) -> list[str]:
        return [i.metadata.name for i in core.list_namespaced_config_map(ns, **kwargs).items]

    assert names(label_selector="app=web") == ["a", "b"]
    assert names(label_selector="app==web,color!=blue") == ["b"]
    assert names(label_selector="color in (blue, green)") == ["a", "b"]
    assert names(label_selector="app,color notin (green)") == ["a", "c"]
    assert names(label_selector="!color") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b") == ["a", "c"]
    everywhere = core.list_config_map_for_all_namespaces(
        field_selector=f"metadata.namespace={ns},metadata.name=c")
    assert [i.metadata.name for i in everywhere.items] == ["c"]


def test_stale_update_conflicts(k8s_api_client, k8s_namespace):
    core, ns = client.CoreV1Api(k8s_api_client), k8s_namespace
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cfg"), data={"v": "1"}))
    first = core.read_namespaced_config_map("cfg", ns)
    second = core.read_namespaced_config_map("cfg", ns)
    first.data = {"v": "2"}
    core.replace_namespaced_config_map("cfg", ns, first)
    second.data = {"v": "3"}
    with pytest.raises(client.ApiException) as exc_info:
        core.replace_namespaced_config_map("cfg", ns, second)
    assert exc_info.value.status == 409
    assert _error(exc_info)["reason"] == "Conflict"
    assert core.read_namespaced_config_map("cfg", ns).data == {"v": "2"}


def test_error_statuses(k8s_api_client, k8s_namespace):
    core, apps, ns = client.CoreV1Api(k8s_api_client), client.AppsV1Api(k8s_api_client), \
        k8s_namespace
    with pytest.raises(client.ApiException) as exc_info:
        core.read_namespaced_config_map("missing", ns)
    assert exc_info.value.status == 404
    status = _error(exc_info)
    assert status["kind"] == "Status" and status["reason"] == "NotFound"
    assert status["details"]["name"] == "missing"

    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="dup")))
    with pytest.raises(client.ApiException) as exc_info:
        core.create_namespaced_config_map(ns, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="dup")))
    assert exc_info.value.status == 409
    assert _error(exc_info)["reason"] == "AlreadyExists"

    with pytest.raises(client.ApiException) as exc_info:
        core.create_namespaced_config_map(ns, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="Bad_Name")))
    assert exc_info.value.status == 422
    causes = _error(exc_info)["details"]["causes"]
    assert causes[0]["field"] == "metadata.name"

    bad = _deployment("mismatch")
    bad.spec.selector = client.V1LabelSelector(match_labels={"app": "other"})
    bad.spec.template.spec.containers[0].image = None
    with pytest.raises(client.ApiException) as exc_info:
        apps.create_namespaced_deployment(ns, bad)
    assert exc_info.value.status == 422
    fields = {c["field"] for c in _error(exc_info)["details"]["causes"]}
    assert fields == {"spec.template.metadata.labels", "spec.template.spec.containers[0].image"}

    with pytest.raises(client.ApiException) as exc_info:
        core.create_namespaced_config_map("no-such-namespace", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="x")))
    assert exc_info.value.status == 404


def test_strategic_merge_patch_of_a_container_image(k8s_api_client, k8s_namespace):
    apps, ns = client.AppsV1Api(k8s_api_client), k8s_namespace
    apps.create_namespaced_deployment(ns, _deployment("web"))
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "veza/unknown:2"}]}}}}
    patched = apps.patch_namespaced_deployment("web", ns, patch)
    containers = {c.name: c for c in patched.spec.template.spec.containers}
    assert containers["main"].image == "veza/unknown:2"
    assert containers["main"].ports[0].container_port == 8080  # merged by name, not replaced
    assert containers["sidecar"].image == "veza/sidecar:1"
    assert patched.metadata.generation == 2

    relabelled = apps.patch_namespaced_deployment("web", ns, {"metadata": {"labels": {"x": "y"}}})
    assert relabelled.metadata.generation == 2  # metadata changes do not bump generation
    assert relabelled.metadata.labels == {"app": "web", "x": "y"}

    with pytest.raises(client.ApiException) as exc_info:
        apps.patch_namespaced_deployment("web", ns, {"spec": {"selector": {
            "matchLabels": {"app": "web", "x": "y"}}}})
    assert exc_info.value.status == 422
    assert _error(exc_info)["details"]["causes"][0]["field"] == "spec.selector"

    dropped = apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {
        "containers": [{"name": "sidecar", "$patch": "delete"}]}}}})
    assert [c.name for c in dropped.spec.template.spec.containers] == ["main"]


def test_json_merge_patch_and_json_patch(k8s_api_client, k8s_namespace):
    core, ns = client.CoreV1Api(k8s_api_client), k8s_namespace
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cfg", labels={"a": "1", "b": "2"}),
        data={"x": "1", "y": "2"}))
    merged = core.patch_namespaced_config_map(
        "cfg", ns, {"metadata": {"labels": {"a": None}}, "data": {"y": "3"}},
        _content_type="application/merge-patch+json")
    assert merged.metadata.labels == {"b": "2"}
    assert merged.data == {"x": "1", "y": "3"}
    patched = core.patch_namespaced_config_map("cfg", ns, [
        {"op": "test", "path": "/data/x", "value": "1"},
        {"op": "replace", "path": "/data/x", "value": "10"},
        {"op": "add", "path": "/data/z", "value": "26"},
        {"op": "remove", "path": "/data/y"},
        {"op": "add", "path": "/metadata/labels/c~1d", "value": "slash"},
    ])
    assert patched.data == {"x": "10", "z": "26"}
    assert patched.metadata.labels["c/d"] == "slash"
    with pytest.raises(client.ApiException) as exc_info:
        core.patch_namespaced_config_map("cfg", ns, [
            {"op": "test", "path": "/data/x", "value": "wrong"}])
    assert exc_info.value.status == 422


def test_watch_streams_changes_after_a_resource_version(k8s_api_client, k8s_namespace):
    core, ns = client.CoreV1Api(k8s_api_client), k8s_namespace
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="w", labels={"watched": "yes"})))
    core.patch_namespaced_config_map("w", ns, {"data": {"k": "v"}})
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="ignored")))
    core.delete_namespaced_config_map("w", ns)
    seen = []
    stream = watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=start,
                                  label_selector="watched=yes", timeout_seconds=10)
    for event in stream:
        seen.append((event["type"], event["object"].metadata.name))
        if event["type"] == "DELETED":
            break
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


def test_watch_without_resource_version_starts_with_current_objects(k8s_api_client,
                                                                     k8s_namespace):
    core, ns = client.CoreV1Api(k8s_api_client), k8s_namespace
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="exists")))
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, ns, timeout_seconds=10,
                          allow_watch_bookmarks=True):
        assert (event["type"], event["object"].metadata.name) == ("ADDED", "exists")
        w.stop()


def test_cascading_delete_follows_owner_references(k8s_api_client, k8s_namespace):
    core, ns = client.CoreV1Api(k8s_api_client), k8s_namespace
    owner = core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="owner")))
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner",
                                  uid=owner.metadata.uid)
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="child", owner_references=[ref])))
    core.create_namespaced_secret(ns, client.V1Secret(
        metadata=client.V1ObjectMeta(name="child-secret", owner_references=[ref])))
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="bystander")))
    core.delete_namespaced_config_map("owner", ns)
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["bystander"]
    assert core.list_namespaced_secret(ns).items == []


def test_namespace_delete_removes_its_objects(k8s_api_client):
    core = client.CoreV1Api(k8s_api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="doomed-ns")))
    core.create_namespaced_config_map("doomed-ns", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="inside")))
    core.delete_namespace("doomed-ns")
    everywhere = core.list_config_map_for_all_namespaces(field_selector="metadata.name=inside")
    assert everywhere.items == []


def test_immutable_secret_refuses_data_changes(k8s_api_client, k8s_namespace):
    core, ns = client.CoreV1Api(k8s_api_client), k8s_namespace
    core.create_namespaced_secret(ns, client.V1Secret(
        metadata=client.V1ObjectMeta(name="frozen"), string_data={"k": "v"}, immutable=True))
    with pytest.raises(client.ApiException) as exc_info:
        core.patch_namespaced_secret("frozen", ns, {"stringData": {"k": "other"}})
    assert exc_info.value.status == 422
    assert _error(exc_info)["details"]["causes"][0]["field"] == "data"
    relabelled = core.patch_namespaced_secret("frozen", ns, {"metadata": {"labels": {"a": "b"}}})
    assert relabelled.metadata.labels == {"a": "b"}
    assert base64.b64decode(core.read_namespaced_secret("frozen", ns).data["k"]) == b"v"


def test_scale_and_status_subresources(k8s_api_client, k8s_namespace):
    apps, core, ns = client.AppsV1Api(k8s_api_client), client.CoreV1Api(k8s_api_client), \
        k8s_namespace
    apps.create_namespaced_deployment(ns, _deployment("web", replicas=0))
    scale = apps.read_namespaced_deployment_scale("web", ns)
    assert scale.spec.replicas == 0 and scale.status.selector == "app=web"
    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 0}})
    scale.spec.replicas = 0
    scale.metadata.resource_version = "1"
    with pytest.raises(client.ApiException) as exc_info:
        apps.replace_namespaced_deployment_scale("web", ns, scale)
    assert exc_info.value.status == 409

    core.create_namespaced_service(ns, client.V1Service(
        metadata=client.V1ObjectMeta(name="svc"),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)])))
    before = core.read_namespaced_service("svc", ns).metadata.generation
    ingress = {"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}}
    after = core.patch_namespaced_service_status("svc", ns, ingress)
    assert after.metadata.generation == before  # status writes never bump generation
    ignored = core.patch_namespaced_service("svc", ns, {"status": {"loadBalancer": {}}})
    assert ignored.status.load_balancer.ingress[0].ip == "10.0.0.1"  # main resource ignores status


def test_watch_from_an_expired_resource_version_raises_410():
    """A tiny in-process server whose history keeps 3 changes; the client's Watch sees 410."""
    import threading

    from sandbox.k8s import resources
    from sandbox.k8s.server import ApiHTTPServer
    from sandbox.k8s.store import Store

    store = Store(history=3)
    server = ApiHTTPServer(("127.0.0.1", 0), store=store, token="t0ken")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        start = store.resource_version
        for i in range(5):
            store.create(resources.CONFIGMAPS, "default", {"metadata": {"name": f"c{i}"}})
        config = client.Configuration(host=server.url)
        config.api_key = {"authorization": "t0ken"}
        config.api_key_prefix = {"authorization": "Bearer"}
        with client.ApiClient(config) as api:
            core = client.CoreV1Api(api)
            with pytest.raises(client.ApiException) as exc_info:
                for _ in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                              resource_version=start, timeout_seconds=5):
                    pass
            assert exc_info.value.status == 410
    finally:
        store.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_one_port_speaks_plain_http_and_tls(k8s_server, scheme):
    config = client.Configuration(host=k8s_server.url if scheme == "http"
                                  else k8s_server.https_url)
    if scheme == "https":
        config.ssl_ca_cert = str(k8s_server.ca_cert)
    config.api_key = {"authorization": k8s_server.token}
    config.api_key_prefix = {"authorization": "Bearer"}
    with client.ApiClient(config) as api:
        names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
    assert "default" in names
