"""One environment's systems: its blocks loaded once at a flow's entry and its API clients."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client as k8s

from blocks.kubernetes import KubernetesCluster
from blocks.loading import load_block
from blocks.prometheus import PrometheusServer
from blocks.slack import SlackWebhook
from blocks.vault import VaultServer
from tasks.release.catalogue import EnvironmentSpec


@dataclass
class Cluster:
    """One environment's systems.

    Attributes:
        env: the environment's catalogue entry.
        kubernetes: its cluster block.
        prometheus: its Prometheus block.
        vault: its Vault block.
        slack: its Slack block, if any.
        apps_v1: apps API.
        core_v1: core API.
        coordination_v1: coordination API.
    """

    env: EnvironmentSpec
    kubernetes: KubernetesCluster
    prometheus: PrometheusServer
    vault: VaultServer
    slack: SlackWebhook | None
    apps_v1: k8s.AppsV1Api
    core_v1: k8s.CoreV1Api
    coordination_v1: k8s.CoordinationV1Api


def connect(env: EnvironmentSpec) -> Cluster:
    """Load the blocks an environment names and build its API clients (no request made).

    Args:
        env: the environment.

    Returns:
        The cluster handle.

    Raises:
        BlockNotFoundError: a named block is not registered.
    """
    kube = load_block(KubernetesCluster, env.kubernetes_block,
                      field=f"environments.{env.name}.kubernetes_block")
    prometheus = load_block(PrometheusServer, env.prometheus_block,
                            field=f"environments.{env.name}.prometheus_block")
    vault = load_block(VaultServer, env.vault_block, field=f"environments.{env.name}.vault_block")
    slack = (load_block(SlackWebhook, env.slack_block,
                        field=f"environments.{env.name}.slack_block")
             if env.slack_block else None)
    api = kube.get_api_client()
    return Cluster(env=env, kubernetes=kube, prometheus=prometheus, vault=vault, slack=slack,
                   apps_v1=k8s.AppsV1Api(api), core_v1=k8s.CoreV1Api(api),
                   coordination_v1=k8s.CoordinationV1Api(api))


def kubernetes_client(env: EnvironmentSpec) -> k8s.ApiClient:
    """Load only the environment's Kubernetes block and build its API client (no request made).

    For readers (reports, status, the metrics exporter) that need no other system.

    Args:
        env: the environment.

    Returns:
        The API client (wrap it in ``CoreV1Api``, ``AppsV1Api``...).

    Raises:
        BlockNotFoundError: the Kubernetes block is not registered.
    """
    kube = load_block(KubernetesCluster, env.kubernetes_block,
                      field=f"environments.{env.name}.kubernetes_block")
    return kube.get_api_client()
