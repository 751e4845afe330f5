"""Canary Deployments: bring one up beside the stable track, promote the stable, reconcile.

A service's canary is the Deployment ``{deployment_base}-canary``: the stable (live colour)
Deployment's pod template with the new image and Secret, its pods labelled with the colour
``canary`` (the Service's selector never picks them; the mesh's ``canary`` subset does).
"""

from __future__ import annotations

from functools import partial

from kubernetes import client as k8s
from prefect import task
from prefect.cache_policies import NO_CACHE

from errors import ReleaseError, retry_on_transient
from tasks.release.canary_mesh import CANARY, custom_objects, read_weight, set_weight
from tasks.release.canary_service import reconcile_selector
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec
from tasks.release.cloning import clone_for_colour
from tasks.release.clusters import Cluster
from tasks.release.colours import (
    Prepared,
    apply_deployment,
    container_image,
    live_colour,
    read_deployment_or_none,
    scale_down,
    to_dict,
)
from tasks.release.logs import get_logger
from tasks.release.rollout import wait_for_rollout
from tasks.release.smoke import ready_pods, smoke_test
from tasks.release.staging import StagingResult, deploy_to_staging
from tasks.release.switching import read_service, retry_in_body


def canary_labels(env: EnvironmentSpec, spec: ServiceSpec) -> dict[str, str]:
    """The labels selecting a service's canary pods (pure).

    Args:
        env: the environment.
        spec: the service.

    Returns:
        ``{app_label: service, colour_label: "canary"}``.
    """
    return {env.app_label: spec.name, env.colour_label: CANARY}


def bring_up_canary(apps_v1: k8s.AppsV1Api, core_v1: k8s.CoreV1Api, *, env: EnvironmentSpec,
                    spec: ServiceSpec, image: str, secret_name: str | None,
                    release_id: str) -> Prepared:
    """Clone the stable Deployment into the canary with ``image``, wait, smoke-test its pods.

    The canary gets the stable's replicas, so at 100 % it carries the full load.

    Args:
        apps_v1: apps API.
        core_v1: core API.
        env: the canary environment.
        spec: the service.
        image: the new image.
        secret_name: its immutable Secret (None keeps the stable's references).
        release_id: recorded on the canary Deployment.

    Returns:
        The canary (``new_colour`` ``canary``), ready, answering, receiving no traffic yet.

    Raises:
        ReleaseError: the stable Deployment is missing.
        RolloutError: the canary did not become ready.
        SmokeTestError: its pods do not answer.
    """
    ns = env.namespace
    live = live_colour(read_service(core_v1, ns, spec.service_name), env.colour_label)
    stable = read_deployment_or_none(apps_v1, ns, spec.deployment_name(live))
    if stable is None:
        raise ReleaseError(f"{spec.name}: the Service selects {live} but Deployment "
                           f"{spec.deployment_name(live)} does not exist in {ns}",
                           hint="seed the stable track first")
    replicas = (stable.spec.replicas if stable.spec else None) or 1
    name = spec.deployment_name(CANARY)
    body = clone_for_colour(
        to_dict(apps_v1.api_client, stable), name=name, colour=CANARY,
        container=spec.container, image=image, secret_prefix=f"{spec.name}-secrets",
        secret_name=secret_name, colour_label=env.colour_label, release_id=release_id)
    body["spec"]["replicas"] = replicas
    apply_deployment(apps_v1, ns, body)
    get_logger(__name__).info("%s: canary Deployment %s (%s) beside %s", spec.name, name,
                              image, spec.deployment_name(live))
    wait_for_rollout(apps_v1, ns, name, env.rollout_timeout_s, core_v1=core_v1)
    pods = ready_pods(core_v1, ns, body["spec"]["selector"]["matchLabels"])
    paths = list(dict.fromkeys([spec.ready_path, spec.health_path, *spec.smoke_paths]))
    lines = smoke_test(pods, port=spec.port, paths=paths)
    return Prepared(service=spec.name, live_colour=live, new_colour=CANARY, deployment=name,
                    image=image, previous_image=container_image(stable, spec.container),
                    secret_name=secret_name, replicas=replicas, action="canary", smoke=lines)


bring_up_canary_task = task(
    name="bring-up-canary", task_run_name="bring-up-canary-{spec.name}",
    retries=2, retry_delay_seconds=1,
    retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE,
)(bring_up_canary)


def promote_stable(apps_v1: k8s.AppsV1Api, *, env: EnvironmentSpec, spec: ServiceSpec,
                   canary: Prepared) -> StagingResult:
    """Roll the stable Deployment out to the canary's image and Secret (the canary serves).

    Args:
        apps_v1: apps API.
        env: the canary environment.
        spec: the service.
        canary: its canary.

    Returns:
        The stable Deployment's rollout result.

    Raises:
        RolloutError: the stable did not roll out (the caller puts its template back).
    """
    return deploy_to_staging(
        apps_v1, namespace=env.namespace, name=spec.deployment_name(canary.live_colour),
        container=spec.container, image=canary.image, timeout_s=env.rollout_timeout_s,
        secret_prefix=f"{spec.name}-secrets", secret_name=canary.secret_name)


promote_stable_task = task(name="promote-stable", cache_policy=NO_CACHE)(promote_stable)


def reconcile_canaries(c: Cluster, specs: list[ServiceSpec]) -> tuple[list[str], list[str]]:
    """Put back what a dead canary run left: weights to 0, selectors narrowed, canaries down.

    Runs under the release lock, so no other run owns those weights. The weights are the
    state read (each service's VirtualService); a Service left selecting both tracks is put
    back on the colour recorded on it, and a canary Deployment still up is scaled down, both
    only once the weight reads 0.

    Args:
        c: the canary environment.
        specs: every service of the catalogue.

    Returns:
        The corrections made, and the problems left for a human.
    """
    custom = custom_objects(c.apps_v1)
    done: list[str] = []
    problems: list[str] = []
    for spec in specs:
        weight = retry_in_body(partial(read_weight, custom, c.env, spec))
        if weight:
            retry_in_body(partial(set_weight, custom, c.env, spec, 0, None))
            done.append(f"{spec.name}: canary weight {weight} % left by a dead run set to 0 %")
        narrowed = reconcile_selector(c.core_v1, c.env, spec)  # only once the weight reads 0
        if narrowed:
            done.append(narrowed)
        canary = read_deployment_or_none(c.apps_v1, c.env.namespace,
                                         spec.deployment_name(CANARY))
        if canary is None or not (canary.spec and canary.spec.replicas):
            continue
        result = scale_down(c.apps_v1, c.env.namespace, [spec.deployment_name(CANARY)])
        if result.done:
            done.append(f"{spec.name}: canary Deployment left by a dead run scaled down")
        problems += [f"{name} kept: {why}" for name, why in result.kept.items()]
    for line in done + problems:
        get_logger(__name__).warning("reconcile: %s", line)
    return done, problems


reconcile_canaries_task = task(
    name="reconcile-canaries", retries=3, retry_delay_seconds=1,
    retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE,
)(reconcile_canaries)
