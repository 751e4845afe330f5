"""A rollback preempts a release in its keep-old-colour window, through the release Lease.

A committed release keeps its old colour at full scale for ``keep_old_colour_s`` (instant
rollback) and watches the new one. It still holds the environment's lock then, so a plain
``rollback`` would fail at once. Instead the release marks its Lease with the phase
``keep-window``; a rollback that finds a live holder in that phase writes its own name on the
Lease (``preempt-requested-by``) and waits for the lock; the release sees the request at its
next watch interval, stops, records who preempted it, leaves the old colour running and gives
the lock back. Any other phase is never preempted: a release still switching or verifying
finishes (or rolls itself back) first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kubernetes import client
from prefect import task
from prefect.cache_policies import NO_CACHE

from errors import ConflictError, LockHeldError, NotFoundError
from errors.kubernetes import translate_api_errors
from tasks.release.leases import LEASE_NAME, holder_is_over, holder_run, is_free, now_utc
from tasks.release.logs import get_logger

PHASE_ANNOTATION = "veza-ops.veza.io/phase"
PREEMPT_ANNOTATION = "veza-ops.veza.io/preempt-requested-by"
KEEP_WINDOW = "keep-window"


def _read(api: client.CoordinationV1Api, namespace: str) -> client.V1Lease | None:
    try:
        with translate_api_errors(f"read Lease {LEASE_NAME} in {namespace}"):
            return api.read_namespaced_lease(LEASE_NAME, namespace)
    except NotFoundError:
        return None


def _annotations(lease: client.V1Lease) -> dict[str, str]:
    return dict((lease.metadata.annotations or {}) if lease.metadata else {})


def _holder(lease: client.V1Lease) -> str | None:
    return lease.spec.holder_identity if lease.spec else None


def _annotate(api: client.CoordinationV1Api, namespace: str, *, holder: str | None,
              key: str, value: str, attempts: int = 5) -> bool:
    """Write one annotation on the Lease while ``holder`` (None: anyone live) holds it."""
    for _ in range(attempts):
        lease = _read(api, namespace)
        if lease is None or is_free(lease, at=now_utc()):
            return False
        if holder is not None and _holder(lease) != holder:
            return False
        annotations = _annotations(lease)
        if annotations.get(key) == value:
            return True
        if lease.metadata is None:
            return False
        lease.metadata.annotations = {**annotations, key: value}
        try:  # the resourceVersion read above makes this a compare-and-swap
            with translate_api_errors(f"annotate Lease {LEASE_NAME} in {namespace}"):
                api.replace_namespaced_lease(LEASE_NAME, namespace, lease)
            return True
        except ConflictError:
            continue  # renewed between our read and write: read again
    return False


def enter_keep_window(api: client.CoordinationV1Api, namespace: str, holder: str) -> bool:
    """Mark our Lease as preemptible: the release is committed and in its keep window.

    Args:
        api: coordination API.
        namespace: the environment's namespace.
        holder: our identity on the Lease.

    Returns:
        Whether the mark was written (False when we no longer hold the lock).
    """
    return _annotate(api, namespace, holder=holder, key=PHASE_ANNOTATION, value=KEEP_WINDOW)


def preemption_requested(api: client.CoordinationV1Api, namespace: str,
                         holder: str) -> str | None:
    """Who asked to preempt us, if anyone (also when the lock was lost or taken meanwhile).

    Args:
        api: coordination API.
        namespace: the environment's namespace.
        holder: our identity on the Lease.

    Returns:
        The requester's identity, or None.
    """
    lease = _read(api, namespace)
    if lease is None:
        return None
    if _holder(lease) != holder:
        return _holder(lease) or "another run"
    return _annotations(lease).get(PREEMPT_ANNOTATION) or None


def preempt_keep_window(
    api: client.CoordinationV1Api,
    namespace: str,
    requester: str,
    *,
    wait_s: float,
    holder_state: Callable[[str], str | None] | None = None,
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Ask a release in its keep window to stop, and wait until it gave the lock back.

    Does nothing when the lock is free, ours, held in any other phase (the lock's own rules
    then apply: a live release is never interrupted while it switches or verifies), or held
    by a run that is over (crashed in its window: the lock is then taken at once, nobody is
    left to answer a request).

    Args:
        api: coordination API.
        namespace: the environment's namespace.
        requester: our identity (written on the Lease, recorded by the release).
        wait_s: how long the release has to stop (a watch interval and its record).
        holder_state: the Prefect state type of a flow run id (None: the run is gone); a
            holder whose run is over is not waited for, before or during the wait.
        poll_s: how often the Lease is read meanwhile.
        clock: monotonic clock.
        sleep: waits between reads.

    Returns:
        The preempted holder, or None when nothing was preempted.

    Raises:
        LockHeldError: the release did not give the lock back within ``wait_s``.
    """
    lease = _read(api, namespace)
    if lease is None or is_free(lease, at=now_utc()):
        return None
    holder = _holder(lease)
    if holder in (None, requester) or _annotations(lease).get(PHASE_ANNOTATION) != KEEP_WINDOW:
        return None

    def over(current: client.V1Lease) -> bool:
        run = holder_run(current)
        return holder_state is not None and run is not None and (
            holder_is_over(run, holder_state(run)) is not None)

    if over(lease):
        return None
    if not _annotate(api, namespace, holder=holder, key=PREEMPT_ANNOTATION, value=requester):
        return None  # it let go meanwhile
    get_logger(__name__).warning("preempting %s in its keep-old-colour window of %s",
                                 holder, namespace)
    deadline = clock() + wait_s
    while clock() < deadline:
        current = _read(api, namespace)
        if current is None or is_free(current, at=now_utc()) or _holder(current) != holder:
            return holder
        if over(current):
            return None  # it died instead of answering: the lock is taken from it at once
        sleep(poll_s)
    raise LockHeldError(
        f"{holder} was asked to stop its keep-old-colour window of {namespace} but still "
        f"holds the lock after {wait_s:g} s",
        hint="check that release's run; a crashed run's lock is taken at once once Prefect "
        "marks it Crashed")


preempt_keep_window_task = task(name="preempt-keep-window", cache_policy=NO_CACHE)(
    preempt_keep_window)
