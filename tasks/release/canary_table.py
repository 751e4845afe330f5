"""The canary analysis as a table artifact: one row per service, step and metric, updated per step.

The artifact ``canary-analysis-<environment>`` gets a new version after every step (and after
the step that aborted), so the Prefect UI shows the analysis so far while the run goes on; the
release report's checks name it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.release.analysis_config import (
    P99_LATENCY,
    P99_TEMPLATE,
    SUCCESS_RATE,
    SUCCESS_RATE_TEMPLATE,
    MetricSpec,
)
from tasks.release.canary_analysis import StepResult
from tasks.release.catalogue import ServiceSpec
from tasks.release.measuring import Measurement


def artifact_key(environment: str) -> str:
    """The table's artifact key (lowercase letters, digits and dashes; pure).

    Args:
        environment: the environment's name.

    Returns:
        ``canary-analysis-<environment>``.
    """
    return "canary-analysis-" + re.sub(r"[^a-z0-9-]+", "-", environment.lower())


@dataclass(frozen=True)
class _Column:
    """One metric of a service as the table shows it: how to read it, its bound, its unit."""

    metric: MetricSpec
    read: Callable[[Measurement], float | None]
    unit: str = ""


def _columns(spec: ServiceSpec) -> list[_Column]:
    a = spec.analysis
    return [
        _Column(MetricSpec(name=SUCCESS_RATE, query=SUCCESS_RATE_TEMPLATE,
                           min=a.success_rate_min), lambda m: m.success_rate),
        _Column(MetricSpec(name=P99_LATENCY, query=P99_TEMPLATE, max=a.p99_max_ms),
                lambda m: m.p99_ms, " ms"),
        *(_Column(metric, _reader(metric.name)) for metric in a.metrics),
    ]


def _reader(name: str) -> Callable[[Measurement], float | None]:
    return lambda m: m.value(name)


def metric_row(column: _Column, measurements: list[Measurement]) -> dict[str, Any]:
    """One metric over a step's measurements: its worst value and verdict (pure).

    Args:
        column: the metric.
        measurements: the service's measurements at the step.

    Returns:
        ``metric``, ``value`` (the lowest for a ``min``, the highest for a ``max``; None
        without data), ``threshold``, ``measured`` (how many had a value) and ``verdict``:
        ``fail`` when any value breached, ``pass`` when some were measured, else ``no data``.
    """
    metric = column.metric
    values = [v for v in (column.read(m) for m in measurements) if v is not None]
    worst = (max(values) if metric.max is not None else min(values)) if values else None
    verdict = ("no data" if worst is None
               else "fail" if any(metric.breach(v) for v in values) else "pass")
    return {"metric": metric.name, "value": None if worst is None else round(worst, 4),
            "threshold": metric.threshold() + column.unit,
            "measured": f"{len(values)} of {len(measurements)}", "verdict": verdict}


def step_rows(result: StepResult, specs: list[ServiceSpec]) -> list[dict[str, Any]]:
    """One row per service and metric of a step: its worst value against its bound (pure).

    The built-in success-rate and p99-latency come first, then the catalogue's
    ``analysis.metrics``; the service's decision at the step and its reason go on every row
    of that service (``stopped`` when another service's abort ended the step).

    Args:
        result: the step's analysis.
        specs: the services (their metrics and thresholds).

    Returns:
        Rows with service, step, weight %, metric, value, threshold, measured, verdict,
        analysis and reason.
    """
    rows = []
    for spec in specs:
        r = result.results.get(spec.name)
        if r is None:
            continue
        decision = r.verdict.decision if r.verdict.decision != "continue" else "stopped"
        for column in _columns(spec):
            rows.append({"service": spec.name, "step": result.step.number,
                         "weight %": result.step.weight,
                         **metric_row(column, r.measurements),
                         "analysis": decision, "reason": r.verdict.reason})
    return rows


def publish_table(environment: str, version: str, rows: list[dict[str, Any]]) -> str:
    """Publish the analysis so far as a new version of the environment's table artifact.

    Args:
        environment: the environment.
        version: the version released.
        rows: every step's rows so far.

    Returns:
        The artifact key.
    """
    key = artifact_key(environment)
    create_table_artifact(table=rows, key=key,
                          description=f"canary analysis of {version} in {environment}, "
                          "one row per service, step and metric (the worst of its measurements)")
    return key


publish_table_task = task(name="canary-analysis-table", cache_policy=NO_CACHE)(publish_table)
