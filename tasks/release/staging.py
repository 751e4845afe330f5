"""Staging: set the new images, wait, E2E; any failure puts every service back (``undo``)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from prefect import task
from prefect.cache_policies import NO_CACHE

from errors.kubernetes import translate_api_errors
from tasks.release.catalogue import Catalogue, EnvironmentSpec, ServiceSpec
from tasks.release.clusters import Cluster
from tasks.release.colours import to_dict
from tasks.release.e2e import run_e2e_task, service_urls_task
from tasks.release.futures import results
from tasks.release.report import ReleaseReport
from tasks.release.rollout import wait_for_rollout
from tasks.release.secrets import sync_secrets_task
from tasks.release.undo import (
    Before,
    UndoReport,
    capture_task,
    tell_with,
    undo_staging,
    undo_staging_task,
)


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
    """Set the image and wait for the rollout (the caller undoes every service on a failure).

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
        RolloutError: the new version did not roll out.
        TransientSystemError: the API kept failing while the rollout was polled.
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
    status = wait_for_rollout(apps_v1, namespace, name, timeout_s, clock=clock, sleeper=sleeper)
    return StagingResult(name, image, status.message)


def stage_service(apps_v1: k8s.AppsV1Api, *, env: EnvironmentSpec, spec: ServiceSpec,
                  deployment: str, version: str, secret_name: str | None) -> StagingResult:
    """Roll one service of the rolling environment out to a version (see deploy_to_staging).

    Args:
        apps_v1: apps API.
        env: the rolling environment.
        spec: the service.
        deployment: its live Deployment (captured before the release changed anything).
        version: the version.
        secret_name: its new immutable Secret.

    Returns:
        The staging result.
    """
    return deploy_to_staging(
        apps_v1, namespace=env.namespace, name=deployment, container=spec.container,
        image=spec.image(version), timeout_s=env.rollout_timeout_s,
        secret_prefix=f"{spec.name}-secrets", secret_name=secret_name)


stage_service_task = task(name="staging-rollout", task_run_name="staging-rollout-{spec.name}",
                          cache_policy=NO_CACHE)(stage_service)


def release_to_staging(catalogue: Catalogue, c: Cluster, specs: list[ServiceSpec], *,
                       version: str, report: ReleaseReport) -> dict[str, str]:
    """Secrets, rollout of every service at once, then E2E; any failure undoes every service.

    What each service runs is captured first. From then on any failure (a rollout that does
    not finish, an API error, a failed E2E, a cancel) puts every service of the release back
    on its captured template, the ones that rolled out fine too (see ``undo.undo_staging``:
    retried until the environment's ``undo_deadline_s``). The failure raised is the original
    one; what the undo did, or failed to do, is added to its message and recorded per service.

    Args:
        catalogue: the catalogue (E2E commands).
        c: the rolling environment.
        specs: the services.
        version: the version.
        report: the run's report.

    Returns:
        Service to the name of its new Secret.

    Raises:
        RolloutError: a service did not roll out (the first failure, once every rollout
            ended; every service was undone).
        E2EError: an E2E check failed (every service was undone).
    """
    befores = capture_task(c.apps_v1, c.core_v1, c.env, specs)  # nothing changed before this
    try:
        with report.timed("staging"):
            secrets = {s.name: sync_secrets_task(c.core_v1, c.vault, c.env.namespace, s,
                                                 c.env.name) for s in specs}
            results([stage_service_task.submit(c.apps_v1, env=c.env, spec=s,
                                               deployment=b.deployment, version=version,
                                               secret_name=secrets[s.name])
                     for s, b in zip(specs, befores, strict=True)])
        with report.timed("e2e"):
            urls = service_urls_task(c.core_v1, c.env.namespace, specs)
            result = run_e2e_task(catalogue, c.env.name, urls, services=[s.name for s in specs],
                                  version=version)
            report.e2e(c.env.name, result)
            result.raise_for_failure()
    except BaseException as cause:
        undo_after(c, befores, cause, report=report)
        raise
    return secrets


def undo_after(c: Cluster, befores: list[Before], cause: BaseException, *,
               report: ReleaseReport) -> None:
    """Undo staging after a failure, record it, and tell it in the failure (never replacing it).

    On a cancel or interrupt (not an ``Exception``) the templates are put back without
    waiting for their rollouts: the process is going away.

    Args:
        c: the rolling environment.
        befores: what each service ran.
        cause: the failure (kept as the run's error).
        report: the run's report.
    """
    interrupted = not isinstance(cause, Exception)
    undo = undo_staging if interrupted else undo_staging_task
    try:
        done = undo(c.apps_v1, c.env.namespace, befores, deadline_s=c.env.undo_deadline_s,
                    rollout_timeout_s=c.env.rollout_timeout_s, wait=not interrupted)
    except Exception as exc:  # undo_staging never raises; a task-engine failure must not hide
        done = UndoReport(failed={b.service: type(exc).__name__ for b in befores})
    report.staging_undone(c.env.name, done)
    tell_with(cause, done.sentence())
