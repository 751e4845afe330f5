"""Where every release and rollback starts, under the lock: undo what dead runs left behind."""

from __future__ import annotations

from tasks.release.canary import reconcile_canaries_task
from tasks.release.catalogue import Catalogue
from tasks.release.clusters import Cluster
from tasks.release.history import ReleaseRecord
from tasks.release.preemption import preempt_keep_window_task
from tasks.release.reconcile import reconcile_task
from tasks.release.report import ReleaseReport
from tasks.release.rollback import mark_dead_runs_task
from tasks.release.runs import flow_run_state


def put_back_what_dead_runs_left(catalogue: Catalogue, c: Cluster, report: ReleaseReport, *,
                                 run_id: str) -> list[ReleaseRecord]:
    """Reconcile the environment and mark the records of dead runs, both in the report.

    Every service of the catalogue is reconciled, not only the run's (a crashed full release
    followed by a one-service run must not leave the other three on an uncommitted colour):
    blue-green, pending switches go back; canary, weights back to 0 %. A ``running`` record
    whose flow run has ended (crashed, killed) is marked ``crashed``. Call it holding the
    environment's lock.

    Args:
        catalogue: the catalogue (all of its services are reconciled).
        c: the environment the run changes.
        report: the run's report (reconciled services, one check per record marked).
        run_id: the run's own flow run id (its record is never marked).

    Returns:
        The environment's release history, as marked.
    """
    if c.env.strategy == "blue-green":
        report.reconciled(*reconcile_task(c.apps_v1, c.core_v1, c.env, catalogue.select()))
    elif c.env.strategy == "canary":
        report.reconciled(*reconcile_canaries_task(c, catalogue.select()))
    history, dead = mark_dead_runs_task(c.core_v1, c.env, flow_run_state, own_run=run_id)
    for record in dead:  # a killed run's record said "running"
        report.check(f"record {record.id}", True, record.reason or "crashed")
    return history


def preempt_keep_window_of(c: Cluster, report: ReleaseReport) -> None:
    """Ask a release in its keep-old-colour window to stop and give the lock back (rollback).

    Args:
        c: the environment.
        report: the rollback's report (a check names the release stopped).
    """
    preempted = preempt_keep_window_task(c.coordination_v1, c.env.namespace, report.holder,
                                         wait_s=c.env.preempt_wait_s,
                                         holder_state=flow_run_state)
    if preempted:
        report.check("preempted", True, f"{preempted} stopped its keep-old-colour window")
