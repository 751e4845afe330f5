"""Deployment readiness, judged once (``kubectl rollout status``), and waiting under a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from errors import RolloutError, TransientSystemError
from errors.kubernetes import translate_api_errors

PROGRESS_DEADLINE_REASON = "ProgressDeadlineExceeded"
WAITING_REASONS = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError",
     "InvalidImageName", "CreateContainerError", "RunContainerError"}
)


@dataclass(frozen=True)
class RolloutStatus:
    """What ``kubectl rollout status`` would say about a Deployment.

    Attributes:
        done: the rollout finished (every replica updated and available).
        message: the human sentence kubectl prints.
        failed: the rollout can no longer finish (progress deadline exceeded).
    """

    done: bool
    message: str
    failed: bool = False


def rollout_status(deployment: k8s.V1Deployment) -> RolloutStatus:
    """Judge a Deployment exactly like kubectl's DeploymentStatusViewer.

    The one readiness judgment of the release: rollouts, the preflight's staging check and
    reconcile all use it.

    Args:
        deployment: the Deployment as read from the API.

    Returns:
        The rollout status.
    """
    meta = deployment.metadata or k8s.V1ObjectMeta()
    name = meta.name
    status = deployment.status or k8s.V1DeploymentStatus()
    generation = meta.generation or 0
    observed = status.observed_generation or 0
    if generation > observed:
        return RolloutStatus(False, "Waiting for deployment spec update to be observed...")
    for cond in status.conditions or []:
        if cond.type == "Progressing" and cond.reason == PROGRESS_DEADLINE_REASON:
            return RolloutStatus(
                False, f"deployment {name!r} exceeded its progress deadline", failed=True
            )
    spec_replicas = deployment.spec.replicas if deployment.spec else None
    updated = status.updated_replicas or 0
    replicas = status.replicas or 0
    available = status.available_replicas or 0
    if spec_replicas is not None and updated < spec_replicas:
        return RolloutStatus(
            False,
            f"Waiting for deployment {name!r} rollout to finish: {updated} out of "
            f"{spec_replicas} new replicas have been updated...",
        )
    if replicas > updated:
        return RolloutStatus(
            False,
            f"Waiting for deployment {name!r} rollout to finish: {replicas - updated} old "
            "replicas are pending termination...",
        )
    if available < updated:
        return RolloutStatus(
            False,
            f"Waiting for deployment {name!r} rollout to finish: {available} of {updated} "
            "updated replicas are available...",
        )
    return RolloutStatus(True, f"deployment {name!r} successfully rolled out")


def pod_problems(pods: list[k8s.V1Pod]) -> list[str]:
    """Describe why pods are not ready, one short sentence per pod with a problem.

    Args:
        pods: pods of the Deployment.

    Returns:
        Sentences such as ``"pod web-1: container web ImagePullBackOff"``.
    """
    problems: list[str] = []
    for pod in pods:
        name = (pod.metadata or k8s.V1ObjectMeta()).name
        status = pod.status or k8s.V1PodStatus()
        reasons: list[str] = []
        for cs in status.container_statuses or []:
            state = cs.state
            if state is not None and state.waiting is not None and state.waiting.reason:
                reasons.append(f"container {cs.name} {state.waiting.reason}")
            elif state is not None and state.terminated is not None:
                reasons.append(
                    f"container {cs.name} terminated ({state.terminated.reason or 'exit'} "
                    f"code {state.terminated.exit_code})"
                )
            elif not cs.ready:
                restarts = f", {cs.restart_count} restarts" if cs.restart_count else ""
                reasons.append(f"container {cs.name} not ready{restarts}")
        if not reasons and status.phase not in ("Running", "Succeeded"):
            reasons.append(f"phase {status.phase or 'Unknown'}")
        if not reasons:
            ready = [c for c in status.conditions or [] if c.type == "Ready"]
            if ready and ready[0].status != "True":
                reasons.append("not ready")
        if reasons:
            problems.append(f"pod {name}: " + "; ".join(reasons))
    return problems


def deployment_pods(
    core_v1: k8s.CoreV1Api, namespace: str, deployment: k8s.V1Deployment
) -> list[k8s.V1Pod]:
    """List the pods selected by a Deployment's selector.

    Args:
        core_v1: the core API.
        namespace: namespace of the Deployment.
        deployment: the Deployment.

    Returns:
        The pods (possibly of several ReplicaSets).
    """
    labels = (deployment.spec.selector.match_labels or {}) if deployment.spec else {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    with translate_api_errors(f"list pods {selector} in {namespace}"):
        pods: list[k8s.V1Pod] = core_v1.list_namespaced_pod(
            namespace, label_selector=selector
        ).items
    return pods


def wait_for_rollout(
    apps_v1: k8s.AppsV1Api,
    namespace: str,
    name: str,
    timeout_s: float,
    *,
    core_v1: k8s.CoreV1Api | None = None,
    poll_s: float = 0.5,
    read_errors: int = 3,
    clock: Callable[[], float] = time.monotonic,
    sleeper: Callable[[float], Any] = time.sleep,
) -> RolloutStatus:
    """Poll a Deployment until its rollout is done, failed, or the deadline passes.

    A transient error reading the Deployment (a 5xx, a timeout) is polled through, like
    ``kubectl rollout status`` re-establishing its watch, unless ``read_errors`` reads in a
    row fail or the deadline passes: the last error is then raised (the caller undoes).

    Args:
        apps_v1: the apps API.
        namespace: namespace of the Deployment.
        name: Deployment name.
        timeout_s: deadline in seconds (like ``kubectl rollout status --timeout``).
        core_v1: the core API used to explain failures (default: built from apps_v1's client).
        poll_s: seconds between polls.
        read_errors: consecutive transient read errors that end the wait (raised).
        clock: monotonic clock (injected in tests).
        sleeper: waits between polls (injected in tests).

    Returns:
        The final, done status.

    Raises:
        RolloutError: progress deadline exceeded or timeout; the message carries the pods'
            reasons (ImagePullBackOff, CrashLoopBackOff, not ready...).
        TransientSystemError: ``read_errors`` reads in a row failed (or one at the deadline).
    """
    deadline = clock() + timeout_s
    failures = 0
    while True:
        try:
            with translate_api_errors(f"read deployment {namespace}/{name}"):
                deployment = apps_v1.read_namespaced_deployment(name, namespace)
        except TransientSystemError:
            failures += 1
            if failures >= read_errors or clock() >= deadline:
                raise
            sleeper(min(poll_s, max(0.0, deadline - clock())))
            continue
        failures = 0
        status = rollout_status(deployment)
        if status.done:
            return status
        if status.failed or clock() >= deadline:
            core = core_v1 or k8s.CoreV1Api(apps_v1.api_client)
            problems = pod_problems(deployment_pods(core, namespace, deployment))
            why = status.message if status.failed else f"timed out after {timeout_s:g}s"
            detail = "; ".join(problems) if problems else status.message
            raise RolloutError(
                f"rollout of deployment {namespace}/{name} failed: {why}: {detail}",
                hint="check the image exists and its pods start and pass their readiness probe",
            )
        sleeper(min(poll_s, max(0.0, deadline - clock())))
