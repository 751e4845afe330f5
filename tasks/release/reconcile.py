"""Crash safety: read where each Service points and which colours are ready, then make it whole."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kubernetes import client as k8s
from prefect import task
from prefect.cache_policies import NO_CACHE

from errors import retry_on_transient
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec
from tasks.release.colours import COLOURS, container_image, other_colour, read_deployment_or_none
from tasks.release.history import release_history
from tasks.release.logs import get_logger
from tasks.release.rollback import is_committed
from tasks.release.rollout import rollout_status
from tasks.release.switching import (
    PENDING_ANNOTATION,
    PREVIOUS_ANNOTATION,
    read_service,
    switch_selector,
)


@dataclass(frozen=True)
class ColourState:
    """One colour's Deployment as found in the cluster.

    Attributes:
        exists: the Deployment exists.
        replicas: desired replicas.
        ready: it is scaled up and rolled out (:func:`tasks.release.rollout.rollout_status`).
        image: image of the service's container.
    """

    exists: bool
    replicas: int = 0
    ready: bool = False
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
        """Whether a colour can take traffic.

        Args:
            colour: the colour.

        Returns:
            True when its Deployment exists, is scaled up and rolled out.
        """
        state = self.colours.get(colour or "")
        return bool(state and state.exists and state.ready)


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


def observe(
    apps_v1: k8s.AppsV1Api, core_v1: k8s.CoreV1Api, env: EnvironmentSpec,
    services: Sequence[ServiceSpec],
) -> list[ServiceState]:
    """Read the real state of each service from the cluster.

    Args:
        apps_v1: apps API.
        core_v1: core API.
        env: the environment.
        services: services to look at.

    Returns:
        One state per service.
    """
    namespace, colour_label = env.namespace, env.colour_label
    states: list[ServiceState] = []
    for ref in services:
        svc = read_service(core_v1, namespace, ref.service_name)
        selector = (svc.spec.selector or {}) if svc.spec else {}
        annotations = (svc.metadata.annotations or {}) if svc.metadata else {}
        colours: dict[str, ColourState] = {}
        for colour in COLOURS:
            dep = read_deployment_or_none(apps_v1, namespace, ref.deployment_name(colour))
            if dep is None:
                colours[colour] = ColourState(exists=False)
                continue
            replicas = (dep.spec.replicas if dep.spec else None) or 0
            colours[colour] = ColourState(
                exists=True, replicas=replicas,
                ready=replicas > 0 and rollout_status(dep).done,
                image=container_image(dep, ref.container),
            )
        states.append(ServiceState(
            service=ref.name, service_name=ref.service_name,
            selected=str(selector.get(colour_label, "")),
            pending_release=annotations.get(PENDING_ANNOTATION),
            previous_colour=annotations.get(PREVIOUS_ANNOTATION),
            colours=colours,
        ))
    return states


def plan(states: Sequence[ServiceState], committed: frozenset[str] = frozenset(),
         ) -> tuple[list[ReconcileAction], list[str]]:
    """Decide the corrections (pure).

    A switch still marked pending whose release had committed (its record names its colours
    live: the run died while clearing the marks, one Service after the other) is kept when
    its colour is ready: the commit is completed, never half undone. Any other uncommitted
    switch (a crashed release) goes back to its previous colour when that colour is ready;
    a Service selecting a colour with no ready pod moves to the other colour when that one is
    ready.

    Args:
        states: observed states.
        committed: ids of the releases whose record says they committed.

    Returns:
        The actions and the problems that need a human (nothing ready to switch to).
    """
    actions: list[ReconcileAction] = []
    problems: list[str] = []
    for s in states:
        other = other_colour(s.selected) if s.selected in COLOURS else None
        if s.pending_release in committed and s.ready(s.selected):
            actions.append(ReconcileAction(
                s.service, s.service_name, s.selected,
                f"release {s.pending_release} had committed; its switch to {s.selected} "
                "is kept (commit completed)",
            ))
            continue
        if s.pending_release is not None:
            back = s.previous_colour if s.previous_colour in COLOURS else other
            never = ("committed, but its colour has no ready pod"
                     if s.pending_release in committed else "was never committed")
            if back and s.ready(back):
                actions.append(ReconcileAction(
                    s.service, s.service_name, back,
                    f"switch of release {s.pending_release} {never}; back to {back}",
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
    apps_v1: k8s.AppsV1Api, core_v1: k8s.CoreV1Api, env: EnvironmentSpec,
    services: Sequence[ServiceSpec],
) -> tuple[list[str], list[str]]:
    """Observe, plan and apply: bring every service to a consistent, ready colour.

    When a Service carries a pending switch, the history tells whether its release had
    committed (:func:`plan`).

    Args:
        apps_v1: apps API.
        core_v1: core API.
        env: the environment.
        services: services to reconcile.

    Returns:
        Actions done (one line each) and problems left for a human.
    """
    namespace = env.namespace
    states = observe(apps_v1, core_v1, env, services)
    committed = frozenset(
        r.id for r in release_history(core_v1, namespace) if is_committed(r)
    ) if any(s.pending_release for s in states) else frozenset()
    actions, problems = plan(states, committed)
    done = apply(core_v1, namespace, actions, colour_label=env.colour_label)
    for line in done:
        get_logger(__name__).warning("reconcile %s: %s", namespace, line)
    for line in problems:
        get_logger(__name__).error("reconcile %s: %s", namespace, line)
    return done, problems


reconcile_task = task(
    name="reconcile", retries=2, retry_delay_seconds=1,
    retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE,
)(reconcile_environment)
