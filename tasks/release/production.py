"""Blue-green production: bring every new colour up, switch and verify atomically, commit."""

from __future__ import annotations

from collections.abc import Callable

from prefect.transactions import transaction

from errors import ReleaseError, VerificationError
from tasks.release.catalogue import Catalogue, ServiceSpec
from tasks.release.clusters import Cluster
from tasks.release.colours import COLOURS, Prepared, bring_up_colour_task, scale_down_task
from tasks.release.futures import settle
from tasks.release.history import record_release_task
from tasks.release.logs import get_logger
from tasks.release.preflight import preflight_context, run_preflight_task
from tasks.release.report import ReleaseReport
from tasks.release.secrets import sync_secrets_task
from tasks.release.switching import (
    SwitchRecord,
    commit_switches_task,
    switch_back_task,
    switch_traffic,
)
from tasks.release.verifying import raise_on_abort, verify_task
from tasks.release.watch import WatchOutcome, watch_task


def release_to_production(catalogue: Catalogue, c: Cluster, specs: list[ServiceSpec], *,
                          staging: Cluster | None, version: str, report: ReleaseReport,
                          check_lock: Callable[[], None] = lambda: None) -> None:
    """Preflight, secrets, new colours, atomic switch and verification, commit, old colour down.

    Args:
        catalogue: the catalogue.
        c: the blue-green environment.
        specs: the services, in switch order.
        staging: the environment that must already run the version, if any.
        version: the version.
        report: the run's report.
        check_lock: raises when the release lock was lost (before each switch, the commit).

    Raises:
        PreflightError: the checklist failed (nothing changed).
        VerificationError: a new colour failed its analysis (every switch was undone).
        ReleaseError: the switch-back was incomplete.
    """
    report.checklist(c.env.name, run_preflight_task(preflight_context(
        catalogue, c, version=version, services=[s.name for s in specs],
        holder=report.holder, staging=staging)))
    secrets = {s.name: sync_secrets_task(c.core_v1, c.vault, c.env.namespace, s, c.env.name)
               for s in specs}
    report.record.secrets = secrets
    with report.timed("prepare"):
        prepared = bring_up_all(c, specs, version=version, secrets=secrets, report=report)
    with report.timed("switch_and_verify"):
        switch_and_verify(c, specs, prepared, report=report, check_lock=check_lock)
    # Committed: the new colours serve; the old ones stay up while the watch runs.
    outcome = watch_task(c.prometheus, c.core_v1, c.coordination_v1, env=c.env, specs=specs,
                         prepared=prepared, holder=report.holder)
    if outcome.kind == "preempted":
        report.check("keep-old-colour window", True,
                     f"preempted by {outcome.detail}: the old colours keep running for it")
        return
    if outcome.kind == "regressed":
        roll_back_after_commit(c, specs, prepared, report=report, outcome=outcome)
    report.check("keep-old-colour window", True, "no regression in the post-promotion watch")
    scale_down_or_warn(c, [s.deployment_name(prepared[s.name].live_colour) for s in specs],
                       report=report, what="old colour")


def roll_back_after_commit(c: Cluster, specs: list[ServiceSpec], prepared: dict[str, Prepared],
                           *, report: ReleaseReport, outcome: WatchOutcome) -> None:
    """A regression in the watch: every service back on its old colour, together; raise.

    The release is then no longer committed (its record says ``rolled-back``, so ``rollback``
    treats the release before it as the last good one).

    Raises:
        VerificationError: every Service is back on its old colour.
        ReleaseError: some Service could not be switched back (named).
    """
    undo = [SwitchRecord(s.name, s.service_name, c.env.namespace, prepared[s.name].live_colour,
                         prepared[s.name].new_colour, {}, outcome.started_at) for s in specs]
    restore = switch_back_task(c.core_v1, undo, colour_label=c.env.colour_label,
                               decided_at=outcome.decided_at,
                               deadline_s=c.env.switch_back_deadline_s)
    report.is_committed = False  # traffic went back: a rollback, not a success with warnings
    for s in specs:
        if s.service_name not in restore.left:
            report.record.colours[s.name] = prepared[s.name].live_colour
    report.rolled_back(undo, restore)
    scale_down_or_warn(c, [p.deployment for p in prepared.values()], report=report,
                       what="new colour")
    reason = f"post-promotion watch: {outcome.detail}"
    if restore.left:
        raise ReleaseError(f"rollback incomplete: {report.left_sentence(restore.left)}; "
                           f"{reason}", hint="the new colour was kept running for it; run the "
                           "rollback flow")
    raise VerificationError(f"{reason}; every service is back on its old colour",
                            hint="the regression appeared after the commit; inspect the new "
                            "version before releasing it again")


