"""The release lock (a Lease) against the Kubernetes API emulator: exclusion, expiry, release."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client

from errors import InvalidInputError, LockHeldError
from sandbox.procs import wait_until
from tasks.release.locking import (
    LEASE_NAME,
    acquire_release_lock,
    is_free,
    lease_expiry,
    lock_holder,
    release_lock,
    renew_lock,
)


def lease(holder: str | None, renewed: datetime | None, ttl: int) -> client.V1Lease:
    return client.V1Lease(
        spec=client.V1LeaseSpec(
            holder_identity=holder, renew_time=renewed, lease_duration_seconds=ttl
        )
    )


def test_expiry_is_renew_time_plus_duration():
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    held = lease("release/a", at, 30)
    assert lease_expiry(held) == at + timedelta(seconds=30)
    assert not is_free(held, at=at + timedelta(seconds=29))
    assert is_free(held, at=at + timedelta(seconds=30))
    assert is_free(lease(None, at, 30), at=at)
    assert lease_expiry(lease(None, at, 30)) is None


@pytest.fixture()
def coordination(k8s_api_client) -> client.CoordinationV1Api:
    return client.CoordinationV1Api(k8s_api_client)


def test_second_acquirer_fails_fast_naming_the_holder(coordination, k8s_namespace):
    first = acquire_release_lock(coordination, k8s_namespace, "release/run-1", 300)
    with pytest.raises(LockHeldError) as raised:
        acquire_release_lock(coordination, k8s_namespace, "release/run-2", 300)
    assert "release/run-1" in str(raised.value)
    assert lock_holder(coordination, k8s_namespace) == "release/run-1"
    stored = coordination.read_namespaced_lease(LEASE_NAME, k8s_namespace)
    assert stored.spec.holder_identity == "release/run-1"
    assert stored.spec.lease_duration_seconds == 300
    release_lock(first)
    assert lock_holder(coordination, k8s_namespace) is None
    second = acquire_release_lock(coordination, k8s_namespace, "release/run-2", 300)
    assert second.holder == "release/run-2"


def test_second_acquirer_waits_for_the_release(coordination, k8s_namespace):
    first = acquire_release_lock(coordination, k8s_namespace, "release/run-1", 300)
    polls: list[float] = []

    def release_on_first_poll(delay: float) -> None:
        polls.append(delay)
        if len(polls) == 1:
            release_lock(first)

    second = acquire_release_lock(
        coordination,
        k8s_namespace,
        "release/run-2",
        300,
        wait_s=60,
        poll_s=0.2,
        sleep=release_on_first_poll,
    )
    assert second.holder == "release/run-2" and len(polls) == 1


def test_an_expired_lock_is_taken_over(coordination, k8s_namespace):
    # A holder that died (never renews, never releases) with a 2 s lease.
    acquire_release_lock(coordination, k8s_namespace, "release/killed", 2)
    with pytest.raises(LockHeldError):
        acquire_release_lock(coordination, k8s_namespace, "release/next", 300)

    def try_take():
        try:
            return acquire_release_lock(coordination, k8s_namespace, "release/next", 300)
        except LockHeldError:
            return None

    taken = wait_until(try_take, timeout=30, what="the expired lock taken over")
    assert taken.holder == "release/next"
    stored = coordination.read_namespaced_lease(LEASE_NAME, k8s_namespace)
    assert stored.spec.holder_identity == "release/next"
    assert stored.spec.lease_transitions == 1


def test_renew_keeps_the_lock_and_release_only_by_the_holder(coordination, k8s_namespace):
    lock = acquire_release_lock(coordination, k8s_namespace, "release/run-1", 300)
    before = coordination.read_namespaced_lease(LEASE_NAME, k8s_namespace).spec.renew_time
    wait_until(lambda: datetime.now(UTC) > before + timedelta(milliseconds=50), timeout=30,
               what="the clock to move past the renewal time")
    renew_lock(lock)
    after = coordination.read_namespaced_lease(LEASE_NAME, k8s_namespace).spec.renew_time
    assert after > before
    # A stale handle of another holder releases nothing.
    impostor = type(lock)(coordination, k8s_namespace, "release/other", 300, "", lock.acquired_at)
    release_lock(impostor)
    assert lock_holder(coordination, k8s_namespace) == "release/run-1"
    with pytest.raises(LockHeldError):
        renew_lock(impostor)
    release_lock(lock)
    release_lock(lock)  # idempotent
    assert lock_holder(coordination, k8s_namespace) is None


def test_bad_parameters_are_refused(coordination, k8s_namespace):
    with pytest.raises(InvalidInputError):
        acquire_release_lock(coordination, k8s_namespace, "", 300)
    with pytest.raises(InvalidInputError):
        acquire_release_lock(coordination, k8s_namespace, "release/x", 0)
