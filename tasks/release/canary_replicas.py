"""Canary traffic without a mesh: the weight approximated by the canary's share of the pods.

``canary_traffic: replicas`` in a canary environment (the default is ``mesh``: an Istio
VirtualService sets exact weights). It is **coarse**: the Service selects both tracks (as during
a mesh canary) and a Service spreads its connections over its ready endpoints, so a step's
weight ``w`` becomes ``canary / (stable + canary)`` pods. The stable keeps its ``N`` replicas
(its capacity never drops while it serves); the canary gets
``max(1, round_half_up(N * w / (100 - w)))`` pods, at least one; at 100 % the canary runs ``N``
pods and the Service selects the canary track alone (the stable pods stay up, selected again
at once on a rollback). With one stable replica every step below 100 % is 50 %.

Crash safety is the mesh canary's: the Service's stable colour is recorded on it while it
selects both tracks or the canary alone (``canary_service``), and the reconcile narrows it back
and scales the canaries down.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from kubernetes import client as k8s

from errors import PreflightError
from errors.kubernetes import translate_api_errors
from tasks.release.canary_mesh import ISTIO
from tasks.release.canary_service import select_canary_only, widen_selector
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec
from tasks.release.colours import Prepared, scale
from tasks.release.logs import get_logger
from tasks.release.rollout import wait_for_rollout
from tasks.release.switching import RestoreReport, retry_in_body

ISTIO_KINDS = ("virtualservices", "destinationrules")


def canary_replicas(weight: int, stable: int) -> int:
    """The canary's pods approximating ``weight`` % beside ``stable`` stable pods (pure).

    Rounds half up and never goes below one pod; 100 % is the stable's count (the Service
    then selects the canary alone).

    Args:
        weight: the step's canary share, 1..100.
        stable: the stable Deployment's replicas (at least 1 is assumed).

    Returns:
        The canary Deployment's replicas.

    Raises:
        ValueError: a weight outside 1..100.
    """
    if not 1 <= weight <= 100:
        raise ValueError(f"a canary weight is a percentage in 1..100, got {weight}")
    stable = max(1, stable)
    if weight == 100:
        return stable
    return max(1, int(stable * weight / (100 - weight) + 0.5))


def effective_share(weight: int, stable: int) -> int:
    """The canary's share of the traffic (%) a step really gets with replicas (pure).

    Args:
        weight: the step's canary weight.
        stable: the stable's replicas.

    Returns:
        ``round(100 * canary / (stable + canary))``, 100 at the 100 % step.
    """
    if weight == 100:
        return 100
    canary = canary_replicas(weight, stable)
    return round(100 * canary / (max(1, stable) + canary))


def describe(env: EnvironmentSpec) -> str:
    """How a canary environment splits traffic, for the plan and the record (pure).

    Args:
        env: the canary environment.

    Returns:
        One sentence naming the mode.
    """
    if env.canary_traffic == "mesh":
        return ("mesh: Istio VirtualService weights (stable/canary subsets of a "
                "DestinationRule), exact")
    return ("replicas (coarse, no mesh): a step's weight w is approximated by canary pods / "
            "(stable + canary pods), canary = max(1, round half up(stable x w / (100 - w))); "
            "at 100 % the Service selects the canary alone")


def replica_plan(env: EnvironmentSpec, stable: int) -> str:
    """The replicas mode's steps for ``stable`` stable pods, e.g. ``5 % -> 1 pod (50 %)``.

    Args:
        env: the canary environment.
        stable: the stable's replicas.

    Returns:
        One line.
    """
    return ", ".join(f"{w} % -> {canary_replicas(w, stable)} canary pod(s) "
                     f"({effective_share(w, stable)} %)" for w in env.canary_weights)


def mesh_served(api_client: k8s.ApiClient) -> list[str]:
    """The Istio kinds the cluster does not serve (``networking.istio.io/v1beta1``).

    Reads the discovery document (a non-resource URL every authenticated user may read).

    Args:
        api_client: the environment's API client.

    Returns:
        The missing plurals (empty: both VirtualService and DestinationRule are served).
    """
    path = f"/apis/{ISTIO[0]}/{ISTIO[1]}"
    with translate_api_errors(f"discover {ISTIO[0]}/{ISTIO[1]}"):
        request = api_client.param_serialize(
            "GET", path, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        answer = api_client.call_api(*request)
        answer.read()  # type: ignore[no-untyped-call]
        if answer.status == 404:  # the group is not served at all
            return list(ISTIO_KINDS)
        if not 200 <= answer.status < 300:
            raise k8s.ApiException(status=answer.status, reason=answer.reason)
    found = json.loads(answer.data or b"{}")
    resources: list[dict[str, Any]] = found.get("resources") or []
    names = {str(r.get("name")) for r in resources}
    return [k for k in ISTIO_KINDS if k not in names]


def check_traffic(env: EnvironmentSpec, missing: Sequence[str]) -> str:
    """The preflight item ``canary traffic``: a mesh canary needs the Istio CRDs (pure).

    Args:
        env: the canary environment.
        missing: what :func:`mesh_served` found missing.

    Returns:
        The item's detail.

    Raises:
        PreflightError: ``canary_traffic: mesh`` on a cluster without Istio's CRDs, naming
            the field and the fix.
    """
    if env.canary_traffic == "mesh" and missing:
        raise PreflightError(
            f"environments.{env.name}.canary_traffic is mesh but the cluster serves no "
            f"{ISTIO[0]}/{ISTIO[1]} {', '.join(missing)}",
            hint="install Istio (its CRDs) in the cluster, or set canary_traffic: replicas "
                 "(coarse: the canary's share of the pods)")
    return describe(env)


def set_replica_weights(apps_v1: k8s.AppsV1Api, core_v1: k8s.CoreV1Api, *,
                        env: EnvironmentSpec, specs: Sequence[ServiceSpec],
                        canaries: dict[str, Prepared], weight: int) -> float:
    """One step in replicas mode: every canary scaled and ready, then every Service's selector.

    Below 100 % the Service selects both tracks (idempotent after the first step); at 100 %
    it selects the canary alone. Each write is retried on transient errors.

    Args:
        apps_v1: apps API.
        core_v1: core API.
        env: the canary environment.
        specs: the services.
        canaries: their canaries (``replicas`` is the stable's count).
        weight: the step's weight.

    Returns:
        Epoch seconds when the last selector was written.

    Raises:
        RolloutError: a canary did not become ready at its new size (the caller rolls back).
    """
    for s in specs:
        p = canaries[s.name]
        retry_in_body(partial(scale, apps_v1, env.namespace, p.deployment,
                              canary_replicas(weight, p.replicas)))
    for s in specs:
        wait_for_rollout(apps_v1, env.namespace, canaries[s.name].deployment,
                         env.rollout_timeout_s, core_v1=core_v1)
    for s in specs:
        if weight == 100:
            select_canary_only(core_v1, env, s, canaries[s.name].live_colour)
        else:
            widen_selector(core_v1, env, s, canaries[s.name].live_colour)
    get_logger(__name__).info("canary at %d %% (replicas: %s) for %s", weight, ", ".join(
        f"{s.name} {canary_replicas(weight, canaries[s.name].replicas)}/"
        f"{canaries[s.name].replicas}" for s in specs), ", ".join(s.name for s in specs))
    return time.time()


def nothing_to_restore(specs: Sequence[ServiceSpec], decided_at: float | None) -> RestoreReport:
    """The weights' restore report of a replicas canary: no VirtualService to write.

    Its traffic returns to the stable track when the Services are narrowed (next, by the
    caller) and the canaries scaled down.

    Args:
        specs: every service of the release.
        decided_at: epoch seconds of the failing verdict (default: now).

    Returns:
        Every service restored, now.
    """
    now = time.time()
    return RestoreReport(restored=[s.name for s in specs], finished_at=now,
                         decided_at=now if decided_at is None else decided_at)
