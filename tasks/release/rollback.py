"""Rollback: put switched services back on their old colour; restore a scaled-down old colour."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s

from errors import ReleaseError, VezaOpsError
from tasks.bluegreen import (
    SwitchRecord,
    apply_deployment,
    clone_for_colour,
    colour_deployment_name,
    container_image,
    read_deployment_or_none,
    read_service,
    scale,
    switch_selector,
    to_dict,
)
from tasks.rollout import wait_for_rollout


@dataclass
class RestoreReport:
    """What a rollback did and how long traffic took to come back.

    Attributes:
        restored: services whose selector was put back, in the order done.
        errors: services that could not be restored, with the reason.
        decided_at: epoch seconds of the failing check (start of the measurement).
        finished_at: epoch seconds when the last selector was restored.
    """

    restored: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    decided_at: float = 0.0
    finished_at: float = 0.0

    @property
    def restoration_s(self) -> float:
        """Seconds from the failing check to the last selector restored."""
        return max(0.0, self.finished_at - self.decided_at)


def switch_back(
    core_v1: k8s.CoreV1Api,
    switches: Sequence[SwitchRecord],
    *,
    colour_label: str = "color",
    decided_at: float | None = None,
    clock: Callable[[], float] = time.time,
) -> RestoreReport:
    """Switch every already-switched Service back to its old colour, newest first.

    The old colour still runs at full scale, so this is one patch per Service. A failure on
    one Service does not stop the others; failures are reported.

    Args:
        core_v1: core API.
        switches: the switches done by the release.
        colour_label: colour label key.
        decided_at: epoch seconds of the failing check (default: now).
        clock: epoch clock.

    Returns:
        The report with the restoration time.
    """
    report = RestoreReport(decided_at=clock() if decided_at is None else decided_at)
    for record in reversed(list(switches)):
        try:
            switch_selector(
                core_v1,
                service=record.service,
                service_name=record.service_name,
                namespace=record.namespace,
                colour=record.from_colour,
                colour_label=colour_label,
                pending_release=None,
            )
        except VezaOpsError as exc:
            report.errors[record.service] = exc.message
            continue
        report.restored.append(record.service)
    report.finished_at = clock()
    return report


@dataclass(frozen=True)
class RestoreTarget:
    """Where a manual rollback takes one service.

    Attributes:
        service: catalogue service name.
        service_name: Kubernetes Service name.
        deployment_base: Deployments are ``{base}-{colour}``.
        container: container name.
        image: image to run.
        secret_name: immutable Secret to use (None keeps the cloned references).
        port: container port (smoke).
    """

    service: str
    service_name: str
    deployment_base: str
    container: str
    image: str
    secret_name: str | None
    port: int


@dataclass(frozen=True)
class RestoreOutcome:
    """Result of restoring one service.

    Attributes:
        service: service name.
        colour: the colour now serving.
        image: its image.
        action: ``already`` (nothing to do), ``switched`` (old colour was running),
            ``scaled`` (scaled up then switched) or ``redeployed`` (recreated then switched).
    """

    service: str
    colour: str
    image: str
    action: str


def restore_service(
    apps_v1: k8s.AppsV1Api,
    core_v1: k8s.CoreV1Api,
    *,
    namespace: str,
    target: RestoreTarget,
    colour_label: str = "color",
    timeout_s: float = 300.0,
    release_id: str = "",
    sleeper: Callable[[float], Any] = time.sleep,
) -> RestoreOutcome:
    """Bring one service back to a target image: reuse the old colour, scale or redeploy it.

    Args:
        apps_v1: apps API.
        core_v1: core API.
        namespace: namespace.
        target: the image and secret to return to.
        colour_label: colour label key.
        timeout_s: rollout deadline.
        release_id: recorded on a redeployed Deployment.
        sleeper: poll waiter.

    Returns:
        What was done.

    Raises:
        ReleaseError: the live Deployment is missing, or the old colour never became ready.
    """
    svc = read_service(core_v1, namespace, target.service_name)
    live = str(((svc.spec.selector or {}) if svc.spec else {}).get(colour_label, ""))
    live_dep = read_deployment_or_none(
        apps_v1, namespace, colour_deployment_name(target.deployment_base, live)
    )
    if live_dep is not None and container_image(live_dep, target.container) == target.image:
        return RestoreOutcome(target.service, live, target.image, "already")
    if live_dep is None:
        raise ReleaseError(
            f"rollback of {target.service}: the live Deployment "
            f"{colour_deployment_name(target.deployment_base, live)} does not exist",
            hint="run the reconcile step or redeploy the service by hand",
        )
    old = "green" if live == "blue" else "blue"
    old_name = colour_deployment_name(target.deployment_base, old)
    old_dep = read_deployment_or_none(apps_v1, namespace, old_name)
    replicas = (live_dep.spec.replicas if live_dep.spec else None) or 1
    if old_dep is not None and container_image(old_dep, target.container) == target.image:
        current = (old_dep.spec.replicas if old_dep.spec else None) or 0
        action = "switched" if current >= replicas else "scaled"
        if current < replicas:
            scale(apps_v1, namespace, old_name, replicas)
    else:
        body = clone_for_colour(
            to_dict(apps_v1.api_client, live_dep),
            name=old_name,
            colour=old,
            container=target.container,
            image=target.image,
            secret_prefix=f"{target.service}-secrets",
            secret_name=target.secret_name,
            colour_label=colour_label,
            release_id=release_id,
        )
        body["spec"]["replicas"] = replicas
        apply_deployment(apps_v1, namespace, body)
        action = "redeployed"
    wait_for_rollout(apps_v1, namespace, old_name, timeout_s, sleeper=sleeper)
    switch_selector(
        core_v1,
        service=target.service,
        service_name=target.service_name,
        namespace=namespace,
        colour=old,
        colour_label=colour_label,
    )
    return RestoreOutcome(target.service, old, target.image, action)
