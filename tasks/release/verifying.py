"""Verification of a new colour: a pure verdict over measurements, the paced loop, the task.

Each interval measures Prometheus over the rate window (:mod:`tasks.release.measuring`) and
counts the Service's ready endpoints: a new colour whose pods died after the switch fails that
interval at once instead of reading as a long silence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from kubernetes import client as k8s
from prefect import task
from prefect.cache_policies import NO_CACHE

from errors import VerificationError
from tasks.release.analysis_config import MetricSpec
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec
from tasks.release.logs import get_logger
from tasks.release.measuring import (
    MIN_WINDOW_S,
    Measurement,
    PromQuerier,
    measure,
    ready_endpoints,
    window_seconds,
    with_endpoints,
)

Decision = Literal["continue", "promote", "abort"]


class AnalysisSettings(Protocol):
    """Thresholds and pacing of an analysis (the catalogue's ``AnalysisSpec`` fits).

    An optional ``metrics`` attribute (a sequence of
    :class:`~tasks.release.analysis_config.MetricSpec`) adds the catalogue's own metrics; an
    optional ``min_requests`` makes an interval with fewer requests no data.
    """

    success_rate_min: float
    p99_max_ms: float
    interval_s: float
    intervals: int
    failure_limit: int
    max_no_data: int
    window_s: float | None


def custom_metrics(settings: AnalysisSettings) -> Sequence[MetricSpec]:
    """The catalogue's own metrics of an analysis (none for settings without ``metrics``).

    Args:
        settings: the analysis.

    Returns:
        Its ``metrics``, judged beside the built-in success rate and p99.
    """
    return tuple(getattr(settings, "metrics", None) or ())


@dataclass(frozen=True)
class Verdict:
    """The state of an analysis after some measurements.

    Attributes:
        decision: ``continue``, ``promote`` or ``abort``.
        reason: a sentence naming the metric and values when aborting.
        successes: measurements within thresholds.
        failures: measurements counted as failed (breaches and long silences).
    """

    decision: Decision
    reason: str
    successes: int = 0
    failures: int = 0


def evaluate(measurements: Sequence[Measurement], settings: AnalysisSettings) -> Verdict:
    """Judge a sequence of measurements (pure; like Argo Rollouts' failureLimit).

    A measurement with a ``failure`` (no ready endpoint) fails whatever its metrics. A
    measurement with data (every metric measured) fails when the success rate is below the
    minimum, p99 above the maximum, or one of the catalogue's metrics out of its bound.
    No-data measurements (any metric silent) are tolerated up to ``max_no_data`` in a row;
    the next one counts as a failure. More than ``failure_limit`` failures abort. Promotion
    needs ``intervals`` measurements with data, so silence never promotes.

    Args:
        measurements: measurements in time order.
        settings: thresholds and limits.

    Returns:
        The verdict.
    """
    metrics = custom_metrics(settings)
    successes = failures = with_data = silent = 0
    last_failure = ""
    for index, m in enumerate(measurements, start=1):
        if m.failure is not None:
            silent = 0
            failures += 1
            last_failure = f"{m.failure} at measurement {index}"
        elif not m.has_data or any(m.value(metric.name) is None for metric in metrics):
            silent += 1
            if silent > settings.max_no_data:
                failures += 1
                silent = 0
                last_failure = (
                    f"no data for {settings.max_no_data + 1} consecutive measurements "
                    f"(last: {m.error or 'no data'}) at measurement {index}"
                )
        else:
            silent = 0
            with_data += 1
            breaches: list[str] = []
            assert m.success_rate is not None and m.p99_ms is not None
            if m.success_rate < settings.success_rate_min:
                breaches.append(
                    f"success rate {m.success_rate:.3f} < {settings.success_rate_min:g}"
                )
            if m.p99_ms > settings.p99_max_ms:
                breaches.append(f"p99 latency {m.p99_ms:.0f} ms > {settings.p99_max_ms:g} ms")
            breaches += [b for b in (metric.breach(m.value(metric.name) or 0.0)
                                     for metric in metrics) if b]
            if breaches:
                failures += 1
                last_failure = " and ".join(breaches) + f" at measurement {index}"
            else:
                successes += 1
        if failures > settings.failure_limit:
            return Verdict("abort", last_failure, successes, failures)
    if with_data >= settings.intervals:
        return Verdict("promote", f"{successes} of {with_data} measurements healthy",
                       successes, failures)
    return Verdict("continue", "", successes, failures)


@dataclass
class AnalysisResult:
    """Outcome of a full analysis of one service's new colour.

    Attributes:
        service: service name.
        colour: the analysed colour.
        verdict: the final verdict.
        measurements: every measurement taken.
        decided_at: wall-clock time (epoch seconds) of the final verdict.
    """

    service: str
    colour: str
    verdict: Verdict
    measurements: list[Measurement] = field(default_factory=list)
    decided_at: float = 0.0


def analyse(
    prometheus: PromQuerier,
    *,
    service: str,
    namespace: str,
    colour: str,
    settings: AnalysisSettings,
    colour_label: str = "color",
    app_label: str = "app",
    min_window_s: int = MIN_WINDOW_S,
    endpoints: Callable[[], int] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleeper: Callable[[float], Any] = time.sleep,
    wall_clock: Callable[[], float] = time.time,
) -> AnalysisResult:
    """Measure every interval (deadline-paced) until the verdict is promote or abort.

    Args:
        prometheus: the Prometheus block.
        service: service (app label) name.
        namespace: namespace label.
        colour: colour under analysis.
        settings: thresholds and pacing.
        colour_label: name of the colour label.
        app_label: name of the app label.
        min_window_s: smallest default rate window (an explicit ``window_s`` wins).
        endpoints: counts the colour's ready endpoints each interval; 0 fails the interval,
            an API error leaves it to the metrics.
        clock: monotonic clock (injected in tests).
        sleeper: waits until the next interval's deadline (injected in tests).
        wall_clock: epoch clock for the decision timestamp.

    Returns:
        The result; callers raise :class:`VerificationError` on abort (see
        :func:`raise_on_abort`).
    """
    window_s = window_seconds(settings, min_window_s=min_window_s)
    result = AnalysisResult(service, colour, Verdict("continue", ""))
    next_at = clock() + settings.interval_s
    while True:
        sleeper(max(0.0, next_at - clock()))
        next_at += settings.interval_s
        m = measure(prometheus, namespace, service, colour, window_s,
                    colour_label=colour_label, app_label=app_label,
                    metrics=custom_metrics(settings),
                    min_requests=getattr(settings, "min_requests", 0))
        result.measurements.append(with_endpoints(m, endpoints, service=service, colour=colour))
        result.verdict = evaluate(result.measurements, settings)
        if result.verdict.decision != "continue":
            result.decided_at = wall_clock()
            return result


def raise_on_abort(result: AnalysisResult) -> None:
    """Raise when the analysis aborted.

    Args:
        result: the analysis result.

    Raises:
        VerificationError: naming the service, colour and the failing metric.
    """
    if result.verdict.decision == "abort":
        raise VerificationError(
            f"verification of {result.service} ({result.colour}) failed: "
            f"{result.verdict.reason}",
            hint="the release was rolled back; inspect the new version's errors and latency",
        )


def verify(
    prometheus: PromQuerier,
    *,
    env: EnvironmentSpec,
    spec: ServiceSpec,
    colour: str,
    settings: AnalysisSettings,
    core_v1: k8s.CoreV1Api | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleeper: Callable[[float], Any] = time.sleep,
) -> AnalysisResult:
    """Analyse the colour now serving a service and log each measurement and the verdict.

    The task does not raise on abort: it returns the verdict with its time (``decided_at``)
    and the caller raises (:func:`raise_on_abort`) inside its transaction, so that the
    rollback's timing starts at the verdict.

    Args:
        prometheus: the Prometheus block.
        env: the environment.
        spec: the service.
        colour: the colour now serving.
        settings: thresholds and pacing.
        core_v1: when given, each interval also counts the Service's ready endpoints.
        clock: monotonic clock.
        sleeper: interval waiter.

    Returns:
        The analysis, promoted or aborted.
    """
    count = None if core_v1 is None else (
        lambda: ready_endpoints(core_v1, env.namespace, spec.service_name))
    result = analyse(prometheus, service=spec.name, namespace=env.namespace, colour=colour,
                     settings=settings, colour_label=env.colour_label,
                     app_label=env.app_label, endpoints=count, clock=clock, sleeper=sleeper)
    log = get_logger(__name__)
    for i, m in enumerate(result.measurements, start=1):
        log.info("%s: measurement %d: success rate %s, p99 %s ms%s%s", spec.name, i,
                 m.success_rate, None if m.p99_ms is None else round(m.p99_ms),
                 "".join(f", {n} {v}" for n, v in m.values),
                 f" ({m.failure or m.error})" if m.failure or m.error else "")
    level = logging.ERROR if result.verdict.decision == "abort" else logging.INFO
    log.log(level, "%s: verdict %s: %s", spec.name, result.verdict.decision,
            result.verdict.reason)
    return result


verify_task = task(name="verify", task_run_name="verify-{spec.name}", cache_policy=NO_CACHE)(verify)
