"""Workers in the cluster: deployments/k8s/ applied by kubectl, its Role checked against code."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.platform.k8s_calls import Permission, permissions

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deployments" / "k8s"
TEMPLATE = MANIFESTS / "work-pool" / "base-job-template.json"
PRODUCT = [ROOT / "flows", ROOT / "tasks", ROOT / "blocks"]
RELEASE_ROLE = "veza-ops-release"


def _objects() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _expand(rules: list[dict[str, Any]]) -> set[Permission]:
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def _release_roles() -> dict[str, dict[str, Any]]:
    return {o["metadata"]["namespace"]: o for o in _objects()
            if o["kind"] == "Role" and o["metadata"]["name"] == RELEASE_ROLE}


def test_release_role_grants_exactly_the_api_calls_the_code_makes() -> None:
    needed = permissions(PRODUCT)
    catalogue = yaml.safe_load((ROOT / "deployments" / "catalogue.yaml").read_text())
    namespaces = {e["namespace"] for e in catalogue["environments"].values()}
    roles = _release_roles()
    assert set(roles) == namespaces, "one release Role per namespace of the catalogue"
    for namespace, role in roles.items():
        granted = _expand(role["rules"])
        missing = {p: needed[p] for p in set(needed) - granted}
        extra = granted - set(needed)
        assert not missing, f"Role {namespace}/{RELEASE_ROLE} lacks (called at): {missing}"
        assert not extra, f"Role {namespace}/{RELEASE_ROLE} grants what no code calls: {extra}"
        assert not any("*" in p for perm in granted for p in perm)
    # What the issue listed, derived rather than copied (and ReplicaSets are never read).
    assert {("apps", "deployments", "patch"), ("", "services", "patch"),
            ("", "secrets", "create"), ("", "secrets", "delete"),
            ("coordination.k8s.io", "leases", "update"),
            ("networking.istio.io", "virtualservices", "patch")} <= set(needed)
    assert not any(resource == "replicasets" for _, resource, _ in needed)


def test_the_derivation_sees_a_new_call_and_follows_custom_object_plurals(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text(
        "from functools import partial\n"
        "from kubernetes import client as k8s\n"
        "GROUP = ('example.io', 'v1')\n"
        "def logs(core: k8s.CoreV1Api):\n"
        "    core.read_namespaced_pod_log('p', 'ns')\n"
        "    core.delete_collection_namespaced_config_map('ns')\n"
        "def _get(custom: k8s.CustomObjectsApi, plural):\n"
        "    return custom.get_namespaced_custom_object(*GROUP, 'ns', plural, 'x')\n"
        "def _put(custom, plural):\n"
        "    _get(custom, plural)\n"
        "def run(custom):\n"
        "    partial(_put, custom, 'widgets')()\n")
    found = set(permissions([tmp_path]))
    assert found == {("", "pods/log", "get"), ("", "configmaps", "deletecollection"),
                     ("example.io", "widgets", "get")}


def _subjects(kind: str, name: str, namespace: str) -> list[dict[str, Any]]:
    return [o for o in _objects() if o["kind"] == kind and o["metadata"]["name"] == name
            and o["metadata"]["namespace"] == namespace]


def test_base_job_template_runs_flows_as_the_bound_service_account() -> None:
    template = json.loads(TEMPLATE.read_text())
    variables = template["variables"]["properties"]
    account, namespace = (variables["service_account_name"]["default"],
                          variables["namespace"]["default"])
    assert _subjects("ServiceAccount", account, namespace)
    for ns in _release_roles():
        (binding,) = _subjects("RoleBinding", RELEASE_ROLE, ns)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account,
                                        "namespace": namespace}]
        assert binding["roleRef"]["name"] == RELEASE_ROLE
    (worker,) = _subjects("Deployment", "prefect-worker", namespace)
    pod = worker["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] != account  # the worker only starts Jobs
    assert pod["containers"][0]["args"][:7] == ["prefect", "worker", "start", "--type",
                                                "kubernetes", "--pool", "veza-ops"]
    # The image's project folder is where the pull step goes (veza_ops.pull).
    dockerfile = (MANIFESTS / "image" / "Dockerfile").read_text()
    home = variables["env"]["default"]["VEZA_OPS_HOME"]
    assert f"VEZA_OPS_HOME={home}" in dockerfile and f"WORKDIR {home}" in dockerfile
    placeholders = set(re.findall(r"{{\s*(\w+)\s*}}", json.dumps(template["job_configuration"])))
    assert placeholders <= set(variables)


def test_the_pool_is_created_on_a_prefect_server_with_the_template(prefect_harness: None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    template = json.loads(TEMPLATE.read_text())
    name = f"veza-ops-k8s-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as prefect:
        prefect.create_work_pool(WorkPoolCreate(name=name, type="kubernetes",
                                                base_job_template=template))
        try:
            pool = prefect.read_work_pool(name)
            assert pool.type == "kubernetes"
            assert pool.base_job_template["variables"]["properties"]["service_account_name"][
                "default"] == "veza-ops-release"
        finally:
            prefect.delete_work_pool(name)


@pytest.fixture
def platform_namespaces(kubectl: Callable[..., Any]) -> Iterator[list[str]]:
    """The catalogue's namespaces, which exist on a real cluster before the manifests."""
    created = []
    for ns in sorted(_release_roles()):
        if kubectl("get", "namespace", ns, check=False).returncode != 0:
            kubectl("create", "namespace", ns)
            created.append(ns)
    yield sorted(_release_roles())
    for ns in created:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_kubectl_applies_the_manifests_and_reads_them_back(
        kubectl: Callable[..., Any], platform_namespaces: list[str]) -> None:
    out = kubectl("apply", "-f", str(MANIFESTS)).stdout
    try:
        for o in _objects():
            group = o["apiVersion"].split("/")[0] if "/" in o["apiVersion"] else ""
            kind = o["kind"].lower() + (f".{group}" if group else "")
            assert f"{kind}/{o['metadata']['name']} created" in out, (kind, out)
        assert "unchanged" in kubectl("apply", "-f", str(MANIFESTS)).stdout
        for ns in platform_namespaces:
            role = json.loads(kubectl("get", "role", RELEASE_ROLE, "-n", ns, "-o",
                                      "json").stdout)
            assert _expand(role["rules"]) == set(permissions(PRODUCT))
            binding = json.loads(kubectl("get", "rolebinding", RELEASE_ROLE, "-n", ns, "-o",
                                         "json").stdout)
            assert binding["subjects"][0] == {"kind": "ServiceAccount",
                                              "name": "veza-ops-release",
                                              "namespace": "veza-ops"}
        accounts = kubectl("get", "serviceaccounts", "-n", "veza-ops", "-o", "name").stdout
        assert {"serviceaccount/prefect-worker", "serviceaccount/veza-ops-release"} <= \
            set(accounts.split())
        worker = json.loads(kubectl("get", "deployment", "prefect-worker", "-n", "veza-ops",
                                    "-o", "json").stdout)
        assert worker["spec"]["template"]["spec"]["serviceAccountName"] == "prefect-worker"
        worker_role = json.loads(kubectl("get", "role", "prefect-worker", "-n", "veza-ops",
                                         "-o", "json").stdout)
        assert ("batch", "jobs", "create") in _expand(worker_role["rules"])
    finally:
        kubectl("delete", "-f", str(MANIFESTS), "--wait=false", check=False)
