"""Production blue-green steps as Prefect tasks: prepare the new colour, switch, verify, commit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from kubernetes import client as k8s
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction, get_transaction

from blocks.kubernetes import KubernetesCluster
from errors import (
    LockHeldError,
    NotFoundError,
    ReleaseError,
    TransientSystemError,
    VerificationError,
    VezaOpsError,
    retry_on_transient,
)
from tasks.analysis import AnalysisResult, AnalysisSettings, PromQuerier, analyse, raise_on_abort
from tasks.bluegreen import (
    SwitchRecord,
    apply_deployment,
    clear_pending,
    clone_for_colour,
    container_image,
    live_colour,
    other_colour,
    read_deployment_or_none,
    read_service,
    ready_pods,
    scale,
    smoke_test,
    switch_selector,
    to_dict,
)
from tasks.build import get_logger
from tasks.locking import Lock, renew_lock
from tasks.rollout import wait_for_rollout
from tasks.services import EnvironmentSpec, ServiceSpec


@dataclass
class Prepared:
    """A new colour brought up and smoke-tested, not yet receiving traffic.

    Attributes:
        service: service name.
        live_colour: colour serving now.
        new_colour: the colour prepared.
        deployment: name of the new colour's Deployment.
        image: its image.
        previous_image: the live colour's image.
        secret_name: the Secret it reads.
        replicas: its replicas (those of the live colour).
        smoke: smoke-test lines.
    """

    service: str
    live_colour: str
    new_colour: str
    deployment: str
    image: str
    previous_image: str | None
    secret_name: str | None
    replicas: int
    smoke: list[str] = field(default_factory=list)


def prepare_colour(
    apps_v1: k8s.AppsV1Api,
    core_v1: k8s.CoreV1Api,
    *,
    env: EnvironmentSpec,
    spec: ServiceSpec,
    image: str,
    secret_name: str | None,
    release_id: str,
) -> Prepared:
    """Clone the live colour into the other one with the new image and Secret; wait; smoke.

    Args:
        apps_v1: apps API.
        core_v1: core API.
        env: the environment.
        spec: the service.
        image: new image.
        secret_name: the new immutable Secret.
        release_id: recorded on the Deployment.

    Returns:
        The prepared colour.

    Raises:
        ReleaseError: the live Deployment is missing.
        RolloutError: the new colour did not become ready.
        SmokeTestError: its pods do not answer.
    """
    ns = env.namespace
    live = live_colour(read_service(core_v1, ns, spec.service_name), env.colour_label)
    new = other_colour(live)
    live_dep = read_deployment_or_none(apps_v1, ns, spec.deployment_name(live))
    if live_dep is None:
        raise ReleaseError(
            f"{spec.name}: the Service selects {live} but Deployment "
            f"{spec.deployment_name(live)} does not exist in {ns}",
            hint="run the rollback flow to reconcile, or seed the live colour",
        )
    body = clone_for_colour(
        to_dict(apps_v1.api_client, live_dep), name=spec.deployment_name(new), colour=new,
        container=spec.container, image=image, secret_prefix=f"{spec.name}-secrets",
        secret_name=secret_name, colour_label=env.colour_label, release_id=release_id,
    )
    apply_deployment(apps_v1, ns, body)
    get_logger().info("%s: %s Deployment %s applied (%s)", spec.name, new,
                      body["metadata"]["name"], image)
    wait_for_rollout(apps_v1, ns, spec.deployment_name(new), env.rollout_timeout_s)
    pods = ready_pods(core_v1, ns, body["spec"]["selector"]["matchLabels"])
    paths = list(dict.fromkeys([spec.ready_path, spec.health_path, *spec.smoke_paths]))
    lines = smoke_test(pods, port=spec.port, paths=paths)
    get_logger().info("%s: %s smoke-tested on %d pod(s)", spec.name, new, len(pods))
    return Prepared(
        service=spec.name, live_colour=live, new_colour=new,
        deployment=spec.deployment_name(new), image=image,
        previous_image=container_image(live_dep, spec.container), secret_name=secret_name,
        replicas=int(body["spec"].get("replicas") or 1), smoke=lines,
    )


prepare_colour_task = task(
    name="prepare-colour", retries=2, retry_delay_seconds=1,
    retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE,
)(prepare_colour)


def _with_transient_retries(fn: Callable[[], Any], attempts: int = 3) -> Any:
    """Retry inside a task body (tasks with retries must not sit in a transaction)."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except TransientSystemError:
            if attempt == attempts:
                raise
            time.sleep(0.2 * attempt)
    return None  # pragma: no cover


