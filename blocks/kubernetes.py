"""Prefect block for a Kubernetes cluster; hands out the official typed API clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.schema_cache import CachedSchema
from errors import InvalidInputError


class KubernetesCluster(CachedSchema, Block):
    """How to reach a Kubernetes cluster: kubeconfig content, a kubeconfig path, or in-cluster.

    Exactly one source is used, in this order: ``kubeconfig`` (content, secret),
    ``kubeconfig_path``, ``in_cluster``. ``context`` picks a context of the kubeconfig.
    """

    _block_type_name = "Veza Kubernetes Cluster"
    _block_type_slug = "veza-kubernetes-cluster"
    _description = (
        "A Kubernetes cluster reached through a kubeconfig (content or path) or in-cluster."
    )

    kubeconfig: SecretStr | None = Field(
        default=None, description="Content of a kubeconfig file (YAML); kept secret."
    )
    kubeconfig_path: str | None = Field(default=None, description="Path to a kubeconfig file.")
    context: str | None = Field(default=None, description="Context of the kubeconfig to use.")
    in_cluster: bool = Field(
        default=False, description="Use the service account of the pod this runs in."
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Timeout of each API request, in seconds."
    )

    def _configuration(self) -> client.Configuration:
        configuration = client.Configuration()
        if self.kubeconfig is not None:
            try:
                content = yaml.safe_load(self.kubeconfig.get_secret_value())
            except yaml.YAMLError:
                content = None
            if not isinstance(content, dict):
                raise InvalidInputError(
                    "kubeconfig",
                    "is not a YAML kubeconfig document",
                    fix="paste the content of a kubeconfig file (apiVersion: v1, kind: Config)",
                )
            config.load_kube_config_from_dict(  # type: ignore[no-untyped-call]
                content, context=self.context, client_configuration=configuration
            )
        elif self.kubeconfig_path is not None:
            path = Path(self.kubeconfig_path).expanduser()
            if not path.is_file():
                raise InvalidInputError(
                    "kubeconfig_path",
                    f"no file at {path}",
                    fix="give the path of an existing kubeconfig file, or its content",
                )
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(path), context=self.context, client_configuration=configuration
            )
        elif self.in_cluster:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        else:
            raise InvalidInputError(
                "kubeconfig",
                "no way to reach the cluster is configured",
                fix="set kubeconfig (content), kubeconfig_path, or in_cluster=true",
            )
        return configuration

    def get_api_client(self) -> client.ApiClient:
        """Build an API client for the configured cluster.

        Returns:
            A ``kubernetes.client.ApiClient`` (a fresh one per call; close it when done).

        Raises:
            InvalidInputError: the block names no usable kubeconfig.
        """
        api = client.ApiClient(self._configuration())
        timeout = self.request_timeout_s
        original = api.call_api

        def call_api(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("_request_timeout", timeout)
            if kwargs.get("_request_timeout") is None:
                kwargs["_request_timeout"] = timeout
            return original(*args, **kwargs)

        api.call_api = call_api  # type: ignore[method-assign]
        return api

    def core_v1(self) -> client.CoreV1Api:
        """Typed API for Services, Pods, Secrets and ConfigMaps.

        Returns:
            ``CoreV1Api`` bound to a new API client.
        """
        return client.CoreV1Api(self.get_api_client())
