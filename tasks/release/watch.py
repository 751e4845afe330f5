"""The post-promotion watch: the keep-old-colour window spent verifying, preemptible.

After the commit the old colours still run at full scale for ``keep_old_colour_s``. The
release does not just wait: every analysis interval it measures every new colour again
(metrics and ready endpoints, the same judgment as before the switch) and, every second, looks
for a rollback asking to preempt it (:mod:`tasks.release.preemption`). A regression rolls every
service back together while the old colours can still take the traffic in one patch each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kubernetes import client as k8s
from prefect import task
from prefect.cache_policies import NO_CACHE

from errors import ExternalSystemError
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec
from tasks.release.colours import Prepared
from tasks.release.logs import get_logger
from tasks.release.measuring import (
    Measurement,
    PromQuerier,
    measure,
    ready_endpoints,
    window_seconds,
    with_endpoints,
)
from tasks.release.preemption import enter_keep_window, preemption_requested
from tasks.release.verifying import evaluate

# How often the Lease is read for a preemption request between measurements.
PREEMPT_POLL_S = 1.0


@dataclass
class WatchOutcome:
    """How the keep-old-colour window ended.

    Attributes:
        kind: ``quiet`` (the window passed), ``regressed`` or ``preempted``.
        detail: the failing service and metric, or who preempted the release.
        started_at: epoch seconds the watch began (the commit).
        decided_at: epoch seconds of the regression's verdict.
        measurements: per service, every measurement taken.
    """

    kind: Literal["quiet", "regressed", "preempted"]
    detail: str = ""
    started_at: float = 0.0
    decided_at: float = 0.0
    measurements: dict[str, list[Measurement]] = field(default_factory=dict)


def _measure(prometheus: PromQuerier, core_v1: k8s.CoreV1Api | None, env: EnvironmentSpec,
             spec: ServiceSpec, colour: str) -> Measurement:
    m = measure(prometheus, env.namespace, spec.name, colour, window_seconds(spec.analysis),
                colour_label=env.colour_label, app_label=env.app_label,
                metrics=spec.analysis.metrics, min_requests=spec.analysis.min_requests)
    count = None if core_v1 is None else (
        lambda: ready_endpoints(core_v1, env.namespace, spec.service_name))
    return with_endpoints(m, count, service=spec.name, colour=colour)


def watch_after_commit(
    prometheus: PromQuerier,
    *,
    env: EnvironmentSpec,
    specs: Sequence[ServiceSpec],
    prepared: dict[str, Prepared],
    window_s: float,
    core_v1: k8s.CoreV1Api | None = None,
    preempted: Callable[[], str | None] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
    sleeper: Callable[[float], Any] = time.sleep,
    wall_clock: Callable[[], float] = time.time,
) -> WatchOutcome:
    """Verify every committed new colour until the window ends, a regression, or a preemption.

    Each service is judged by its own analysis settings (:func:`tasks.release.verifying.
    evaluate`): more failures than its ``failure_limit`` (breaches, long silences, no ready
    endpoint) is a regression. Promotion does not apply: only the window ends the watch.

    Args:
        prometheus: the Prometheus block.
        env: the environment.
        specs: the committed services.
        prepared: their new colours (now serving).
        window_s: the keep-old-colour window; 0 returns ``quiet`` at once.
        core_v1: when given, each measurement also counts the Service's ready endpoints.
        preempted: who asks to preempt the release, or None (read every second).
        clock: monotonic clock.
        sleeper: waits.
        wall_clock: epoch clock (timings).

    Returns:
        The outcome.
    """
    outcome = WatchOutcome("quiet", started_at=wall_clock(),
                           measurements={s.name: [] for s in specs})
    if window_s <= 0 or not specs:
        return outcome
    interval = min(s.analysis.interval_s for s in specs)
    end = clock() + window_s
    next_at = clock() + interval
    while (now := clock()) < end:
        sleeper(max(0.0, min(next_at, end, now + PREEMPT_POLL_S) - now))
        requester = preempted()
        if requester is not None:
            outcome.kind, outcome.detail = "preempted", requester
            return outcome
        if clock() < next_at or clock() >= end:
            continue
        next_at += interval
        for spec in specs:
            colour = prepared[spec.name].new_colour
            series = outcome.measurements[spec.name]
            series.append(_measure(prometheus, core_v1, env, spec, colour))
            verdict = evaluate(series, spec.analysis)
            if verdict.decision == "abort":
                outcome.kind, outcome.decided_at = "regressed", wall_clock()
                outcome.detail = f"{spec.name} ({colour}): {verdict.reason}"
                return outcome
    return outcome


def watch(prometheus: PromQuerier, core_v1: k8s.CoreV1Api,
          coordination_v1: k8s.CoordinationV1Api, *, env: EnvironmentSpec,
          specs: Sequence[ServiceSpec], prepared: dict[str, Prepared],
          holder: str) -> WatchOutcome:
    """Mark the Lease preemptible, then watch the window (:func:`watch_after_commit`).

    Args:
        prometheus: the Prometheus block.
        core_v1: core API (ready endpoints).
        coordination_v1: coordination API (the Lease).
        env: the environment (its ``keep_old_colour_s`` is the window).
        specs: the committed services.
        prepared: their new colours.
        holder: the release's identity on the Lease.

    Returns:
        The outcome (logged).
    """
    log = get_logger(__name__)
    window = env.keep_old_colour_s
    if window > 0:
        enter_keep_window(coordination_v1, env.namespace, holder)
        log.info("keeping the old colours for %.0f s and watching the new ones (a rollback "
                 "may preempt this window)", window)
    outcome = watch_after_commit(
        prometheus, env=env, specs=specs, prepared=prepared, window_s=window, core_v1=core_v1,
        preempted=lambda: _requested(coordination_v1, env.namespace, holder))
    if outcome.kind == "regressed":
        log.error("post-promotion watch: regression: %s", outcome.detail)
    elif outcome.kind == "preempted":
        log.warning("keep-old-colour window preempted by %s", outcome.detail)
    return outcome


def _requested(coordination_v1: k8s.CoordinationV1Api, namespace: str,
               holder: str) -> str | None:
    try:
        return preemption_requested(coordination_v1, namespace, holder)
    except ExternalSystemError:
        return None  # unknown: look again next second


watch_task = task(name="post-promotion-watch", cache_policy=NO_CACHE)(watch)
