"""One interval's measurement of a colour: PromQL, the rate window, Prometheus' scrape interval.

The rate window decides whether a measurement can have data at all: ``rate()`` needs two
samples inside it, so a window shorter than twice the target's scrape interval is empty most
of the time and every release would abort on silence. Preflight checks it against the scrape
interval Prometheus reports (:func:`scrape_interval_s`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from kubernetes import client as k8s

from errors import ExternalSystemError, PreflightError
from errors.kubernetes import translate_api_errors
from tasks.release.analysis_config import (
    P99_TEMPLATE,
    SUCCESS_RATE_TEMPLATE,
    MetricSpec,
    render,
    selector,
)

# Prometheus needs two samples in a rate window; below this the window is never wide enough.
MIN_WINDOW_S = 5


class WindowSettings(Protocol):
    """The pacing part of an analysis (the catalogue's ``AnalysisSpec`` fits)."""

    interval_s: float
    window_s: float | None


def window_seconds(settings: WindowSettings, *, min_window_s: int = MIN_WINDOW_S) -> int:
    """The PromQL rate window of an analysis.

    Args:
        settings: the analysis; an explicit ``window_s`` wins.
        min_window_s: the default's floor, used only when ``window_s`` is not set.

    Returns:
        ``ceil(window_s)`` when set, else ``max(ceil(interval_s), min_window_s)``.
    """
    if settings.window_s is not None:
        return math.ceil(settings.window_s)
    return max(math.ceil(settings.interval_s), min_window_s)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as ``15s``, ``1m30s`` or ``500ms``.

    Args:
        text: the duration.

    Returns:
        Seconds.

    Raises:
        ValueError: the text is not a Prometheus duration.
    """
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


class PromAPI(Protocol):
    """Anything that GETs a Prometheus HTTP API path (the ``PrometheusServer`` block fits)."""

    def api_get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET ``path`` and return the response's ``data``."""
        ...


def scrape_interval_s(prometheus: PromAPI, namespace: str) -> float:
    """The longest scrape interval of the active targets carrying ``namespace``'s label.

    Targets of other namespaces are ignored when some match; when none does (the pods are
    not up yet), every active target counts, and with no target at all the configuration's
    global ``scrape_interval`` (Prometheus' default 1m when unset) is the answer.

    Args:
        prometheus: the Prometheus block.
        namespace: the environment's namespace label.

    Returns:
        Seconds.

    Raises:
        PreflightError: Prometheus answered something this cannot read.
    """
    data = prometheus.api_get("/api/v1/targets", {"state": "active"})
    targets = data.get("activeTargets", []) if isinstance(data, dict) else []
    ours = [t for t in targets if (t.get("labels") or {}).get("namespace") == namespace]
    intervals = [t.get("scrapeInterval") for t in (ours or targets)]
    known = [parse_duration(str(i)) for i in intervals if i]
    if known:
        return max(known)
    config = prometheus.api_get("/api/v1/status/config")
    text = str(config.get("yaml", "")) if isinstance(config, dict) else ""
    found = re.search(r"^\s+scrape_interval:\s*(\S+)", text, re.MULTILINE)
    if found is None:
        return 60.0
    try:
        return parse_duration(found.group(1))
    except ValueError:
        raise PreflightError(f"unreadable scrape_interval {found.group(1)!r}",
                             hint="check Prometheus' configuration") from None


def check_window(service: str, settings: WindowSettings, scrape_s: float) -> int:
    """Refuse a rate window shorter than twice the scrape interval.

    Args:
        service: named in the error.
        settings: the service's analysis.
        scrape_s: the scrape interval of its targets (:func:`scrape_interval_s`).

    Returns:
        The window in seconds.

    Raises:
        PreflightError: naming the service, both numbers and the fix.
    """
    window = window_seconds(settings)
    if window < 2 * scrape_s:
        need = math.ceil(2 * scrape_s)
        raise PreflightError(
            f"{service}: verification window {window} s is shorter than twice Prometheus' "
            f"scrape interval ({scrape_s:g} s): no interval would ever have data",
            hint=f"set analysis.window_s >= {need} (or interval_s >= {need}) for {service} "
                 "in the catalogue, or scrape the pods more often",
        )
    return window


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
        failure: why this interval failed outright whatever the metrics say (the new
            colour has no ready endpoint: its pods died after the switch).
        values: the catalogue's own metrics (``analysis.metrics``): name and value, None
            when that query had no data.
    """

    success_rate: float | None
    p99_ms: float | None
    error: str | None = None
    failure: str | None = None
    values: tuple[tuple[str, float | None], ...] = ()

    @property
    def has_data(self) -> bool:
        """Whether every metric was measured."""
        return (self.error is None and self.success_rate is not None
                and self.p99_ms is not None and all(v is not None for _, v in self.values))

    def value(self, name: str) -> float | None:
        """The value of one of the catalogue's metrics (None: not measured or no data)."""
        return dict(self.values).get(name)


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
        The built-in template rendered; its value is NaN or empty when there was no traffic.
    """
    return render(SUCCESS_RATE_TEMPLATE, namespace=namespace, app=app, track=colour,
                  window_s=window_s, colour_label=colour_label, app_label=app_label)


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
        The built-in template rendered.
    """
    return render(P99_TEMPLATE, namespace=namespace, app=app, track=colour,
                  window_s=window_s, colour_label=colour_label, app_label=app_label)


def _scalar(result: list[dict[str, Any]]) -> float | None:
    if not result:
        return None
    try:
        value = float(result[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def _all_failed(prometheus: PromQuerier, namespace: str, app: str, colour: str, window_s: int,
                *, colour_label: str, app_label: str) -> float | None:
    """0.0 when the colour had traffic but never a non-5xx answer, else None (no data).

    A colour answering only 5xx has no non-5xx series: the success-rate quotient is then
    empty, which must read as a 0 % success, never as silence. A quotient is also empty while
    the non-5xx series are too new to have two samples in the window (a pod's first requests
    after the switch, next to the 503s its readiness probe got while it started): those
    series exist, so that is no data, not a failure.
    """
    sel = selector(namespace, app, colour, colour_label=colour_label, app_label=app_label)
    if _scalar(prometheus.query(f'count(http_requests_total{{{sel},status!~"5.."}})')):
        return None
    total = _scalar(prometheus.query(
        f"sum(increase(http_requests_total{{{sel}}}[{window_s}s]))"))
    return 0.0 if total is not None and total > 0 else None


def _unrated_series(prometheus: PromQuerier, namespace: str, app: str, colour: str,
                    window_s: int, *, colour_label: str, app_label: str) -> bool:
    """Whether some request series of the colour has no rate yet (one sample in the window).

    ``rate()`` needs two samples of a series inside the window: a series born a scrape ago
    (a new colour's or canary's first 500s, or its first answers on a path) is left out of
    the success-rate quotient, which then reads 1.0 for a colour answering errors, or too low
    for a healthy one. Such an interval is no data, never a verdict.
    """
    sel = selector(namespace, app, colour, colour_label=colour_label, app_label=app_label)
    series = _scalar(prometheus.query(
        f"count(count_over_time(http_requests_total{{{sel}}}[{window_s}s]))"))
    rated = _scalar(prometheus.query(
        f"count(rate(http_requests_total{{{sel}}}[{window_s}s]))"))
    return series is not None and (rated or 0.0) < series


def measure(
    prometheus: PromQuerier, namespace: str, app: str, colour: str, window_s: int, *,
    colour_label: str = "color", app_label: str = "app", metrics: Sequence[MetricSpec] = (),
    min_requests: int = 0,
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
        metrics: the catalogue's own metrics, each rendered for this colour and measured
            after the two built-in ones (an empty result or NaN is that metric's no data).
        min_requests: fewer requests than this in the window make the interval no data (a
            canary's few requests at 5 % can all be answered well by a bad version).

    Returns:
        The measurement.
    """
    labels = {"colour_label": colour_label, "app_label": app_label}
    try:
        rate = _scalar(
            prometheus.query(success_rate_query(namespace, app, colour, window_s, **labels))
        )
        unrated: str | None = None
        if rate is None:  # no non-5xx series at all: silence, or only failures?
            rate = _all_failed(prometheus, namespace, app, colour, window_s, **labels)
        elif _unrated_series(prometheus, namespace, app, colour, window_s, **labels):
            rate, unrated = None, "some series too new to rate"  # traffic left out
        if rate is not None and min_requests > 0:
            sel = selector(namespace, app, colour, **labels)
            seen = _scalar(prometheus.query(
                f"sum(increase(http_requests_total{{{sel}}}[{window_s}s]))")) or 0.0
            if seen < min_requests:  # too few to judge: neither healthy nor failed
                rate, unrated = None, f"{seen:.0f} requests < min_requests {min_requests}"
        p99_s = _scalar(prometheus.query(p99_query(namespace, app, colour, window_s, **labels)))
        values = tuple((metric.name, _scalar(prometheus.query(render(
            metric.query, namespace=namespace, app=app, track=colour, window_s=window_s,
            **labels)))) for metric in metrics)
    except ExternalSystemError as exc:
        return Measurement(None, None, error=f"prometheus error: {exc.message}",
                           values=tuple((metric.name, None) for metric in metrics))
    p99_ms = None if p99_s is None else p99_s * 1000.0
    silent = [n for n, v in (("success rate", rate), ("p99", p99_s), *values) if v is None]
    if unrated:
        return Measurement(None, p99_ms, error=f"no data ({unrated})", values=values)
    if silent:
        return Measurement(rate, p99_ms, error="no data" + (
            f" ({', '.join(silent)})" if values else ""), values=values)
    return Measurement(rate, p99_ms, values=values)


def ready_endpoints(core_v1: k8s.CoreV1Api, namespace: str, service_name: str) -> int:
    """How many ready addresses the Service's Endpoints hold (its live colour's ready pods).

    Args:
        core_v1: core API.
        namespace: the Service's namespace.
        service_name: the Kubernetes Service.

    Returns:
        The count; 0 when the Endpoints object does not exist.

    Raises:
        ExternalSystemError: the API failed (callers treat it as no data, not as a failure).
    """
    with translate_api_errors(f"read endpoints {namespace}/{service_name}"):
        try:
            endpoints = core_v1.read_namespaced_endpoints(service_name, namespace)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return 0
            raise
    return sum(len(subset.addresses or []) for subset in endpoints.subsets or [])


def with_endpoints(m: Measurement, count: Callable[[], int] | None, *, service: str,
                   colour: str) -> Measurement:
    """The measurement, failed outright when the colour has no ready endpoint.

    Args:
        m: the interval's metrics.
        count: counts the Service's ready endpoints (None: not checked).
        service: named in the failure.
        colour: named in the failure.

    Returns:
        ``m``, or a copy with ``failure`` set. An API error reading the endpoints leaves
        ``m`` as it is: unknown is not a failure, the metrics decide.
    """
    if count is None:
        return m
    try:
        if count() != 0:
            return m
    except ExternalSystemError:
        return m
    return replace(m, failure=f"no ready endpoint for {service} ({colour})")
