"""The release blocks: saved and loaded through Prefect, and their clients against the sandbox."""

from __future__ import annotations

import json
import socket
import uuid

import pytest
from kubernetes import client
from pydantic import SecretStr

from blocks.kubernetes import KubernetesCluster
from blocks.prometheus import PrometheusServer
from blocks.slack import SlackWebhook
from blocks.vault import VaultServer
from errors import (
    AuthenticationError,
    InvalidInputError,
    PermanentSystemError,
    UnreachableError,
)
from errors.vault import translate_vault_errors


def free_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_blocks_save_and_load_keep_their_secrets(prefect_harness, sandbox_stack):
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubeconfig = sandbox_stack.kubeconfig.read_text()
    KubernetesCluster(kubeconfig=SecretStr(kubeconfig)).save(name)
    PrometheusServer(url=sandbox_stack.prometheus_url, bearer_token=SecretStr("tok")).save(name)
    VaultServer(address=sandbox_stack.vault_addr, token=SecretStr(sandbox_stack.vault_token)).save(
        name
    )
    SlackWebhook(url=SecretStr("http://127.0.0.1:9/hook/secret")).save(name)

    cluster = KubernetesCluster.load(name)
    assert cluster.kubeconfig is not None
    assert cluster.kubeconfig.get_secret_value() == kubeconfig
    assert "sandbox" not in repr(cluster.kubeconfig)  # rendered masked
    namespaces = cluster.core_v1().list_namespace()
    assert any(ns.metadata.name == "default" for ns in namespaces.items)

    prometheus = PrometheusServer.load(name)
    assert prometheus.bearer_token is not None
    assert prometheus.bearer_token.get_secret_value() == "tok"
    vault = VaultServer.load(name)
    assert vault.get_client().is_authenticated()
    assert SlackWebhook.load(name).url.get_secret_value().endswith("/hook/secret")


def test_kubeconfig_content_or_path_and_context(sandbox_stack):
    by_path = KubernetesCluster(kubeconfig_path=str(sandbox_stack.kubeconfig), context="sandbox")
    by_content = KubernetesCluster(kubeconfig=SecretStr(sandbox_stack.kubeconfig.read_text()))
    for block in (by_path, by_content):
        api = block.get_api_client()
        assert api.configuration.host.split("://")[1] == sandbox_stack.api_url.split("://")[1]
        assert client.CoordinationV1Api(api).list_namespaced_lease("default").items is not None
        assert isinstance(block.core_v1(), client.CoreV1Api)
    with pytest.raises(InvalidInputError) as raised:
        KubernetesCluster(kubeconfig_path="/nonexistent/kubeconfig").get_api_client()
    assert raised.value.field == "kubeconfig_path"
    with pytest.raises(InvalidInputError):
        KubernetesCluster(kubeconfig=SecretStr("- just\n- a list\n")).get_api_client()
    with pytest.raises(InvalidInputError):
        KubernetesCluster().get_api_client()


def test_prometheus_query_against_the_sandbox(sandbox_stack):
    prometheus = PrometheusServer(url=sandbox_stack.prometheus_url)
    assert prometheus.is_ready()
    result = prometheus.query("vector(42)")
    assert len(result) == 1 and result[0]["value"][1] == "42"
    assert prometheus.query('up{job="no-such-job"}') == []
    rules = prometheus.api_get("/api/v1/rules")
    assert rules["groups"], "the sandbox loads the Veza alert rules"
    with pytest.raises(PermanentSystemError) as raised:
        prometheus.query("sum(")
    assert "HTTP 400" in str(raised.value)
    with prometheus.get_client() as http:
        assert str(http.base_url).rstrip("/") == sandbox_stack.prometheus_url.rstrip("/")


def test_prometheus_unreachable():
    prometheus = PrometheusServer(url=free_url(), timeout_s=3)
    with pytest.raises(UnreachableError) as raised:
        prometheus.query("up")
    assert raised.value.transient
    with pytest.raises(UnreachableError):
        prometheus.is_ready()


def test_prometheus_auth_headers():
    bearer = PrometheusServer(url="http://p:9090", bearer_token=SecretStr("abc"))
    basic = PrometheusServer(url="http://p:9090", username="u", password=SecretStr("pw"))
    for block, expected in ((bearer, "Bearer abc"), (basic, "Basic dTpwdw==")):
        with block.get_client() as http:
            request = http.build_request("GET", "/api/v1/query")
            flow = http.auth.sync_auth_flow(request)  # type: ignore[union-attr]
            assert next(flow).headers["Authorization"] == expected


def test_vault_approle_login_and_refusal(sandbox_stack):
    approle = json.loads((sandbox_stack.dir / "vault-approle.json").read_text())
    good = VaultServer(
        address=sandbox_stack.vault_addr,
        role_id=SecretStr(approle["role_id"]),
        secret_id=SecretStr(approle["secret_id"]),
    )
    assert good.get_client().is_authenticated()
    bad = VaultServer(
        address=sandbox_stack.vault_addr,
        role_id=SecretStr(approle["role_id"]),
        secret_id=SecretStr("wrong-secret-id"),
    )
    with pytest.raises(AuthenticationError) as raised, translate_vault_errors("log in"):
        bad.get_client()
    assert "wrong-secret-id" not in str(raised.value)
    with pytest.raises(InvalidInputError):
        VaultServer(address=sandbox_stack.vault_addr).get_client()
    with pytest.raises(InvalidInputError):
        VaultServer(address="vault:8200", token=SecretStr("t")).get_client()
