"""The ReplicaSet controller: create and delete pods to match replicas, report status."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sandbox.k8s.controllers.base import Controller, Key
from sandbox.k8s.controllers.events import EventRecorder
from sandbox.k8s.errors import AlreadyExists, NotFound
from sandbox.k8s.resources import PODS, REPLICASETS, Resource
from sandbox.k8s.selectors import selector_from_dict
from sandbox.k8s.store import Store

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def controller_uid(obj: dict[str, Any]) -> str | None:
    """The uid of the object's controlling owner.

    Args:
        obj: any object.

    Returns:
        The uid, or None.
    """
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    """A controlling ownerReference pointing at ``owner``.

    Args:
        owner: the owning object.

    Returns:
        The reference.
    """
    return {
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": True, "blockOwnerDeletion": True,
    }  # fmt: skip


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def pod_ready(pod: dict[str, Any]) -> bool:
    """Whether the pod's Ready condition is True.

    Args:
        pod: the Pod.

    Returns:
        True when ready.
    """
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def pod_available(pod: dict[str, Any], min_ready_seconds: int, now: float) -> bool:
    """Whether the pod has been ready for at least ``min_ready_seconds``.

    Args:
        pod: the Pod.
        min_ready_seconds: the workload's minReadySeconds.
        now: epoch seconds.

    Returns:
        True when available.
    """
    if not pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            since = _parse_time(cond.get("lastTransitionTime"))
            return since is not None and now - since >= min_ready_seconds
    return False


def _deletion_rank(pod: dict[str, Any]) -> tuple[int, int, int, str]:
    """Sort key for scale-down: unscheduled/pending, then not ready, then restarts, newest first."""
    status = pod.get("status") or {}
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(str(status.get("phase")), 0)
    restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or [])
    created = str(pod["metadata"].get("creationTimestamp") or "")
    return (
        phase_rank,
        1 if pod_ready(pod) else 0,
        -restarts,
        "".join(chr(255 - ord(c)) for c in created),
    )


class ReplicaSetController(Controller):
    """Keeps each ReplicaSet's pods at ``spec.replicas``."""

    name = "replicaset-controller"
    resync_seconds = 2.0

    def __init__(self, store: Store, *, events: EventRecorder) -> None:
        super().__init__(store)
        self.events = events

    def keys_for(self, event: str, res: Resource, obj: dict[str, Any]) -> Iterable[Key]:  # noqa: D102
        meta = obj.get("metadata") or {}
        if res.plural == REPLICASETS.plural and res.group == REPLICASETS.group:
            return ((str(meta.get("namespace")), str(meta.get("name"))),)
        if res.plural == PODS.plural:
            return (
                (str(meta.get("namespace")), str(ref.get("name")))
                for ref in meta.get("ownerReferences") or []
                if ref.get("kind") == "ReplicaSet" and ref.get("controller")
            )
        return ()

    def all_keys(self) -> Iterable[Key]:  # noqa: D102
        items, _ = self.store.list(REPLICASETS, copy=False)
        return [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items]

    def owned_pods(self, rs: dict[str, Any]) -> list[dict[str, Any]]:
        """Pods controlled by ``rs`` (not being deleted).

        Args:
            rs: the ReplicaSet.

        Returns:
            The stored pods themselves (not copies: every reconcile lists them, and copying
            was most of this controller's CPU): read them, never change them.
        """
        pods, _ = self.store.list(PODS, rs["metadata"]["namespace"], copy=False)
        uid = rs["metadata"]["uid"]
        return [
            p for p in pods
            if controller_uid(p) == uid and not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]  # fmt: skip

    def reconcile(self, key: Key) -> None:  # noqa: D102
        rs = self.store.get(REPLICASETS, *key)
        if rs["metadata"].get("deletionTimestamp"):
            return
        pods = self.owned_pods(rs)
        want = int(rs["spec"].get("replicas", 1))
        if len(pods) < want:
            for _ in range(want - len(pods)):
                pods.append(self._create_pod(rs))
        elif len(pods) > want:
            doomed = sorted(pods, key=_deletion_rank)[: len(pods) - want]
            for pod in doomed:
                try:
                    self.store.delete(PODS, key[0], pod["metadata"]["name"])
                except NotFound:
                    pass
                self.events.record(
                    rs, reason="SuccessfulDelete", component="replicaset-controller",
                    message=f"Deleted pod: {pod['metadata']['name']}",
                )  # fmt: skip
            names = {p["metadata"]["name"] for p in doomed}
            pods = [p for p in pods if p["metadata"]["name"] not in names]
        self._update_status(rs, pods)

    def _create_pod(self, rs: dict[str, Any]) -> dict[str, Any]:
        template = copy.deepcopy(rs["spec"].get("template") or {})
        meta = template.get("metadata") or {}
        for _ in range(10):
            name = f"{rs['metadata']['name']}-" + "".join(random.choices(_NAME_CHARS, k=5))
            pod: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": rs["metadata"]["namespace"],
                    "generateName": f"{rs['metadata']['name']}-",
                    "labels": dict(meta.get("labels") or {}),
                    "annotations": dict(meta.get("annotations") or {}),
                    "ownerReferences": [owner_ref(rs)],
                },
                "spec": {**(template.get("spec") or {}), "nodeName": "sandbox"},
            }
            if not pod["metadata"]["annotations"]:
                del pod["metadata"]["annotations"]
            try:
                created = self.store.create(PODS, rs["metadata"]["namespace"], pod)
            except AlreadyExists:
                continue
            self.events.record(
                rs, reason="SuccessfulCreate", component="replicaset-controller",
                message=f"Created pod: {name}",
            )  # fmt: skip
            return created
        raise AlreadyExists("pods", f"{rs['metadata']['name']}-?????")

    def _update_status(self, rs: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        now = datetime.now(UTC).timestamp()
        min_ready = int(rs["spec"].get("minReadySeconds") or 0)
        matches = selector_from_dict((rs["spec"].get("selector")) or {})
        template_labels = ((rs["spec"].get("template") or {}).get("metadata") or {}).get(
            "labels"
        ) or {}
        status: dict[str, Any] = {"replicas": len(pods)}
        counts = {
            "fullyLabeledReplicas": sum(
                1 for p in pods
                if all((p["metadata"].get("labels") or {}).get(k) == v
                       for k, v in template_labels.items())
                and matches(p["metadata"].get("labels") or {})
            ),
            "readyReplicas": sum(1 for p in pods if pod_ready(p)),
            "availableReplicas": sum(1 for p in pods if pod_available(p, min_ready, now)),
            "observedGeneration": int(rs["metadata"].get("generation") or 1),
        }  # fmt: skip
        status.update({k: v for k, v in counts.items() if v})

        def apply(obj: dict[str, Any]) -> None:
            if obj["metadata"].get("uid") == rs["metadata"]["uid"]:
                conditions = (obj.get("status") or {}).get("conditions")
                obj["status"] = dict(status, **({"conditions": conditions} if conditions else {}))

        self.store.mutate(
            REPLICASETS,
            *(rs["metadata"]["namespace"], rs["metadata"]["name"]),
            apply,
            subresource="status",
        )
