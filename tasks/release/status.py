"""Where an environment stands (read only): services, readiness, lock, last release."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubernetes import client as k8s
from pydantic import BaseModel

from errors import NotFoundError
from errors.kubernetes import translate_api_errors
from tasks.release.canary_mesh import CANARY, custom_objects, read_weight
from tasks.release.canary_service import serving_colour
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec
from tasks.release.history import ReleaseRecord, release_history
from tasks.release.leases import LEASE_NAME, holder_run, lease_expiry
from tasks.release.preemption import PHASE_ANNOTATION
from tasks.release.switching import PENDING_ANNOTATION


class ServiceStatus(BaseModel):
    """One service: the colour its Service selects (or its canary weight), image, readiness."""

    service: str
    colour: str | None = None
    canary_weight: int | None = None
    canary_image: str | None = None
    image: str | None = None
    ready: int = 0
    replicas: int = 0
    pending_release: str | None = None
    problem: str | None = None


class LockStatus(BaseModel):
    """The environment's release Lease."""

    holder: str | None = None
    run_id: str | None = None
    phase: str | None = None
    expires_at: datetime | None = None
    expired: bool = False


class EnvironmentStatus(BaseModel):
    """An environment as read at ``read_at``."""

    environment: str
    namespace: str
    strategy: str
    read_at: datetime
    services: list[ServiceStatus]
    lock: LockStatus
    last_release: ReleaseRecord | None = None


def _read(what: str, call: Any, *args: Any) -> Any:
    try:
        with translate_api_errors(what):
            return call(*args)
    except NotFoundError:
        return None


def _image(deployment: k8s.V1Deployment, container: str) -> str | None:
    pod = deployment.spec.template.spec if deployment.spec else None
    containers = pod.containers if pod else []
    chosen = next((c for c in containers if c.name == container), containers[0] if containers
                  else None)
    return chosen.image if chosen else None


def service_status(spec: ServiceSpec, env: EnvironmentSpec, service: k8s.V1Service | None,
                   live: k8s.V1Deployment | None) -> ServiceStatus:
    """A service's status from its Service and the Deployment of the colour it selects (pure).

    Args:
        spec: the catalogue's service.
        env: the environment (colour label).
        service: its Service, None when missing.
        live: the live colour's Deployment, None when missing.

    Returns:
        The status; ``problem`` names what is missing.
    """
    if service is None:
        return ServiceStatus(service=spec.name, problem=f"Service {spec.service_name} missing")
    annotations = (service.metadata.annotations or {}) if service.metadata else {}
    colour = serving_colour(service, env.colour_label)  # widened by a canary: recorded
    status = ServiceStatus(service=spec.name, colour=colour,
                           pending_release=annotations.get(PENDING_ANNOTATION))
    if live is None:
        status.problem = (f"Deployment {spec.deployment_name(colour)} missing" if colour
                          else f"Service selects no {env.colour_label}")
        return status
    status.image = _image(live, spec.container)
    status.replicas = (live.spec.replicas or 0) if live.spec else 0
    status.ready = (live.status.ready_replicas or 0) if live.status else 0
    return status


def lock_status(lease: k8s.V1Lease | None, *, now: datetime) -> LockStatus:
    """The release Lease's holder and expiry (pure).

    Args:
        lease: the Lease, None when it was never taken.
        now: the current time (expired or not).

    Returns:
        The status (no holder: free).
    """
    if lease is None or lease.spec is None or not lease.spec.holder_identity:
        return LockStatus()
    expiry = lease_expiry(lease)
    annotations = (lease.metadata.annotations or {}) if lease.metadata else {}
    return LockStatus(holder=lease.spec.holder_identity, run_id=holder_run(lease),
                      phase=annotations.get(PHASE_ANNOTATION), expires_at=expiry,
                      expired=expiry is not None and expiry <= now)


def read_status(api: k8s.ApiClient, env: EnvironmentSpec, specs: list[ServiceSpec], *,
                now: datetime) -> EnvironmentStatus:
    """Read an environment's status: Services, live Deployments, canary weights, Lease, records.

    Args:
        api: the environment's Kubernetes API client.
        env: the environment.
        specs: its services.
        now: when it is read.

    Returns:
        The status.
    """
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    ns = env.namespace
    services = []
    for spec in specs:
        svc = _read(f"read Service {ns}/{spec.service_name}", core.read_namespaced_service,
                    spec.service_name, ns)
        colour = serving_colour(svc, env.colour_label) if svc is not None else None
        live = (_read(f"read Deployment {ns}/{spec.deployment_name(colour)}",
                      apps.read_namespaced_deployment, spec.deployment_name(colour), ns)
                if colour else None)
        status = service_status(spec, env, svc, live)
        if env.strategy == "canary":
            status.canary_weight = read_weight(custom_objects(apps), env, spec)
            canary = _read(f"read Deployment {ns}/{spec.deployment_name(CANARY)}",
                           apps.read_namespaced_deployment, spec.deployment_name(CANARY), ns)
            status.canary_image = _image(canary, spec.container) if canary else None
        services.append(status)
    lease = _read(f"read Lease {ns}/{LEASE_NAME}",
                  k8s.CoordinationV1Api(api).read_namespaced_lease, LEASE_NAME, ns)
    records = release_history(core, ns)
    return EnvironmentStatus(environment=env.name, namespace=ns, strategy=env.strategy,
                             read_at=now, services=services, lock=lock_status(lease, now=now),
                             last_release=records[-1] if records else None)
