"""Canary steps and their analysis: every service's canary judged in the same step (pure loop).

Each service is measured on its own ``analysis.interval_s`` with the existing verdict
(:func:`tasks.release.verifying.evaluate`: the built-in metrics and the catalogue's own
``analysis.metrics``, failure limit, silence never promotes)
on the canary track's series only (``color="canary"``). The step ends as soon as one service
aborts (every service is then put back together by the caller) or when every service promoted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.release.canary_mesh import CANARY
from tasks.release.canary_replicas import describe
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec
from tasks.release.logs import get_logger
from tasks.release.measuring import PromQuerier, measure, window_seconds, with_endpoints
from tasks.release.verifying import AnalysisResult, Verdict, evaluate


@dataclass(frozen=True)
class Step:
    """One step of a canary.

    Attributes:
        number: 1-based position.
        weight: the canary's share (%).
        last: the final step (100 %): after it the stable track is promoted.
        approve: an operator approves it before its weight is written.
    """

    number: int
    weight: int
    last: bool
    approve: bool = False

    @property
    def stable_weight(self) -> int:
        """The stable track's share (%)."""
        return 100 - self.weight


def plan_steps(weights: Sequence[int], gates: Collection[int] = ()) -> list[Step]:
    """The steps of a canary from the catalogue's ``canary_steps`` (already validated).

    Args:
        weights: increasing percentages ending at 100.
        gates: the weights an operator approves first (``EnvironmentSpec.approval_gates``).

    Returns:
        One step per weight.
    """
    return [Step(i, w, i == len(weights), w in gates) for i, w in enumerate(weights, start=1)]


def plan_lines(env: EnvironmentSpec, specs: Sequence[ServiceSpec], version: str) -> list[str]:
    """What a canary release would do, one line per step (a dry run's plan; pure).

    Args:
        env: the canary environment.
        specs: the services.
        version: the version.

    Returns:
        The lines.
    """
    names = ", ".join(s.name for s in specs)
    lines = [f"{env.name}: canary traffic by {describe(env)}"]
    lines += [f"{env.name}: {s.name}: canary Deployment {s.deployment_base}-{CANARY} with "
             f"{s.image(version)}, smoke" for s in specs]
    if env.acceptance_command:
        lines.append(f"{env.name}: pre-rollout acceptance: {' '.join(env.acceptance_command)}"
                     " against the canaries (non-zero: canaries down, no traffic shifted)")
    lines += [f"{env.name}: step {st.number}: "
              + ("wait for an operator's approval, then " if st.approve else "")
              + f"{names} at {st.weight} % canary / {st.stable_weight} % stable, analyse "
              "every canary" for st in plan_steps(env.canary_weights, env.approval_gates)]
    lines.append(f"{env.name}: promote: stable Deployments to {version}, weights back to "
                 "100 % stable, canaries scaled down; any failure: every weight to 0 % first")
    return lines


@dataclass
class StepResult:
    """The analysis of every service's canary at one step.

    Attributes:
        step: the step.
        results: service to its analysis (unfinished ones still ``continue``).
        decided_at: epoch seconds of the step's verdict.
    """

    step: Step
    results: dict[str, AnalysisResult] = field(default_factory=dict)
    decided_at: float = 0.0

    @property
    def aborted(self) -> list[AnalysisResult]:
        """The analyses that failed."""
        return [r for r in self.results.values() if r.verdict.decision == "abort"]

    def sentence(self) -> str:
        """One line: each service's verdict at this step.

        Returns:
            e.g. ``veza-web: 2 of 2 measurements healthy; veza-backend-api: ...``.
        """
        return "; ".join(f"{name}: {r.verdict.decision} ({r.verdict.reason or 'unfinished'})"
                         for name, r in self.results.items())


def analyse_step(
    prometheus: PromQuerier,
    *,
    env: EnvironmentSpec,
    specs: Sequence[ServiceSpec],
    step: Step,
    endpoints: dict[str, Callable[[], int]] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleeper: Callable[[float], Any] = time.sleep,
    wall_clock: Callable[[], float] = time.time,
) -> StepResult:
    """Measure every service's canary on its own interval until all promote or one aborts.

    Args:
        prometheus: the Prometheus block.
        env: the environment (namespace, labels).
        specs: the services; each one's ``analysis`` paces and judges it.
        step: the step (named in the result).
        endpoints: service to a counter of its canary's ready pods; 0 fails the interval.
        clock: monotonic clock (injected in tests).
        sleeper: waits until the next due measurement (injected in tests).
        wall_clock: epoch clock for the decision time.

    Returns:
        The step's result; its ``aborted`` list is empty when every canary promoted.
    """
    start = clock()
    result = StepResult(step, {s.name: AnalysisResult(s.name, CANARY, Verdict("continue", ""))
                               for s in specs})
    due = {s.name: start + s.analysis.interval_s for s in specs}
    pending = {s.name: s for s in specs}
    while pending:
        sleeper(max(0.0, min(due[n] for n in pending) - clock()))
        now = clock()
        for name, spec in list(pending.items()):
            if due[name] > now:
                continue
            due[name] += spec.analysis.interval_s
            analysis = result.results[name]
            m = measure(prometheus, env.namespace, name, CANARY,
                        window_seconds(spec.analysis), colour_label=env.colour_label,
                        app_label=env.app_label, metrics=spec.analysis.metrics,
                        min_requests=spec.analysis.min_requests)
            count = (endpoints or {}).get(name)
            analysis.measurements.append(with_endpoints(m, count, service=name, colour=CANARY))
            analysis.verdict = evaluate(analysis.measurements, spec.analysis)
            if analysis.verdict.decision == "continue":
                continue
            del pending[name]
            analysis.decided_at = wall_clock()
            if analysis.verdict.decision == "abort":
                result.decided_at = analysis.decided_at
                return result
    result.decided_at = wall_clock()
    return result


def analyse_step_logged(prometheus: PromQuerier, *, env: EnvironmentSpec,
                        specs: Sequence[ServiceSpec], step: Step,
                        endpoints: dict[str, Callable[[], int]] | None = None) -> StepResult:
    """:func:`analyse_step`, each measurement and verdict logged (the task's body).

    Args:
        prometheus: the Prometheus block.
        env: the environment.
        specs: the services.
        step: the step.
        endpoints: service to a counter of its canary's ready pods.

    Returns:
        The step's result (the caller rolls back on an abort).
    """
    result = analyse_step(prometheus, env=env, specs=specs, step=step, endpoints=endpoints)
    log = get_logger(__name__)
    for name, r in result.results.items():
        for i, m in enumerate(r.measurements, start=1):
            log.info("%s canary at %d %%: measurement %d: success rate %s, p99 %s ms%s%s",
                     name, step.weight, i, m.success_rate,
                     None if m.p99_ms is None else round(m.p99_ms),
                     "".join(f", {n} {v}" for n, v in m.values),
                     f" ({m.failure or m.error})" if m.failure or m.error else "")
        log.info("%s canary at %d %%: %s %s", name, step.weight, r.verdict.decision,
                 r.verdict.reason)
    return result


analyse_step_task = task(name="canary-analysis", cache_policy=NO_CACHE)(analyse_step_logged)
