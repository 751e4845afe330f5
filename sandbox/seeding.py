"""Seeding of a sandbox namespace with the four Veza services, as blue Deployments + Services.

Images are pushed healthy to the sandbox registry, secrets are written to Vault (KV v2 mount
``secret``, path ``veza/{environment}/{service}``) and copied into Kubernetes Secrets, and the
objects are created with the official ``kubernetes`` client, then awaited until available.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from errors import InvalidInputError
from sandbox.procs import wait_until
from sandbox.registry import ImageRegistry

if TYPE_CHECKING:  # the clients are imported when seeding: `veza-ops sandbox status` stays quick
    import hvac
    from kubernetes import client

TRAFFIC_LABEL = "sandbox.veza.io/traffic"
RATE_ANNOTATION = "sandbox.veza.io/traffic-rate"
URL_ANNOTATION = "sandbox.veza.io/url"
ENVIRONMENTS = ("staging", "production")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CONFLICT = 409


@dataclass(frozen=True)
class VezaService:
    """One Veza service as deployed in the sandbox."""

    name: str
    short: str
    container_port: int
    service_port: int

    def image(self, version: str) -> str:
        """Image reference of ``version``.

        Args:
            version: the tag.

        Returns:
            ``veza/{short}:{version}``.
        """
        return f"veza/{self.short}:{version}"


SERVICES: tuple[VezaService, ...] = (
    VezaService("veza-backend-api", "backend-api", 8080, 8080),
    VezaService("veza-chat-server", "chat-server", 8081, 8081),
    VezaService("veza-stream-server", "stream-server", 8082, 8082),
    VezaService("veza-web", "web", 80, 80),
)


def url_variable(environment: str, service: VezaService) -> str:
    """Name of the env-file variable holding a seeded Service's URL.

    Args:
        environment: ``staging`` or ``production``.
        service: the service.

    Returns:
        e.g. ``VEZA_STAGING_BACKEND_API_URL``.
    """
    return f"VEZA_{environment.upper()}_{service.short.upper().replace('-', '_')}_URL"


def deployment_body(service: VezaService, version: str, replicas: int = 2) -> dict[str, Any]:
    """The blue Deployment of ``service``, as the conventions describe it.

    Args:
        service: the service.
        version: image tag.
        replicas: its replicas (each one is a process of the sandbox).

    Returns:
        A Deployment manifest.
    """
    labels = {"app": service.name, "color": "blue"}
    port = service.container_port
    probe = {
        "periodSeconds": 1,
        "initialDelaySeconds": 0,
        "failureThreshold": 2,
        "timeoutSeconds": 3,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{service.name}-blue", "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 30,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": dict(labels)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [
                        {
                            "name": service.name,
                            "image": service.image(version),
                            "ports": [{"name": "http", "containerPort": port}],
                            "envFrom": [{"secretRef": {"name": f"{service.name}-secrets"}}],
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": port}}
                            | probe,
                            "livenessProbe": {"httpGet": {"path": "/health", "port": port}}
                            | probe,
                        }
                    ]
                },
            },
        },
    }


def service_body(service: VezaService) -> dict[str, Any]:
    """The Service of ``service``, selecting the blue colour.

    Args:
        service: the service.

    Returns:
        A Service manifest.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service.name, "labels": {"app": service.name}},
        "spec": {
            "selector": {"app": service.name, "color": "blue"},
            "ports": [
                {
                    "name": "http",
                    "protocol": "TCP",
                    "port": service.service_port,
                    "targetPort": service.container_port,
                }
            ],
        },
    }


def _vault_secret(vault: hvac.Client, environment: str, service: VezaService) -> dict[str, str]:
    import hvac.exceptions

    path = f"veza/{environment}/{service.name}"
    try:
        read = vault.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)
        return {str(k): str(v) for k, v in read["data"]["data"].items()}
    except hvac.exceptions.InvalidPath:
        pass
    data = {
        "database_url": (
            f"postgres://veza_{environment}:{secrets.token_urlsafe(18)}"
            f"@postgres.veza-{environment}.svc:5432/veza"
        ),
        "jwt_secret": secrets.token_urlsafe(32),
    }
    vault.secrets.kv.v2.create_or_update_secret(path=path, secret=data)
    return data


def _secret_body(service: VezaService, environment: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k.upper(): base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": f"{service.name}-secrets",
            "labels": {"app": service.name},
            "annotations": {"veza.io/vault-path": f"secret/veza/{environment}/{service.name}"},
        },
        "data": encoded,
    }


