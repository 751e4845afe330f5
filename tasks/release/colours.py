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
from tasks.release.cloning import clone_for_colour
from tasks.release.logs import get_logger
from tasks.release.rollout import wait_for_rollout
from tasks.release.smoke import ready_pods, smoke_test
from tasks.release.switching import read_service

COLOURS = ("blue", "green")


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


@dataclass
class ScaledDown:
    """What a scale-down did.

    Attributes:
        done: Deployments scaled to zero.
        kept: Deployments left running, with the reason (a Service selects their pods).
    """

    done: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)


def selecting_services(core_v1: k8s.CoreV1Api, namespace: str,
                       deployment: k8s.V1Deployment) -> list[str]:
    """Services of the namespace whose selector matches a Deployment's pods.

    Args:
        core_v1: core API.
        namespace: namespace.
        deployment: the Deployment.

    Returns:
        Their names.
    """
    template = deployment.spec.template if deployment.spec else None
    labels = ((template.metadata.labels if template and template.metadata else None) or {})
    with translate_api_errors(f"list services in {namespace}"):
        services = core_v1.list_namespaced_service(namespace).items
    return [str((s.metadata or k8s.V1ObjectMeta()).name) for s in services
            if s.spec and s.spec.selector
            and all(labels.get(k) == v for k, v in s.spec.selector.items())]


def scale_down(apps_v1: k8s.AppsV1Api, namespace: str, deployments: list[str]) -> ScaledDown:
    """Scale Deployments to zero (an abandoned or old colour), never one a Service selects.

    Each Deployment is checked against the live Services first: one whose pods a Service
    selects keeps running (logged as an error and listed in ``kept``): scaling it down would
    leave that Service without a pod.

    Args:
        apps_v1: apps API.
        namespace: namespace.
        deployments: Deployment names.

    Returns:
        Those scaled down (missing ones are skipped) and those kept.
    """
    core_v1 = k8s.CoreV1Api(apps_v1.api_client)
    result = ScaledDown()
    for name in deployments:
        dep = read_deployment_or_none(apps_v1, namespace, name)
        if dep is None:
            continue
        if selectors := selecting_services(core_v1, namespace, dep):
            reason = f"Service {', '.join(selectors)} selects its pods"
            get_logger(__name__).error("NOT scaling %s down: %s", name, reason)
            result.kept[name] = reason
            continue
        try:
            scale(apps_v1, namespace, name, 0)
        except NotFoundError:
            continue
        result.done.append(name)
    return result


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
    name="bring-up-colour", task_run_name="bring-up-colour-{spec.name}",
    retries=2, retry_delay_seconds=1,
    retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE,
)(bring_up_colour)
