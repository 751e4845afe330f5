"""The canary sequence: canaries up, every service's weight in lockstep, analysis, promotion.

Every service moves together: at each step every VirtualService gets the same canary weight,
then every canary is analysed; one failed analysis puts every service back to 0 % at once
(weights first, retried until ``switch_back_deadline_s``), then the canaries are scaled down.
After the last step (100 %) the stable Deployments roll out to the new version while the
canaries serve, the weights return to 100 % stable and the canaries are scaled down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from errors import ReleaseError, VerificationError
from tasks.release.canary import (
    bring_up_canary_task,
    canary_labels,
    promote_stable_task,
)
from tasks.release.canary_acceptance import refused, run_acceptance_task
from tasks.release.canary_analysis import analyse_step_task, plan_steps
from tasks.release.canary_gates import await_approval
from tasks.release.canary_mesh import (
    CANARY,
    apply_destination_rule,
    custom_objects,
    restore_weights_task,
    set_weights,
)
from tasks.release.canary_replicas import (
    describe,
    nothing_to_restore,
    replica_plan,
    set_replica_weights,
)
from tasks.release.canary_service import narrow_selectors, widen_selector
from tasks.release.canary_table import publish_table_task, step_rows
from tasks.release.catalogue import Catalogue, ServiceSpec
from tasks.release.clusters import Cluster
from tasks.release.colours import Prepared
from tasks.release.futures import settle
from tasks.release.logs import get_logger
from tasks.release.preflight import preflight_context, run_preflight_task
from tasks.release.production import scale_down_or_warn
from tasks.release.report import ReleaseReport
from tasks.release.secrets import sync_secrets_task
from tasks.release.smoke import ready_pods
from tasks.release.switching import RestoreReport, SwitchRecord
from tasks.release.undo import capture_task, tell_with, undo_staging_task


def release_canary(catalogue: Catalogue, c: Cluster, specs: list[ServiceSpec], *,
                   staging: Cluster | None, version: str, report: ReleaseReport,
                   check_lock: Callable[[], None] = lambda: None) -> None:
    """Preflight, secrets, canaries, lockstep steps with analysis, promotion, canaries down.

    Args:
        catalogue: the catalogue.
        c: the canary environment.
        specs: the services, in switch order.
        staging: the environment that must already run the version, if any.
        version: the version.
        report: the run's report.
        check_lock: raises when the release lock was lost (before each step and promotion).

    Raises:
        PreflightError: the checklist failed (nothing changed).
        VerificationError: a canary failed its analysis (every weight is back to 0 %).
        ReleaseError: some weight could not be put back (named).
    """
    report.checklist(c.env.name, run_preflight_task(preflight_context(
        catalogue, c, version=version, services=[s.name for s in specs],
        holder=report.holder, staging=staging)))
    secrets = {s.name: sync_secrets_task(c.core_v1, c.vault, c.env.namespace, s, c.env.name)
               for s in specs}
    report.record.secrets = secrets
    befores = capture_task(c.apps_v1, c.core_v1, c.env, specs)
    with report.timed("prepare"):
        canaries = bring_up_canaries(c, specs, version=version, secrets=secrets, report=report)
    with report.timed("acceptance"):
        accept(c, specs, canaries, version=version, report=report)
    with report.timed("canary_steps"):
        advance(c, specs, canaries, report=report, check_lock=check_lock)
    with report.timed("promote"):
        check_lock()
        try:
            failed = [e for e in settle([promote_stable_task.submit(
                c.apps_v1, env=c.env, spec=s, canary=canaries[s.name]) for s in specs])
                if isinstance(e, BaseException)]
            if failed:
                raise failed[0]
        except BaseException as exc:
            undo = undo_staging_task(c.apps_v1, c.env.namespace, befores,
                                     deadline_s=c.env.undo_deadline_s,
                                     rollout_timeout_s=c.env.rollout_timeout_s)
            tell_with(exc, undo.sentence())
            back_to_stable(c, specs, canaries, report=report, cause=exc, decided_at=None,
                           switched_at=0.0)
            raise
    restore = weights_back(c, specs, decided_at=None)
    narrow(c, specs, canaries, restore, report=report)
    committed(c, specs, canaries, report=report)
    for name, left in restore.left.items():
        report.warn(f"Service {name} left on {left}: that canary (the released version too) "
                    "kept running; set its VirtualService back to stable by hand")
    scale_down_or_warn(c, [p.deployment for s, p in canaries.items()
                           if specs_service(specs, s) not in restore.left],
                       report=report, what="canary")


def specs_service(specs: list[ServiceSpec], name: str) -> str:
    """The Kubernetes Service name of a catalogue service among ``specs``."""
    return next(s.service_name for s in specs if s.name == name)


def narrow(c: Cluster, specs: list[ServiceSpec], canaries: dict[str, Prepared],
           restore: RestoreReport, *, report: ReleaseReport) -> None:
    """Put each Service whose weight is back at 0 % on its stable colour again (never raises).

    A Service whose weight stayed up keeps selecting both tracks (narrowing it would empty
    the canary subset that still takes a share). One left wide is a warning: its traffic
    follows its VirtualService (100 % stable) and the next run's reconcile narrows it.

    Args:
        c: the canary environment.
        specs: the services.
        canaries: their canaries (the stable colour of each).
        restore: the weights' restore report.
        report: the run's report.
    """
    back = [s for s in specs if s.name in canaries and s.service_name not in restore.left]
    left = narrow_selectors(c.core_v1, c.env, back,
                            {s.name: canaries[s.name].live_colour for s in back},
                            deadline_s=c.env.switch_back_deadline_s)
    for name, why in left.items():
        report.warn(f"Service {name} still selects both tracks ({why}); its VirtualService "
                    "sends everything to stable, and the next release or rollback puts its "
                    "colour back")


def bring_up_canaries(c: Cluster, specs: list[ServiceSpec], *, version: str,
                      secrets: dict[str, str], report: ReleaseReport) -> dict[str, Prepared]:
    """Bring every service's canary up at once; on any failure scale every canary down.

    Args:
        c: the canary environment.
        specs: the services.
        version: the version.
        secrets: service to its new Secret.
        report: the run's report.

    Returns:
        Service to its canary.

    Raises:
        Exception: the first failure, once every canary settled.
    """
    futures = [bring_up_canary_task.submit(
        c.apps_v1, c.core_v1, env=c.env, spec=s, image=s.image(version),
        secret_name=secrets[s.name], release_id=report.id) for s in specs]
    every = [s.deployment_name(CANARY) for s in specs]
    try:
        outcomes = settle(futures)
    except BaseException:
        scale_down_or_warn(c, every, report=report, what="canary", warn_kept=False)
        raise
    canaries = {p.service: p for p in outcomes if isinstance(p, Prepared)}
    report.prepared(canaries.values())
    failed = [exc for exc in outcomes if isinstance(exc, BaseException)]
    if failed:
        scale_down_or_warn(c, every, report=report, what="canary", warn_kept=False)
        raise failed[0]
    return canaries


def accept(c: Cluster, specs: list[ServiceSpec], canaries: dict[str, Prepared], *,
           version: str, report: ReleaseReport) -> None:
    """The pre-rollout acceptance command, if any; a failure scales every canary down.

    Args:
        c: the canary environment.
        specs: the services.
        canaries: their canaries (up, smoke-tested, taking no traffic).
        version: the version.
        report: the run's report.

    Raises:
        E2EError: the command failed (its redacted output's tail in the message).
    """
    try:
        check = run_acceptance_task(c.core_v1, env=c.env, specs=specs, version=version)
    except BaseException:
        scale_down_or_warn(c, [p.deployment for p in canaries.values()], report=report,
                           what="canary", warn_kept=False)
        raise
    if check is None:
        return
    report.check("pre-rollout acceptance", check.passed, check.detail)
    if not check.passed:
        scale_down_or_warn(c, [p.deployment for p in canaries.values()], report=report,
                           what="canary", warn_kept=False)
        raise refused(c.env, check)


def _ready_canary_pods(core_v1: k8s.CoreV1Api, namespace: str,
                       labels: dict[str, str]) -> Callable[[], int]:
    return lambda: len(ready_pods(core_v1, namespace, labels))


def advance(c: Cluster, specs: list[ServiceSpec], canaries: dict[str, Prepared], *,
            report: ReleaseReport, check_lock: Callable[[], None]) -> None:
    """Every step in lockstep: all weights, then every canary's analysis; undo all on a failure.

    Args:
        c: the canary environment.
        specs: the services.
        canaries: their canaries.
        report: the run's report.
        check_lock: raises when the release lock was lost.

    Raises:
        VerificationError: a canary failed its analysis (every weight back to 0 %).
        ApprovalError: an operator rejected a gated step, or did not decide in time (idem).
        ReleaseError: some weight could not be put back.
    """
    custom = custom_objects(c.apps_v1)
    endpoints = {s.name: _ready_canary_pods(c.core_v1, c.env.namespace,
                                            canary_labels(c.env, s)) for s in specs}
    decided_at: float | None = None
    at = 0.0
    rows: list[dict[str, Any]] = []
    mesh = c.env.canary_traffic == "mesh"
    report.check("canary traffic", True, describe(c.env) + ("" if mesh else "; " + "; ".join(
        f"{s.name}: {replica_plan(c.env, canaries[s.name].replicas)}" for s in specs)))
    try:
        if mesh:
            for s in specs:
                apply_destination_rule(custom, c.env, s, canaries[s.name].live_colour)
            # Every route to stable before any Service selects both tracks (canary_service).
            set_weights(custom, c.env, specs, 0, report.id)
            for s in specs:
                widen_selector(c.core_v1, c.env, s, canaries[s.name].live_colour)
        for step in plan_steps(c.env.canary_weights, c.env.approval_gates):
            check_lock()
            if step.approve:  # a rejection or a timeout raises: every weight back to 0 %
                report.check(f"approval of canary step {step.number} at {step.weight} %",
                             True, await_approval(step, c.env))
                check_lock()
            for s in specs:
                report.switching(s.name)  # a write that failed may have applied
            at = (set_weights(custom, c.env, specs, step.weight, report.id) if mesh else
                  set_replica_weights(c.apps_v1, c.core_v1, env=c.env, specs=specs,
                                      canaries=canaries, weight=step.weight))
            if step.number == 1:
                for s in specs:
                    report.switched_to(s.name)
            result = analyse_step_task(c.prometheus, env=c.env, specs=specs, step=step,
                                       endpoints=endpoints)
            rows += step_rows(result, specs)
            table = publish(c, rows, report=report)
            if result.aborted:
                decided_at = result.decided_at
                bad = result.aborted[0]
                raise VerificationError(
                    f"canary of {bad.service} at {step.weight} % failed: {bad.verdict.reason}",
                    hint="every service was put back to 0 % canary; inspect the new version")
            report.check(f"canary step {step.number} at {step.weight} %", True,
                         result.sentence() + (f" (table: artifact {table})" if table else ""))
    except BaseException as exc:
        back_to_stable(c, specs, canaries, report=report, cause=exc, decided_at=decided_at,
                       switched_at=at)
        raise


def publish(c: Cluster, rows: list[dict[str, Any]], *, report: ReleaseReport) -> str | None:
    """Publish the analysis table so far; a failure is a warning, never a rollback.

    Args:
        c: the canary environment.
        rows: every step's rows so far.
        report: the run's report.

    Returns:
        The artifact key, or None when it could not be published.
    """
    try:
        return publish_table_task(c.env.name, report.record.version, rows)
    except Exception as exc:  # a missing table never stops a canary
        report.warn(f"canary analysis table not published: {type(exc).__name__}: {exc}")
        return None


def back_to_stable(c: Cluster, specs: list[ServiceSpec], canaries: dict[str, Prepared], *,
                   report: ReleaseReport, cause: BaseException,
                   decided_at: float | None, switched_at: float) -> RestoreReport:
    """Every weight to 0 % canary (first), then the canaries down; record it.

    Args:
        c: the canary environment.
        specs: every service of the release.
        canaries: their canaries.
        report: the run's report.
        cause: the failure (a ReleaseError is raised from it when a weight stays up).
        decided_at: epoch seconds of the failing verdict, if an analysis failed.
        switched_at: epoch seconds of the last weight change (0: none).

    Returns:
        The weights' restore report.

    Raises:
        ReleaseError: some service's weight could not be put back (its canary keeps running).
    """
    restore = weights_back(c, specs, decided_at=decided_at)
    moved = [SwitchRecord(s.name, s.service_name, c.env.namespace,
                          canaries[s.name].live_colour, CANARY, {}, switched_at)
             for s in specs if s.name in canaries and s.name in report.attempted]
    report.rolled_back(moved, restore)
    narrow(c, specs, canaries, restore, report=report)
    get_logger(__name__).error("canary rolled back%s: %s", " INCOMPLETE" if restore.left else "",
                               getattr(cause, "message", type(cause).__name__))
    scale_down_or_warn(c, [p.deployment for s, p in canaries.items()
                           if specs_service(specs, s) not in restore.left],
                       report=report, what="canary")
    if restore.left:
        raise ReleaseError(f"rollback incomplete: {report.left_sentence(restore.left)}",
                           hint="that canary was kept running; set its VirtualService back "
                           "to stable by hand") from cause
    return restore


def weights_back(c: Cluster, specs: list[ServiceSpec], *,
                 decided_at: float | None) -> RestoreReport:
    """Every VirtualService to 0 % canary (mesh); nothing to write with ``replicas``.

    Args:
        c: the canary environment.
        specs: every service of the release.
        decided_at: epoch seconds of the failing verdict, if any.

    Returns:
        The weights' restore report.
    """
    if c.env.canary_traffic != "mesh":  # narrowing the Services puts the traffic back
        return nothing_to_restore(specs, decided_at)
    return restore_weights_task(custom_objects(c.apps_v1), c.env, specs, decided_at=decided_at,
                                deadline_s=c.env.switch_back_deadline_s)


def committed(c: Cluster, specs: list[ServiceSpec], canaries: dict[str, Prepared], *,
              report: ReleaseReport) -> None:
    """Record the release as committed: the stable tracks run the new version.

    Args:
        c: the canary environment.
        specs: the services.
        canaries: their canaries.
        report: the run's report.
    """
    report.is_committed = True
    for s in specs:
        report.record.colours[s.name] = canaries[s.name].live_colour
        report.summary.services[s.name].colour = canaries[s.name].live_colour
        report.summary.services[s.name].verified = True
    report.check("promote", True, f"{len(specs)} stable Deployment(s) on the new version in "
                 f"{c.env.namespace}; weights back to 100 % stable")
    report.progress()