def _created(call: Any, *args: Any, on_conflict: Any = None) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        call(*args)
    except ApiException as error:
        if error.status != _CONFLICT:
            raise
        if on_conflict is not None:
            on_conflict()


def _available(apps: client.AppsV1Api, namespace: str, name: str) -> bool:
    found = apps.read_namespaced_deployment(name, namespace)
    spec, status, meta = found.spec, found.status, found.metadata
    if spec is None or status is None or meta is None:
        return False
    wanted = spec.replicas if spec.replicas is not None else 1
    return bool(
        (status.observed_generation or 0) >= (meta.generation or 0)
        and (status.updated_replicas or 0) == wanted
        and (status.available_replicas or 0) == wanted
        and (status.replicas or 0) == wanted
    )


def seed_environment(
    *,
    kubeconfig: Path,
    vault: hvac.Client,
    registry: ImageRegistry,
    namespace: str,
    environment: str,
    version: str = "1.0.0",
    traffic: bool = True,
    traffic_rate: float | None = None,
    replicas: int = 2,
    timeout: float = 180.0,
) -> dict[str, str]:
    """Seed ``namespace`` with the four Veza services and wait until they are available.

    Args:
        kubeconfig: the sandbox kubeconfig.
        vault: an authenticated client of the sandbox Vault.
        registry: the sandbox image registry.
        namespace: namespace to create (or reuse).
        environment: ``staging`` or ``production`` (Vault path and secrets).
        version: image tag of every service.
        traffic: label the namespace so the load generator sends it traffic.
        traffic_rate: requests a second per Service (the load generator's ``--rate`` if None).
        replicas: replicas of each Deployment (tests that need no second pod use 1).
        timeout: seconds to wait for the Deployments and Service URLs.

    Returns:
        Service name to its URL (the Service's ``sandbox.veza.io/url``).

    Raises:
        InvalidInputError: on a bad namespace or environment, before any change.
    """
    if not _DNS_LABEL.match(namespace):
        raise InvalidInputError(
            "namespace", f"{namespace!r} is not a DNS-1123 label",
            fix="use lowercase letters, digits and '-', at most 63 characters",
        )
    if environment not in ENVIRONMENTS:
        raise InvalidInputError(
            "environment", f"{environment!r} is not known", fix=f"use one of {ENVIRONMENTS}"
        )
    if traffic_rate is not None and not 0 < traffic_rate <= 50:
        raise InvalidInputError("traffic_rate", f"{traffic_rate} is out of range",
                                fix="use a rate in (0, 50] requests per second")
    if replicas < 1:
        raise InvalidInputError("replicas", f"{replicas} is not positive", fix="use 1 or more")
    from kubernetes import client, config

    api = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), context="sandbox"
    )
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    labels = {"veza.io/environment": environment}
    if traffic:
        labels[TRAFFIC_LABEL] = "on"
    annotations = {} if traffic_rate is None else {RATE_ANNOTATION: f"{traffic_rate:g}"}
    meta = {"labels": labels, "annotations": annotations}
    ns_body = {"metadata": {"name": namespace, **meta}}
    _created(
        core.create_namespace, ns_body,
        on_conflict=lambda: core.patch_namespace(namespace, {"metadata": meta}),
    )
    for service in SERVICES:
        registry.push(service.image(version))
        secret = _secret_body(service, environment, _vault_secret(vault, environment, service))
        name = secret["metadata"]["name"]
        _created(
            core.create_namespaced_secret, namespace, secret,
            on_conflict=lambda n=name, s=secret: core.replace_namespaced_secret(n, namespace, s),
        )
        _created(apps.create_namespaced_deployment, namespace,
                 deployment_body(service, version, replicas))
        _created(core.create_namespaced_service, namespace, service_body(service))
    for service in SERVICES:
        deployment = f"{service.name}-blue"

        def _ready(name: str = deployment) -> bool:
            return _available(apps, namespace, name)

        wait_until(
            _ready, timeout=timeout, interval=0.2,
            what=f"deployment {namespace}/{deployment} to be available",
        )
    urls: dict[str, str] = {}
    for service in SERVICES:

        def _url(name: str = service.name) -> str | None:
            meta = core.read_namespaced_service(name, namespace).metadata
            return None if meta is None else (meta.annotations or {}).get(URL_ANNOTATION)

        found = wait_until(_url, timeout=timeout, what=f"URL of service {namespace}/{service.name}")
        urls[service.name] = str(found)
    return urls
