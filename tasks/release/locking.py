"""One release per environment: a Lease with expiry (a killed run's lock lapses), renewed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime

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
from tasks.release.leases import (
    LEASE_NAME,
    holder_is_over,
    holder_run,
    is_free,
    lease_body,
    lease_expiry,
    now_utc,
    resource_version,
)
from tasks.release.logs import get_logger

__all__ = ["LEASE_NAME", "HeldLocks", "Lock", "acquire_release_lock", "hold_locks", "is_free",
           "keep_lock", "lease_expiry", "lock_holder", "release_lock", "release_lock_of_run",
           "renew_lock"]



@dataclass
class Lock:
    """A held release lock.

    Attributes:
        took_over: why the lock was taken from a holder whose run is over (None otherwise).
    """

    api: client.CoordinationV1Api
    namespace: str
    holder: str
    ttl_s: int
    resource_version: str
    acquired_at: datetime
    name: str = LEASE_NAME
    run_id: str | None = None
    took_over: str | None = None


HolderState = Callable[[str], "str | None"]


def _try_acquire(
    api: client.CoordinationV1Api, namespace: str, holder: str, ttl_s: int, *,
    run_id: str | None, holder_state: HolderState | None,
) -> Lock | client.V1Lease:
    """One attempt: returns the Lock, or the Lease that blocks us."""
    at = now_utc()
    try:
        with translate_api_errors(f"create Lease {LEASE_NAME} in {namespace}"):
            created = api.create_namespaced_lease(
                namespace, lease_body(namespace, holder, ttl_s, at, run_id=run_id)
            )
        return Lock(api, namespace, holder, ttl_s, resource_version(created), at, run_id=run_id)
    except ConflictError:
        pass
    with translate_api_errors(f"read Lease {LEASE_NAME} in {namespace}"):
        current = api.read_namespaced_lease(LEASE_NAME, namespace)
    same_holder = current.spec is not None and current.spec.holder_identity == holder
    took_over = None
    if not (same_holder or is_free(current, at=at)):
        # Held and not expired: taken at once only when the holder's run is over.
        other_run = holder_run(current)
        if holder_state is None or other_run is None:
            return current
        took_over = holder_is_over(other_run, holder_state(other_run))
        if took_over is None:
            return current
        took_over = f"{current.spec.holder_identity if current.spec else '?'}: {took_over}"
    transitions = ((current.spec.lease_transitions if current.spec else 0) or 0) + (
        0 if same_holder else 1
    )
    body = lease_body(namespace, holder, ttl_s, at, run_id=run_id, transitions=transitions,
                      resource_version=resource_version(current) or None)
    try:
        with translate_api_errors(f"take over Lease {LEASE_NAME} in {namespace}"):
            replaced = api.replace_namespaced_lease(LEASE_NAME, namespace, body)
    except ConflictError:
        # Someone else took it between our read and our write.
        with translate_api_errors(f"read Lease {LEASE_NAME} in {namespace}"):
            return api.read_namespaced_lease(LEASE_NAME, namespace)
    return Lock(api, namespace, holder, ttl_s, resource_version(replaced), at, run_id=run_id,
                took_over=took_over)


def acquire_release_lock(
    coordination_v1: client.CoordinationV1Api,
    namespace: str,
    holder: str,
    ttl_s: int,
    *,
    wait_s: float = 0.0,
    poll_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    run_id: str | None = None,
    holder_state: HolderState | None = None,
) -> Lock:
    """Take the environment's release lock, or fail naming who holds it.

    A lock held by a run that is over (Crashed, Failed, Cancelled, Completed, or unknown to
    the Prefect API) is taken at once, without waiting for its expiry, and the takeover is
    logged and kept on the returned lock (``took_over``).

    Args:
        coordination_v1: Kubernetes coordination API.
        namespace: the environment's namespace.
        holder: who we are (e.g. ``release/<flow run id>``).
        ttl_s: lease duration; a holder that stops renewing loses the lock after it.
        wait_s: how long to wait for a held lock to be released (0: fail at once).
        poll_s: interval between attempts while waiting.
        sleep: how to wait between attempts.
        run_id: our Prefect flow run id, written on the Lease (annotation).
        holder_state: the Prefect state type of a flow run id (None when the run is gone);
            without it a held lock is only taken once expired.

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
        outcome = _try_acquire(coordination_v1, namespace, holder, ttl_s, run_id=run_id,
                               holder_state=holder_state)
        if isinstance(outcome, Lock):
            log = get_logger(__name__)
            if outcome.took_over:
                log.warning("lock: %s took %s in %s at once from %s", holder, LEASE_NAME,
                            namespace, outcome.took_over)
            log.info("lock: %s holds %s in %s", holder, LEASE_NAME, namespace)
            return outcome
        if time.monotonic() >= deadline:
            spec = outcome.spec
            other = spec.holder_identity if spec else "?"
            expiry = lease_expiry(outcome)
            raise LockHeldError(
                f"another release holds the lock of {namespace}: {other} "
                f"(until {expiry.isoformat() if expiry else '?'} unless renewed)",
                hint="wait for it to finish; a crashed run's lock is taken at once once "
                "Prefect marks its run Crashed",
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
    lock.resource_version = resource_version(replaced)
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
                        resource_version=resource_version(current) or None
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


def release_lock_of_run(coordination_v1: client.CoordinationV1Api, namespace: str,
                        run_id: str) -> bool:
    """Give back the lock held by a flow run (its crash or cancellation hook), if it holds it.

    Args:
        coordination_v1: Kubernetes coordination API.
        namespace: the environment's namespace.
        run_id: the flow run id written on the Lease.

    Returns:
        True when the run held the lock and it was given back.
    """
    try:
        with translate_api_errors(f"read Lease {LEASE_NAME} in {namespace}"):
            current = coordination_v1.read_namespaced_lease(LEASE_NAME, namespace)
    except NotFoundError:
        return False
    if holder_run(current) != run_id or current.spec is None:
        return False
    release_lock(Lock(coordination_v1, namespace, current.spec.holder_identity or "", 1,
                      resource_version(current), now_utc(), run_id=run_id))
    return True


@contextmanager
def keep_lock(lock: Lock, *, every_s: float | None = None) -> Iterator[threading.Event]:
    """Renew a release lock in a background thread while the block runs.

    Renewal failures are retried; once they have lasted a third of the lock's ttl the lock
    is given up as lost (another run may take it when it lapses).

    Args:
        lock: the held lock.
        every_s: renewal period (default: a third of the lock's ttl).

    Yields:
        An event set when the lock was lost.
    """
    stop = threading.Event()
    lost = threading.Event()
    period = every_s if every_s is not None else max(1.0, lock.ttl_s / 3)
    give_up_s = lock.ttl_s / 3

    def renew() -> None:
        failing_since: float | None = None
        wait = period
        while not stop.wait(wait):
            try:
                renew_lock(lock)
                failing_since, wait = None, period
            except LockHeldError:
                lost.set()
                return
            except VezaOpsError as exc:
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= give_up_s:
                    get_logger(__name__).error(
                        "lock: renewal failing for %.1f s (a third of the ttl): the lock of %s "
                        "is lost (%s)", now - failing_since, lock.namespace, exc.message)
                    lost.set()
                    return
                get_logger(__name__).warning("lock: renewal failed (%s); will retry",
                                             exc.message)
                wait = max(0.2, period / 3)

    thread = threading.Thread(target=renew, name="release-lock-renewal", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join(timeout=5)


class HeldLocks:
    """The locks a run holds, renewed in the background; ask :meth:`check` before a step.

    Attributes:
        lost: one event per lock, set when it was lost.
        takeovers: one sentence per lock taken at once from a run that is over.
    """

    def __init__(self) -> None:
        self.lost: list[threading.Event] = []
        self.takeovers: list[str] = []

    def check(self) -> None:
        """Fail when a lock was lost (not renewed in time): another run may have taken it.

        Raises:
            LockHeldError: a lock was lost.
        """
        if any(event.is_set() for event in self.lost):
            raise LockHeldError("the release lock was lost (not renewed in time)",
                                hint="another release may run; re-run this one later")


@contextmanager
def hold_locks(clusters: Sequence[Cluster], holder: str, *, run_id: str | None = None,
               holder_state: HolderState | None = None) -> Iterator[HeldLocks]:
    """Take the release lock of each environment, renew them while the block runs, give back.

    Args:
        clusters: the environments, locked in this order.
        holder: who we are (e.g. ``release/<id>``).
        run_id: our Prefect flow run id (written on each Lease).
        holder_state: the Prefect state of a holder's run (see :func:`acquire_release_lock`).

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
                                                 c.env.lock_ttl_s, wait_s=c.env.lock_wait_s,
                                                 run_id=run_id, holder_state=holder_state)
                locks.append(lock)
                if lock.took_over:
                    held.takeovers.append(f"{c.env.namespace}: taken from {lock.took_over}")
                held.lost.append(stack.enter_context(keep_lock(lock)))
            yield held
    finally:
        for lock in reversed(locks):
            try:
                release_lock(lock)
            except VezaOpsError as exc:
                get_logger(__name__).error(
                    "could not release the lock: %s (it expires by itself)", exc.message)
