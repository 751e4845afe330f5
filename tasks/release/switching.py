"""Traffic switches: point a Service at a colour, undo it (hook and switch-back), commit it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TypeVar

from kubernetes import client as k8s
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction, get_transaction

from blocks.kubernetes import KubernetesCluster
from errors import TransientSystemError, VezaOpsError, retry_on_transient
from errors.kubernetes import translate_api_errors
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec
from tasks.release.logs import get_logger

PENDING_ANNOTATION = "veza-ops.veza.io/pending-release"
PREVIOUS_ANNOTATION = "veza-ops.veza.io/previous-colour"
T = TypeVar("T")


def retry_in_body(
    fn: Callable[[], T],
    attempts: int = 3,
    backoff_s: float = 0.2,
    *,
    deadline: float | None = None,
    max_backoff_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleeper: Callable[[float], object] = time.sleep,
) -> T:
    """Retry a call on transient errors inside a task body.

    Everywhere else a task retries through Prefect (``retries`` with
    ``retry_condition_fn=errors.retry_on_transient``). Tasks run inside a Prefect
    ``transaction()`` (the switch) cannot: a failed attempt of such a task rolls the whole
    transaction back at once, before its retry. They, and the switch-back that must try every
    Service, retry each call here instead.

    Args:
        fn: the call.
        attempts: tries in all (without a deadline).
        backoff_s: wait before the second try; it grows linearly (up to ``max_backoff_s``).
        deadline: with a deadline (a ``clock`` time), retry until the next wait would pass
            it, however many tries that takes; one try at least.
        max_backoff_s: the longest wait between tries.
        clock: monotonic clock (injected in tests).
        sleeper: waits (injected in tests).

    Returns:
        What ``fn`` returned.

    Raises:
        TransientSystemError: still failing after the last try.
    """
    attempt = 1
    while True:
        wait = min(backoff_s * attempt, max_backoff_s)
        last = (clock() + wait > deadline) if deadline is not None else attempt >= attempts
        if last:
            return fn()
        try:
            return fn()
        except TransientSystemError:
            sleeper(wait)
        attempt += 1


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


def selected_colour(core_v1: k8s.CoreV1Api, namespace: str, service_name: str,
                    colour_label: str = "color") -> str | None:
    """The colour a Service selects now (None when its selector names none).

    Args:
        core_v1: core API.
        namespace: namespace.
        service_name: Service name.
        colour_label: colour label key.

    Returns:
        The colour label's value.
    """
    svc = read_service(core_v1, namespace, service_name)
    return ((svc.spec.selector or {}) if svc.spec else {}).get(colour_label)


def switch_selector(
    core_v1: k8s.CoreV1Api,
    *,
    service: str,
    service_name: str,
    namespace: str,
    colour: str,
    colour_label: str = "color",
    pending_release: str | None = None,
    from_colour: str | None = None,
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
        from_colour: the colour serving before the switch, as prepared (default: the one
            the Service selects now, which a retry of an applied switch would misread).
        clock: epoch clock.

    Returns:
        What is needed to undo the switch.
    """
    current = read_service(core_v1, namespace, service_name)
    previous = dict((current.spec.selector or {}) if current.spec else {})
    if from_colour is None:
        from_colour = str(previous.get(colour_label, ""))
    else:
        previous[colour_label] = from_colour
    marks = ({PENDING_ANNOTATION: pending_release, PREVIOUS_ANNOTATION: from_colour}
             if pending_release is not None
             else {PENDING_ANNOTATION: None, PREVIOUS_ANNOTATION: None})
    patch = {"metadata": {"annotations": marks}, "spec": {"selector": {colour_label: colour}}}
    with translate_api_errors(f"switch service {namespace}/{service_name} to {colour}"):
        core_v1.patch_namespaced_service(service_name, namespace, patch)
    return SwitchRecord(service, service_name, namespace, from_colour, colour, previous, clock())


@task(name="switch-traffic", task_run_name="switch-{spec.name}", cache_policy=NO_CACHE)
def switch_traffic(
    kubernetes: KubernetesCluster,
    *,
    env: EnvironmentSpec,
    spec: ServiceSpec,
    colour: str,
    from_colour: str,
    release_id: str,
) -> SwitchRecord:
    """Point the Service at the new colour, marked uncommitted; the rollback hook undoes it.

    Runs inside the release's transaction, so it retries in its body (:func:`retry_in_body`).
    When every try failed the switch may still have been applied: the caller counts it as
    done and switches back every prepared service.

    Args:
        kubernetes: the cluster block (kept in the transaction for the hook).
        env: the environment.
        spec: the service.
        colour: the new colour.
        from_colour: the colour serving before (as prepared, never re-read).
        release_id: marks the switch as pending until the release commits.

    Returns:
        The switch record.
    """
    core = kubernetes.core_v1()
    record = retry_in_body(lambda: switch_selector(
        core, service=spec.name, service_name=spec.service_name, namespace=env.namespace,
        colour=colour, colour_label=env.colour_label, pending_release=release_id,
        from_colour=from_colour,
    ))
    txn = get_transaction()
    if txn is not None:
        txn.set("switch", asdict(record))
        txn.set("kubernetes", kubernetes)
        txn.set("colour_label", env.colour_label)
    get_logger(__name__).info("%s: traffic switched %s -> %s", spec.name, record.from_colour,
                              colour)
    return record


