"""Rollback: choose what to return to from the history, put each service back on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from kubernetes import client as k8s
from prefect import task
from prefect.cache_policies import NO_CACHE

from errors import InvalidInputError, ReleaseError, retry_on_transient
from tasks.release.catalogue import Catalogue, EnvironmentSpec, ServiceSpec
from tasks.release.colours import (
    bring_up_colour,
    container_image,
    live_colour,
    read_deployment_or_none,
    scale_down,
)
from tasks.release.history import ReleaseRecord, record_release, release_history
from tasks.release.leases import holder_is_over
from tasks.release.logs import get_logger
from tasks.release.staging import deploy_to_staging
from tasks.release.switching import read_service, switch_selector


@dataclass(frozen=True)
class RollbackTarget:
    """What a rollback returns to.

    Attributes:
        label: the target's version, or ``before <version>`` of the last release.
        specs: services to put back, in switch order.
        images: service to image to return to.
        secrets: service to the Secret that image ran with (when known).
        previous_images: service to the image it replaces (the last release's).
    """

    label: str
    specs: list[ServiceSpec]
    images: dict[str, str]
    secrets: dict[str, str]
    previous_images: dict[str, str]


INTERRUPTED = frozenset({"running", "crashed", "cancelled", "failed", "rollback-incomplete"})


def is_committed(record: ReleaseRecord) -> bool:
    """Whether a release went live: it succeeded, or it was interrupted after its commit (pure).

    Args:
        record: a release record.

    Returns:
        True when its images were committed.
    """
    if record.kind != "release":
        return False
    return record.outcome == "succeeded" or (
        record.outcome in {"running", "crashed", "cancelled"} and bool(record.colours))


def mark_crashed(history: list[ReleaseRecord], state_of: Callable[[str], str | None], *,
                 own_run: str | None = None) -> list[ReleaseRecord]:
    """The ``running`` records whose flow run is over, updated to ``crashed`` (pure).

    Args:
        history: the environment's records.
        state_of: the Prefect state type of a flow run id (None when the run is gone).
        own_run: the calling run's id (its own record is never marked).

    Returns:
        Copies of the records to write back, outcome ``crashed`` with the reason.
    """
    marked = []
    for r in history:
        if r.outcome != "running" or not r.flow_run_id or r.flow_run_id == own_run:
            continue
        why = holder_is_over(r.flow_run_id, state_of(r.flow_run_id))
        if why is not None:
            marked.append(r.model_copy(update={
                "outcome": "crashed", "finished_at": r.finished_at or datetime.now(UTC),
                "reason": f"{why}; its record was left running"}))
    return marked


def mark_dead_runs(core_v1: k8s.CoreV1Api, env: EnvironmentSpec,
                   state_of: Callable[[str], str | None], *,
                   own_run: str | None) -> tuple[list[ReleaseRecord], list[ReleaseRecord]]:
    """Write ``crashed`` over the records that runs which are over left ``running``.

    Called under the environment's lock by a rerun and by ``rollback``: after a SIGKILL the
    record would otherwise say ``running`` for ever (the UI, Slack and DORA read it).

    Args:
        core_v1: Kubernetes core API.
        env: the environment.
        state_of: the Prefect state type of a flow run id (None when the run is gone).
        own_run: the calling run's id (its own record is never marked).

    Returns:
        The environment's history with those records updated, and the records marked.
    """
    history = release_history(core_v1, env.namespace)
    marked = mark_crashed(history, state_of, own_run=own_run)
    for record in marked:
        record_release(core_v1, env.namespace, record, keep=env.history_size)
    updated = {r.id: r for r in marked}
    return [updated.get(r.id, r) for r in history], marked


mark_dead_runs_task = task(
    name="mark-dead-runs", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=2,
    retry_condition_fn=retry_on_transient,
)(mark_dead_runs)


def _merged(records: list[ReleaseRecord], field: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in records:
        out.update({s: v for s, v in getattr(r, field).items() if v and v != "-"})
    return out


def choose_target(history: list[ReleaseRecord], catalogue: Catalogue,
                  services: list[str] | None, target_release: str | None) -> RollbackTarget:
    """Pick what to return to (pure).

    A named release; else, when the newest release was interrupted (crashed, failed, still
    ``running``) before its commit, the last committed release itself (a crash must not send
    the environment one release too far); else what ran before the last committed release.

    Args:
        history: the environment's records, oldest first.
        catalogue: the catalogue.
        services: services to roll back (default: those of the last release).
        target_release: id of a successful release to return to.

    Returns:
        The target.

    Raises:
        InvalidInputError: no successful release on record, an unknown target, or a service
            with no image on record.
    """
    releases = [r for r in history if r.kind == "release" and r.outcome != "dry-run"]
    done = [r for r in releases if is_committed(r)]
    if not done:
        raise InvalidInputError("environment", "has no successful release on record",
                                fix="nothing to roll back; run a release first")
    last, newest = done[-1], releases[-1]
    if target_release is not None:
        chosen = [r for r in done if r.id == target_release]
        if not chosen:
            raise InvalidInputError(
                "target_release", f"{target_release!r} is not a successful release on record",
                fix=f"use one of {[r.id for r in done][-10:]}")
        images, secrets = dict(chosen[0].images), dict(chosen[0].secrets)
        label, replaced = chosen[0].version, last
    elif newest is not last and newest.outcome in INTERRUPTED:
        images, secrets = _merged(done, "images"), _merged(done, "secrets")
        label, replaced = last.version, newest
    else:
        images = {s: i for s, i in last.previous_images.items() if i and i != "-"}
        secrets = _merged(done[:-1], "secrets")
        label, replaced = f"before {last.version}", last
    specs = catalogue.select(services or [s for s in catalogue.switch_order
                                          if s in replaced.images])
    missing = [s.name for s in specs if s.name not in images]
    if missing:
        raise InvalidInputError("services", f"no image on record to return {missing} to",
                                fix="name a target_release that deployed them")
    return RollbackTarget(label, specs, {s.name: images[s.name] for s in specs},
                          {s.name: secrets[s.name] for s in specs if s.name in secrets},
                          {s.name: replaced.images.get(s.name, "-") for s in specs})


@dataclass(frozen=True)
class RestoreOutcome:
    """Result of restoring one service.

    Attributes:
        service: service name.
        colour: the colour now serving.
        image: its image.
        action: ``already`` (nothing to do), ``switched`` (the old colour was running),
            ``scaled`` (scaled up, then switched), ``redeployed`` (recreated, then switched)
            or ``rolled`` (a canary environment's stable Deployment, rolled back in place).
    """

    service: str
    colour: str
    image: str
    action: str


def restore_service(apps_v1: k8s.AppsV1Api, core_v1: k8s.CoreV1Api, *, env: EnvironmentSpec,
                    spec: ServiceSpec, image: str, secret_name: str | None,
                    release_id: str) -> RestoreOutcome:
    """Put one service back on an image: reuse the idle colour or redeploy it, switch, scale.

    The colour is brought up like a release's (:func:`tasks.release.colours.bring_up_colour`
    with ``reuse``); then the Service selects it and the abandoned colour goes to zero. In a
    canary environment the stable Deployment is rolled back in place instead (action
    ``rolled``): its colour is the one the DestinationRule's ``stable`` subset names, and a
    Service moved to the other colour would leave that subset empty on a real mesh.

    Args:
        apps_v1: apps API.
        core_v1: core API.
        env: the environment.
        spec: the service.
        image: the image to return to.
        secret_name: the Secret it ran with (None keeps the live references).
        release_id: the rollback's id (recorded on a redeployed Deployment).

    Returns:
        What was done.

    Raises:
        ReleaseError: the live Deployment is missing.
        RolloutError: the colour never became ready (traffic was not switched).
    """
    ns = env.namespace
    live = live_colour(read_service(core_v1, ns, spec.service_name), env.colour_label)
    live_dep = read_deployment_or_none(apps_v1, ns, spec.deployment_name(live))
    if live_dep is not None and container_image(live_dep, spec.container) == image:
        return RestoreOutcome(spec.name, live, image, "already")
    if env.strategy == "canary":
        return _roll_stable_back(apps_v1, env=env, spec=spec, live=live, live_dep=live_dep,
                                 image=image, secret_name=secret_name)
    p = bring_up_colour(apps_v1, core_v1, env=env, spec=spec, image=image,
                        secret_name=secret_name, release_id=release_id, reuse=True)
    switch_selector(core_v1, service=spec.name, service_name=spec.service_name, namespace=ns,
                    colour=p.new_colour, colour_label=env.colour_label)
    scale_down(apps_v1, ns, [spec.deployment_name(p.live_colour)])
    get_logger(__name__).info("%s: %s (%s on %s)", spec.name, p.action, image, p.new_colour)
    return RestoreOutcome(spec.name, p.new_colour, image, p.action)


def _roll_stable_back(apps_v1: k8s.AppsV1Api, *, env: EnvironmentSpec, spec: ServiceSpec,
                      live: str, live_dep: k8s.V1Deployment | None, image: str,
                      secret_name: str | None) -> RestoreOutcome:
    """Roll a canary environment's stable Deployment back to ``image`` (a rolling update)."""
    if live_dep is None:
        raise ReleaseError(f"{spec.name}: the Service selects {live} but Deployment "
                           f"{spec.deployment_name(live)} does not exist in {env.namespace}",
                           hint="seed the stable track first")
    deploy_to_staging(apps_v1, namespace=env.namespace, name=spec.deployment_name(live),
                      container=spec.container, image=image, timeout_s=env.rollout_timeout_s,
                      secret_prefix=f"{spec.name}-secrets", secret_name=secret_name)
    get_logger(__name__).info("%s: stable %s rolled back to %s", spec.name, live, image)
    return RestoreOutcome(spec.name, live, image, "rolled")


restore_service_task = task(
    name="restore-service", task_run_name="restore-{spec.name}", retries=2, retry_delay_seconds=1,
    retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE,
)(restore_service)
