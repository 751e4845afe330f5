"""Blue-green colours: read the live one, bring the other up (clone or reuse), scale one down."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s
from prefect import task
from prefect.cache_policies import NO_CACHE

from errors import InvalidInputError, NotFoundError, ReleaseError, retry_on_transient
from errors.kubernetes import translate_api_errors
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec
from tasks.release.logs import get_logger
from tasks.release.rollout import wait_for_rollout
from tasks.release.smoke import ready_pods, smoke_test
from tasks.release.switching import read_service

COLOURS = ("blue", "green")
RELEASE_ANNOTATION = "veza-ops.veza.io/release"
DROPPED_METADATA = ("resourceVersion", "uid", "creationTimestamp", "managedFields",
                    "generation", "selfLink", "ownerReferences", "deletionTimestamp")


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
        The image, or None when the Deployment has no such container.
    """
    pod_spec = deployment.spec.template.spec if deployment.spec else None
    for c in (pod_spec.containers if pod_spec else None) or []:
        if c.name == container:
            return str(c.image)
    return None


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
    existing = read_deployment_or_none(apps_v1, namespace, name)
    with translate_api_errors(f"apply deployment {namespace}/{name}"):
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


def scale_down(apps_v1: k8s.AppsV1Api, namespace: str, deployments: list[str]) -> list[str]:
    """Scale Deployments to zero (an abandoned or old colour).

    Args:
        apps_v1: apps API.
        namespace: namespace.
        deployments: Deployment names.

    Returns:
        The Deployments scaled down (missing ones are skipped).
    """
    done: list[str] = []
    for name in deployments:
        try:
            scale(apps_v1, namespace, name, 0)
        except NotFoundError:
            continue
        done.append(name)
    return done


scale_down_task = task(
    name="scale-to-zero", retries=3, retry_delay_seconds=1,
    retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE,
)(scale_down)


@dataclass
class Prepared:
    """A colour brought up and smoke-tested, not yet receiving traffic.

    Attributes:
        service: service name.
        live_colour: colour serving now.
        new_colour: the colour brought up.
        deployment: name of the new colour's Deployment.
        image: its image.
        previous_image: the live colour's image.
        secret_name: the Secret it reads (None: the live colour's references).
        replicas: its replicas (those of the live colour).
        action: ``cloned``, ``redeployed`` (cloned over an idle colour), ``scaled`` (idle
            colour scaled back up) or ``switched`` (idle colour already at full scale).
        smoke: smoke-test lines.
    """

    service: str
    live_colour: str
    new_colour: str
    deployment: str
    image: str
    previous_image: str | None
    secret_name: str | None
    replicas: int
    action: str = "cloned"
    smoke: list[str] = field(default_factory=list)


def bring_up_colour(
    apps_v1: k8s.AppsV1Api,
    core_v1: k8s.CoreV1Api,
    *,
    env: EnvironmentSpec,
    spec: ServiceSpec,
    image: str,
    secret_name: str | None,
    release_id: str,
    reuse: bool = False,
) -> Prepared:
    """Bring the colour that is not serving up with ``image``, wait for it, smoke-test it.

    The release clones the live Deployment into the other colour with the new image and
    Secret. With ``reuse`` (the rollback), an idle colour that already runs ``image`` (kept
    at zero replicas after a release) is only scaled back to the live colour's replicas.

    Args:
        apps_v1: apps API.
        core_v1: core API.
        env: the environment.
        spec: the service.
        image: image the colour must run.
        secret_name: the immutable Secret it reads (None keeps the live references).
        release_id: recorded on a cloned Deployment.
        reuse: reuse an idle colour already running ``image``.

    Returns:
        The colour, ready and answering, not yet selected by the Service.

    Raises:
        ReleaseError: the live Deployment is missing.
        RolloutError: the colour did not become ready.
        SmokeTestError: its pods do not answer.
    """
    ns = env.namespace
    live = live_colour(read_service(core_v1, ns, spec.service_name), env.colour_label)
    new, name = other_colour(live), spec.deployment_name(other_colour(live))
    live_dep = read_deployment_or_none(apps_v1, ns, spec.deployment_name(live))
    if live_dep is None:
        raise ReleaseError(
            f"{spec.name}: the Service selects {live} but Deployment "
            f"{spec.deployment_name(live)} does not exist in {ns}",
            hint="run the rollback flow to reconcile, or seed the live colour",
        )
    replicas = (live_dep.spec.replicas if live_dep.spec else None) or 1
    idle = read_deployment_or_none(apps_v1, ns, name) if reuse else None
    if idle is not None and idle.spec and container_image(idle, spec.container) == image:
        current = idle.spec.replicas or 0
        action = "switched" if current >= replicas else "scaled"
        if current < replicas:
            scale(apps_v1, ns, name, replicas)
        match_labels = dict(idle.spec.selector.match_labels or {})
    else:
        body = clone_for_colour(
            to_dict(apps_v1.api_client, live_dep), name=name, colour=new,
            container=spec.container, image=image, secret_prefix=f"{spec.name}-secrets",
            secret_name=secret_name, colour_label=env.colour_label, release_id=release_id,
        )
        body["spec"]["replicas"] = replicas
        apply_deployment(apps_v1, ns, body)
        action = "redeployed" if reuse else "cloned"
        match_labels = body["spec"]["selector"]["matchLabels"]
    get_logger(__name__).info("%s: %s Deployment %s %s (%s)", spec.name, new, name, action, image)
    wait_for_rollout(apps_v1, ns, name, env.rollout_timeout_s, core_v1=core_v1)
    pods = ready_pods(core_v1, ns, match_labels)
    paths = list(dict.fromkeys([spec.ready_path, spec.health_path, *spec.smoke_paths]))
    lines = smoke_test(pods, port=spec.port, paths=paths)
    get_logger(__name__).info("%s: %s smoke-tested on %d pod(s)", spec.name, new, len(pods))
    return Prepared(
        service=spec.name, live_colour=live, new_colour=new, deployment=name, image=image,
        previous_image=container_image(live_dep, spec.container), secret_name=secret_name,
        replicas=replicas, action=action, smoke=lines,
    )


bring_up_colour_task = task(
    name="bring-up-colour", retries=2, retry_delay_seconds=1,
    retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE,
)(bring_up_colour)
