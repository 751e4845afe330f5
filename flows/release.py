"""The release flow: preflight, build, secrets, staging, E2E, atomic production blue-green."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact
from prefect.transactions import transaction

from errors import LockHeldError, ReleaseError, VezaOpsError
from flows.clusters import Cluster, connect, reconcile_refs
from flows.models import AnalysisOverrides, ReleaseSummary, ServiceOutcome
from tasks.bluegreen import SwitchRecord, read_service
from tasks.build import check_version, run_build_task
from tasks.e2e import run_e2e_task, service_urls
from tasks.locking import Lock, acquire_release_lock, release_lock
from tasks.notify import Outcome, current_run_url, notify_task
from tasks.preflight import PreflightContext, live_target, run_preflight_task
from tasks.production import (
    Prepared,
    commit_switches_task,
    keep_lock,
    keep_old_colour_task,
    prepare_colour_task,
    scale_down,
    scale_down_task,
    switch_traffic,
    verify_task,
)
from tasks.reconcile import reconcile_task
from tasks.records import CheckRecord, ReleaseRecord, record_release_task
from tasks.rollback import switch_back
from tasks.secrets_sync import sync_secrets_task
from tasks.services import Catalogue, ServiceSpec, load_catalogue
from tasks.staging import deploy_to_staging_task

DEFAULT_CATALOGUE = "deployments/catalogue.yaml"


def _preflight_ctx(catalogue: Catalogue, c: Cluster, *, version: str,
                   services: list[str] | None, holder: str,
                   staging: Cluster | None) -> PreflightContext:
    return PreflightContext(
        catalogue=catalogue, environment=c.env.name, version=version, services=services,
        prometheus=c.prometheus, vault=c.vault, core_v1=c.core_v1, apps_v1=c.apps_v1,
        coordination_v1=c.coordination_v1, holder=holder,
        staging_core_v1=staging.core_v1 if staging else None,
        staging_apps_v1=staging.apps_v1 if staging else None,
    )


def _plan(specs: list[ServiceSpec], version: str, rolling: Cluster | None,
          bluegreen: Cluster | None, skip_build: bool) -> list[str]:
    lines = [] if skip_build else [f"build {s.image(version)}" for s in specs]
    for c in (rolling, bluegreen):
        if c is None:
            continue
        for spec in specs:
            target, _ = live_target(c.core_v1, c.apps_v1, c.env, spec)
            if c is rolling:
                lines.append(f"{c.env.name}: {target.deployment} {target.image} -> "
                             f"{spec.image(version)}, wait, undo on failure")
            else:
                a = spec.analysis
                new = "green" if target.colour == "blue" else "blue"
                lines.append(
                    f"{c.env.name}: {spec.name} live {target.colour} ({target.image}); "
                    f"clone to {new} with {spec.image(version)}, smoke, switch, verify "
                    f"(success rate >= {a.success_rate_min:g}, p99 <= {a.p99_max_ms:g} ms, "
                    f"{a.intervals} x {a.interval_s:g} s, failure limit {a.failure_limit})"
                )
    return lines


@flow(name="release", flow_run_name="release-{environment}-{version}")
def release(  # noqa: PLR0917 - flow parameters are positional in Prefect's API
    version: str,
    environment: str = "production",
    services: list[str] | None = None,
    skip_build: bool = False,
    dry_run: bool = False,
    analysis: AnalysisOverrides | None = None,
    catalogue_path: str = DEFAULT_CATALOGUE,
    triggered_by: str = "manual",
    build_env_passthrough: list[str] | None = None,
) -> ReleaseSummary:
    """Release a version of the Veza services to an environment, atomically.

    Args:
        version: image tag (git ref or tag) to release.
        environment: target environment of the catalogue (``staging`` or ``production``).
        services: services to release (default: all, in the catalogue's switch order).
        skip_build: images were already built and pushed (by CI).
        dry_run: print the plan and change nothing.
        analysis: overrides of the catalogue's verification settings.
        catalogue_path: the service catalogue YAML.
        triggered_by: who or what started the release (recorded).
        build_env_passthrough: names of environment variables passed to build commands.

    Returns:
        The summary; the run fails (raises) when the release failed or was rolled back.
    """
    logger = get_run_logger()
    started, t0 = datetime.now(UTC), time.monotonic()
    check_version(version)
    catalogue = load_catalogue(catalogue_path)
    env = catalogue.environment(environment)
    overrides = analysis or AnalysisOverrides()
    specs = [overrides.apply(s) for s in catalogue.select(services)]
    names = [s.name for s in specs]
    staging_env = (catalogue.environment(env.staging_environment)
                   if env.staging_environment else None)
    target = connect(env)
    staging = connect(staging_env) if staging_env else None
    rolling = target if env.strategy == "rolling" else staging
    bluegreen = target if env.strategy == "blue-green" else None
    run_id = str(runtime.flow_run.id or "local")
    release_id = ReleaseRecord.new_id(started, run_id[:8])
    holder = f"release/{release_id}"
    summary = ReleaseSummary(release_id=release_id, environment=environment, version=version,
                             outcome="running", dry_run=dry_run)
    if dry_run:
        summary.plan = _plan(specs, version, rolling, bluegreen, skip_build)
        for line in summary.plan:
            logger.info("plan: %s", line)
        summary.outcome = "dry-run"
        create_markdown_artifact(
            key="release-plan", description=f"dry run of {version} to {environment}",
            markdown=f"# Plan: {version} to {environment}\n\n"
            + "\n".join(f"- {line}" for line in summary.plan) + "\n")
        return summary

    record = ReleaseRecord(id=release_id, environment=environment, version=version,
                           triggered_by=triggered_by, flow_run_id=run_id, started_at=started,
                           images={s.name: s.image(version) for s in specs})
    changed = False
    switches: list[SwitchRecord] = []
    locks: list[Lock] = []
    lost: list[threading.Event] = []
    error: BaseException | None = None
    try:
        with ExitStack() as stack:
            for c in [target] + ([staging] if staging and staging is not target else []):
                lock = acquire_release_lock(c.coordination_v1, c.env.namespace, holder,
                                            c.env.lock_ttl_s, wait_s=c.env.lock_wait_s)
                locks.append(lock)
                lost.append(stack.enter_context(keep_lock(lock)))
            if bluegreen is not None:
                done, problems = reconcile_task(
                    bluegreen.apps_v1, bluegreen.core_v1, bluegreen.env.namespace,
                    reconcile_refs(specs), colour_label=bluegreen.env.colour_label)
                summary.reconciled = done + problems
                changed = changed or bool(done)
            first = rolling or target
            checklist = run_preflight_task(_preflight_ctx(
                catalogue, first, version=version, services=names, holder=holder,
                staging=staging if first is target and staging else None))
            record.checks += [CheckRecord(name=f"preflight {first.env.name}: {i.name}",
                                          passed=i.passed, detail=i.detail)
                              for i in checklist.items]
            record.timings["preflight"] = time.monotonic() - t0

            if not skip_build:
                t = time.monotonic()
                passthrough = _passthrough(build_env_passthrough)
                futures = [run_build_task.submit(s, version, passthrough) for s in specs]
                for f in futures:
                    f.result()
                record.timings["build"] = time.monotonic() - t

            changed = True
            if rolling is not None:
                t = time.monotonic()
                secrets = {s.name: sync_secrets_task(rolling.core_v1, rolling.vault,
                                                     rolling.env.namespace, s, rolling.env.name)
                           for s in specs}
                stage = [
                    deploy_to_staging_task.submit(
                        rolling.apps_v1, namespace=rolling.env.namespace,
                        name=live_target(rolling.core_v1, rolling.apps_v1, rolling.env,
                                         s)[0].deployment,
                        container=s.container, image=s.image(version),
                        timeout_s=rolling.env.rollout_timeout_s,
                        secret_prefix=f"{s.name}-secrets", secret_name=secrets[s.name])
                    for s in specs
                ]
                failures = [exc for exc in (_exception(f) for f in stage) if exc is not None]
                if failures:
                    raise failures[0]
                record.timings["staging"] = time.monotonic() - t
                t = time.monotonic()
                urls = service_urls(rolling.core_v1, rolling.env.namespace, specs)
                e2e = run_e2e_task(catalogue, rolling.env.name, urls, services=names,
                                   version=version)
                record.checks.append(CheckRecord(
                    name=f"e2e {rolling.env.name}", passed=e2e.passed,
                    detail=f"{sum(c.passed for c in e2e.checks)}/{len(e2e.checks)} passed"))
                e2e.raise_for_failure()
                record.timings["e2e"] = time.monotonic() - t
                if bluegreen is None:
                    record.secrets = secrets
                    record.colours = {s.name: "-" for s in specs}

            if any(event.is_set() for event in lost):
                raise LockHeldError("the release lock was lost (not renewed in time)",
                                    hint="another release may run; re-run this one later")
            if bluegreen is not None:
                _production(catalogue, bluegreen, staging=staging, specs=specs,
                            version=version, holder=holder, record=record, summary=summary,
                            switches=switches, release_id=release_id)
        record.outcome = "succeeded"
    except BaseException as exc:
        error = exc
        record.outcome = "rolled-back" if switches else "failed"
        record.reason = exc.message if isinstance(exc, VezaOpsError) else type(exc).__name__
        raise
    finally:
        record.finished_at = datetime.now(UTC)
        record.timings["total"] = time.monotonic() - t0
        summary.outcome, summary.reason, summary.timings = (
            record.outcome, record.reason, record.timings)
        _finish(target, record, changed, error is None, locks)
    logger.info("release %s of %s to %s succeeded in %.1f s", release_id, version,
                environment, record.timings["total"])
    return summary


def _passthrough(names: list[str] | None) -> dict[str, str]:
    import os

    return {n: os.environ[n] for n in names or [] if n in os.environ}


def _exception(future: object) -> BaseException | None:
    try:
        future.result()  # type: ignore[attr-defined]
    except BaseException as exc:
        return exc
    return None


def _production(catalogue: Catalogue, c: Cluster, *, staging: Cluster | None,
                specs: list[ServiceSpec], version: str, holder: str, record: ReleaseRecord,
                summary: ReleaseSummary, switches: list[SwitchRecord], release_id: str) -> None:
    logger = get_run_logger()
    t = time.monotonic()
    checklist = run_preflight_task(_preflight_ctx(
        catalogue, c, version=version, services=[s.name for s in specs], holder=holder,
        staging=staging))
    record.checks += [CheckRecord(name=f"preflight {c.env.name}: {i.name}", passed=i.passed,
                                  detail=i.detail) for i in checklist.items]
    secrets = {s.name: sync_secrets_task(c.core_v1, c.vault, c.env.namespace, s, c.env.name)
               for s in specs}
    record.secrets = secrets
    futures = [prepare_colour_task.submit(
        c.apps_v1, c.core_v1, env=c.env, spec=s, image=s.image(version),
        secret_name=secrets[s.name], release_id=release_id) for s in specs]
    outcomes = [_exception(f) for f in futures]
    prepared: dict[str, Prepared] = {}
    for s, f, exc in zip(specs, futures, outcomes, strict=True):
        if exc is None:
            prepared[s.name] = f.result()
    for p in prepared.values():
        record.previous_images[p.service] = p.previous_image or "-"
        record.previous_colours[p.service] = p.live_colour
        summary.services[p.service] = ServiceOutcome(
            service=p.service, image=p.image, previous_image=p.previous_image,
            colour=p.live_colour, previous_colour=p.live_colour, secret=p.secret_name)
        record.checks.append(CheckRecord(name=f"smoke {p.service} {p.new_colour}", passed=True,
                                         detail=f"{len(p.smoke)} request(s) answered"))
    failed = [exc for exc in outcomes if exc is not None]
    if failed:
        scale_down(c.apps_v1, c.env.namespace, [p.deployment for p in prepared.values()])
        raise failed[0]
    record.timings["prepare"] = time.monotonic() - t
    t = time.monotonic()
    try:
        with transaction():
            for s in specs:
                p = prepared[s.name]
                switches.append(switch_traffic(c.kubernetes, env=c.env, spec=s,
                                               colour=p.new_colour, release_id=release_id))
                summary.services[s.name].switched = True
                result = verify_task(c.prometheus, env=c.env, spec=s, colour=p.new_colour,
                                     settings=s.analysis)
                summary.services[s.name].verified = True
                record.checks.append(CheckRecord(
                    name=f"verify {s.name} {p.new_colour}", passed=True,
                    detail=result.verdict.reason))
    except BaseException as exc:
        hooks_done = time.time()
        decided = float(getattr(exc, "decided_at", 0.0) or hooks_done)
        still = [r for r in switches if _selected(c, r.service_name) != r.from_colour]
        report = switch_back(c.core_v1, still, colour_label=c.env.colour_label,
                             decided_at=decided)
        restored = max(hooks_done, report.finished_at if still else hooks_done)
        if switches:
            record.timings["detection_s"] = max(0.0, decided - switches[-1].switched_at)
            record.timings["restoration_s"] = max(0.0, restored - decided)
        record.checks.append(CheckRecord(
            name="rollback", passed=not report.errors,
            detail=f"{len(switches)} service(s) back on their old colour "
                   f"in {record.timings.get('restoration_s', 0.0):.2f} s"))
        for r in switches:
            summary.services[r.service].colour = r.from_colour
        logger.error("release rolled back: %s", getattr(exc, "message", type(exc).__name__))
        scale_down(c.apps_v1, c.env.namespace, [p.deployment for p in prepared.values()])
        if report.errors:
            raise ReleaseError(f"rollback incomplete: {report.errors}",
                               hint="run the rollback flow") from exc
        raise
    record.timings["switch_and_verify"] = time.monotonic() - t
    commit_switches_task(c.core_v1, c.env, [s.service_name for s in specs])
    for p in prepared.values():
        record.colours[p.service] = p.new_colour
        summary.services[p.service].colour = p.new_colour
    record.outcome = "succeeded"
    record.finished_at = datetime.now(UTC)
    record_release_task(c.core_v1, c.env.namespace, record, keep=c.env.history_size)
    keep_old_colour_task(c.env.keep_old_colour_s)
    scale_down_task(c.apps_v1, c.env.namespace,
                    [s.deployment_name(prepared[s.name].live_colour) for s in specs])


def _selected(c: Cluster, service_name: str) -> str | None:
    svc = read_service(c.core_v1, c.env.namespace, service_name)
    selector = (svc.spec.selector or {}) if svc.spec else {}
    return selector.get(c.env.colour_label)


def _finish(c: Cluster, record: ReleaseRecord, changed: bool, ok: bool,
            locks: list[Lock]) -> None:
    logger = get_run_logger()
    try:
        if changed or ok:
            record_release_task(c.core_v1, c.env.namespace, record, keep=c.env.history_size)
    except VezaOpsError as exc:
        logger.error("could not record the release: %s", exc.message)
    try:
        create_markdown_artifact(key="release-report", markdown=record.to_markdown(),
                                 description=f"{record.version} to {record.environment}")
    except Exception as exc:  # an artifact never fails a release
        logger.warning("could not create the release artifact: %s", type(exc).__name__)
    for lock in reversed(locks):
        try:
            release_lock(lock)
        except VezaOpsError as exc:
            logger.error("could not release the lock: %s (it expires by itself)", exc.message)
    notify_task(c.slack, Outcome(
        kind="release", outcome=record.outcome, environment=record.environment,
        version=record.version, services=sorted(record.images),
        duration_s=record.timings.get("total"), reason=record.reason,
        triggered_by=record.triggered_by, run_url=current_run_url()))