def scale_down_or_warn(c: Cluster, deployments: list[str], *, report: ReleaseReport,
                       what: str, warn_kept: bool = True) -> None:
    """Scale Deployments down; a failure, or one kept because a Service selects it, is a warning.

    Args:
        c: the blue-green environment.
        deployments: Deployment names.
        report: the run's report.
        what: what they are (``old colour``, ``new colour``), for the warning.
        warn_kept: warn about each one kept (the scale-down task logs them anyway).
    """
    try:
        result = scale_down_task(c.apps_v1, c.env.namespace, deployments)
    except Exception as exc:  # never hides the run's outcome; named in the report instead
        reason = getattr(exc, "message", type(exc).__name__)
        report.warn(f"{what} not scaled down ({', '.join(deployments)}): {reason}; "
                    "scale it down by hand")
        return
    for name, reason in result.kept.items() if warn_kept else ():
        report.warn(f"{what} {name} kept running: {reason}")


def bring_up_all(c: Cluster, specs: list[ServiceSpec], *, version: str,
                 secrets: dict[str, str], report: ReleaseReport) -> dict[str, Prepared]:
    """Bring every service's new colour up at once; on a failure scale the others down.

    Args:
        c: the blue-green environment.
        specs: the services.
        version: the version.
        secrets: service to its new Secret.
        report: the run's report.

    Returns:
        Service to its prepared colour.

    A failing service's own new colour is scaled down too: both of its colours are named and
    the scale-down task keeps the one its Service selects. A cancel or termination signal is
    raised at once, after a best-effort scale-down of every new colour.

    Raises:
        Exception: the first failure, once every colour settled.
    """
    every_colour = [s.deployment_name(colour) for s in specs for colour in COLOURS]
    futures = [bring_up_colour_task.submit(
        c.apps_v1, c.core_v1, env=c.env, spec=s, image=s.image(version),
        secret_name=secrets[s.name], release_id=report.id) for s in specs]
    try:
        outcomes = settle(futures)
    except BaseException:
        scale_down_or_warn(c, every_colour, report=report, what="new colour", warn_kept=False)
        raise
    prepared = {p.service: p for p in outcomes if isinstance(p, Prepared)}
    report.prepared(prepared.values())
    failed = [exc for exc in outcomes if isinstance(exc, BaseException)]
    if failed:
        down = [p.deployment for p in prepared.values()] + [
            s.deployment_name(colour) for s in specs if s.name not in prepared
            for colour in COLOURS]
        scale_down_or_warn(c, down, report=report, what="new colour", warn_kept=False)
        raise failed[0]
    return prepared


