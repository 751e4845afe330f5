"""The Service selector during a canary: both tracks behind the Service, the mesh deciding.

On a real Istio mesh a DestinationRule subset only filters the Service's own endpoints (the
subset ``canary`` of a Service selecting ``color=blue`` is empty and its share answers 503).
So, as Istio's traffic-shifting examples do (a Service selecting ``app`` only, subsets by
version), a canary release removes the colour from the Service's selector for its duration:
the Service then selects both tracks by ``app``, and the VirtualService weights (already
written at 0 % canary before the selector widens) decide which track answers. The stable
colour removed is recorded on the Service in the same write (:data:`STABLE_ANNOTATION`), so a
rerun after a crash reads it back and puts the selector back (:func:`reconcile_selector`).

Order, every time: widen only once the VirtualService sends 100 % to ``stable``; narrow only
once the weights are back at 0 %; the canary Deployments are scaled down last.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial

from kubernetes import client as k8s

from errors import VezaOpsError
from errors.kubernetes import translate_api_errors
from tasks.release.canary_mesh import CANARY
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec
from tasks.release.logs import get_logger
from tasks.release.switching import read_service, retry_in_body

STABLE_ANNOTATION = "veza-ops.veza.io/canary-stable-colour"


def serving_colour(service: k8s.V1Service, colour_label: str = "color") -> str | None:
    """The stable colour of a Service: its selector's, else the one a canary recorded (pure).

    Args:
        service: the Service.
        colour_label: the colour label key.

    Returns:
        The colour, or None when neither names one.
    """
    selector = (service.spec.selector or {}) if service.spec else {}
    annotations = (service.metadata.annotations or {}) if service.metadata else {}
    colour = selector.get(colour_label)
    if not colour or colour == CANARY:  # both tracks, or a replicas canary at 100 %
        colour = annotations.get(STABLE_ANNOTATION)
    return str(colour) if colour else None


def widened(service: k8s.V1Service, colour_label: str = "color") -> str | None:
    """The stable colour a canary recorded, when the selector names no colour (pure).

    Or names the canary track (a replicas canary at 100 %, ``canary_replicas``). A selector
    naming a colour is never changed by a reconcile, whatever the record says.

    Args:
        service: the Service.
        colour_label: the colour label key.

    Returns:
        The colour to put back, or None when the Service is not widened.
    """
    selector = (service.spec.selector or {}) if service.spec else {}
    annotations = (service.metadata.annotations or {}) if service.metadata else {}
    recorded = annotations.get(STABLE_ANNOTATION)
    colour = selector.get(colour_label)
    return None if not recorded or (colour and colour != CANARY) else str(recorded)


def _patch(core_v1: k8s.CoreV1Api, env: EnvironmentSpec, spec: ServiceSpec, *,
           colour: str | None, recorded: str | None, what: str) -> None:
    patch = {"metadata": {"annotations": {STABLE_ANNOTATION: recorded}},
             "spec": {"selector": {env.colour_label: colour}}}
    with translate_api_errors(f"{what} service {env.namespace}/{spec.service_name}"):
        core_v1.patch_namespaced_service(spec.service_name, env.namespace, patch)


def widen_selector(core_v1: k8s.CoreV1Api, env: EnvironmentSpec, spec: ServiceSpec,
                   stable_colour: str) -> None:
    """Let the Service select both tracks: drop its colour, record it (one write, retried).

    The caller has written the service's VirtualService at 0 % canary first, so mesh
    traffic keeps going to the stable subset only.

    Args:
        core_v1: core API.
        env: the canary environment.
        spec: the service.
        stable_colour: the colour the Service selects now (recorded on it).
    """
    retry_in_body(partial(_patch, core_v1, env, spec, colour=None, recorded=stable_colour,
                          what="widen"))
    get_logger(__name__).info("%s: Service %s selects both tracks (%s=%s recorded)", spec.name,
                              spec.service_name, env.colour_label, stable_colour)


def select_canary_only(core_v1: k8s.CoreV1Api, env: EnvironmentSpec, spec: ServiceSpec,
                       stable_colour: str) -> None:
    """Let the Service select the canary track alone, the stable colour recorded (retried).

    The 100 % step of a replicas canary (``canary_replicas``): no mesh weight exists, so the
    selector is the switch; narrowing puts the stable colour back.

    Args:
        core_v1: core API.
        env: the canary environment.
        spec: the service.
        stable_colour: the stable colour (recorded on the Service).
    """
    retry_in_body(partial(_patch, core_v1, env, spec, colour=CANARY, recorded=stable_colour,
                          what="select canary"))
    get_logger(__name__).info("%s: Service %s selects the canary alone (%s=%s recorded)",
                              spec.name, spec.service_name, env.colour_label, stable_colour)


def narrow_selector(core_v1: k8s.CoreV1Api, env: EnvironmentSpec, spec: ServiceSpec,
                    stable_colour: str, *, deadline: float | None = None) -> None:
    """Put the colour back into the Service's selector and clear the record (one write).

    Args:
        core_v1: core API.
        env: the canary environment.
        spec: the service.
        stable_colour: the colour to select.
        deadline: retry transient failures until this ``time.monotonic()`` time.
    """
    retry_in_body(partial(_patch, core_v1, env, spec, colour=stable_colour, recorded=None,
                          what="narrow"), deadline=deadline)


def narrow_selectors(core_v1: k8s.CoreV1Api, env: EnvironmentSpec,
                     specs: Sequence[ServiceSpec], colours: dict[str, str], *,
                     deadline_s: float | None = None) -> dict[str, str]:
    """Put every Service back on its stable colour; never raises.

    Call only once every weight reads 0 %. A Service left selecting both tracks still routes
    mesh traffic by its VirtualService (100 % stable) and keeps its record, so the next run's
    reconcile puts it back.

    Args:
        core_v1: core API.
        env: the canary environment.
        specs: the services.
        colours: service to its stable colour.
        deadline_s: how long each write is retried (shared).

    Returns:
        Service name to the reason, for each Service left selecting both tracks.
    """
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    left: dict[str, str] = {}
    for spec in specs:
        if spec.name not in colours:
            continue
        try:
            narrow_selector(core_v1, env, spec, colours[spec.name], deadline=deadline)
        except VezaOpsError as exc:
            get_logger(__name__).error("%s: Service selector back to %s FAILED: %s", spec.name,
                                       colours[spec.name], exc.message)
            left[spec.service_name] = exc.message
    return left


def reconcile_selector(core_v1: k8s.CoreV1Api, env: EnvironmentSpec,
                       spec: ServiceSpec) -> str | None:
    """Put back a selector a dead canary run left widened (its weight already reads 0 %).

    Args:
        core_v1: core API.
        env: the canary environment.
        spec: the service.

    Returns:
        The correction made, or None when the Service selects its colour.
    """
    colour = widened(retry_in_body(partial(read_service, core_v1, env.namespace,
                                           spec.service_name)), env.colour_label)
    if colour is None:
        return None
    narrow_selector(core_v1, env, spec, colour)
    return (f"{spec.name}: Service {spec.service_name} left selecting both tracks by a dead "
            f"run put back on {env.colour_label}={colour}")
