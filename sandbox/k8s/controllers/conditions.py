"""Deployment conditions and progress checks, following the real controller's ``deploymentutil``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sandbox.k8s.controllers.events import now_iso

AVAILABLE = "Available"
PROGRESSING = "Progressing"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"


def new_condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
    """A condition stamped now (``NewDeploymentCondition``).

    Args:
        kind: condition type.
        status: ``"True"``, ``"False"`` or ``"Unknown"``.
        reason: CamelCase reason.
        message: sentence.

    Returns:
        The condition.
    """
    stamp = now_iso()
    return {
        "type": kind, "status": status, "lastUpdateTime": stamp,
        "lastTransitionTime": stamp, "reason": reason, "message": message,
    }  # fmt: skip


def get_condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The condition of type ``kind``, or None.

    Args:
        status: a Deployment status.
        kind: condition type.

    Returns:
        The condition or None.
    """
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def remove_condition(status: dict[str, Any], kind: str) -> None:
    """Drop the condition of type ``kind`` (in place).

    Args:
        status: a Deployment status.
        kind: condition type.
    """
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != kind]


def set_condition(status: dict[str, Any], cond: dict[str, Any]) -> None:
    """``SetDeploymentCondition``: set a condition the way the real controller does.

    No-op when status and reason are unchanged; keeps the transition time when only the reason
    changes; the condition moves to the end of the list.

    Args:
        status: a Deployment status (modified in place).
        cond: the new condition.
    """
    current = get_condition(status, cond["type"])
    if (
        current
        and current.get("status") == cond["status"]
        and current.get("reason") == cond["reason"]
    ):
        return
    if current and current.get("status") == cond["status"]:
        cond["lastTransitionTime"] = current.get("lastTransitionTime", cond["lastTransitionTime"])
    remove_condition(status, cond["type"])
    status.setdefault("conditions", []).append(cond)


def deployment_complete(replicas: int, generation: int, status: dict[str, Any]) -> bool:
    """``DeploymentComplete``: every replica updated and available, generation observed.

    Args:
        replicas: spec.replicas.
        generation: metadata.generation.
        status: the new status.

    Returns:
        True when the rollout is complete.
    """
    return (
        int(status.get("updatedReplicas") or 0) == replicas
        and int(status.get("replicas") or 0) == replicas
        and int(status.get("availableReplicas") or 0) == replicas
        and int(status.get("observedGeneration") or 0) >= generation
    )


def deployment_progressing(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """``DeploymentProgressing``: more updated/ready/available replicas, or fewer old ones.

    Args:
        old: the status before.
        new: the status computed now.

    Returns:
        True when the rollout made progress.
    """

    def n(status: dict[str, Any], key: str) -> int:
        return int(status.get(key) or 0)

    old_old = n(old, "replicas") - n(old, "updatedReplicas")
    new_old = n(new, "replicas") - n(new, "updatedReplicas")
    return (
        n(new, "updatedReplicas") > n(old, "updatedReplicas")
        or new_old < old_old
        or n(new, "readyReplicas") > n(old, "readyReplicas")
        or n(new, "availableReplicas") > n(old, "availableReplicas")
    )


def deployment_timed_out(deadline_seconds: int | None, status: dict[str, Any]) -> bool:
    """``DeploymentTimedOut``: the Progressing condition was last updated over the deadline ago.

    Args:
        deadline_seconds: progressDeadlineSeconds (None: no deadline).
        status: the new status.

    Returns:
        True when the deadline passed.
    """
    if deadline_seconds is None:
        return False
    cond = get_condition(status, PROGRESSING)
    if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    stamp = cond.get("lastUpdateTime")
    if not stamp:
        return False
    since = datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - since).total_seconds() > deadline_seconds
