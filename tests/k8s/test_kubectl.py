"""Real kubectl against the API emulator, through the kubeconfig it writes."""

from __future__ import annotations

import json
import uuid

import pytest

from sandbox.procs import wait_until

pytestmark = pytest.mark.timeout(120)


def _manifest(name: str, image: str, *, replicas: int = 1) -> str:
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 60,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "main", "image": image,
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080},
                                       "periodSeconds": 1, "failureThreshold": 2},
                }]},
            },
        },
    })


def _get(kubectl, ns: str, *what: str) -> dict:
    return json.loads(kubectl("get", *what, "-n", ns, "-o", "json").stdout)


def test_get_tables_and_json(kubectl, k8s_namespace):
    ns = k8s_namespace
    kubectl("create", "-n", ns, "-f", "-", "--validate=false",
            input=_manifest("web", "veza/never-pushed:1", replicas=0))
    table = kubectl("get", "deployments", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[:2] == ["web", "0/0"]
    wide = kubectl("get", "deploy", "-n", ns, "-o", "wide").stdout
    assert "veza/never-pushed:1" in wide and "app=web" in wide
    everywhere = kubectl("get", "deploy", "-A").stdout
    assert any(line.split()[:2] == [ns, "web"] for line in everywhere.splitlines())
    assert _get(kubectl, ns, "deployment", "web")["spec"]["replicas"] == 0
    assert kubectl("get", "services", "-n", ns).stderr.startswith("No resources found")
    kubectl("create", "-n", ns, "-f", "-", "--validate=false", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080}]}}))
    services = kubectl("get", "services", "-n", ns).stdout.splitlines()
    assert services[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert services[1].split()[1] == "ClusterIP" and "8080/TCP" in services[1]
    # the Deployment controller creates the ReplicaSet
    wait_until(lambda: kubectl("get", "rs", "-n", ns, "-o", "name").stdout.strip(),
               timeout=30, what="the ReplicaSet of web")
    replicasets = kubectl("get", "replicasets", "-n", ns).stdout.splitlines()
    assert replicasets[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    assert replicasets[1].startswith("web-")
    names = kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert f"namespace/{ns}" in names
    nodes = kubectl("get", "nodes").stdout.splitlines()
    assert nodes[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert nodes[1].split()[:3] == ["sandbox", "Ready", "control-plane"]


def test_patch_scale_set_image_and_delete(kubectl, k8s_namespace):
    ns = k8s_namespace
    kubectl("create", "-n", ns, "-f", "-", "--validate=false",
            input=_manifest("web", "veza/never-pushed:1", replicas=0))
    kubectl("patch", "deployment", "web", "-n", ns, "-p", '{"metadata":{"labels":{"tier":"x"}}}')
    kubectl("patch", "deployment", "web", "-n", ns, "--type", "merge",
            "-p", '{"spec":{"minReadySeconds":0}}')
    kubectl("patch", "deployment", "web", "-n", ns, "--type", "json",
            "-p", '[{"op":"add","path":"/metadata/annotations","value":{"a":"b"}}]')
    kubectl("scale", "deployment/web", "-n", ns, "--replicas=0")
    kubectl("set", "image", "deployment/web", "-n", ns, "main=veza/never-pushed:2")
    dep = _get(kubectl, ns, "deployment", "web")
    assert dep["metadata"]["labels"] == {"app": "web", "tier": "x"}
    assert dep["metadata"]["annotations"]["a"] == "b"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "veza/never-pushed:2"
    assert dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 8080
    kubectl("delete", "deployment", "web", "-n", ns)
    missing = kubectl("get", "deployment", "web", "-n", ns, check=False)
    assert missing.returncode == 1 and "NotFound" in missing.stderr


def test_rollout_status_and_undo(kubectl, k8s_namespace, k8s_registry):
    pytest.importorskip("sandbox.k8s.controllers")
    ns = k8s_namespace
    repo = f"veza/backend-api-{uuid.uuid4().hex[:6]}"
    k8s_registry.push(f"{repo}:1")
    k8s_registry.push(f"{repo}:2")
    kubectl("create", "-n", ns, "-f", "-", "--validate=false", input=_manifest("api", f"{repo}:1"))
    done = kubectl("rollout", "status", "deployment/api", "-n", ns, "--timeout=90s", timeout=100)
    assert "successfully rolled out" in done.stdout
    kubectl("set", "image", "deployment/api", "-n", ns, f"main={repo}:2")
    kubectl("rollout", "status", "deployment/api", "-n", ns, "--timeout=90s", timeout=100)
    kubectl("rollout", "undo", "deployment/api", "-n", ns)
    done = kubectl("rollout", "status", "deployment/api", "-n", ns, "--timeout=90s", timeout=100)
    assert "successfully rolled out" in done.stdout
    dep = _get(kubectl, ns, "deployment", "api")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"{repo}:1"
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    pods = _get(kubectl, ns, "pods", "-l", "app=api")["items"]
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {f"{repo}:1"}
    table = kubectl("get", "pods", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert kubectl("logs", "-n", ns, pods[0]["metadata"]["name"], "--tail=5").returncode == 0


def test_imperative_create_of_namespaces_secrets_and_configmaps(kubectl, k8s_api_client):
    """kubectl's typed clients send protobuf for these; the emulator decodes them."""
    import base64

    from kubernetes import client

    ns = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", ns)
    try:
        kubectl("create", "secret", "generic", "creds", "-n", ns,
                "--from-literal=password=s3cret", "--from-literal=user=me")
        kubectl("create", "configmap", "settings", "-n", ns, "--from-literal=mode=fast")
        core = client.CoreV1Api(k8s_api_client)
        secret = core.read_namespaced_secret("creds", ns)
        assert base64.b64decode(secret.data["password"]) == b"s3cret"
        assert secret.type == "Opaque"
        assert core.read_namespaced_config_map("settings", ns).data == {"mode": "fast"}
        kubectl("create", "deployment", "hello", "-n", ns, "--image=veza/never-pushed:1",
                "--port=8080", "--replicas=0", "--", "sh", "-c", "echo hi")
        kubectl("expose", "deployment", "hello", "-n", ns, "--port=80", "--target-port=8080")
        dep = client.AppsV1Api(k8s_api_client).read_namespaced_deployment("hello", ns)
        assert dep.spec.replicas == 0 and dep.spec.selector.match_labels == {"app": "hello"}
        container = dep.spec.template.spec.containers[0]
        assert (container.image, container.command) == ("veza/never-pushed:1",
                                                        ["sh", "-c", "echo hi"])
        assert container.ports[0].container_port == 8080
        port = core.read_namespaced_service("hello", ns).spec.ports[0]
        assert (port.port, port.target_port) == (80, 8080)
    finally:
        kubectl("delete", "namespace", ns)


def test_apply_server_side_apply_and_server_dry_run(kubectl, k8s_namespace):
    ns = k8s_namespace
    manifest = _manifest("web", "veza/never-pushed:1", replicas=0)
    # no --validate=false: the minimal OpenAPI v3 documents say fieldValidation is supported
    assert "created" in kubectl("apply", "-n", ns, "-f", "-", input=manifest).stdout
    kubectl("apply", "-n", ns, "-f", "-",
            input=manifest.replace("never-pushed:1", "never-pushed:2"))
    kubectl("apply", "--server-side", "-n", ns, "-f", "-", "--validate=false",
            input=manifest.replace("never-pushed:1", "never-pushed:3"))
    image = kubectl("get", "deploy", "web", "-n", ns, "-o",
                    "jsonpath={.spec.template.spec.containers[0].image}").stdout
    assert image == "veza/never-pushed:3"
    typo = kubectl("create", "-n", ns, "-f", "-", check=False, input=json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "dta": {}}))
    assert typo.returncode == 1 and 'unknown field "dta"' in typo.stderr
    kubectl("delete", "deploy", "web", "-n", ns, "--dry-run=server")
    kubectl("scale", "deploy", "web", "-n", ns, "--replicas=4", "--dry-run=server")
    assert _get(kubectl, ns, "deploy", "web")["spec"]["replicas"] == 0


def test_get_watch_prints_table_rows_as_objects_change(kubectl, k8s_server, k8s_namespace,
                                                       tmp_path):
    import subprocess

    ns = k8s_namespace
    kubectl("create", "-n", ns, "-f", "-", input=_manifest("web", "veza/never-pushed:1",
                                                           replicas=0))
    watcher = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(k8s_server.kubeconfig), "--cache-dir", str(tmp_path),
         "get", "deployments", "-n", ns, "--watch", "--request-timeout=30s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().split()[:2] == ["NAME", "READY"]
        assert watcher.stdout.readline().split()[:2] == ["web", "0/0"]
        kubectl("patch", "deployment", "web", "-n", ns, "-p", '{"spec":{"paused":true}}')
        assert watcher.stdout.readline().split()[:2] == ["web", "0/0"]
        kubectl("delete", "deployment", "web", "-n", ns)
        assert watcher.stdout.readline().split()[0] == "web"
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
