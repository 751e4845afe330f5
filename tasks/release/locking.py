"""One release per environment: a Lease with expiry (a killed run's lock lapses), renewed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kubernetes import client
from prefect import task
from prefect.cache_policies import NO_CACHE

from errors import (
    ConflictError,
    InvalidInputError,
    LockHeldError,
    NotFoundError,
    VezaOpsError,
    retry_on_transient,
)
from errors.kubernetes import translate_api_errors
from tasks.release.clusters import Cluster
from tasks.release.logs import get_logger

LEASE_NAME = "veza-ops-release-lock"


@dataclass
class Lock:
    """A held release lock."""

    api: client.CoordinationV1Api
    namespace: str
    holder: str
    ttl_s: int
    resource_version: str
    acquired_at: datetime
    name: str = LEASE_NAME


def _resource_version(obj: client.V1Lease) -> str:
    return str(obj.metadata.resource_version or "") if obj.metadata else ""


def now_utc() -> datetime:
    """Current time, timezone-aware, microsecond precision (what Lease times carry)."""
    return datetime.now(UTC)


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


def _lease_body(
    namespace: str,
    holder: str,
    ttl_s: int,
    at: datetime,
    *,
    transitions: int = 0,
    resource_version: str | None = None,
) -> client.V1Lease:
    return client.V1Lease(
        api_version="coordination.k8s.io/v1",
        kind="Lease",
        metadata=client.V1ObjectMeta(
            name=LEASE_NAME,
            namespace=namespace,
            resource_version=resource_version,
            labels={"app.kubernetes.io/managed-by": "veza-ops"},
        ),
        spec=client.V1LeaseSpec(
            holder_identity=holder,
            lease_duration_seconds=ttl_s,
            acquire_time=at,
            renew_time=at,
            lease_transitions=transitions,
        ),
    )


def _try_acquire(
    api: client.CoordinationV1Api, namespace: str, holder: str, ttl_s: int
) -> Lock | client.V1Lease:
    """One attempt: returns the Lock, or the Lease that blocks us."""
    at = now_utc()
    try:
        with translate_api_errors(f"create Lease {LEASE_NAME} in {namespace}"):
            created = api.create_namespaced_lease(
                namespace, _lease_body(namespace, holder, ttl_s, at)
            )
        return Lock(api, namespace, holder, ttl_s, _resource_version(created), at)
    except ConflictError:
        pass
    with translate_api_errors(f"read Lease {LEASE_NAME} in {namespace}"):
        current = api.read_namespaced_lease(LEASE_NAME, namespace)
    same_holder = current.spec is not None and current.spec.holder_identity == holder
    if not (same_holder or is_free(current, at=at)):
        return current
    transitions = ((current.spec.lease_transitions if current.spec else 0) or 0) + (
        0 if same_holder else 1
    )
    body = _lease_body(
        namespace,
        holder,
        ttl_s,
        at,
        transitions=transitions,
        resource_version=_resource_version(current) or None,
    )
    try:
        with translate_api_errors(f"take over Lease {LEASE_NAME} in {namespace}"):
            replaced = api.replace_namespaced_lease(LEASE_NAME, namespace, body)
    except ConflictError:
        # Someone else took it between our read and our write.
        with translate_api_errors(f"read Lease {LEASE_NAME} in {namespace}"):
            return api.read_namespaced_lease(LEASE_NAME, namespace)
    return Lock(api, namespace, holder, ttl_s, _resource_version(replaced), at)


def acquire_release_lock(
    coordination_v1: client.CoordinationV1Api,
    namespace: str,
    holder: str,
    ttl_s: int,
    *,
    wait_s: float = 0.0,
    poll_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Lock:
    """Take the environment's release lock, or fail naming who holds it.

    Args:
        coordination_v1: Kubernetes coordination API.
        namespace: the environment's namespace.
        holder: who we are (e.g. ``release/<flow run id>``).
        ttl_s: lease duration; a holder that stops renewing loses the lock after it.
        wait_s: how long to wait for a held lock to be released (0: fail at once).
        poll_s: interval between attempts while waiting.
        sleep: how to wait between attempts.

    Returns:
        The held lock.

    Raises:
        InvalidInputError: empty holder or non-positive ttl.
        LockHeldError: the lock is held by another holder (named, with its expiry).
    """
    if not holder:
        raise InvalidInputError("holder", "is empty", fix="name the release run holding the lock")
    if ttl_s < 1:
        raise InvalidInputError("lock_ttl_s", f"{ttl_s} is not positive", fix="use e.g. 900")
    deadline = time.monotonic() + wait_s
    while True:
        outcome = _try_acquire(coordination_v1, namespace, holder, ttl_s)
        if isinstance(outcome, Lock):
            get_logger(__name__).info("lock: %s holds %s in %s", holder, LEASE_NAME, namespace)
            return outcome
        if time.monotonic() >= deadline:
            spec = outcome.spec
            other = spec.holder_identity if spec else "?"
            expiry = lease_expiry(outcome)
            raise LockHeldError(
                f"another release holds the lock of {namespace}: {other} "
                f"(until {expiry.isoformat() if expiry else '?'} unless renewed)",
                hint="wait for it to finish, or let the lock expire if that run was killed",
            )
        sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def renew_lock(lock: Lock) -> Lock:
    """Push the lock's expiry forward (call more often than its ttl).

    Args:
        lock: a held lock.

    Returns:
        The same lock with its new resource version.

    Raises:
        LockHeldError: the lock was lost (expired and taken by someone else).
    """
    with translate_api_errors(f"read Lease {lock.name} in {lock.namespace}"):
        current = lock.api.read_namespaced_lease(lock.name, lock.namespace)
    if current.spec is None or current.spec.holder_identity != lock.holder:
        other = current.spec.holder_identity if current.spec else None
        raise LockHeldError(f"lost the lock of {lock.namespace} to {other}")
    current.spec.renew_time = now_utc()
    try:
        with translate_api_errors(f"renew Lease {lock.name} in {lock.namespace}"):
            replaced = lock.api.replace_namespaced_lease(lock.name, lock.namespace, current)
    except ConflictError:
        raise LockHeldError(f"the lock of {lock.namespace} changed while renewing") from None
    lock.resource_version = _resource_version(replaced)
    return lock


def release_lock(lock: Lock) -> None:
    """Give the lock back, only if we still hold it (a no-op otherwise).

    Args:
        lock: the lock returned by :func:`acquire_release_lock`.
    """
    try:
        with translate_api_errors(f"read Lease {lock.name} in {lock.namespace}"):
            current = lock.api.read_namespaced_lease(lock.name, lock.namespace)
    except NotFoundError:
        return
    if current.spec is None or current.spec.holder_identity != lock.holder:
        get_logger(__name__).warning(
            "lock: %s no longer held by %s; left alone", lock.name, lock.holder
        )
        return
    try:
        with translate_api_errors(f"delete Lease {lock.name} in {lock.namespace}"):
            lock.api.delete_namespaced_lease(
                lock.name,
                lock.namespace,
                body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(
                        resource_version=_resource_version(current) or None
                    )
                ),
            )
    except (NotFoundError, ConflictError):
        return
    get_logger(__name__).info("lock: %s released %s in %s", lock.holder, lock.name, lock.namespace)


def lock_holder(coordination_v1: client.CoordinationV1Api, namespace: str) -> str | None:
    """Who holds the lock now (None when free or expired).

    Args:
        coordination_v1: Kubernetes coordination API.
        namespace: the environment's namespace.

    Returns:
        The holder identity, or None.
    """
    try:
        with translate_api_errors(f"read Lease {LEASE_NAME} in {namespace}"):
            lease = coordination_v1.read_namespaced_lease(LEASE_NAME, namespace)
    except NotFoundError:
        return None
    if is_free(lease, at=now_utc()):
        return None
    return lease.spec.holder_identity if lease.spec else None


acquire_release_lock_task = task(
    name="acquire-release-lock",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_transient,
)(acquire_release_lock)


@contextmanager
def keep_lock(lock: Lock, *, every_s: float | None = None) -> Iterator[threading.Event]:
    """Renew a release lock in a background thread while the block runs.

    Args:
        lock: the held lock.
        every_s: renewal period (default: a third of the lock's ttl).

    Yields:
        An event set when the lock was lost.
    """
    stop = threading.Event()
    lost = threading.Event()
    period = every_s if every_s is not None else max(1.0, lock.ttl_s / 3)

    def renew() -> None:
        while not stop.wait(period):
            try:
                renew_lock(lock)
            except LockHeldError:
                lost.set()
                return
            except VezaOpsError as exc:
                get_logger(__name__).warning("lock: renewal failed (%s); will retry",
                                             exc.message)

    thread = threading.Thread(target=renew, name="release-lock-renewal", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join(timeout=5)


class HeldLocks:
    """The locks a run holds, renewed in the background; ask :meth:`check` before a step."""

    def __init__(self) -> None:
        self.lost: list[threading.Event] = []

    def check(self) -> None:
        """Fail when a lock was lost (not renewed in time): another run may have taken it.

        Raises:
            LockHeldError: a lock was lost.
        """
        if any(event.is_set() for event in self.lost):
            raise LockHeldError("the release lock was lost (not renewed in time)",
                                hint="another release may run; re-run this one later")


@contextmanager
def hold_locks(clusters: Sequence[Cluster], holder: str) -> Iterator[HeldLocks]:
    """Take the release lock of each environment, renew them while the block runs, give back.

    Args:
        clusters: the environments, locked in this order.
        holder: who we are (e.g. ``release/<id>``).

    Yields:
        The held locks.

    Raises:
        LockHeldError: another run holds one of the locks (those taken are given back).
    """
    held = HeldLocks()
    locks: list[Lock] = []
    try:
        with ExitStack() as stack:
            for c in clusters:
                lock = acquire_release_lock_task(c.coordination_v1, c.env.namespace, holder,
                                                 c.env.lock_ttl_s, wait_s=c.env.lock_wait_s)
                locks.append(lock)
                held.lost.append(stack.enter_context(keep_lock(lock)))
            yield held
    finally:
        for lock in reversed(locks):
            try:
                release_lock(lock)
            except VezaOpsError as exc:
                get_logger(__name__).error(
                    "could not release the lock: %s (it expires by itself)", exc.message)
