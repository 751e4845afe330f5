"""The rollback flow: put services back on a previous release, from the UI or CI."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact

from errors import InvalidInputError, ReleaseError, VezaOpsError
from flows.clusters import Cluster, connect, reconcile_refs
from flows.models import ReleaseSummary, ServiceOutcome
from tasks.locking import Lock, acquire_release_lock, release_lock
from tasks.notify import Outcome, current_run_url, notify_task
from tasks.production import keep_lock, scale_down
from tasks.reconcile import reconcile_task
from tasks.records import CheckRecord, ReleaseRecord, record_release_task, release_history
from tasks.rollback import RestoreTarget, restore_service
from tasks.services import load_catalogue

DEFAULT_CATALOGUE = "deployments/catalogue.yaml"


def _targets(history: list[ReleaseRecord], target_release: str | None
             ) -> tuple[ReleaseRecord, dict[str, str], dict[str, str], str]:
    """Pick what to return to: images and secrets per service, and a version label."""
    done = [r for r in history if r.kind == "release" and r.outcome == "succeeded"]
    if not done:
        raise InvalidInputError("environment", "has no successful release on record",
                                fix="nothing to roll back; run a release first")
    last = done[-1]
    if target_release is None:
        images = {s: i for s, i in last.previous_images.items() if i and i != "-"}
        earlier = done[:-1]
        secrets = {s: n for r in earlier for s, n in r.secrets.items()}
        return last, images, secrets, f"before {last.version}"
    chosen = [r for r in done if r.id == target_release]
    if not chosen:
        raise InvalidInputError(
            "target_release", f"{target_release!r} is not a successful release on record",
            fix=f"use one of {[r.id for r in done][-10:]}")
    return last, dict(chosen[0].images), dict(chosen[0].secrets), chosen[0].version


@flow(name="rollback", flow_run_name="rollback-{environment}")
def rollback(
    environment: str = "production",
    services: list[str] | None = None,
    target_release: str | None = None,
    catalogue_path: str = DEFAULT_CATALOGUE,
    triggered_by: str = "manual",
) -> ReleaseSummary:
    """Return services to a previous release: reuse the old colour, else redeploy it.

    Args:
        environment: environment of the catalogue.
        services: services to roll back (default: all of the last release).
        target_release: id of the release to return to (default: what ran before the last
            successful release).
        catalogue_path: the service catalogue YAML.
        triggered_by: who or what started the rollback (recorded).

    Returns:
        The summary; the run fails when a service could not be restored.
    """
    logger = get_run_logger()
    started, t0 = datetime.now(UTC), time.monotonic()
    catalogue = load_catalogue(catalogue_path)
    env = catalogue.environment(environment)
    if services:
        catalogue.select(services)
    c: Cluster = connect(env)
    run_id = str(runtime.flow_run.id or "local")
    rollback_id = ReleaseRecord.new_id(started, run_id[:8])
    lock: Lock = acquire_release_lock(c.coordination_v1, env.namespace,
                                      f"rollback/{rollback_id}", env.lock_ttl_s,
                                      wait_s=env.lock_wait_s)
    record: ReleaseRecord | None = None
    summary = ReleaseSummary(release_id=rollback_id, environment=environment, version="?",
                             outcome="running")
    try:
        with keep_lock(lock):
            if env.strategy == "blue-green":
                done, problems = reconcile_task(
                    c.apps_v1, c.core_v1, env.namespace,
                    reconcile_refs(catalogue.select(services)), colour_label=env.colour_label)
                summary.reconciled = done + problems
            history = release_history(c.core_v1, env.namespace)
            if summary.reconciled and not any(r.outcome == "succeeded" for r in history):
                logger.warning("no successful release on record: reconciled only")
                summary.version = "reconciled"
                summary.outcome = "succeeded"
                return summary
            last, images, secrets, label = _targets(history, target_release)
            wanted = services or [s for s in catalogue.switch_order if s in last.images]
            specs = catalogue.select(wanted)
            missing = [s.name for s in specs if s.name not in images]
            if missing:
                raise InvalidInputError(
                    "services", f"no image on record to return {missing} to",
                    fix="name a target_release that deployed them")
            record = ReleaseRecord(
                id=rollback_id, kind="rollback", environment=environment, version=label,
                triggered_by=triggered_by, flow_run_id=run_id, started_at=started,
                images={s.name: images[s.name] for s in specs},
                previous_images={s.name: last.images.get(s.name, "-") for s in specs})
            summary.version = label
            for spec in specs:
                outcome = restore_service(
                    c.apps_v1, c.core_v1, namespace=env.namespace,
                    target=RestoreTarget(spec.name, spec.service_name, spec.deployment_base,
                                         spec.container, images[spec.name],
                                         secrets.get(spec.name), spec.port),
                    colour_label=env.colour_label, timeout_s=env.rollout_timeout_s,
                    release_id=rollback_id)
                logger.info("%s: %s (%s on %s)", spec.name, outcome.action, outcome.image,
                            outcome.colour)
                record.colours[spec.name] = outcome.colour
                record.checks.append(CheckRecord(name=f"restore {spec.name}", passed=True,
                                                 detail=outcome.action))
                summary.services[spec.name] = ServiceOutcome(
                    service=spec.name, image=outcome.image, colour=outcome.colour,
                    switched=outcome.action != "already", verified=True)
                if outcome.action != "already":
                    abandoned = "green" if outcome.colour == "blue" else "blue"
                    scale_down(c.apps_v1, env.namespace, [spec.deployment_name(abandoned)])
            record.outcome = "succeeded"
    except BaseException as exc:
        if record is not None:
            record.outcome = "failed"
            record.reason = exc.message if isinstance(exc, VezaOpsError) else type(exc).__name__
        summary.outcome = "failed"
        summary.reason = record.reason if record else str(exc)
        raise
    finally:
        release_lock(lock)
        if record is not None:
            record.finished_at = datetime.now(UTC)
            record.timings["total"] = time.monotonic() - t0
            try:
                record_release_task(c.core_v1, env.namespace, record, keep=env.history_size)
            except VezaOpsError as exc:
                logger.error("could not record the rollback: %s", exc.message)
            create_markdown_artifact(key="rollback-report", markdown=record.to_markdown())
        notify_task(c.slack, Outcome(
            kind="rollback", outcome=record.outcome if record else summary.outcome,
            environment=environment, version=summary.version, services=sorted(summary.services),
            duration_s=time.monotonic() - t0, reason=summary.reason, triggered_by=triggered_by,
            run_url=current_run_url()))
    summary.outcome = "succeeded"
    summary.timings = record.timings
    if not summary.services:
        raise ReleaseError("rollback restored no service", hint="check the services parameter")
    return summary
