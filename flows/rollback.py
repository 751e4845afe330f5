"""The rollback flow: put services back on a previous release, from the UI or CI."""

from __future__ import annotations

from prefect import flow, get_run_logger, runtime

from errors import ReleaseError
from flows.models import Environment, ReleaseSummary, ServiceName
from tasks.events import release_events
from tasks.release.catalogue import DEFAULT_CATALOGUE, Catalogue, load_catalogue
from tasks.release.clusters import Cluster, connect
from tasks.release.locking import hold_locks
from tasks.release.recovering import preempt_keep_window_of, put_back_what_dead_runs_left
from tasks.release.report import ReleaseReport
from tasks.release.rollback import choose_target, restore_service_task
from tasks.release.runs import flow_run_state


@flow(name="rollback", flow_run_name="rollback-{environment}")
def rollback(
    environment: Environment = "production",
    services: list[ServiceName] | None = None,
    target_release: str | None = None,
    catalogue_path: str = str(DEFAULT_CATALOGUE),
    triggered_by: str = "manual",
) -> ReleaseSummary:
    """Return services to a previous release: reuse the old colour, else redeploy it.

    Args:
        environment: environment of the catalogue.
        services: services to roll back (default: all of the last release).
        target_release: id of the release to return to (default: what ran before the last
            successful release).
        catalogue_path: the service catalogue YAML (default: the project's own).
        triggered_by: who or what started the rollback (recorded).

    Returns:
        The summary; the run fails when a service could not be restored.
    """
    catalogue = load_catalogue(catalogue_path)
    env = catalogue.environment(environment)
    catalogue.select(services)  # unknown names are refused before any request
    c = connect(env)
    run_id = str(runtime.flow_run.id or "local")
    report = ReleaseReport.start(kind="rollback", environment=environment, version="?",
                                 triggered_by=triggered_by, run_id=run_id)
    with release_events(report), report.running(c):
        preempt_keep_window_of(c, report)
        if not _roll_back(catalogue, c, services, target_release, report=report,
                          run_id=run_id):
            return report.summary  # reconciled only: no release to return to
    if not report.summary.services:
        raise ReleaseError("rollback restored no service", hint="check the services parameter")
    return report.summary


def _roll_back(catalogue: Catalogue, c: Cluster, services: list[str] | None,
               target_release: str | None, *, report: ReleaseReport, run_id: str) -> bool:
    """Under the lock: reconcile, mark crashed records, restore the target; False: none."""
    env = c.env
    with hold_locks([c], report.holder, run_id=run_id, holder_state=flow_run_state) as locks:
        report.lock_takeovers(locks.takeovers)
        history = put_back_what_dead_runs_left(catalogue, c, report, run_id=run_id)
        if report.summary.reconciled and not any(r.outcome == "succeeded" for r in history):
            get_run_logger().warning("no successful release on record: reconciled only")
            report.summary.version = report.record.version = "reconciled"
            return False
        target = choose_target(history, catalogue, services, target_release)
        report.rolling_back_to(target.label, target.images, target.previous_images)
        for spec in target.specs:
            outcome = restore_service_task(
                c.apps_v1, c.core_v1, env=env, spec=spec, image=target.images[spec.name],
                secret_name=target.secrets.get(spec.name), release_id=report.id)
            report.restored(spec.name, outcome.image, outcome.colour, outcome.action)
    return True
