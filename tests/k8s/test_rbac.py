"""RBAC objects and ServiceAccounts: stored and served (not enforced), by client and kubectl."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

pytestmark = pytest.mark.timeout(90)

RBAC_MANIFEST = """\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: veza-ops
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: canary-editor
rules:
  - apiGroups: [networking.istio.io]
    resources: [virtualservices, destinationrules]
    verbs: [get, list, watch, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: veza-ops-canary
subjects:
  - kind: ServiceAccount
    name: veza-ops
    namespace: {ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: canary-editor
"""


def test_rbac_and_service_accounts_with_the_client(k8s_api_client, k8s_namespace):
    rbac, core, ns = (client.RbacAuthorizationV1Api(k8s_api_client),
                      client.CoreV1Api(k8s_api_client), k8s_namespace)
    # Every namespace gets its "default" ServiceAccount, as the ServiceAccount controller does.
    assert [s.metadata.name for s in core.list_namespaced_service_account(ns).items] == \
        ["default"]
    core.create_namespaced_service_account(ns, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="deployer", labels={"team": "ops"})))
    assert core.read_namespaced_service_account("deployer", ns).metadata.labels == \
        {"team": "ops"}
    rule = client.V1PolicyRule(api_groups=["apps"], resources=["deployments"],
                               verbs=["get", "patch"])
    rbac.create_namespaced_role(ns, client.V1Role(
        metadata=client.V1ObjectMeta(name="deploy"), rules=[rule]))
    subject = client.RbacV1Subject(kind="ServiceAccount", name="deployer", namespace=ns)
    rbac.create_namespaced_role_binding(ns, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="deploy"), subjects=[subject],
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                  name="deploy")))
    binding = rbac.read_namespaced_role_binding("deploy", ns)
    assert binding.role_ref.name == "deploy" and binding.subjects[0].name == "deployer"
    rbac.patch_namespaced_role("deploy", ns, {"rules": [{"apiGroups": [""], "resources": ["pods"],
                                                         "verbs": ["list"]}]})
    assert rbac.read_namespaced_role("deploy", ns).rules[0].resources == ["pods"]
    with pytest.raises(client.ApiException) as exc_info:  # roleRef is immutable
        rbac.patch_namespaced_role_binding("deploy", ns, {"roleRef": {"name": "other"}})
    assert exc_info.value.status == 422

    cluster_role = f"{ns}-reader"
    rbac.create_cluster_role(client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name=cluster_role), rules=[rule]))
    rbac.create_cluster_role_binding(client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=cluster_role), subjects=[subject],
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                  name=cluster_role)))
    try:
        names = {r.metadata.name for r in rbac.list_cluster_role().items}
        assert cluster_role in names
        crb = rbac.read_cluster_role_binding(cluster_role)
        assert crb.metadata.namespace is None and crb.role_ref.kind == "ClusterRole"
        with pytest.raises(client.ApiException) as exc_info:
            rbac.create_cluster_role_binding(client.V1ClusterRoleBinding(
                metadata=client.V1ObjectMeta(name=f"{cluster_role}-bad"),
                role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                          name="x")))
        assert exc_info.value.status == 422
    finally:
        rbac.delete_cluster_role_binding(cluster_role)
        rbac.delete_cluster_role(cluster_role)
    resources = {r.name: r for r in rbac.get_api_resources().resources}
    assert {"roles", "rolebindings", "clusterroles", "clusterrolebindings"} <= set(resources)
    assert resources["roles"].namespaced and not resources["clusterroles"].namespaced
    core_names = {r.name for r in core.get_api_resources().resources}
    assert "serviceaccounts" in core_names


def test_kubectl_apply_and_get_rbac(kubectl, k8s_namespace):
    ns = k8s_namespace
    out = kubectl("apply", "-n", ns, "-f", "-", input=RBAC_MANIFEST.replace("{ns}", ns)).stdout
    assert "serviceaccount/veza-ops created" in out
    assert "role.rbac.authorization.k8s.io/canary-editor created" in out
    assert "rolebinding.rbac.authorization.k8s.io/veza-ops-canary created" in out
    again = kubectl("apply", "-n", ns, "-f", "-", input=RBAC_MANIFEST.replace("{ns}", ns))
    assert "unchanged" in again.stdout
    bindings = kubectl("get", "rolebindings", "-n", ns).stdout.splitlines()
    assert bindings[0].split() == ["NAME", "ROLE", "AGE"]
    assert bindings[1].split()[:2] == ["veza-ops-canary", "Role/canary-editor"]
    assert kubectl("get", "roles", "-n", ns).stdout.splitlines()[0].split() == \
        ["NAME", "CREATED", "AT"]
    accounts = kubectl("get", "sa", "-n", ns, "-o", "name").stdout.split()
    assert accounts == ["serviceaccount/default", "serviceaccount/veza-ops"]
    role = json.loads(kubectl("get", "role", "canary-editor", "-n", ns, "-o", "json").stdout)
    assert role["rules"][0]["resources"] == ["virtualservices", "destinationrules"]
    kubectl("delete", "-n", ns, "-f", "-", input=RBAC_MANIFEST.replace("{ns}", ns))
    assert kubectl("get", "roles,rolebindings", "-n", ns).stderr.startswith("No resources")


def test_kubectl_create_service_account_role_and_binding(kubectl, k8s_namespace):
    ns = k8s_namespace
    kubectl("create", "serviceaccount", "deployer", "-n", ns)
    kubectl("create", "role", "reader", "--verb=get,list", "--resource=pods,deployments.apps",
            "-n", ns)
    kubectl("create", "rolebinding", "deployer-reads", "--role=reader",
            "--serviceaccount", f"{ns}:deployer", "-n", ns)
    cluster_role = f"{ns}-view"
    kubectl("create", "clusterrole", cluster_role, "--verb=get", "--resource=namespaces")
    kubectl("create", "clusterrolebinding", cluster_role, f"--clusterrole={cluster_role}",
            "--user=alice")
    try:
        role = json.loads(kubectl("get", "role", "reader", "-n", ns, "-o", "json").stdout)
        assert sorted(tuple(r["apiGroups"]) + tuple(r["resources"]) for r in role["rules"]) == \
            [("", "pods"), ("apps", "deployments")]
        assert role["rules"][0]["verbs"] == ["get", "list"]
        binding = json.loads(kubectl("get", "rolebinding", "deployer-reads", "-n", ns,
                                     "-o", "json").stdout)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": "reader"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "deployer",
                                        "namespace": ns}]
        crb = json.loads(kubectl("get", "clusterrolebinding", cluster_role, "-o", "json").stdout)
        assert crb["subjects"][0]["name"] == "alice"
        assert crb["subjects"][0]["apiGroup"] == "rbac.authorization.k8s.io"
        assert "deployer" in kubectl("get", "sa", "-n", ns).stdout
    finally:
        kubectl("delete", "clusterrolebinding", cluster_role, check=False)
        kubectl("delete", "clusterrole", cluster_role, check=False)
