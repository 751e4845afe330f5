"""The release Lease as data: its body, its expiry, and the flow run that holds it (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kubernetes import client

LEASE_NAME = "veza-ops-release-lock"
RUN_ANNOTATION = "veza-ops.veza.io/flow-run-id"
# Prefect state types of a run that will never renew a lock again.
TERMINAL_RUN_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})


def now_utc() -> datetime:
    """Current time, timezone-aware, microsecond precision (what Lease times carry)."""
    return datetime.now(UTC)


def resource_version(obj: client.V1Lease) -> str:
    """The object's resourceVersion ("" when unknown).

    Args:
        obj: a Lease.

    Returns:
        Its resource version.
    """
    return str(obj.metadata.resource_version or "") if obj.metadata else ""


def lease_expiry(lease: client.V1Lease) -> datetime | None:
    """When a Lease lapses: ``renewTime`` (or ``acquireTime``) + ``leaseDurationSeconds``.

    Args:
        lease: the Lease.

    Returns:
        The expiry, or None when the Lease has no holder (free).
    """
    spec = lease.spec
    if spec is None or not spec.holder_identity:
        return None
    last = spec.renew_time or spec.acquire_time
    if last is None:
        return datetime.min.replace(tzinfo=UTC)
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return last + timedelta(seconds=spec.lease_duration_seconds or 0)


def is_free(lease: client.V1Lease, *, at: datetime) -> bool:
    """Tell whether a Lease can be taken: no holder, or expired at ``at``.

    Args:
        lease: the Lease.
        at: the current time.

    Returns:
        True when it is free.
    """
    expiry = lease_expiry(lease)
    return expiry is None or expiry <= at


def holder_run(lease: client.V1Lease) -> str | None:
    """The Prefect flow run id of the Lease's holder, when it was recorded.

    Args:
        lease: the Lease.

    Returns:
        The run id, or None.
    """
    annotations = (lease.metadata.annotations or {}) if lease.metadata else {}
    return annotations.get(RUN_ANNOTATION) or None


def holder_is_over(run_id: str | None, state: str | None) -> str | None:
    """Why a holder's run can hold no lock any more, or None when it may still be alive (pure).

    Args:
        run_id: the holder's flow run id (None: not recorded, nothing can be said).
        state: the run's Prefect state type, None when the API does not know the run.

    Returns:
        A sentence (``flow run <id> is CRASHED``/``is gone``), or None.
    """
    if not run_id:
        return None
    if state is None:
        return f"flow run {run_id} is gone"
    if state.upper() in TERMINAL_RUN_STATES:
        return f"flow run {run_id} is {state.upper()}"
    return None


def lease_body(
    namespace: str,
    holder: str,
    ttl_s: int,
    at: datetime,
    *,
    run_id: str | None = None,
    transitions: int = 0,
    resource_version: str | None = None,
) -> client.V1Lease:
    """The Lease a holder writes to take the lock.

    Args:
        namespace: the environment's namespace.
        holder: the holder's identity.
        ttl_s: lease duration.
        at: acquire and renew time.
        run_id: the holder's Prefect flow run id (annotation), when it has one.
        transitions: ``leaseTransitions``.
        resource_version: the version replaced (None to create).

    Returns:
        The Lease object.
    """
    return client.V1Lease(
        api_version="coordination.k8s.io/v1",
        kind="Lease",
        metadata=client.V1ObjectMeta(
            name=LEASE_NAME,
            namespace=namespace,
            resource_version=resource_version,
            labels={"app.kubernetes.io/managed-by": "veza-ops"},
            annotations={RUN_ANNOTATION: run_id} if run_id else None,
        ),
        spec=client.V1LeaseSpec(
            holder_identity=holder,
            lease_duration_seconds=ttl_s,
            acquire_time=at,
            renew_time=at,
            lease_transitions=transitions,
        ),
    )
