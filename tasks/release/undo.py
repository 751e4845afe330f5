"""Staging undo: every service of a release back on the pod template it ran before the release."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kubernetes import client as k8s
from prefect import task
from prefect.cache_policies import NO_CACHE

from errors import VezaOpsError, retry_on_transient
from errors.kubernetes import translate_api_errors
from tasks.release.catalogue import EnvironmentSpec, ServiceSpec
from tasks.release.colours import to_dict
from tasks.release.logs import get_logger
from tasks.release.preflight import live_target
from tasks.release.rollout import wait_for_rollout
from tasks.release.switching import retry_in_body


@dataclass(frozen=True)
class Before:
    """What a service ran before the release touched it: enough to put it back.

    Attributes:
        service: service (catalogue) name.
        deployment: the Deployment the release changes.
        image: the image it ran (for the record).
        template: its whole pod template (image, Secret references...) as an API dict.
    """

    service: str
    deployment: str
    image: str
    template: dict[str, Any]


@dataclass
class UndoReport:
    """What the undo did, per service.

    Attributes:
        restored: service to the image it is back on.
        unchanged: services the release had not changed (nothing to undo).
        failed: service to why it could not be put back (it may still run the new version).
    """

    restored: dict[str, str] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def checks(self, environment: str) -> list[tuple[str, bool, str]]:
        """The record's checks: one per service, ``staging undo <service>``.

        Args:
            environment: the rolling environment.

        Returns:
            (name, passed, detail) per service.
        """
        name = "staging undo {}".format
        return ([(name(s), True, f"{environment}: back on {image}")
                 for s, image in self.restored.items()]
                + [(name(s), True, f"{environment}: never changed") for s in self.unchanged]
                + [(name(s), False, f"{environment}: UNDO FAILED, may still run the new "
                    f"version: {why}") for s, why in self.failed.items()])

    def sentence(self) -> str:
        """One line for the failure's message (empty when nothing had changed).

        Returns:
            e.g. ``staging undone: web back on web:1.0.0; staging undo FAILED for api (...)``.
        """
        parts = []
        if self.restored:
            parts.append("staging undone: " + ", ".join(
                f"{s} back on {image}" for s, image in self.restored.items()))
        if self.failed:
            parts.append("staging undo FAILED for " + ", ".join(
                f"{s} ({why})" for s, why in self.failed.items())
                + ": put it back by hand")
        return "; ".join(parts)


def capture(apps_v1: k8s.AppsV1Api, core_v1: k8s.CoreV1Api, env: EnvironmentSpec,
            specs: list[ServiceSpec]) -> list[Before]:
    """Read what each service runs now, before the release changes anything.

    The undo puts this template back, rather than the ReplicaSet of the previous revision
    (``kubectl rollout undo``): that needs a second revision to exist, and would pick the
    wrong one when the release's own patch never applied.

    Args:
        apps_v1: apps API.
        core_v1: core API.
        env: the rolling environment.
        specs: the services of the release.

    Returns:
        One entry per service, in order.
    """
    befores = []
    for spec in specs:
        target, deployment = live_target(core_v1, apps_v1, env, spec)
        template = to_dict(apps_v1.api_client, deployment)["spec"]["template"]
        befores.append(Before(spec.name, target.deployment, target.image or "-", template))
    return befores


def tell_with(cause: BaseException, sentence: str) -> None:
    """Add a sentence to a failure's message, keeping the failure itself (type, hint, cause).

    The run still fails with the original error; what was done after it (the undo) is told in
    the same message, so the record's reason, the report and Slack carry both.

    Args:
        cause: the failure.
        sentence: what to add (nothing when empty).
    """
    if not sentence:
        return
    if isinstance(cause, VezaOpsError):  # its str() is "message -- hint" (errors.VezaOpsError)
        cause.message = f"{cause.message}; {sentence}"
        cause.args = (f"{cause.message} -- {cause.hint}" if cause.hint else cause.message,)
    else:
        cause.add_note(sentence)


capture_task = task(name="staging-capture", cache_policy=NO_CACHE, retries=3,
                    retry_delay_seconds=1, retry_condition_fn=retry_on_transient)(capture)


def restore_template(apps_v1: k8s.AppsV1Api, namespace: str, before: Before) -> bool:
    """Put a Deployment's pod template back unless it is already there (idempotent).

    The replace carries the resourceVersion read: a concurrent change is a conflict (retried
    by the caller), never overwritten blindly.

    Args:
        apps_v1: apps API.
        namespace: the namespace.
        before: what to put back.

    Returns:
        True when the template was replaced, False when it already was the previous one.
    """
    name = before.deployment
    with translate_api_errors(f"read deployment {namespace}/{name}"):
        current = apps_v1.read_namespaced_deployment(name, namespace)
    body = to_dict(apps_v1.api_client, current)
    if body.get("spec", {}).get("template") == before.template:
        return False
    body.pop("status", None)
    body["spec"]["template"] = copy.deepcopy(before.template)
    with translate_api_errors(f"undo deployment {namespace}/{name}"):
        apps_v1.replace_namespaced_deployment(name, namespace, body)  # type: ignore[arg-type]
    return True


def undo_staging(apps_v1: k8s.AppsV1Api, namespace: str, befores: list[Before], *,
                 deadline_s: float, rollout_timeout_s: float, wait: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> UndoReport:
    """Put every service back on what it ran before; never raises (failures are reported).

    Each write is retried on transient errors until ``deadline_s`` from the start (shared by
    the services; each gets one try at least). Services the release never changed are left
    alone. Then, when ``wait``, each restored Deployment's rollout is awaited: a restore that
    does not become ready is a failure too.

    Args:
        apps_v1: apps API.
        namespace: the rolling environment's namespace.
        befores: what each service ran (from :func:`capture`).
        deadline_s: how long the writes are retried (the environment's ``undo_deadline_s``).
        rollout_timeout_s: how long each restored rollout may take.
        wait: wait for the restored rollouts (not on a cancel: the process is going away).
        clock: monotonic clock.

    Returns:
        The report.
    """
    log = get_logger(__name__)
    report = UndoReport()
    deadline = clock() + deadline_s
    for b in befores:
        try:
            changed = retry_in_body(partial(restore_template, apps_v1, namespace, b),
                                    deadline=deadline, clock=clock)
        except Exception as exc:  # reported beside the run's cause, never instead of it
            report.failed[b.service] = getattr(exc, "message", type(exc).__name__)
            log.error("staging undo of %s FAILED: %s", b.deployment, report.failed[b.service])
            continue
        if changed:
            report.restored[b.service] = b.image
            log.warning("staging: %s put back on %s", b.deployment, b.image)
        else:
            report.unchanged.append(b.service)
    for b in [b for b in befores if b.service in report.restored] if wait else []:
        try:
            wait_for_rollout(apps_v1, namespace, b.deployment, rollout_timeout_s)
        except VezaOpsError as exc:
            del report.restored[b.service]
            report.failed[b.service] = f"put back on {b.image} but not ready: {exc.message}"
            log.error("staging undo of %s: %s", b.deployment, report.failed[b.service])
    return report


undo_staging_task = task(name="staging-undo", cache_policy=NO_CACHE)(undo_staging)