@switch_traffic.on_rollback
def _switch_back_hook(txn: Transaction) -> None:
    """Rollback hook: put the Service back on its previous colour (logged, never raises)."""
    record, kubernetes = txn.get("switch", None), txn.get("kubernetes", None)
    if record is None or kubernetes is None:
        return
    switch_back(kubernetes.core_v1(), [SwitchRecord(**record)],
                colour_label=txn.get("colour_label", "color"))


@dataclass
class RestoreReport:
    """What a switch-back did and when traffic was back.

    Attributes:
        restored: services back on their old colour, in the order done.
        errors: services that could not be switched back, with the reason.
        left: Services not back on their old colour, with the colour they still select
            (``unknown`` when it could not be read).
        decided_at: epoch seconds of the failing check (start of the measurement).
        finished_at: epoch seconds when the last selector was back.
    """

    restored: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    left: dict[str, str] = field(default_factory=dict)
    decided_at: float = 0.0
    finished_at: float = 0.0

    @property
    def restoration_s(self) -> float:
        """Seconds from the failing check to the last selector restored."""
        return max(0.0, self.finished_at - self.decided_at)


def _restore_one(core_v1: k8s.CoreV1Api, r: SwitchRecord, colour_label: str) -> bool:
    """Put one Service back on its old colour unless it is there; True when it was moved."""
    if selected_colour(core_v1, r.namespace, r.service_name, colour_label) == r.from_colour:
        return False
    switch_selector(core_v1, service=r.service, service_name=r.service_name,
                    namespace=r.namespace, colour=r.from_colour, colour_label=colour_label)
    return True


def switch_back(
    core_v1: k8s.CoreV1Api,
    switches: Sequence[SwitchRecord],
    *,
    colour_label: str = "color",
    decided_at: float | None = None,
    deadline_s: float | None = None,
    clock: Callable[[], float] = time.time,
) -> RestoreReport:
    """Switch every given Service back to its old colour, newest first; never raises.

    The old colour still runs at full scale, so this is one patch per Service, retried on
    transient errors (until ``deadline_s`` from the start when given). A Service already back
    (the transaction's rollback hook did it) is left alone; then traffic was back when this
    started. A failure on one Service does not stop the others; each Service left on another
    colour is named in the report's ``left``.

    Args:
        core_v1: core API.
        switches: the switches to undo (the release passes one per prepared service).
        colour_label: colour label key.
        decided_at: epoch seconds of the failing check (default: now).
        deadline_s: keep retrying each Service until this many seconds after the start.
        clock: epoch clock.

    Returns:
        The report, with the restoration time.
    """
    started = clock()
    report = RestoreReport(decided_at=started if decided_at is None else decided_at,
                           finished_at=started)
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    for r in reversed(list(switches)):
        try:
            moved = retry_in_body(partial(_restore_one, core_v1, r, colour_label),
                                  deadline=deadline)
        except VezaOpsError as exc:
            try:
                now = selected_colour(core_v1, r.namespace, r.service_name, colour_label)
            except VezaOpsError:
                now = "unknown"
            if now != r.from_colour:  # an answer lost after the patch applied is a success
                get_logger(__name__).error(
                    "%s: switch back to %s FAILED, Service %s still selects %s: %s",
                    r.service, r.from_colour, r.service_name, now, exc.message)
                report.errors[r.service] = exc.message
                report.left[r.service_name] = now or "none"
                continue
            moved = True
        if moved:
            report.finished_at = clock()
            get_logger(__name__).warning("%s: traffic switched back to %s", r.service,
                                         r.from_colour)
        report.restored.append(r.service)
    return report


switch_back_task = task(name="switch-back", cache_policy=NO_CACHE)(switch_back)


def rollback_timings(switches: Sequence[SwitchRecord], report: RestoreReport) -> dict[str, float]:
    """Detection (last switch to the failing verdict) and restoration (verdict to traffic back).

    Args:
        switches: the switches done, in order.
        report: the switch-back's report.

    Returns:
        ``detection_s`` and ``restoration_s``; empty when nothing was switched.
    """
    if not switches:
        return {}
    return {"detection_s": max(0.0, report.decided_at - switches[-1].switched_at),
            "restoration_s": report.restoration_s}


def commit_switches(core_v1: k8s.CoreV1Api, env: EnvironmentSpec, services: list[str]) -> None:
    """Mark every switch of the release as committed (remove the pending annotations).

    Args:
        core_v1: core API.
        env: the environment.
        services: Service names.
    """
    patch = {"metadata": {"annotations": {PENDING_ANNOTATION: None, PREVIOUS_ANNOTATION: None}}}
    for name in services:
        with translate_api_errors(f"commit service {env.namespace}/{name}"):
            core_v1.patch_namespaced_service(name, env.namespace, patch)


commit_switches_task = task(
    name="commit-switches", retries=3, retry_delay_seconds=1,
    retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE,
)(commit_switches)
