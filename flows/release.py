"""The release flow: preflight, build, secrets, staging, E2E, production blue-green or canary."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import Flow, flow, runtime
from prefect.client.schemas.objects import FlowRun, State

from flows.models import AnalysisOverrides, Environment, ReleaseSummary, ServiceName, Version
from tasks.events import ended_abnormally, release_events
from tasks.release.build import check_commit, check_version, passthrough_env, run_build_task
from tasks.release.canary_analysis import plan_lines
from tasks.release.canary_release import release_canary
from tasks.release.catalogue import DEFAULT_CATALOGUE, load_catalogue
from tasks.release.clusters import connect
from tasks.release.crash import clean_up_after_run
from tasks.release.futures import results
from tasks.release.locking import hold_locks
from tasks.release.preflight import plan_release_task, preflight_context, run_preflight_task
from tasks.release.production import release_to_production
from tasks.release.recovering import put_back_what_dead_runs_left
from tasks.release.report import ReleaseReport
from tasks.release.runs import flow_run_state
from tasks.release.secrets_gc import collect_unused_secrets
from tasks.release.staging import release_to_staging


def _on_crashed(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:
    ended_abnormally("release", run_id=str(flow_run.id), parameters=flow_run.parameters)
    clean_up_after_run(str(flow_run.id), flow_run.parameters, outcome="crashed")


def _on_cancelled(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:
    clean_up_after_run(str(flow_run.id), flow_run.parameters, outcome="cancelled")


@flow(name="release", flow_run_name="release-{environment}-{version}",
      on_crashed=[_on_crashed], on_cancellation=[_on_cancelled])
def release(  # noqa: PLR0917 - flow parameters are positional in Prefect's API
    version: Version,
    environment: Environment = "production",
    services: list[ServiceName] | None = None,
    skip_build: bool = False,
    dry_run: bool = False,
    analysis: AnalysisOverrides | None = None,
    catalogue_path: str = str(DEFAULT_CATALOGUE),
    triggered_by: str = "manual",
    build_env_passthrough: list[str] | None = None,
    commit_sha: str | None = None,
    commit_timestamp: datetime | None = None,
) -> ReleaseSummary:
    """Release a version of the Veza services to an environment, atomically.

    Args:
        version: image tag (git ref or tag) to release.
        environment: target environment of the catalogue (``staging`` or ``production``).
        services: services to release (default: all, in the catalogue's switch order).
        skip_build: images were already built and pushed (by CI).
        dry_run: print the plan and change nothing.
        analysis: overrides of the catalogue's verification settings.
        catalogue_path: the service catalogue YAML (default: the project's own).
        triggered_by: who or what started the release (recorded).
        build_env_passthrough: names of environment variables passed to build commands.
        commit_sha: the commit released (from CI: ``veza-ops trigger`` fills it), recorded.
        commit_timestamp: when it was committed (from CI), recorded: the DORA lead time's start.

    Returns:
        The summary; the run fails (raises) when the release failed or was rolled back.
    """
    # Every input is checked before the first request to any system.
    check_version(version)
    commit = check_commit(commit_sha, commit_timestamp)
    catalogue = load_catalogue(catalogue_path)
    env = catalogue.environment(environment)
    specs = [(analysis or AnalysisOverrides()).apply(s) for s in catalogue.select(services)]
    target = connect(env)
    staging = (connect(catalogue.environment(env.staging_environment))
               if env.staging_environment else None)
    rolling = target if env.strategy == "rolling" else staging
    bluegreen = target if env.strategy == "blue-green" else None
    canary = target if env.strategy == "canary" else None
    run_id = str(runtime.flow_run.id or "local")
    report = ReleaseReport.start(
        kind="release", environment=environment, version=version, triggered_by=triggered_by,
        run_id=run_id, dry_run=dry_run, commit=commit,
        images={s.name: s.image(version) for s in specs})
    if dry_run:
        return report.dry_run(plan_release_task(specs, version, rolling=rolling,
                                                bluegreen=bluegreen, build=not skip_build)
                              + (plan_lines(canary.env, specs, version) if canary else []))

    with release_events(report), report.running(target), hold_locks(
            [c for c in (target, staging) if c], report.holder, run_id=run_id,
            holder_state=flow_run_state) as locks:
        report.lock_takeovers(locks.takeovers)
        put_back_what_dead_runs_left(catalogue, target, report, run_id=run_id)
        first = rolling or target
        with report.timed("preflight"):
            report.checklist(first.env.name, run_preflight_task(preflight_context(
                catalogue, first, version=version, services=[s.name for s in specs],
                holder=report.holder, staging=staging if first is target else None)))
        if not skip_build:
            with report.timed("build"):
                passthrough = passthrough_env(build_env_passthrough)
                results([run_build_task.submit(s, version, passthrough) for s in specs])
        report.changing()  # from here on the environments change: the run is recorded
        if rolling is not None:
            secrets = release_to_staging(catalogue, rolling, specs, version=version,
                                         report=report)
            if rolling is target:  # the release ends in the rolling environment
                report.staged(secrets)
        locks.check()  # never switch production traffic without the lock
        if bluegreen is not None:
            release_to_production(catalogue, bluegreen, specs, staging=staging,
                                  version=version, report=report, check_lock=locks.check)
        if canary is not None:
            release_canary(catalogue, canary, specs, staging=staging, version=version,
                           report=report, check_lock=locks.check)
        # Released: Secrets no Deployment, pod or recent release uses are deleted.
        collect_unused_secrets([c for c in (rolling, bluegreen, canary) if c], report)
    return report.summary
