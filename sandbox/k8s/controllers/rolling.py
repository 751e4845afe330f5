"""Rollout arithmetic of the Deployment controller, as the real controller computes it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"


def scaled_value(value: int | str | None, total: int, *, round_up: bool, default: str) -> int:
    """Resolve an int-or-percent against ``total`` (``intstr.GetScaledValueFromIntOrPercent``).

    Args:
        value: an int, a string such as ``"25%"`` or ``"3"``, or None for ``default``.
        total: the number a percentage applies to.
        round_up: round a percentage up (maxSurge) rather than down (maxUnavailable).
        default: the value used when ``value`` is None.

    Returns:
        The absolute value.

    Raises:
        ValueError: when ``value`` is neither an int nor a percentage.
    """
    if value is None:
        value = default
    if isinstance(value, bool):
        raise ValueError(f"invalid int-or-percent value {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = int(text[:-1])
        except ValueError as exc:
            raise ValueError(f"invalid percentage {value!r}: use e.g. '25%'") from exc
        exact = percent * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    try:
        return int(text)
    except ValueError as exc:
        raise ValueError(f"invalid int-or-percent value {value!r}: use an int or '25%'") from exc


def resolve_fenceposts(
    max_surge: int | str | None, max_unavailable: int | str | None, replicas: int
) -> tuple[int, int]:
    """Absolute maxSurge and maxUnavailable for ``replicas`` (``deploymentutil.ResolveFenceposts``).

    Surge rounds up, unavailable rounds down; when both resolve to 0, unavailable becomes 1.

    Args:
        max_surge: the strategy's maxSurge (None for the 25% default).
        max_unavailable: the strategy's maxUnavailable (None for the 25% default).
        replicas: desired replicas.

    Returns:
        ``(surge, unavailable)``.
    """
    surge = scaled_value(max_surge, replicas, round_up=True, default=DEFAULT_MAX_SURGE)
    unavailable = scaled_value(
        max_unavailable, replicas, round_up=False, default=DEFAULT_MAX_UNAVAILABLE
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def new_rs_replicas(
    *, replicas: int, max_surge: int, current_pods: int, new_rs_replicas: int
) -> int:
    """Replicas the new ReplicaSet may scale up to now (``NewRSNewReplicas`` for RollingUpdate).

    Args:
        replicas: desired replicas of the Deployment.
        max_surge: resolved maxSurge.
        current_pods: sum of spec.replicas over every ReplicaSet of the Deployment.
        new_rs_replicas: the new ReplicaSet's current spec.replicas.

    Returns:
        The new ReplicaSet's target spec.replicas.
    """
    max_total = replicas + max_surge
    if current_pods >= max_total:
        return new_rs_replicas
    scale_up = min(max_total - current_pods, replicas - new_rs_replicas)
    return new_rs_replicas + max(scale_up, 0)


@dataclass
class RsCounts:
    """The numbers of one old ReplicaSet that the scale-down arithmetic needs."""

    name: str
    spec_replicas: int
    available: int


def old_rs_scale_down(
    *,
    replicas: int,
    max_unavailable: int,
    new_spec_replicas: int,
    new_available: int,
    old: Sequence[RsCounts],
) -> dict[str, int]:
    """Target spec.replicas of old ReplicaSets (``reconcileOldReplicaSets``).

    Unhealthy old replicas are cleaned up first, then healthy ones scaled down while at least
    ``replicas - max_unavailable`` pods stay available. ``old`` must be sorted oldest first.

    Args:
        replicas: desired replicas of the Deployment.
        max_unavailable: resolved maxUnavailable.
        new_spec_replicas: the new ReplicaSet's spec.replicas.
        new_available: the new ReplicaSet's available replicas.
        old: the old ReplicaSets, oldest first.

    Returns:
        Name to new spec.replicas, for the ReplicaSets that change.
    """
    old_pods = sum(rs.spec_replicas for rs in old)
    if old_pods == 0:
        return {}
    all_pods = old_pods + new_spec_replicas
    min_available = replicas - max_unavailable
    new_unavailable = new_spec_replicas - new_available
    max_scaled_down = all_pods - min_available - new_unavailable
    if max_scaled_down <= 0:
        return {}
    targets = {rs.name: rs.spec_replicas for rs in old}
    # Clean up unhealthy replicas first: they cost no availability.
    cleaned = 0
    for rs in old:
        if cleaned >= max_scaled_down:
            break
        if targets[rs.name] == 0 or targets[rs.name] == rs.available:
            continue
        cut = min(targets[rs.name] - rs.available, max_scaled_down - cleaned)
        targets[rs.name] -= cut
        cleaned += cut
    # Then scale down healthy replicas while availability allows it.
    available = new_available + sum(min(rs.available, targets[rs.name]) for rs in old)
    total_down = available - min_available
    for rs in old:
        if total_down <= 0:
            break
        if targets[rs.name] == 0:
            continue
        cut = min(targets[rs.name], total_down)
        targets[rs.name] -= cut
        total_down -= cut
    return {rs.name: targets[rs.name] for rs in old if targets[rs.name] != rs.spec_replicas}