def switch_and_verify(c: Cluster, specs: list[ServiceSpec], prepared: dict[str, Prepared], *,
                      report: ReleaseReport, check_lock: Callable[[], None] = lambda: None,
                      ) -> None:
    """Switch and verify each service in order inside one transaction; undo all on a failure.

    A failure (or a failed commit) rolls the transaction back: its hooks put each switched
    Service back on its old colour, then a switch-back of every prepared service (a switch
    whose answer was lost may have applied) retries until the environment's
    ``switch_back_deadline_s`` and times the restoration from the failing verdict. The new
    colours are scaled down, except one a Service still selects (the rollback is then
    incomplete and raised as such). Once committed (:func:`commit_point`: one record write
    for every service) the new colours serve for good; the Services' pending marks are cleared
    after it.

    Args:
        c: the blue-green environment.
        specs: the services, in switch order.
        prepared: their new colours.
        report: the run's report.
        check_lock: raises when the release lock was lost (before each switch, the commit).

    Raises:
        VerificationError: a new colour failed its analysis.
        ReleaseError: some Service could not be switched back.
    """
    switches: list[SwitchRecord] = []
    decided_at: float | None = None
    try:
        with transaction():
            for s in specs:
                check_lock()  # before each switch: never switch without the lock
                p = prepared[s.name]
                report.switching(s.name)
                switches.append(switch_traffic(c.kubernetes, env=c.env, spec=s,
                                               colour=p.new_colour, from_colour=p.live_colour,
                                               release_id=report.id))
                report.switched_to(s.name)
                result = verify_task(c.prometheus, env=c.env, spec=s, colour=p.new_colour,
                                     settings=s.analysis, core_v1=c.core_v1)
                if result.verdict.decision == "abort":
                    decided_at = result.decided_at
                raise_on_abort(result)
                report.verified(s.name, p.new_colour, result.verdict.reason)
            check_lock()  # before the commit (a lost lock still rolls back)
        commit_point(c, prepared, report=report)
    except BaseException as exc:
        undo = [SwitchRecord(s.name, s.service_name, c.env.namespace,
                             prepared[s.name].live_colour, prepared[s.name].new_colour, {}, 0.0)
                for s in specs if s.name in prepared]
        restore = switch_back_task(c.core_v1, undo, colour_label=c.env.colour_label,
                                   decided_at=decided_at,
                                   deadline_s=c.env.switch_back_deadline_s)
        report.rolled_back(switches, restore)
        get_logger(__name__).error("release rolled back%s: %s",
                                   " INCOMPLETE" if restore.left else "",
                                   getattr(exc, "message", type(exc).__name__))
        scale_down_or_warn(c, [p.deployment for p in prepared.values()], report=report,
                           what="new colour")
        if restore.left:
            raise ReleaseError(
                f"rollback incomplete: {report.left_sentence(restore.left)}",
                hint="the new colour was kept running for it; run the rollback flow") from exc
        raise
    clear_pending_marks(c, specs, report=report)


def commit_point(c: Cluster, prepared: dict[str, Prepared], *, report: ReleaseReport) -> None:
    """Commit: the record naming every new colour live is written, or nothing is committed.

    One write decides, for every service at once. The Services' pending marks are cleared
    only after it (:func:`clear_pending_marks`): a run killed between those patches leaves
    marks naming a committed release, which reconcile keeps (commit completed) instead of
    putting some Services back and leaving the others on the new version.

    Args:
        c: the blue-green environment.
        prepared: the new colours, now serving.
        report: the run's report (its record is written, then marked committed).

    Raises:
        ExternalSystemError: the record could not be written (the caller rolls back).
    """
    colours = {**report.record.colours, **{p.service: p.new_colour for p in prepared.values()}}
    record_release_task(c.core_v1, c.env.namespace,
                        report.record.model_copy(update={"colours": colours}),
                        keep=c.env.history_size)
    report.committed(prepared.values())  # the run's report from here on (written again)


def clear_pending_marks(c: Cluster, specs: list[ServiceSpec], *, report: ReleaseReport) -> None:
    """After the commit point: clear each Service's pending marks; a failure is a warning.

    Marks left behind name a committed release: the next release or rollback clears them
    (its reconcile keeps the Services where they are).

    Args:
        c: the blue-green environment.
        specs: the services.
        report: the run's report.
    """
    try:
        commit_switches_task(c.core_v1, c.env, [s.service_name for s in specs])
    except Exception as exc:  # committed already: never rolled back for this
        reason = getattr(exc, "message", type(exc).__name__)
        report.warn(f"pending marks of the switches not cleared ({reason}); the next "
                    "release or rollback clears them")
