"""Crash safety: read where each Service points and which colours are ready, then make it whole."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kubernetes import client as k8s
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.bluegreen import (
    COLOURS,
    PENDING_ANNOTATION,
    PREVIOUS_ANNOTATION,
    colour_deployment_name,
    container_image,
    read_deployment_or_none,
    read_service,
    switch_selector,
)
from tasks.build import get_logger


@dataclass(frozen=True)
class ColourState:
    """One colour's Deployment as found in the cluster.

    Attributes:
        exists: the Deployment exists.
        replicas: desired replicas.
        ready_replicas: ready replicas.
        image: image of the service's container.
    """

    exists: bool
    replicas: int = 0
    ready_replicas: int = 0
    image: str | None = None


@dataclass(frozen=True)
class ServiceState:
    """The real state of one service.

    Attributes:
        service: catalogue name.
        service_name: Kubernetes Service name.
        selected: colour the Service selects ("" when none).
        pending_release: release id of an uncommitted switch, if any.
        previous_colour: colour before that uncommitted switch.
        colours: state of each colour's Deployment.
    """

    service: str
    service_name: str
    selected: str
    pending_release: str | None
    previous_colour: str | None
    colours: dict[str, ColourState] = field(default_factory=dict)

    def ready(self, colour: str | None) -> bool:
        """Whether a colour has at least one ready replica.

        Args:
            colour: the colour.

        Returns:
            True when it can take traffic.
        """
        state = self.colours.get(colour or "")
        return bool(state and state.exists and state.ready_replicas > 0)


@dataclass(frozen=True)
class ReconcileAction:
    """One correction to make.

    Attributes:
        service: catalogue name.
        service_name: Service name.
        to_colour: colour to select (the Service's pending marks are cleared as well).
        reason: why.
    """

    service: str
    service_name: str
    to_colour: str
    reason: str


@dataclass(frozen=True)
class ServiceRef:
    """What reconcile needs to know about a service.

    Attributes:
        service: catalogue name.
        service_name: Service name.
        deployment_base: Deployments are ``{base}-{colour}``.
        container: container name.
    """

    service: str
    service_name: str
    deployment_base: str
    container: str


def observe(
    apps_v1: k8s.AppsV1Api, core_v1: k8s.CoreV1Api, namespace: str,
    services: Sequence[ServiceRef], *, colour_label: str = "color",
) -> list[ServiceState]:
    """Read the real state of each service from the cluster.

    Args:
        apps_v1: apps API.
        core_v1: core API.
        namespace: namespace.
        services: services to look at.
        colour_label: colour label key.

    Returns:
        One state per service.
    """
    states: list[ServiceState] = []
    for ref in services:
        svc = read_service(core_v1, namespace, ref.service_name)
        selector = (svc.spec.selector or {}) if svc.spec else {}
        annotations = (svc.metadata.annotations or {}) if svc.metadata else {}
        colours: dict[str, ColourState] = {}
        for colour in COLOURS:
            dep = read_deployment_or_none(
                apps_v1, namespace, colour_deployment_name(ref.deployment_base, colour)
            )
            if dep is None:
                colours[colour] = ColourState(exists=False)
                continue
            status = dep.status or k8s.V1DeploymentStatus()
            colours[colour] = ColourState(
                exists=True,
                replicas=(dep.spec.replicas if dep.spec else None) or 0,
                ready_replicas=status.ready_replicas or 0,
                image=container_image(dep, ref.container),
            )
        states.append(ServiceState(
            service=ref.service, service_name=ref.service_name,
            selected=str(selector.get(colour_label, "")),
            pending_release=annotations.get(PENDING_ANNOTATION),
            previous_colour=annotations.get(PREVIOUS_ANNOTATION),
            colours=colours,
        ))
    return states


def plan(states: Sequence[ServiceState]) -> tuple[list[ReconcileAction], list[str]]:
    """Decide the corrections (pure).

    An uncommitted switch (a crashed release) goes back to its previous colour when that
    colour is ready; a Service selecting a colour with no ready pod moves to the other colour
    when that one is ready.

    Args:
        states: observed states.

    Returns:
        The actions and the problems that need a human (nothing ready to switch to).
    """
    actions: list[ReconcileAction] = []
    problems: list[str] = []
    for s in states:
        other = COLOURS[1 - COLOURS.index(s.selected)] if s.selected in COLOURS else None
        if s.pending_release is not None:
            back = s.previous_colour if s.previous_colour in COLOURS else other
            if back and s.ready(back):
                actions.append(ReconcileAction(
                    s.service, s.service_name, back,
                    f"switch of release {s.pending_release} was never committed; "
                    f"back to {back}",
                ))
            elif s.ready(s.selected):
                actions.append(ReconcileAction(
                    s.service, s.service_name, s.selected,
                    f"switch of release {s.pending_release} uncommitted but {back} is not "
                    f"ready; keeping {s.selected}",
                ))
            else:
                problems.append(f"{s.service}: no colour has a ready pod")
            continue
        if s.ready(s.selected):
            continue
        if other and s.ready(other):
            actions.append(ReconcileAction(
                s.service, s.service_name, other,
                f"{s.selected or 'no colour'} has no ready pod; {other} has",
            ))
        else:
            problems.append(f"{s.service}: no colour has a ready pod")
    return actions, problems


def apply(
    core_v1: k8s.CoreV1Api, namespace: str, actions: Sequence[ReconcileAction], *,
    colour_label: str = "color",
) -> list[str]:
    """Carry out reconcile actions (each one patch, idempotent).

    Args:
        core_v1: core API.
        namespace: namespace.
        actions: from :func:`plan`.
        colour_label: colour label key.

    Returns:
        One line per action done.
    """
    done: list[str] = []
    for action in actions:
        switch_selector(core_v1, service=action.service, service_name=action.service_name,
                        namespace=namespace, colour=action.to_colour,
                        colour_label=colour_label, pending_release=None)
        done.append(f"{action.service}: {action.reason}")
    return done


def reconcile_environment(
    apps_v1: k8s.AppsV1Api, core_v1: k8s.CoreV1Api, namespace: str,
    services: Sequence[ServiceRef], *, colour_label: str = "color",
) -> tuple[list[str], list[str]]:
    """Observe, plan and apply: bring every service to a consistent, ready colour.

    Args:
        apps_v1: apps API.
        core_v1: core API.
        namespace: namespace.
        services: services to reconcile.
        colour_label: colour label key.

    Returns:
        Actions done (one line each) and problems left for a human.
    """
    states = observe(apps_v1, core_v1, namespace, services, colour_label=colour_label)
    actions, problems = plan(states)
    done = apply(core_v1, namespace, actions, colour_label=colour_label)
    for line in done:
        get_logger().warning("reconcile %s: %s", namespace, line)
    for line in problems:
        get_logger().error("reconcile %s: %s", namespace, line)
    return done, problems


reconcile_task = task(name="reconcile", cache_policy=NO_CACHE)(reconcile_environment)
