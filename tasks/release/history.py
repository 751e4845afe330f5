"""Release history in the cluster (ConfigMap ``veza-ops-releases``), newest N, and as markdown."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from kubernetes import client
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field, ValidationError

from errors import ConflictError, NotFoundError, TransientSystemError, retry_on_transient
from errors.kubernetes import translate_api_errors
from tasks.release.catalogue import EnvironmentSpec
from tasks.release.clusters import kubernetes_client
from tasks.release.logs import get_logger

CONFIGMAP_NAME = "veza-ops-releases"
DEFAULT_KEEP = 50
Outcome = Literal["running", "succeeded", "failed", "rolled-back", "rollback-incomplete",
                  "dry-run", "crashed", "cancelled"]


class CheckRecord(BaseModel):
    """One check of a release (preflight item, smoke test, analysis interval...)."""

    name: str
    passed: bool
    detail: str = ""


class ReleaseRecord(BaseModel):
    """What a release (or rollback) did: who, what, when, and how it ended."""

    id: str = Field(pattern=r"^[-._a-zA-Z0-9]{1,200}$", description="ConfigMap key; sortable.")
    kind: Literal["release", "rollback"] = "release"
    environment: str
    version: str
    images: dict[str, str] = Field(default_factory=dict, description="service -> new image")
    previous_images: dict[str, str] = Field(default_factory=dict)
    previous_colours: dict[str, str] = Field(default_factory=dict)
    colours: dict[str, str] = Field(default_factory=dict, description="service -> live colour")
    secrets: dict[str, str] = Field(default_factory=dict, description="service -> Secret name")
    triggered_by: str = "unknown"
    flow_run_id: str | None = None
    commit_sha: str | None = Field(default=None, description="the released commit (from CI)")
    commit_timestamp: datetime | None = Field(
        default=None, description="when it was committed (from CI): the lead time's start")
    started_at: datetime
    finished_at: datetime | None = None
    outcome: Outcome = "running"
    reason: str | None = None
    checks: list[CheckRecord] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict, description="step -> seconds")

    @staticmethod
    def new_id(started_at: datetime, suffix: str = "") -> str:
        """A sortable id: ``YYYYmmddTHHMMSSZ`` plus an optional suffix.

        Args:
            started_at: when the release started.
            suffix: e.g. the first 8 characters of the flow run id.

        Returns:
            The id.
        """
        stamp = started_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        return f"{stamp}-{suffix}" if suffix else stamp

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish, when finished."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_markdown(self) -> str:
        """Render the record for a Prefect artifact.

        Returns:
            Markdown text.
        """
        duration = f"{self.duration_s:.1f} s" if self.duration_s is not None else "-"
        lines = [
            f"# {self.kind.capitalize()} {self.version} to {self.environment}: {self.outcome}",
            "",
            f"- id: `{self.id}`",
            f"- triggered by: {self.triggered_by}",
            f"- commit: {self.commit_sha or '-'}"
            + (f" ({self.commit_timestamp.isoformat()})" if self.commit_timestamp else ""),
            f"- started: {self.started_at.isoformat()}",
            f"- finished: {self.finished_at.isoformat() if self.finished_at else '-'}",
            f"- duration: {duration}",
        ]
        if self.reason:
            lines.append(f"- reason: {self.reason}")
        services = sorted(set(self.images) | set(self.previous_images))
        if services:
            lines += [
                "",
                "| service | image | previous image | colour | previous colour |",
                "|---|---|---|---|---|",
            ]
            for name in services:
                lines.append(
                    f"| {name} | {self.images.get(name, '-')} | "
                    f"{self.previous_images.get(name, '-')} | {self.colours.get(name, '-')} | "
                    f"{self.previous_colours.get(name, '-')} |"
                )
        if self.checks:
            lines += ["", "| check | result | detail |", "|---|---|---|"]
            for check in self.checks:
                mark = "pass" if check.passed else "FAIL"
                lines.append(f"| {check.name} | {mark} | {check.detail.replace('|', '/')} |")
        if self.timings:
            lines += ["", "| step | seconds |", "|---|---|"]
            lines += [f"| {step} | {sec:.1f} |" for step, sec in self.timings.items()]
        return "\n".join(lines) + "\n"


def _configmap_body(namespace: str, data: dict[str, str], version: str | None) -> Any:
    return client.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=client.V1ObjectMeta(
            name=CONFIGMAP_NAME,
            namespace=namespace,
            resource_version=version,
            labels={"app.kubernetes.io/managed-by": "veza-ops"},
        ),
        data=data,
    )


def record_release(
    core_v1: client.CoreV1Api,
    namespace: str,
    record: ReleaseRecord,
    *,
    keep: int = DEFAULT_KEEP,
    attempts: int = 5,
) -> None:
    """Write (or update) a release record in the history ConfigMap, keeping the newest ``keep``.

    Args:
        core_v1: Kubernetes core API.
        namespace: the environment's namespace.
        record: the record; its id is the key (same id = update).
        keep: how many records to keep.
        attempts: optimistic-concurrency attempts (resourceVersion-guarded replace).

    Raises:
        TransientSystemError: the ConfigMap kept changing under us.
    """
    value = record.model_dump_json()
    for _ in range(attempts):
        try:
            with translate_api_errors(f"read ConfigMap {CONFIGMAP_NAME} in {namespace}"):
                current = core_v1.read_namespaced_config_map(CONFIGMAP_NAME, namespace)
        except NotFoundError:
            try:
                with translate_api_errors(f"create ConfigMap {CONFIGMAP_NAME} in {namespace}"):
                    core_v1.create_namespaced_config_map(
                        namespace, _configmap_body(namespace, {record.id: value}, None)
                    )
            except ConflictError:
                continue
            get_logger(__name__).info("records: %s recorded in %s", record.id, namespace)
            return
        data = dict(current.data or {})
        data[record.id] = value
        for old in sorted(data)[:-keep] if len(data) > keep else []:
            del data[old]
        rv = current.metadata.resource_version if current.metadata else None
        try:
            with translate_api_errors(f"update ConfigMap {CONFIGMAP_NAME} in {namespace}"):
                core_v1.replace_namespaced_config_map(
                    CONFIGMAP_NAME, namespace, _configmap_body(namespace, data, rv)
                )
        except ConflictError:
            continue
        get_logger(__name__).info("records: %s recorded in %s", record.id, namespace)
        return
    raise TransientSystemError(
        "kubernetes", f"ConfigMap {CONFIGMAP_NAME} in {namespace} kept changing", hint="retry"
    )


def release_history(core_v1: client.CoreV1Api, namespace: str) -> list[ReleaseRecord]:
    """Every readable record, oldest first (unreadable entries are skipped and logged).

    Args:
        core_v1: Kubernetes core API.
        namespace: the environment's namespace.

    Returns:
        The records by start time, then id: ids carry the start to the second only, and
        two runs started in the same second (a release refused at once, then a rollback)
        must not be ordered by their random suffixes.
    """
    try:
        with translate_api_errors(f"read ConfigMap {CONFIGMAP_NAME} in {namespace}"):
            current = core_v1.read_namespaced_config_map(CONFIGMAP_NAME, namespace)
    except NotFoundError:
        return []
    records: list[ReleaseRecord] = []
    for key in sorted(current.data or {}):
        try:
            records.append(ReleaseRecord.model_validate(json.loads((current.data or {})[key])))
        except (ValueError, ValidationError):
            get_logger(__name__).warning(
                "records: entry %s in %s is unreadable; skipped", key, namespace
            )
    return sorted(records, key=lambda r: (r.started_at, r.id))


def last_release(
    core_v1: client.CoreV1Api,
    namespace: str,
    *,
    outcome: Outcome | None = None,
    kind: Literal["release", "rollback"] | None = None,
) -> ReleaseRecord | None:
    """The newest record, optionally with a given outcome or kind.

    Args:
        core_v1: Kubernetes core API.
        namespace: the environment's namespace.
        outcome: only records with this outcome.
        kind: only releases or only rollbacks.

    Returns:
        The record, or None.
    """
    for record in reversed(release_history(core_v1, namespace)):
        if (outcome is None or record.outcome == outcome) and (kind is None or record.kind == kind):
            return record
    return None


def environment_history(env: EnvironmentSpec) -> list[ReleaseRecord]:
    """Every readable record of an environment, from its Kubernetes block (loaded here).

    Args:
        env: the environment of the catalogue.

    Returns:
        The records, oldest first.
    """
    with kubernetes_client(env) as api:
        return release_history(client.CoreV1Api(api), env.namespace)


record_release_task = task(
    name="record-release",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_transient,
)(record_release)
release_history_task = task(
    name="release-history", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=2,
    retry_condition_fn=retry_on_transient,
)(release_history)
environment_history_task = task(
    name="environment-history", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=2,
    retry_condition_fn=retry_on_transient,
)(environment_history)
