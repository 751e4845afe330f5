"""Staging: set the new image, wait, undo to the previous revision on failure; then E2E."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from prefect import task
from prefect.cache_policies import NO_CACHE

from errors import ReleaseError, RolloutError
from errors.kubernetes import translate_api_errors
from tasks.release.catalogue import Catalogue, EnvironmentSpec, ServiceSpec
from tasks.release.clusters import Cluster
from tasks.release.colours import to_dict
from tasks.release.e2e import run_e2e_task, service_urls_task
from tasks.release.futures import results
from tasks.release.preflight import live_target
from tasks.release.report import ReleaseReport
from tasks.release.rollout import wait_for_rollout
from tasks.release.secrets import sync_secrets_task

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"


@dataclass(frozen=True)
class StagingResult:
    """Outcome of a staging rollout.

    Attributes:
        deployment: Deployment name.
        image: the image now running.
        message: kubectl-style final status.
    """

    deployment: str
    image: str
    message: str


def image_patch(
    deployment: dict[str, Any],
    *,
    container: str,
    image: str,
    secret_prefix: str = "",
    secret_name: str | None = None,
) -> dict[str, Any]:
    """Strategic-merge patch setting a container's image (and its secret references).

    Args:
        deployment: the current Deployment as an API dict.
        container: container name (merge key of the containers list).
        image: new image.
        secret_prefix: secret references starting with this are retargeted.
        secret_name: new immutable Secret, or None to leave references alone.

    Returns:
        The patch body, like ``kubectl set image``.
    """
    entry: dict[str, Any] = {"name": container, "image": image}
    if secret_name:
        spec = deployment.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers") or []:
            if c.get("name") != container:
                continue
            env_from = copy.deepcopy(c.get("envFrom") or [])
            for item in env_from:
                ref = item.get("secretRef")
                if ref and str(ref.get("name", "")).startswith(secret_prefix):
                    ref["name"] = secret_name
            env = copy.deepcopy(c.get("env") or [])
            for item in env:
                ref = (item.get("valueFrom") or {}).get("secretKeyRef")
                if ref and str(ref.get("name", "")).startswith(secret_prefix):
                    ref["name"] = secret_name
            if env_from:
                entry["envFrom"] = env_from
            if env:
                entry["env"] = env
    return {"spec": {"template": {"spec": {"containers": [entry]}}}}


def previous_revision_template(
    deployment: dict[str, Any], replica_sets: list[dict[str, Any]]
) -> tuple[int, dict[str, Any]]:
    """Find the pod template of the previous revision, like ``kubectl rollout undo`` (pure).

    Args:
        deployment: the Deployment as an API dict.
        replica_sets: ReplicaSets (API dicts) of its namespace.

    Returns:
        The previous revision number and its pod template without ``pod-template-hash``.

    Raises:
        RolloutError: no ReplicaSet holds an earlier revision.
    """
    uid = deployment.get("metadata", {}).get("uid")
    name = deployment.get("metadata", {}).get("name")
    owned: list[tuple[int, dict[str, Any]]] = []
    for rs in replica_sets:
        meta = rs.get("metadata", {})
        owners = meta.get("ownerReferences") or []
        if not any(
            o.get("kind") == "Deployment"
            and (o.get("uid") == uid or (uid is None and o.get("name") == name))
            for o in owners
        ):
            continue
        try:
            revision = int((meta.get("annotations") or {}).get(REVISION_ANNOTATION, ""))
        except ValueError:
            continue
        owned.append((revision, rs))
    owned.sort(key=lambda item: item[0], reverse=True)
    if len(owned) < 2:
        raise RolloutError(
            f"cannot undo deployment {name}: no previous revision found",
            hint="roll it back by hand with a known-good image",
        )
    revision, rs = owned[1]
    template = copy.deepcopy(rs.get("spec", {}).get("template", {}))
    labels = template.get("metadata", {}).get("labels") or {}
    labels.pop(HASH_LABEL, None)
    return revision, template


def undo_rollout(apps_v1: k8s.AppsV1Api, namespace: str, name: str) -> int:
    """Roll a Deployment back to its previous ReplicaSet revision (``kubectl rollout undo``).

    Args:
        apps_v1: apps API.
        namespace: namespace.
        name: Deployment name.

    Returns:
        The revision restored.
    """
    with translate_api_errors(f"read deployment {namespace}/{name}"):
        deployment = apps_v1.read_namespaced_deployment(name, namespace)
    with translate_api_errors(f"list replicasets in {namespace}"):
        replica_sets = apps_v1.list_namespaced_replica_set(namespace).items
    api = apps_v1.api_client
    dep = to_dict(api, deployment)
    revision, template = previous_revision_template(dep, [to_dict(api, rs) for rs in replica_sets])
    dep.pop("status", None)
    dep["spec"]["template"] = template
    with translate_api_errors(f"undo deployment {namespace}/{name}"):
        apps_v1.replace_namespaced_deployment(name, namespace, dep)  # type: ignore[arg-type]
    return revision


def deploy_to_staging(
    apps_v1: k8s.AppsV1Api,
    *,
    namespace: str,
    name: str,
    container: str,
    image: str,
    timeout_s: float,
    secret_prefix: str = "",
    secret_name: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleeper: Callable[[float], Any] = time.sleep,
) -> StagingResult:
    """Set the image, wait for the rollout; on failure undo, wait again and raise.

    Args:
        apps_v1: apps API.
        namespace: staging namespace.
        name: Deployment name.
        container: container name.
        image: new image.
        timeout_s: rollout deadline.
        secret_prefix: secret references starting with this are retargeted.
        secret_name: the new immutable Secret, if any.
        clock: monotonic clock.
        sleeper: poll waiter.

    Returns:
        The staging result.

    Raises:
        RolloutError: the new version did not roll out (staging was undone).
    """
    with translate_api_errors(f"read deployment {namespace}/{name}"):
        current = apps_v1.read_namespaced_deployment(name, namespace)
    patch = image_patch(
        to_dict(apps_v1.api_client, current),
        container=container,
        image=image,
        secret_prefix=secret_prefix,
        secret_name=secret_name,
    )
    with translate_api_errors(f"set image of deployment {namespace}/{name}"):
        apps_v1.patch_namespaced_deployment(name, namespace, patch)
    try:
        status = wait_for_rollout(apps_v1, namespace, name, timeout_s, clock=clock, sleeper=sleeper)
    except RolloutError as failure:
        revision = undo_rollout(apps_v1, namespace, name)
        try:
            wait_for_rollout(apps_v1, namespace, name, timeout_s, clock=clock, sleeper=sleeper)
        except RolloutError as undo_failure:
            raise ReleaseError(
                f"staging rollout of {name} failed and the undo to revision {revision} did "
                f"not become ready either: {undo_failure.message}",
                hint="staging needs manual attention",
            ) from failure
        raise RolloutError(
            f"{failure.message}; staging was undone to revision {revision}",
            hint=failure.hint,
        ) from None
    return StagingResult(name, image, status.message)


def stage_service(apps_v1: k8s.AppsV1Api, core_v1: k8s.CoreV1Api, *, env: EnvironmentSpec,
                  spec: ServiceSpec, version: str, secret_name: str | None) -> StagingResult:
    """Roll one service of the rolling environment out to a version (see deploy_to_staging).

    Args:
        apps_v1: apps API.
        core_v1: core API.
        env: the rolling environment.
        spec: the service.
        version: the version.
        secret_name: its new immutable Secret.

    Returns:
        The staging result.
    """
    target, _ = live_target(core_v1, apps_v1, env, spec)
    return deploy_to_staging(
        apps_v1, namespace=env.namespace, name=target.deployment, container=spec.container,
        image=spec.image(version), timeout_s=env.rollout_timeout_s,
        secret_prefix=f"{spec.name}-secrets", secret_name=secret_name)


stage_service_task = task(name="staging-rollout", cache_policy=NO_CACHE)(stage_service)


def release_to_staging(catalogue: Catalogue, c: Cluster, specs: list[ServiceSpec], *,
                       version: str, report: ReleaseReport) -> dict[str, str]:
    """Secrets, rollout of every service at once (each undone on failure), then E2E.

    Args:
        catalogue: the catalogue (E2E commands).
        c: the rolling environment.
        specs: the services.
        version: the version.
        report: the run's report.

    Returns:
        Service to the name of its new Secret.

    Raises:
        RolloutError: a service did not roll out (it was undone; the first failure is raised
            once every rollout ended).
        E2EError: an E2E check failed.
    """
    with report.timed("staging"):
        secrets = {s.name: sync_secrets_task(c.core_v1, c.vault, c.env.namespace, s, c.env.name)
                   for s in specs}
        results([stage_service_task.submit(c.apps_v1, c.core_v1, env=c.env, spec=s,
                                           version=version, secret_name=secrets[s.name])
                 for s in specs])
    with report.timed("e2e"):
        urls = service_urls_task(c.core_v1, c.env.namespace, specs)
        result = run_e2e_task(catalogue, c.env.name, urls, services=[s.name for s in specs],
                              version=version)
        report.e2e(c.env.name, result)
        result.raise_for_failure()
    return secrets
