"""The Deployment controller: ReplicaSets by pod-template hash, rollouts, revisions and status."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from sandbox.k8s.controllers import conditions as c
from sandbox.k8s.controllers.base import Controller, Key
from sandbox.k8s.controllers.events import EventRecorder
from sandbox.k8s.controllers.replicasets import controller_uid, owner_ref
from sandbox.k8s.controllers.rolling import (
    RsCounts,
    new_rs_replicas,
    old_rs_scale_down,
    resolve_fenceposts,
)
from sandbox.k8s.errors import AlreadyExists, NotFound
from sandbox.k8s.resources import DEPLOYMENTS, REPLICASETS, Resource
from sandbox.k8s.store import Store

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
_NOT_COPIED = {
    "kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
    DESIRED, MAX_REPLICAS, "deprecated.deployment.rollback.to",
}  # fmt: skip
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
Obj = dict[str, Any]


def pod_template_hash(template: Obj, collision_count: int = 0) -> str:
    """The ``pod-template-hash`` of a template: FNV-32a, then ``rand.SafeEncodeString``.

    Args:
        template: the pod template (without the hash label).
        collision_count: status.collisionCount of the Deployment.

    Returns:
        The hash, e.g. ``"7d4b9c8f5"``.
    """
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += collision_count.to_bytes(4, "little")
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_ALPHANUMS[ord(ch) % len(_ALPHANUMS)] for ch in str(value))


def template_without_hash(template: Obj) -> Obj:
    """A copy of ``template`` with the pod-template-hash label removed (``EqualIgnoreHash``).

    Args:
        template: a pod template.

    Returns:
        The copy.
    """
    out = copy.deepcopy(template)
    labels = (out.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return out


def revision_of(rs: Obj) -> int:
    """The ``deployment.kubernetes.io/revision`` of a ReplicaSet (0 when missing).

    Args:
        rs: the ReplicaSet.

    Returns:
        The revision.
    """
    value = ((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION, "0")
    return int(value) if str(value).isdigit() else 0


def _replicas(rs: Obj) -> int:
    return int((rs.get("spec") or {}).get("replicas") or 0)


def _status_int(rs: Obj, key: str) -> int:
    return int((rs.get("status") or {}).get(key) or 0)


class DeploymentController(Controller):
    """Reconciles Deployments into ReplicaSets, like kube-controller-manager's."""

    name = "deployment-controller"
    resync_seconds = 1.0

    def __init__(self, store: Store, *, events: EventRecorder) -> None:
        super().__init__(store)
        self.events = events

    def keys_for(self, event: str, res: Resource, obj: Obj) -> Iterable[Key]:  # noqa: D102
        meta = obj.get("metadata") or {}
        if res == DEPLOYMENTS:
            return ((str(meta.get("namespace")), str(meta.get("name"))),)
        if res == REPLICASETS:
            return (
                (str(meta.get("namespace")), str(ref.get("name")))
                for ref in meta.get("ownerReferences") or []
                if ref.get("kind") == "Deployment" and ref.get("controller")
            )
        return ()

    def all_keys(self) -> Iterable[Key]:  # noqa: D102
        items, _ = self.store.list(DEPLOYMENTS, copy=False)
        return [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items]

    # ------------------------------------------------------------------------------------------
    def reconcile(self, key: Key) -> None:  # noqa: D102
        d = self.store.get(DEPLOYMENTS, *key)
        if d["metadata"].get("deletionTimestamp"):
            return
        spec = d["spec"]
        if not (spec.get("selector") or {}).get("matchLabels") and not (
            spec.get("selector") or {}
        ).get("matchExpressions"):
            return
        all_rs, _ = self.store.list(REPLICASETS, key[0])
        owned = [rs for rs in all_rs if controller_uid(rs) == d["metadata"]["uid"]]
        owned.sort(key=lambda rs: (rs["metadata"].get("creationTimestamp", ""), revision_of(rs)))
        template = template_without_hash(spec.get("template") or {})
        new_rs = next(
            (
                rs
                for rs in owned
                if template_without_hash(rs["spec"].get("template") or {}) == template
            ),
            None,
        )
        old = [
            rs
            for rs in owned
            if new_rs is None or rs["metadata"]["uid"] != new_rs["metadata"]["uid"]
        ]
        status = copy.deepcopy(d.get("status") or {})
        previous = copy.deepcopy(status)
        paused = bool(spec.get("paused"))
        self._paused_conditions(status, paused)
        replicas = int(spec.get("replicas", 1))
        if paused:
            if new_rs is not None and not any(_replicas(rs) for rs in old):
                new_rs = self._scale(d, new_rs, replicas)
        elif (spec.get("strategy") or {}).get("type") == "Recreate":
            new_rs, old = self._recreate(d, status, new_rs, old)
        else:
            new_rs, old = self._rolling(d, status, new_rs, old)
        self._finish(d, status, previous, new_rs, old)

    def _paused_conditions(self, status: Obj, paused: bool) -> None:
        cond = c.get_condition(status, c.PROGRESSING)
        if paused and (cond is None or cond.get("reason") != c.PAUSED):
            c.set_condition(
                status, c.new_condition(c.PROGRESSING, "Unknown", c.PAUSED, "Deployment is paused")
            )
        elif not paused and cond is not None and cond.get("reason") == c.PAUSED:
            c.set_condition(
                status,
                c.new_condition(c.PROGRESSING, "Unknown", c.RESUMED, "Deployment is resumed"),
            )

    def _rolling(
        self, d: Obj, status: Obj, new_rs: Obj | None, old: list[Obj]
    ) -> tuple[Obj, list[Obj]]:
        spec = d["spec"]
        replicas = int(spec.get("replicas", 1))
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        surge, unavailable = resolve_fenceposts(
            rolling.get("maxSurge"), rolling.get("maxUnavailable"), replicas
        )
        current = sum(_replicas(rs) for rs in old) + (_replicas(new_rs) if new_rs else 0)
        if new_rs is None:
            start = new_rs_replicas(
                replicas=replicas, max_surge=surge, current_pods=current, new_rs_replicas=0
            )
            new_rs = self._create_rs(d, status, old, start)
        else:
            new_rs = self._adopt_revision(d, status, new_rs, old)
            if not any(_replicas(rs) for rs in old):
                target = replicas
            else:
                target = new_rs_replicas(
                    replicas=replicas, max_surge=surge, current_pods=current,
                    new_rs_replicas=_replicas(new_rs),
                )  # fmt: skip
                target = min(target, replicas) if _replicas(new_rs) > replicas else target
            new_rs = self._scale(d, new_rs, target)
        downs = old_rs_scale_down(
            replicas=replicas,
            max_unavailable=min(unavailable, replicas),
            new_spec_replicas=_replicas(new_rs),
            new_available=_status_int(new_rs, "availableReplicas"),
            old=[
                RsCounts(
                    rs["metadata"]["name"], _replicas(rs), _status_int(rs, "availableReplicas")
                )
                for rs in old
            ],
        )
        old = [
            self._scale(d, rs, downs[rs["metadata"]["name"]])
            if rs["metadata"]["name"] in downs
            else rs
            for rs in old
        ]
        return new_rs, old

    def _recreate(
        self, d: Obj, status: Obj, new_rs: Obj | None, old: list[Obj]
    ) -> tuple[Obj | None, list[Obj]]:
        old = [self._scale(d, rs, 0) if _replicas(rs) else rs for rs in old]
        if any(_status_int(rs, "replicas") for rs in old):
            return new_rs, old  # wait for the old pods to be gone
        replicas = int(d["spec"].get("replicas", 1))
        if new_rs is None:
            return self._create_rs(d, status, old, replicas), old
        new_rs = self._adopt_revision(d, status, new_rs, old)
        return self._scale(d, new_rs, replicas), old

    # ------------------------------------------------------------------------------------------
    def _rs_annotations(self, d: Obj, revision: int) -> dict[str, str]:
        annotations = {
            k: v
            for k, v in (d["metadata"].get("annotations") or {}).items()
            if k not in _NOT_COPIED
        }
        annotations[REVISION] = str(revision)
        annotations[DESIRED] = str(int(d["spec"].get("replicas", 1)))
        rolling = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        replicas = int(d["spec"].get("replicas", 1))
        surge = 0
        if (d["spec"].get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate":
            surge, _ = resolve_fenceposts(
                rolling.get("maxSurge"), rolling.get("maxUnavailable"), replicas
            )
        annotations[MAX_REPLICAS] = str(replicas + surge)
        return annotations

    def _create_rs(self, d: Obj, status: Obj, old: list[Obj], replicas: int) -> Obj:
        namespace, name = d["metadata"]["namespace"], d["metadata"]["name"]
        revision = max((revision_of(rs) for rs in old), default=0) + 1
        template = template_without_hash(d["spec"].get("template") or {})
        while True:
            collisions = int(status.get("collisionCount") or 0)
            hash_ = pod_template_hash(template, collisions)
            rs_template = copy.deepcopy(template)
            rs_template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = hash_
            selector = copy.deepcopy(d["spec"]["selector"])
            selector.setdefault("matchLabels", {})[HASH_LABEL] = hash_
            labels = dict((template.get("metadata") or {}).get("labels") or {})
            labels[HASH_LABEL] = hash_
            rs = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{name}-{hash_}",
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": self._rs_annotations(d, revision),
                    "ownerReferences": [owner_ref(d)],
                },
                "spec": {
                    "replicas": replicas,
                    "minReadySeconds": int(d["spec"].get("minReadySeconds") or 0),
                    "selector": selector,
                    "template": rs_template,
                },
            }
            try:
                created = self.store.create(REPLICASETS, namespace, rs)
                break
            except AlreadyExists:
                existing = self.store.get(REPLICASETS, namespace, f"{name}-{hash_}")
                if (
                    controller_uid(existing) == d["metadata"]["uid"]
                    and template_without_hash(existing["spec"].get("template") or {}) == template
                ):
                    return existing
                status["collisionCount"] = collisions + 1
        c.set_condition(
            status,
            c.new_condition(
                c.PROGRESSING,
                "True",
                c.NEW_RS_CREATED,
                f'Created new replica set "{created["metadata"]["name"]}"',
            ),
        )
        self._set_deployment_revision(d, revision)
        if replicas:
            self._scaled_event(d, created["metadata"]["name"], 0, replicas)
        return created

    def _adopt_revision(self, d: Obj, status: Obj, new_rs: Obj, old: list[Obj]) -> Obj:
        """Give a re-used ReplicaSet the next revision (rollout undo) and record it."""
        wanted = max((revision_of(rs) for rs in old), default=0) + 1
        current = revision_of(new_rs)
        if current < wanted:

            def apply(rs: Obj) -> None:
                annotations = rs["metadata"].setdefault("annotations", {})
                history = [h for h in str(annotations.get(REVISION_HISTORY, "")).split(",") if h]
                if current:
                    history.append(str(current))
                annotations[REVISION] = str(wanted)
                if history:
                    annotations[REVISION_HISTORY] = ",".join(history)

            new_rs = self.store.mutate(
                REPLICASETS, new_rs["metadata"]["namespace"], new_rs["metadata"]["name"], apply
            )
        min_ready = int(d["spec"].get("minReadySeconds") or 0)
        if int(new_rs["spec"].get("minReadySeconds") or 0) != min_ready:

            def set_min_ready(rs: Obj) -> None:
                rs["spec"]["minReadySeconds"] = min_ready

            new_rs = self.store.mutate(
                REPLICASETS,
                new_rs["metadata"]["namespace"],
                new_rs["metadata"]["name"],
                set_min_ready,
            )
        if c.get_condition(status, c.PROGRESSING) is None:
            c.set_condition(
                status,
                c.new_condition(
                    c.PROGRESSING,
                    "True",
                    c.FOUND_NEW_RS,
                    f'Found new replica set "{new_rs["metadata"]["name"]}"',
                ),
            )
        self._set_deployment_revision(d, revision_of(new_rs))
        return new_rs

    def _set_deployment_revision(self, d: Obj, revision: int) -> None:
        if (d["metadata"].get("annotations") or {}).get(REVISION) == str(revision):
            return

        def apply(obj: Obj) -> None:
            obj["metadata"].setdefault("annotations", {})[REVISION] = str(revision)

        self.store.mutate(DEPLOYMENTS, d["metadata"]["namespace"], d["metadata"]["name"], apply)

    def _scale(self, d: Obj, rs: Obj, replicas: int) -> Obj:
        before = _replicas(rs)
        desired = str(int(d["spec"].get("replicas", 1)))
        annotations = rs["metadata"].get("annotations") or {}
        if before == replicas and annotations.get(DESIRED) == desired:
            return rs

        def apply(obj: Obj) -> None:
            obj["spec"]["replicas"] = replicas
            obj["metadata"].setdefault("annotations", {})[DESIRED] = desired

        rs = self.store.mutate(
            REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"], apply
        )
        if before != replicas:
            self._scaled_event(d, rs["metadata"]["name"], before, replicas)
        return rs

    def _scaled_event(self, d: Obj, rs_name: str, before: int, after: int) -> None:
        verb = "up" if after > before else "down"
        self.events.record(
            d, reason="ScalingReplicaSet", component="deployment-controller",
            message=f"Scaled {verb} replica set {rs_name} from {before} to {after}",
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------
    def _finish(
        self, d: Obj, status: Obj, previous: Obj, new_rs: Obj | None, old: list[Obj]
    ) -> None:
        spec = d["spec"]
        replicas = int(spec.get("replicas", 1))
        fresh = [self._fresh(rs) for rs in old + ([new_rs] if new_rs else [])]
        rs_all = [rs for rs in fresh if rs is not None]
        new_fresh = next(
            (rs for rs in rs_all if new_rs and rs["metadata"]["uid"] == new_rs["metadata"]["uid"]),
            None,
        )
        available = sum(_status_int(rs, "availableReplicas") for rs in rs_all)
        counts = {
            "observedGeneration": int(d["metadata"].get("generation") or 1),
            "replicas": sum(_status_int(rs, "replicas") for rs in rs_all),
            "updatedReplicas": _status_int(new_fresh, "replicas") if new_fresh else 0,
            "readyReplicas": sum(_status_int(rs, "readyReplicas") for rs in rs_all),
            "availableReplicas": available,
            "unavailableReplicas": max(sum(_replicas(rs) for rs in rs_all) - available, 0),
        }
        for key, value in counts.items():
            if value:
                status[key] = value
            else:
                status.pop(key, None)
        strategy = spec.get("strategy") or {}
        max_unavailable = 0
        if strategy.get("type", "RollingUpdate") == "RollingUpdate" and replicas:
            rolling = strategy.get("rollingUpdate") or {}
            _, max_unavailable = resolve_fenceposts(
                rolling.get("maxSurge"), rolling.get("maxUnavailable"), replicas
            )
            max_unavailable = min(max_unavailable, replicas)
        if available >= replicas - max_unavailable:
            c.set_condition(
                status,
                c.new_condition(
                    c.AVAILABLE,
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                ),
            )
        else:
            c.set_condition(
                status,
                c.new_condition(
                    c.AVAILABLE,
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                ),
            )
        if not spec.get("paused"):
            self._rollout_status(d, status, previous, new_fresh)
        if c.deployment_complete(replicas, int(d["metadata"].get("generation") or 1), status):
            self._cleanup(d, [rs for rs in rs_all if rs is not new_fresh])
        if status != (d.get("status") or {}):
            uid = d["metadata"]["uid"]

            def apply(obj: Obj) -> None:
                if obj["metadata"]["uid"] == uid:
                    obj["status"] = status

            self.store.mutate(
                DEPLOYMENTS,
                d["metadata"]["namespace"],
                d["metadata"]["name"],
                apply,
                subresource="status",
            )

    def _rollout_status(self, d: Obj, status: Obj, previous: Obj, new_rs: Obj | None) -> None:
        deadline = d["spec"].get("progressDeadlineSeconds")
        if deadline is None:
            c.remove_condition(status, c.PROGRESSING)
            return
        current = c.get_condition(status, c.PROGRESSING)
        complete_already = (
            int(status.get("replicas") or 0) == int(status.get("updatedReplicas") or 0)
            and current is not None
            and current.get("reason") == c.NEW_RS_AVAILABLE
        )
        if complete_already:
            return
        replicas = int(d["spec"].get("replicas", 1))
        rs_name = new_rs["metadata"]["name"] if new_rs else None
        subject = f'ReplicaSet "{rs_name}"' if rs_name else f'Deployment "{d["metadata"]["name"]}"'
        if c.deployment_complete(replicas, int(d["metadata"].get("generation") or 1), status):
            c.set_condition(
                status,
                c.new_condition(
                    c.PROGRESSING,
                    "True",
                    c.NEW_RS_AVAILABLE,
                    f"{subject} has successfully progressed.",
                ),
            )
        elif c.deployment_progressing(previous, status):
            cond = c.new_condition(
                c.PROGRESSING, "True", c.RS_UPDATED, f"{subject} is progressing."
            )
            if current is not None:
                if current.get("status") == "True":
                    cond["lastTransitionTime"] = current.get("lastTransitionTime")
                c.remove_condition(status, c.PROGRESSING)
            c.set_condition(status, cond)
        elif c.deployment_timed_out(int(deadline), status):
            c.set_condition(
                status,
                c.new_condition(
                    c.PROGRESSING, "False", c.TIMED_OUT, f"{subject} has timed out progressing."
                ),
            )

    def _cleanup(self, d: Obj, old: list[Obj]) -> None:
        limit = d["spec"].get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        cleanable = [
            rs for rs in old
            if _replicas(rs) == 0 and _status_int(rs, "replicas") == 0
            and not rs["metadata"].get("deletionTimestamp")
        ]  # fmt: skip
        cleanable.sort(
            key=lambda rs: (revision_of(rs), rs["metadata"].get("creationTimestamp", ""))
        )
        for rs in cleanable[: max(len(cleanable) - limit, 0)]:
            try:
                self.store.delete(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"])
            except NotFound:
                pass

    def _fresh(self, rs: Obj) -> Obj | None:
        try:
            return self.store.get(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"])
        except NotFound:
            return None