@task(name="switch-traffic", cache_policy=NO_CACHE)
def switch_traffic(
    kubernetes: KubernetesCluster,
    *,
    env: EnvironmentSpec,
    spec: ServiceSpec,
    colour: str,
    release_id: str,
) -> SwitchRecord:
    """Point the Service at the new colour, marked uncommitted; the rollback hook undoes it.

    Args:
        kubernetes: the cluster block (kept in the transaction for the hook).
        env: the environment.
        spec: the service.
        colour: the new colour.
        release_id: marks the switch as pending until the release commits.

    Returns:
        The switch record.
    """
    core = kubernetes.core_v1()
    record: SwitchRecord = _with_transient_retries(lambda: switch_selector(
        core, service=spec.name, service_name=spec.service_name, namespace=env.namespace,
        colour=colour, colour_label=env.colour_label, pending_release=release_id,
    ))
    txn = get_transaction()
    if txn is not None:
        txn.set("switch", asdict(record))
        txn.set("kubernetes", kubernetes)
        txn.set("colour_label", env.colour_label)
    get_logger().info("%s: traffic switched %s -> %s", spec.name, record.from_colour, colour)
    return record


@switch_traffic.on_rollback
def _switch_back(txn: Transaction) -> None:
    """Rollback hook: put the Service back on its previous colour (logged, never raises)."""
    record = txn.get("switch", None)
    kubernetes = txn.get("kubernetes", None)
    if record is None or kubernetes is None:
        return
    try:
        core = kubernetes.core_v1()
        _with_transient_retries(lambda: switch_selector(
            core, service=record["service"], service_name=record["service_name"],
            namespace=record["namespace"], colour=record["from_colour"],
            colour_label=txn.get("colour_label", "color"), pending_release=None,
        ))
        get_logger().warning("%s: traffic switched back to %s", record["service"],
                             record["from_colour"])
    except VezaOpsError as exc:
        get_logger().error("%s: switch back failed: %s", record["service"], exc.message)


def verify(
    prometheus: PromQuerier,
    *,
    env: EnvironmentSpec,
    spec: ServiceSpec,
    colour: str,
    settings: AnalysisSettings,
    clock: Callable[[], float] = time.monotonic,
    sleeper: Callable[[float], Any] = time.sleep,
) -> AnalysisResult:
    """Analyse the new colour; raise when the verdict is abort.

    Args:
        prometheus: the Prometheus block.
        env: the environment.
        spec: the service.
        colour: the colour now serving.
        settings: thresholds and pacing.
        clock: monotonic clock.
        sleeper: interval waiter.

    Returns:
        The promoted analysis.

    Raises:
        VerificationError: the analysis aborted; ``decided_at`` holds the decision time.
    """
    result = analyse(prometheus, service=spec.name, namespace=env.namespace, colour=colour,
                     settings=settings, colour_label=env.colour_label,
                     app_label=env.app_label, clock=clock, sleeper=sleeper)
    for i, m in enumerate(result.measurements, start=1):
        get_logger().info("%s: measurement %d: success rate %s, p99 %s ms%s", spec.name, i,
                          m.success_rate, None if m.p99_ms is None else round(m.p99_ms),
                          f" ({m.error})" if m.error else "")
    try:
        raise_on_abort(result)
    except VerificationError as exc:
        exc.decided_at = result.decided_at  # type: ignore[attr-defined]
        raise
    return result


verify_task = task(name="verify", cache_policy=NO_CACHE)(verify)


def commit_switches(core_v1: k8s.CoreV1Api, env: EnvironmentSpec, services: list[str]) -> None:
    """Mark every switch of the release as committed.

    Args:
        core_v1: core API.
        env: the environment.
        services: Service names.
    """
    for name in services:
        clear_pending(core_v1, env.namespace, name)


commit_switches_task = task(
    name="commit-switches", retries=3, retry_delay_seconds=1,
    retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE,
)(commit_switches)


def scale_down(apps_v1: k8s.AppsV1Api, namespace: str, deployments: list[str]) -> list[str]:
    """Scale Deployments to zero (the old colour after the keep window).

    Args:
        apps_v1: apps API.
        namespace: namespace.
        deployments: Deployment names.

    Returns:
        The Deployments scaled down (missing ones are skipped).
    """
    done: list[str] = []
    for name in deployments:
        try:
            scale(apps_v1, namespace, name, 0)
        except NotFoundError:
            continue
        done.append(name)
    return done


scale_down_task = task(
    name="scale-to-zero", retries=3, retry_delay_seconds=1,
    retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE,
)(scale_down)


def keep_old_colour(
    seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleeper: Callable[[float], object] = time.sleep,
) -> None:
    """Wait out the instant-rollback window while the old colour still runs at full scale.

    Args:
        seconds: the window (the environment's ``keep_old_colour_s``).
        clock: monotonic clock (injected in tests).
        sleeper: waits (injected in tests).
    """
    get_logger().info("keeping the old colour for %.0f s (instant rollback)", seconds)
    deadline = clock() + seconds
    while (left := deadline - clock()) > 0:
        sleeper(min(left, 5.0))


keep_old_colour_task = task(name="keep-old-colour", cache_policy=NO_CACHE)(keep_old_colour)


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
                get_logger().warning("lock: renewal failed (%s); will retry", exc.message)

    thread = threading.Thread(target=renew, name="release-lock-renewal", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join(timeout=5)
