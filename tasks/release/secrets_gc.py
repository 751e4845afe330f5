"""Garbage collection of content-named Secrets no Deployment, pod or recent release refers to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from prefect import task
from prefect.cache_policies import NO_CACHE

from errors import NotFoundError, VezaOpsError, retry_on_transient
from errors.kubernetes import translate_api_errors
from tasks.release.clusters import Cluster
from tasks.release.colours import to_dict
from tasks.release.history import ReleaseRecord, release_history
from tasks.release.logs import get_logger
from tasks.release.report import ReleaseReport
from tasks.release.secrets import (
    HASH_ANNOTATION,
    LEGACY_HASH_ANNOTATION,
    MANAGED_BY,
    NAMING_KEY_SECRET,
)

CONTENT_ANNOTATIONS = (HASH_ANNOTATION, LEGACY_HASH_ANNOTATION)


def pod_spec_secrets(pod_spec: dict[str, Any]) -> set[str]:
    """Every Secret a pod spec refers to (pure; API dict, camelCase).

    Args:
        pod_spec: a pod's or a pod template's ``spec``.

    Returns:
        Names from ``envFrom``, ``env[].valueFrom.secretKeyRef``, secret and projected
        volumes, and ``imagePullSecrets``.
    """
    names: set[str] = set()
    for c in (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or []):
        names |= {(e.get("secretRef") or {}).get("name", "") for e in c.get("envFrom") or []}
        names |= {((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name", "")
                  for e in c.get("env") or []}
    for v in pod_spec.get("volumes") or []:
        names.add((v.get("secret") or {}).get("secretName", ""))
        names |= {(s.get("secret") or {}).get("name", "")
                  for s in (v.get("projected") or {}).get("sources") or []}
    names |= {ref.get("name", "") for ref in pod_spec.get("imagePullSecrets") or []}
    return names - {""}


def recorded_secrets(records: list[ReleaseRecord], keep_releases: int) -> set[str]:
    """Secrets the last ``keep_releases`` committed runs used, and the newest run's (pure).

    A rollback redeploys a committed release's recorded Secrets, so those stay.

    Args:
        records: the environment's history, oldest first.
        keep_releases: how many committed (``succeeded``) records count.

    Returns:
        Secret names.
    """
    committed = [r for r in records if r.outcome == "succeeded"][-keep_releases:]
    newest = records[-1:]
    return {name for r in committed + newest for name in r.secrets.values()}


def garbage(candidates: Iterable[str], in_use: set[str], recorded: set[str]) -> list[str]:
    """The candidates neither in use nor recorded (pure).

    Args:
        candidates: content-named Secrets veza-ops created.
        in_use: Secrets a Deployment or pod refers to.
        recorded: Secrets of the recent releases.

    Returns:
        Names to delete, sorted.
    """
    return sorted(set(candidates) - in_use - recorded - {NAMING_KEY_SECRET})


@dataclass
class Collected:
    """What a collection did.

    Attributes:
        deleted: Secrets deleted.
        kept: content-named Secrets kept (in use or recorded).
        failed: Secret to why it could not be deleted.
    """

    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def collect_secrets(core_v1: client.CoreV1Api, apps_v1: client.AppsV1Api, namespace: str, *,
                    keep_releases: int) -> Collected:
    """Delete the content-named Secrets of a namespace that nothing uses any more.

    Candidates are Secrets veza-ops created with a content annotation (keyed or legacy
    names), never the naming key, never a Secret another tool manages. A candidate is kept
    while any Deployment's template (any colour, scaled down or not) or any pod refers to it,
    or while one of the last ``keep_releases`` committed releases recorded it. The Secrets are
    listed first, then what uses them: a Secret made after the listing is never a candidate.
    ReplicaSets are not looked at: a ``kubectl rollout undo`` by hand to a revision older
    than the kept releases may find its Secret gone.

    Args:
        core_v1: core API.
        apps_v1: apps API.
        namespace: the environment's namespace.
        keep_releases: the environment's ``secrets_keep_releases``.

    Returns:
        What was deleted and kept.
    """
    api = core_v1.api_client
    selector = f"app.kubernetes.io/managed-by={MANAGED_BY}"
    with translate_api_errors(f"list Secrets in {namespace}"):
        secrets = core_v1.list_namespaced_secret(namespace, label_selector=selector).items
    candidates = [str(s.metadata.name) for s in secrets if s.metadata and any(
        a in (s.metadata.annotations or {}) for a in CONTENT_ANNOTATIONS)]
    with translate_api_errors(f"list Deployments in {namespace}"):
        deployments = apps_v1.list_namespaced_deployment(namespace).items
    with translate_api_errors(f"list pods in {namespace}"):
        pods = core_v1.list_namespaced_pod(namespace).items
    in_use: set[str] = set()
    for d in deployments:
        in_use |= pod_spec_secrets(to_dict(api, d)["spec"]["template"].get("spec") or {})
    for p in pods:
        in_use |= pod_spec_secrets(to_dict(api, p).get("spec") or {})
    recorded = recorded_secrets(release_history(core_v1, namespace), keep_releases)
    result = Collected(kept=sorted(set(candidates) & (in_use | recorded)))
    log = get_logger(__name__)
    for name in garbage(candidates, in_use, recorded):
        try:
            with translate_api_errors(f"delete Secret {name} in {namespace}"):
                core_v1.delete_namespaced_secret(name, namespace)
        except NotFoundError:
            pass
        except VezaOpsError as exc:
            result.failed[name] = exc.message
            continue
        result.deleted.append(name)
        log.info("secrets: deleted %s from %s (no longer used)", name, namespace)
    return result


collect_secrets_task = task(name="collect-secrets", cache_policy=NO_CACHE, retries=2,
                            retry_delay_seconds=2, retry_condition_fn=retry_on_transient,
                            )(collect_secrets)


def collect_unused_secrets(clusters: list[Cluster], report: ReleaseReport) -> None:
    """After a successful release, collect each environment's unused Secrets (never fails it).

    Args:
        clusters: the environments the release changed.
        report: the run's report (one check per environment; a failure is a warning).
    """
    for c in clusters:
        try:
            done = collect_secrets_task(c.core_v1, c.apps_v1, c.env.namespace,
                                        keep_releases=c.env.secrets_keep_releases)
        except Exception as exc:  # a success stays a success; the leftover is named
            report.warn(f"unused Secrets of {c.env.name} not collected: "
                        f"{getattr(exc, 'message', type(exc).__name__)}")
            continue
        deleted = ", ".join(done.deleted) or "none"
        report.check(f"secrets gc {c.env.name}", not done.failed,
                     f"deleted {deleted}; kept {len(done.kept)}"
                     + (f"; NOT deleted: {done.failed}" if done.failed else ""))
