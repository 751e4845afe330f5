"""The canary analysis as a table artifact: one row per service and step, updated per step.

The artifact ``canary-analysis-<environment>`` gets a new version after every step (and after
the step that aborted), so the Prefect UI shows the analysis so far while the run goes on; the
release report's checks name it.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

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


def _worst(measurements: list[Measurement]) -> tuple[float | None, float | None]:
    rates = [m.success_rate for m in measurements if m.success_rate is not None]
    p99s = [m.p99_ms for m in measurements if m.p99_ms is not None]
    return (min(rates) if rates else None), (max(p99s) if p99s else None)


def step_rows(result: StepResult, specs: list[ServiceSpec]) -> list[dict[str, Any]]:
    """One row per service of a step: its worst measurements against its thresholds (pure).

    Args:
        result: the step's analysis.
        specs: the services (their thresholds).

    Returns:
        Rows with service, step, weight, measurements, success rate (lowest), its minimum,
        p99 (highest), its maximum, verdict and reason.
    """
    rows = []
    for spec in specs:
        r = result.results.get(spec.name)
        if r is None:
            continue
        rate, p99 = _worst(r.measurements)
        rows.append({
            "service": spec.name, "step": result.step.number,
            "weight %": result.step.weight, "measurements": len(r.measurements),
            "success rate (lowest)": None if rate is None else round(rate, 4),
            "success rate min": spec.analysis.success_rate_min,
            "p99 ms (highest)": None if p99 is None else round(p99, 1),
            "p99 max ms": spec.analysis.p99_max_ms,
            "verdict": r.verdict.decision if r.verdict.decision != "continue" else "stopped",
            "reason": r.verdict.reason,
        })
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
                          "one row per service and step (the worst of its measurements)")
    return key


publish_table_task = task(name="canary-analysis-table", cache_policy=NO_CACHE)(publish_table)
