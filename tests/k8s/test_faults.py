"""Fault injection on the API emulator: per-verb, per-resource errors, cleared on demand."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from kubernetes import client

pytestmark = pytest.mark.timeout(60)


def _faults(server, method: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{server.url}/sandbox/faults", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def faults(k8s_server, k8s_namespace) -> Iterator[object]:
    """The server, with every fault cleared afterwards (before the namespace is deleted)."""
    yield k8s_server
    _faults(k8s_server, "DELETE")


def test_error_rate_one_fails_only_the_chosen_verb_and_resource(faults, k8s_api_client,
                                                                 k8s_namespace):
    core, ns = client.CoreV1Api(k8s_api_client), k8s_namespace
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cfg")))
    active = _faults(faults, "POST", {"verb": "list", "resource": "configmaps",
                                      "error_rate": 1.0, "latency_ms": 0, "status": 503})
    assert active["faults"][0]["verb"] == "list"
    with pytest.raises(client.ApiException) as exc_info:
        core.list_namespaced_config_map(ns)
    assert exc_info.value.status == 503
    assert json.loads(exc_info.value.body)["reason"] == "ServiceUnavailable"
    assert core.read_namespaced_config_map("cfg", ns).metadata.name == "cfg"  # get unaffected
    assert core.list_namespaced_secret(ns).items == []  # other resources unaffected
    _faults(faults, "DELETE")
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["cfg"]


def test_wildcard_fault_with_latency_still_answers(faults, k8s_api_client, k8s_namespace):
    core, ns = client.CoreV1Api(k8s_api_client), k8s_namespace
    _faults(faults, "POST", {"verb": "*", "resource": "leases", "error_rate": 0.0,
                             "latency_ms": 50})
    coord = client.CoordinationV1Api(k8s_api_client)
    assert coord.list_namespaced_lease(ns).items == []
    _faults(faults, "POST", {"verb": "*", "resource": "*", "error_rate": 1.0, "latency_ms": 0})
    with pytest.raises(client.ApiException) as exc_info:
        core.read_namespace(ns)
    assert exc_info.value.status == 500
    assert len(_faults(faults, "GET")["faults"]) == 2


def test_a_bad_fault_is_refused_naming_the_field(faults):
    with pytest.raises(urllib.error.HTTPError) as exc_info:
        _faults(faults, "POST", {"verb": "list", "resource": "pods", "error_rate": 2})
    assert exc_info.value.code == 400
    assert "error_rate" in json.loads(exc_info.value.read())["message"]
    assert _faults(faults, "GET")["faults"] == []


def test_the_launcher_refuses_a_bad_ip_prefix_before_starting(tmp_path):
    from errors import InvalidInputError
    from sandbox.k8s.launcher import start_k8s

    with pytest.raises(InvalidInputError) as exc_info:
        start_k8s(tmp_path, registry_path=tmp_path / "r.json", file_sd_path=tmp_path / "t.json",
                  ip_prefix="10.0.0")
    assert exc_info.value.field == "ip_prefix"
    assert not (tmp_path / "k8s.log").exists()


def test_faults_target_custom_and_rbac_resources_by_plural(faults, k8s_api_client, k8s_namespace):
    custom, ns = client.CustomObjectsApi(k8s_api_client), k8s_namespace
    istio = ("networking.istio.io", "v1beta1", ns)
    vs = {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
          "metadata": {"name": "api"}, "spec": {"hosts": ["api"]}}
    custom.create_namespaced_custom_object(*istio, "virtualservices", vs)
    _faults(faults, "POST", {"verb": "patch", "resource": "virtualservices", "error_rate": 1.0,
                             "status": 503})
    _faults(faults, "POST", {"verb": "create", "resource": "roles", "error_rate": 1.0})
    with pytest.raises(client.ApiException) as exc_info:
        custom.patch_namespaced_custom_object(*istio, "virtualservices", "api",
                                              {"spec": {"hosts": ["x"]}})
    assert exc_info.value.status == 503
    assert custom.get_namespaced_custom_object(*istio, "virtualservices", "api")["spec"] == \
        {"hosts": ["api"]}  # reads unaffected, the patch did not happen
    assert custom.list_namespaced_custom_object(*istio, "destinationrules")["items"] == []
    with pytest.raises(client.ApiException) as exc_info:
        client.RbacAuthorizationV1Api(k8s_api_client).create_namespaced_role(
            ns, client.V1Role(metadata=client.V1ObjectMeta(name="r")))
    assert exc_info.value.status == 500
    _faults(faults, "DELETE")
    patched = custom.patch_namespaced_custom_object(*istio, "virtualservices", "api",
                                                    {"spec": {"hosts": ["x"]}})
    assert patched["spec"]["hosts"] == ["x"]


def test_after_apply_carries_the_request_out_then_fails_and_times_limits_it(
        faults, k8s_api_client, k8s_namespace):
    core, ns = client.CoreV1Api(k8s_api_client), k8s_namespace
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cfg"), data={"a": "1"}))
    _faults(faults, "POST", {"verb": "patch", "resource": "configmaps", "error_rate": 1.0,
                             "after_apply": True, "times": 1})
    with pytest.raises(client.ApiException) as exc_info:
        core.patch_namespaced_config_map("cfg", ns, {"data": {"a": "2"}})
    assert exc_info.value.status == 500
    assert core.read_namespaced_config_map("cfg", ns).data == {"a": "2"}  # it was applied
    core.patch_namespaced_config_map("cfg", ns, {"data": {"a": "3"}})  # times=1: spent
    (rule,) = _faults(faults, "GET")["faults"]
    assert rule["hits"] == 1 and rule["after_apply"] is True


def test_a_bad_after_apply_or_times_is_refused(faults):
    for body in ({"after_apply": "yes"}, {"times": -1}, {"skip": True}):
        with pytest.raises(urllib.error.HTTPError) as exc_info:
            _faults(faults, "POST", {"verb": "patch", "resource": "services", **body})
        assert next(iter(body)) in json.loads(exc_info.value.read())["message"]


def test_skip_lets_the_first_requests_through(faults, k8s_api_client, k8s_namespace):
    core, ns = client.CoreV1Api(k8s_api_client), k8s_namespace
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cfg"), data={"a": "1"}))
    _faults(faults, "POST", {"verb": "patch", "resource": "configmaps", "error_rate": 1.0,
                             "skip": 1})
    core.patch_namespaced_config_map("cfg", ns, {"data": {"a": "2"}})
    with pytest.raises(client.ApiException):
        core.patch_namespaced_config_map("cfg", ns, {"data": {"a": "3"}})
    assert core.read_namespaced_config_map("cfg", ns).data == {"a": "2"}
    assert _faults(faults, "GET")["faults"][0]["hits"] == 1


def test_hang_outlasts_the_client_timeout_and_counts_in_times(faults, k8s_api_client,
                                                              k8s_namespace):
    """A hung patch the rule also fails: the client times out, nothing is applied, and with
    ``times: 1`` the next patch goes through at once. A hang alone (no error) is carried
    out once it ends, the client long gone."""
    import urllib3

    from sandbox.procs import wait_until

    core, ns = client.CoreV1Api(k8s_api_client), k8s_namespace
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cfg"), data={"a": "1"}))
    _faults(faults, "POST", {"verb": "patch", "resource": "configmaps", "error_rate": 1.0,
                             "hang_ms": 1500, "times": 1})
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        core.patch_namespaced_config_map("cfg", ns, {"data": {"a": "2"}}, _request_timeout=0.3)
    core.patch_namespaced_config_map("cfg", ns, {"data": {"a": "3"}}, _request_timeout=5)
    (rule,) = _faults(faults, "GET")["faults"]
    assert rule["hits"] == 1 and rule["hang_ms"] == 1500
    _faults(faults, "DELETE")
    _faults(faults, "POST", {"verb": "patch", "resource": "configmaps", "hang_ms": 1000,
                             "times": 1})
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        core.patch_namespaced_config_map("cfg", ns, {"data": {"b": "4"}}, _request_timeout=0.3)
    wait_until(lambda: core.read_namespaced_config_map("cfg", ns).data.get("b") == "4",
               timeout=10, what="the hung patch carried out", interval=0.1)
    assert core.read_namespaced_config_map("cfg", ns).data["a"] == "3"  # the failed one: never


def test_a_bad_hang_is_refused(faults):
    with pytest.raises(urllib.error.HTTPError) as exc_info:
        _faults(faults, "POST", {"verb": "patch", "resource": "services", "hang_ms": -1})
    assert "hang_ms" in json.loads(exc_info.value.read())["message"]
