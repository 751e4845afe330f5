"""Canary traffic weights in the mesh: Istio DestinationRule subsets and VirtualService routes.

The weights written to each Service's VirtualService are the canary's state in the cluster: a
rerun reads them back (:func:`read_weight`) and puts any canary share left by a dead run back
to 0 % (``tasks.release.canary.reconcile_canaries``).

Subsets select by the colour label: ``stable`` is the live colour, ``canary`` the value
``canary`` that the canary Deployment's pods carry instead (so the Service's own selector never
picks a canary pod up, and Prometheus sees the canary's series as ``color="canary"``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from kubernetes import client as k8s
from prefect import task
from prefect.cache_policies import NO_CACHE

from errors import NotFoundError, VezaOpsError
from errors.kubernetes import translate_api_errors
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec
from tasks.release.logs import get_logger
from tasks.release.switching import RestoreReport, retry_in_body

ISTIO = ("networking.istio.io", "v1beta1")
CANARY = "canary"
STABLE = "stable"
RELEASE_ANNOTATION = "veza-ops.veza.io/canary-release"
MANAGED_BY = {"app.kubernetes.io/managed-by": "veza-ops"}


def destination_rule(env: EnvironmentSpec, spec: ServiceSpec, live_colour: str) -> dict[str, Any]:
    """The DestinationRule of a service: subsets ``stable`` (live colour) and ``canary`` (pure).

    Args:
        env: the environment (namespace, colour label).
        spec: the service.
        live_colour: the colour the Service selects (the stable track).

    Returns:
        The object body.
    """
    return {
        "apiVersion": f"{ISTIO[0]}/{ISTIO[1]}", "kind": "DestinationRule",
        "metadata": {"name": spec.service_name, "namespace": env.namespace,
                     "labels": dict(MANAGED_BY)},
        "spec": {"host": spec.service_name, "subsets": [
            {"name": STABLE, "labels": {env.colour_label: live_colour}},
            {"name": CANARY, "labels": {env.colour_label: CANARY}},
        ]},
    }


def routes(service_name: str, canary_weight: int) -> list[dict[str, Any]]:
    """The weighted ``http`` routes of a VirtualService: stable gets the rest (pure).

    Args:
        service_name: the Kubernetes Service (the destination host).
        canary_weight: the canary's share, 0..100.

    Returns:
        The ``spec.http`` list.

    Raises:
        ValueError: the weight is not a percentage.
    """
    if not 0 <= canary_weight <= 100:
        raise ValueError(f"a canary weight is a percentage, got {canary_weight}")
    return [{"route": [
        {"destination": {"host": service_name, "subset": STABLE}, "weight": 100 - canary_weight},
        {"destination": {"host": service_name, "subset": CANARY}, "weight": canary_weight},
    ]}]


def canary_weight(virtual_service: dict[str, Any] | None) -> int:
    """The share a VirtualService gives the ``canary`` subset (pure; 0 without one).

    Args:
        virtual_service: the object as a dict, or None when it does not exist.

    Returns:
        The weight of the first http route's ``canary`` destination, in percent of the total.
    """
    http = ((virtual_service or {}).get("spec") or {}).get("http") or [{}]
    entries = [r for r in (http[0].get("route") or []) if isinstance(r, dict)]
    weights = [(str((r.get("destination") or {}).get("subset")), int(r.get("weight") or 0))
               for r in entries]
    total = sum(w for _, w in weights)
    share = sum(w for subset, w in weights if subset == CANARY)
    return 0 if total <= 0 else round(100 * share / total)


def custom_objects(apps_v1: k8s.AppsV1Api) -> k8s.CustomObjectsApi:
    """The custom objects API on the same connection as ``apps_v1``.

    Args:
        apps_v1: the environment's apps API.

    Returns:
        The API.
    """
    return k8s.CustomObjectsApi(apps_v1.api_client)


def _get(custom: k8s.CustomObjectsApi, namespace: str, plural: str,
         name: str) -> dict[str, Any] | None:
    try:
        with translate_api_errors(f"read {plural} {namespace}/{name}"):
            found = custom.get_namespaced_custom_object(*ISTIO, namespace, plural, name)
    except NotFoundError:
        return None
    return found if isinstance(found, dict) else None


def _put(custom: k8s.CustomObjectsApi, namespace: str, plural: str, body: dict[str, Any],
         merge: dict[str, Any]) -> None:
    """Create the object, or merge-patch ``merge`` into the existing one."""
    name = body["metadata"]["name"]
    exists = _get(custom, namespace, plural, name) is not None
    with translate_api_errors(f"write {plural} {namespace}/{name}"):
        if exists:
            custom.patch_namespaced_custom_object(*ISTIO, namespace, plural, name, merge)
        else:
            custom.create_namespaced_custom_object(*ISTIO, namespace, plural, body)


def apply_destination_rule(custom: k8s.CustomObjectsApi, env: EnvironmentSpec,
                           spec: ServiceSpec, live_colour: str) -> None:
    """Create or update the service's DestinationRule (retried on transient errors).

    Args:
        custom: custom objects API.
        env: the environment.
        spec: the service.
        live_colour: the stable track's colour.
    """
    body = destination_rule(env, spec, live_colour)
    retry_in_body(partial(_put, custom, env.namespace, "destinationrules", body,
                          {"spec": body["spec"]}))


def set_weight(custom: k8s.CustomObjectsApi, env: EnvironmentSpec, spec: ServiceSpec,
               weight: int, release_id: str | None) -> None:
    """Write one service's canary weight into its VirtualService (created when missing).

    Args:
        custom: custom objects API.
        env: the environment.
        spec: the service.
        weight: the canary's share (0: everything to stable).
        release_id: the release that moved it off 0 (None clears the mark).
    """
    http = routes(spec.service_name, weight)
    annotations = {RELEASE_ANNOTATION: release_id}
    body = {"apiVersion": f"{ISTIO[0]}/{ISTIO[1]}", "kind": "VirtualService",
            "metadata": {"name": spec.service_name, "namespace": env.namespace,
                         "labels": dict(MANAGED_BY),
                         "annotations": {k: v for k, v in annotations.items() if v}},
            "spec": {"hosts": [spec.service_name], "http": http}}
    _put(custom, env.namespace, "virtualservices", body,
         {"metadata": {"annotations": annotations}, "spec": {"http": http}})


def read_weight(custom: k8s.CustomObjectsApi, env: EnvironmentSpec, spec: ServiceSpec) -> int:
    """The canary weight a service's VirtualService holds now (0 without one).

    Args:
        custom: custom objects API.
        env: the environment.
        spec: the service.

    Returns:
        The weight in percent.
    """
    return canary_weight(_get(custom, env.namespace, "virtualservices", spec.service_name))


def set_weights(custom: k8s.CustomObjectsApi, env: EnvironmentSpec,
                specs: Sequence[ServiceSpec], weight: int, release_id: str) -> float:
    """Move every service to the same canary weight, in order (each write retried).

    Args:
        custom: custom objects API.
        env: the environment.
        specs: the services.
        weight: the step's canary share.
        release_id: marks the VirtualServices while the canary takes traffic.

    Returns:
        Epoch seconds when the last weight was written.

    Raises:
        ExternalSystemError: a write still failed after its retries (the caller restores
            every service, the ones already moved included).
    """
    for spec in specs:
        retry_in_body(partial(set_weight, custom, env, spec, weight, release_id))
    get_logger(__name__).info("canary at %d %% for %s", weight, ", ".join(s.name for s in specs))
    return time.time()


def restore_weights(custom: k8s.CustomObjectsApi, env: EnvironmentSpec,
                    specs: Sequence[ServiceSpec], *, decided_at: float | None = None,
                    deadline_s: float | None = None,
                    clock: Callable[[], float] = time.time) -> RestoreReport:
    """Put every service back to 0 % canary; never raises (like ``switching.switch_back``).

    Each write is retried on transient errors until ``deadline_s`` from the start (shared);
    a failure on one service does not stop the others. A service whose weight could not be
    written and reads back above 0 is named in ``left`` (``canary at N %``, or ``unknown``).

    Args:
        custom: custom objects API.
        env: the environment.
        specs: every service of the release.
        decided_at: epoch seconds of the failing verdict (default: now).
        deadline_s: how long each write is retried.
        clock: epoch clock.

    Returns:
        The report (``restored`` services, ``left`` Service names, the restoration time).
    """
    started = clock()
    report = RestoreReport(decided_at=started if decided_at is None else decided_at,
                           finished_at=started)
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    log = get_logger(__name__)
    for spec in specs:
        try:
            retry_in_body(partial(set_weight, custom, env, spec, 0, None), deadline=deadline)
        except VezaOpsError as exc:
            try:
                now = read_weight(custom, env, spec)
            except VezaOpsError:
                now = -1
            if now != 0:
                log.error("%s: canary weight back to 0 FAILED (%s): %s", spec.name,
                          "unknown" if now < 0 else f"{now} %", exc.message)
                report.errors[spec.name] = exc.message
                report.left[spec.service_name] = "unknown" if now < 0 else f"canary at {now} %"
                continue
        report.finished_at = clock()
        report.restored.append(spec.name)
    log.warning("canary weights back to 0 %% for %s", ", ".join(report.restored) or "nothing")
    return report


restore_weights_task = task(name="canary-weights-back", cache_policy=NO_CACHE)(restore_weights)
