"""Blue-green steps: live colour, clone the live Deployment into the other colour, smoke, switch."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from kubernetes import client as k8s

from errors import InvalidInputError, NotFoundError, SmokeTestError
from errors.kubernetes import translate_api_errors

COLOURS = ("blue", "green")
ANNOTATION_PREFIX = "veza-ops.veza.io"
PENDING_ANNOTATION = f"{ANNOTATION_PREFIX}/pending-release"
PREVIOUS_ANNOTATION = f"{ANNOTATION_PREFIX}/previous-colour"
RELEASE_ANNOTATION = f"{ANNOTATION_PREFIX}/release"
DROPPED_METADATA = ("resourceVersion", "uid", "creationTimestamp", "managedFields",
                    "generation", "selfLink", "ownerReferences", "deletionTimestamp")


@dataclass(frozen=True)
class SwitchRecord:
    """One Service selector switch, enough to undo it.

    Attributes:
        service: service (catalogue) name.
        service_name: Kubernetes Service name.
        namespace: namespace.
        from_colour: colour that served before the switch.
        to_colour: colour serving after the switch.
        previous_selector: the full selector before the switch.
        switched_at: epoch seconds of the switch.
    """

    service: str
    service_name: str
    namespace: str
    from_colour: str
    to_colour: str
    previous_selector: dict[str, str]
    switched_at: float


def other_colour(colour: str) -> str:
    """Return the other colour of a blue-green pair.

    Args:
        colour: ``blue`` or ``green``.

    Returns:
        The other one.

    Raises:
        InvalidInputError: the colour is neither blue nor green.
    """
    if colour not in COLOURS:
        raise InvalidInputError(
            "colour", f"{colour!r} is not blue or green",
            fix="label the live Deployment and the Service selector color=blue or color=green",
        )
    return COLOURS[1 - COLOURS.index(colour)]


def colour_deployment_name(base: str, colour: str) -> str:
    """Name of a colour's Deployment (``{base}-{colour}``).

    Args:
        base: deployment base name (the service name).
        colour: colour.

    Returns:
        The Deployment name.
    """
    return f"{base}-{colour}"


def read_service(core_v1: k8s.CoreV1Api, namespace: str, name: str) -> k8s.V1Service:
    """Read a Service.

    Args:
        core_v1: core API.
        namespace: namespace.
        name: Service name.

    Returns:
        The Service.
    """
    with translate_api_errors(f"read service {namespace}/{name}"):
        svc: k8s.V1Service = core_v1.read_namespaced_service(name, namespace)
    return svc


def live_colour(service: k8s.V1Service, colour_label: str = "color") -> str:
    """Read the live colour from a Service's selector.

    Args:
        service: the Service.
        colour_label: the colour label key.

    Returns:
        ``blue`` or ``green``.

    Raises:
        InvalidInputError: the selector has no valid colour.
    """
    selector = (service.spec.selector or {}) if service.spec else {}
    colour = selector.get(colour_label)
    if colour not in COLOURS:
        raise InvalidInputError(
            f"service {(service.metadata or k8s.V1ObjectMeta()).name} selector.{colour_label}",
            f"is {colour!r}, not blue or green",
            fix=f"set the Service selector {colour_label}=blue (seed the blue-green pair first)",
        )
    return str(colour)


def _retarget_secrets(container: dict[str, Any], secret_prefix: str, secret_name: str) -> None:
    for item in container.get("envFrom") or []:
        ref = item.get("secretRef")
        if ref and str(ref.get("name", "")).startswith(secret_prefix):
            ref["name"] = secret_name
    for item in container.get("env") or []:
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref and str(ref.get("name", "")).startswith(secret_prefix):
            ref["name"] = secret_name


def clone_for_colour(
    live: dict[str, Any],
    *,
    name: str,
    colour: str,
    container: str,
    image: str,
    secret_prefix: str,
    secret_name: str | None,
    colour_label: str = "color",
    release_id: str = "",
) -> dict[str, Any]:
    """Build the other colour's Deployment from the live one (pure, like Flagger's clone).

    Args:
        live: the live Deployment as an API dict (camelCase).
        name: name of the new Deployment.
        colour: its colour.
        container: name of the container whose image changes.
        image: the new image.
        secret_prefix: secret references starting with this are retargeted.
        secret_name: the new immutable Secret (None keeps the live references).
        colour_label: colour label key.
        release_id: recorded as an annotation.

    Returns:
        A Deployment body ready for create/replace.

    Raises:
        InvalidInputError: the live Deployment has no container named ``container``.
    """
    body = copy.deepcopy(live)
    body.pop("status", None)
    meta = body.setdefault("metadata", {})
    for key in DROPPED_METADATA:
        meta.pop(key, None)
    meta["name"] = name
    meta["labels"] = {**(meta.get("labels") or {}), colour_label: colour}
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith("deployment.kubernetes.io/")
        and k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    if release_id:
        annotations[RELEASE_ANNOTATION] = release_id
    meta["annotations"] = annotations
    spec = body.setdefault("spec", {})
    selector = spec.setdefault("selector", {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), colour_label: colour}
    template = spec.setdefault("template", {})
    tmeta = template.setdefault("metadata", {})
    labels = {k: v for k, v in (tmeta.get("labels") or {}).items() if k != "pod-template-hash"}
    tmeta["labels"] = {**labels, colour_label: colour}
    containers = template.setdefault("spec", {}).get("containers") or []
    target = [c for c in containers if c.get("name") == container]
    if not target:
        raise InvalidInputError(
            "container", f"deployment {live.get('metadata', {}).get('name')} has no container "
            f"{container!r}", fix="set the catalogue's container to the Deployment's container",
        )
    target[0]["image"] = image
    if secret_name:
        for c in containers:
            _retarget_secrets(c, secret_prefix, secret_name)
    return body


def to_dict(api_client: k8s.ApiClient, obj: Any) -> dict[str, Any]:
    """Serialise a client model object into an API dict (camelCase).

    Args:
        api_client: any API client (only its serialiser is used).
        obj: model object.

    Returns:
        The dict.
    """
    result: dict[str, Any] = api_client.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    return result


def apply_deployment(
    apps_v1: k8s.AppsV1Api, namespace: str, body: dict[str, Any]
) -> k8s.V1Deployment:
    """Create a Deployment or replace the existing one of that name.

    A Deployment's selector is immutable: an existing one with another selector is deleted
    and created again.

    Args:
        apps_v1: apps API.
        namespace: namespace.
        body: Deployment body.

    Returns:
        The stored Deployment.
    """
    name = body["metadata"]["name"]
    action = f"apply deployment {namespace}/{name}"
    existing: k8s.V1Deployment | None = None
    try:
        with translate_api_errors(f"read deployment {namespace}/{name}"):
            existing = apps_v1.read_namespaced_deployment(name, namespace)
    except NotFoundError:
        existing = None
    with translate_api_errors(action):
        if existing is not None:
            same_selector = (existing.spec.selector.match_labels or {}) == (
                body["spec"]["selector"].get("matchLabels") or {}
            )
            if same_selector:
                body = copy.deepcopy(body)
                meta = existing.metadata or k8s.V1ObjectMeta()
                body["metadata"]["resourceVersion"] = meta.resource_version
                result: k8s.V1Deployment = apps_v1.replace_namespaced_deployment(
                    name, namespace, body  # type: ignore[arg-type]
                )
                return result
            apps_v1.delete_namespaced_deployment(name, namespace)
        result = apps_v1.create_namespaced_deployment(namespace, body)  # type: ignore[arg-type]
    return result


def scale(apps_v1: k8s.AppsV1Api, namespace: str, name: str, replicas: int) -> None:
    """Set a Deployment's replica count.

    Args:
        apps_v1: apps API.
        namespace: namespace.
        name: Deployment name.
        replicas: desired replicas.
    """
    with translate_api_errors(f"scale deployment {namespace}/{name} to {replicas}"):
        apps_v1.patch_namespaced_deployment(name, namespace, {"spec": {"replicas": replicas}})


def ready_pods(
    core_v1: k8s.CoreV1Api, namespace: str, match_labels: dict[str, str]
) -> list[k8s.V1Pod]:
    """List the running, ready, not-terminating pods with the given labels.

    Args:
        core_v1: core API.
        namespace: namespace.
        match_labels: label selector as a dict.

    Returns:
        The pods.
    """
    selector = ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))
    with translate_api_errors(f"list pods {selector} in {namespace}"):
        pods = core_v1.list_namespaced_pod(namespace, label_selector=selector).items
    result: list[k8s.V1Pod] = []
    for pod in pods:
        meta = pod.metadata or k8s.V1ObjectMeta()
        if meta.deletion_timestamp is not None or not pod.status or not pod.status.pod_ip:
            continue
        ready = [c for c in pod.status.conditions or [] if c.type == "Ready"]
        if pod.status.phase == "Running" and ready and ready[0].status == "True":
            result.append(pod)
    return result


def smoke_test(
    pods: list[k8s.V1Pod],
    *,
    port: int,
    paths: list[str],
    attempts: int = 5,
    timeout_s: float = 5.0,
    transport: httpx.BaseTransport | None = None,
) -> list[str]:
    """GET each path on each pod directly (podIP:port) before it gets traffic.

    A path passes when one of ``attempts`` requests answers below 500.

    Args:
        pods: the new colour's ready pods.
        port: container port.
        paths: paths to request (ready, health, then the service's smoke paths).
        attempts: tries per path.
        timeout_s: per-request timeout.
        transport: httpx transport (tests).

    Returns:
        ``"GET http://ip:port/path -> 200"`` lines.

    Raises:
        SmokeTestError: no pod, or a path never answered below 500.
    """
    if not pods:
        raise SmokeTestError("smoke test: the new colour has no ready pod",
                             hint="check the new pods' readiness")
    lines: list[str] = []
    with httpx.Client(timeout=timeout_s, transport=transport) as http:
        for pod in pods:
            ip = (pod.status or k8s.V1PodStatus()).pod_ip
            pod_name = (pod.metadata or k8s.V1ObjectMeta()).name
            for path in paths:
                url = f"http://{ip}:{port}{path}"
                last = "no answer"
                for _ in range(attempts):
                    try:
                        code = http.get(url).status_code
                    except httpx.HTTPError as exc:
                        last = type(exc).__name__
                        continue
                    last = str(code)
                    if code < 500:
                        break
                else:
                    raise SmokeTestError(
                        f"smoke test of pod {pod_name}: GET {path} -> {last}",
                        hint="the new version does not answer; it received no traffic",
                    )
                lines.append(f"GET {url} -> {last}")
    return lines


def switch_selector(
    core_v1: k8s.CoreV1Api,
    *,
    service: str,
    service_name: str,
    namespace: str,
    colour: str,
    colour_label: str = "color",
    pending_release: str | None = None,
    clock: Callable[[], float] = time.time,
) -> SwitchRecord:
    """Point a Service at a colour with one strategic-merge patch.

    With ``pending_release`` the patch also marks the switch as uncommitted (annotations
    naming the release and the previous colour) so a crashed run can be reconciled; with
    None the marks are removed.

    Args:
        core_v1: core API.
        service: catalogue service name.
        service_name: Kubernetes Service name.
        namespace: namespace.
        colour: colour to select.
        colour_label: colour label key.
        pending_release: release id marking an uncommitted switch, or None to clear.
        clock: epoch clock.

    Returns:
        What is needed to undo the switch.
    """
    current = read_service(core_v1, namespace, service_name)
    previous = dict((current.spec.selector or {}) if current.spec else {})
    from_colour = str(previous.get(colour_label, ""))
    annotations: dict[str, str | None]
    if pending_release is not None:
        annotations = {PENDING_ANNOTATION: pending_release, PREVIOUS_ANNOTATION: from_colour}
    else:
        annotations = {PENDING_ANNOTATION: None, PREVIOUS_ANNOTATION: None}
    patch = {"metadata": {"annotations": annotations},
             "spec": {"selector": {colour_label: colour}}}
    with translate_api_errors(f"switch service {namespace}/{service_name} to {colour}"):
        core_v1.patch_namespaced_service(service_name, namespace, patch)
    return SwitchRecord(service, service_name, namespace, from_colour, colour, previous, clock())


def clear_pending(core_v1: k8s.CoreV1Api, namespace: str, service_name: str) -> None:
    """Mark a Service's switch as committed (remove the pending annotations).

    Args:
        core_v1: core API.
        namespace: namespace.
        service_name: Service name.
    """
    patch = {"metadata": {"annotations": {PENDING_ANNOTATION: None, PREVIOUS_ANNOTATION: None}}}
    with translate_api_errors(f"commit service {namespace}/{service_name}"):
        core_v1.patch_namespaced_service(service_name, namespace, patch)


def read_deployment_or_none(
    apps_v1: k8s.AppsV1Api, namespace: str, name: str
) -> k8s.V1Deployment | None:
    """Read a Deployment, None when it does not exist.

    Args:
        apps_v1: apps API.
        namespace: namespace.
        name: Deployment name.

    Returns:
        The Deployment or None.
    """
    try:
        with translate_api_errors(f"read deployment {namespace}/{name}"):
            dep: k8s.V1Deployment = apps_v1.read_namespaced_deployment(name, namespace)
    except NotFoundError:
        return None
    return dep


def container_image(deployment: k8s.V1Deployment, container: str) -> str | None:
    """Image of a named container of a Deployment.

    Args:
        deployment: the Deployment.
        container: container name.

    Returns:
        The image, or None when absent.
    """
    pod_spec = deployment.spec.template.spec if deployment.spec else None
    for c in (pod_spec.containers if pod_spec else None) or []:
        if c.name == container:
            return str(c.image)
    return None


__all__ = [
    "COLOURS", "PENDING_ANNOTATION", "PREVIOUS_ANNOTATION", "SwitchRecord", "apply_deployment",
    "clear_pending", "clone_for_colour", "colour_deployment_name", "container_image",
    "live_colour", "other_colour", "read_deployment_or_none", "read_service",
    "ready_pods", "scale", "smoke_test", "switch_selector", "to_dict",
]
