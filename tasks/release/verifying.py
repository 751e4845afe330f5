"""Verification of a new colour in Prometheus: PromQL, a pure verdict, the paced loop, the task."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE

from errors import ExternalSystemError, VerificationError
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec
from tasks.release.logs import get_logger

Decision = Literal["continue", "promote", "abort"]


class AnalysisSettings(Protocol):
    """Thresholds and pacing of an analysis (the catalogue's ``AnalysisSpec`` fits)."""

    success_rate_min: float
    p99_max_ms: float
    interval_s: float
    intervals: int
    failure_limit: int
    max_no_data: int


class PromQuerier(Protocol):
    """Anything that runs an instant PromQL query (the ``PrometheusServer`` block fits)."""

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Run an instant query and return the result vector."""
        ...


@dataclass(frozen=True)
class Measurement:
    """One interval's observation of the new colour.

    Attributes:
        success_rate: non-5xx / all requests over the window, None when there is no data.
        p99_ms: 99th percentile latency in milliseconds, None when there is no data.
        error: why there is no data (Prometheus error, empty result, NaN), if any.
    """

    success_rate: float | None
    p99_ms: float | None
    error: str | None = None

    @property
    def has_data(self) -> bool:
        """Whether both metrics were measured."""
        return self.error is None and self.success_rate is not None and self.p99_ms is not None


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


def _selector(namespace: str, app: str, colour: str, *, colour_label: str, app_label: str) -> str:
    return f'namespace="{namespace}",{app_label}="{app}",{colour_label}="{colour}"'


def success_rate_query(
    namespace: str, app: str, colour: str, window_s: int, *,
    colour_label: str = "color", app_label: str = "app",
) -> str:
    """PromQL for the non-5xx share of ``http_requests_total`` of one colour.

    Args:
        namespace: Kubernetes namespace label.
        app: app label (service name).
        colour: colour label value.
        window_s: rate window in seconds.
        colour_label: name of the colour label.
        app_label: name of the app label.

    Returns:
        The query; its value is NaN or empty when there was no traffic.
    """
    sel = _selector(namespace, app, colour, colour_label=colour_label, app_label=app_label)
    return (
        f'sum(rate(http_requests_total{{{sel},status!~"5.."}}[{window_s}s]))'
        f" / sum(rate(http_requests_total{{{sel}}}[{window_s}s]))"
    )


def p99_query(
    namespace: str, app: str, colour: str, window_s: int, *,
    colour_label: str = "color", app_label: str = "app",
) -> str:
    """PromQL for the 99th percentile request duration (seconds) of one colour.

    Args:
        namespace: Kubernetes namespace label.
        app: app label (service name).
        colour: colour label value.
        window_s: rate window in seconds.
        colour_label: name of the colour label.
        app_label: name of the app label.

    Returns:
        The query.
    """
    sel = _selector(namespace, app, colour, colour_label=colour_label, app_label=app_label)
    return (
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(http_request_duration_seconds_bucket{{{sel}}}[{window_s}s])))"
    )


def _scalar(result: list[dict[str, Any]]) -> float | None:
    if not result:
        return None
    try:
        value = float(result[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def measure(
    prometheus: PromQuerier, namespace: str, app: str, colour: str, window_s: int, *,
    colour_label: str = "color", app_label: str = "app",
) -> Measurement:
    """Take one measurement; Prometheus errors become a no-data measurement, never a pass.

    Args:
        prometheus: the Prometheus block (or anything with ``query``).
        namespace: namespace label.
        app: app label.
        colour: colour label value.
        window_s: rate window in seconds.
        colour_label: name of the colour label.
        app_label: name of the app label.

    Returns:
        The measurement.
    """
    labels = {"colour_label": colour_label, "app_label": app_label}
    try:
        rate = _scalar(
            prometheus.query(success_rate_query(namespace, app, colour, window_s, **labels))
        )
        p99_s = _scalar(prometheus.query(p99_query(namespace, app, colour, window_s, **labels)))
    except ExternalSystemError as exc:
        return Measurement(None, None, error=f"prometheus error: {exc.message}")
    if rate is None or p99_s is None:
        return Measurement(rate, None if p99_s is None else p99_s * 1000, error="no data")
    return Measurement(rate, p99_s * 1000.0)


def evaluate(measurements: Sequence[Measurement], settings: AnalysisSettings) -> Verdict:
    """Judge a sequence of measurements (pure; like Argo Rollouts' failureLimit).

    A measurement with data fails when the success rate is below the minimum or p99 above
    the maximum. No-data measurements are tolerated up to ``max_no_data`` in a row; the next
    one counts as a failure. More than ``failure_limit`` failures abort. Promotion needs
    ``intervals`` measurements with data, so silence never promotes.

    Args:
        measurements: measurements in time order.
        settings: thresholds and limits.

    Returns:
        The verdict.
    """
    successes = failures = with_data = silent = 0
    last_failure = ""
    for index, m in enumerate(measurements, start=1):
        if not m.has_data:
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
    min_window_s: int = 5,
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
        min_window_s: smallest rate window (Prometheus needs two samples in it).
        clock: monotonic clock (injected in tests).
        sleeper: waits until the next interval's deadline (injected in tests).
        wall_clock: epoch clock for the decision timestamp.

    Returns:
        The result; callers raise :class:`VerificationError` on abort (see
        :func:`raise_on_abort`).
    """
    window_s = max(math.ceil(settings.interval_s), min_window_s)
    result = AnalysisResult(service, colour, Verdict("continue", ""))
    next_at = clock() + settings.interval_s
    while True:
        sleeper(max(0.0, next_at - clock()))
        next_at += settings.interval_s
        result.measurements.append(
            measure(prometheus, namespace, service, colour, window_s,
                    colour_label=colour_label, app_label=app_label)
        )
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
        clock: monotonic clock.
        sleeper: interval waiter.

    Returns:
        The analysis, promoted or aborted.
    """
    result = analyse(prometheus, service=spec.name, namespace=env.namespace, colour=colour,
                     settings=settings, colour_label=env.colour_label,
                     app_label=env.app_label, clock=clock, sleeper=sleeper)
    log = get_logger(__name__)
    for i, m in enumerate(result.measurements, start=1):
        log.info("%s: measurement %d: success rate %s, p99 %s ms%s", spec.name, i,
                 m.success_rate, None if m.p99_ms is None else round(m.p99_ms),
                 f" ({m.error})" if m.error else "")
    level = logging.ERROR if result.verdict.decision == "abort" else logging.INFO
    log.log(level, "%s: verdict %s: %s", spec.name, result.verdict.decision,
            result.verdict.reason)
    return result


verify_task = task(name="verify", cache_policy=NO_CACHE)(verify)
