"""Smoke test of a colour's pods, straight to podIP:port, before it receives any traffic."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from kubernetes import client as k8s

from blocks.tls import verified_context
from errors import SmokeTestError
from errors.kubernetes import translate_api_errors


def ready_pods(
    core_v1: k8s.CoreV1Api, namespace: str, match_labels: dict[str, str]
) -> list[k8s.V1Pod]:
    """List the running, ready, not-terminating pods with the given labels.

    Args:
        core_v1: core API.
        namespace: namespace.
        match_labels: label selector as a dict.

    Returns:
        The pods.
    """
    selector = ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))
    with translate_api_errors(f"list pods {selector} in {namespace}"):
        pods = core_v1.list_namespaced_pod(namespace, label_selector=selector).items
    result: list[k8s.V1Pod] = []
    for pod in pods:
        meta = pod.metadata or k8s.V1ObjectMeta()
        if meta.deletion_timestamp is not None or not pod.status or not pod.status.pod_ip:
            continue
        ready = [c for c in pod.status.conditions or [] if c.type == "Ready"]
        if pod.status.phase == "Running" and ready and ready[0].status == "True":
            result.append(pod)
    return result


def smoke_test(
    pods: list[k8s.V1Pod],
    *,
    port: int,
    paths: list[str],
    attempts: int = 5,
    timeout_s: float = 5.0,
    backoff_s: float = 0.5,
    transport: httpx.BaseTransport | None = None,
    sleeper: Callable[[float], object] = time.sleep,
) -> list[str]:
    """GET each path on each pod directly (podIP:port) before it gets traffic.

    A path passes when one of ``attempts`` requests answers below 500.

    Args:
        pods: the new colour's ready pods.
        port: container port.
        paths: paths to request (ready, health, then the service's smoke paths).
        attempts: tries per path.
        timeout_s: per-request timeout.
        backoff_s: wait after the first failed try of a path; it grows linearly.
        transport: httpx transport (tests).
        sleeper: waits between tries (injected in tests).

    Returns:
        ``"GET http://ip:port/path -> 200"`` lines.

    Raises:
        SmokeTestError: no pod, or a path never answered below 500.
    """
    if not pods:
        raise SmokeTestError("smoke test: the new colour has no ready pod",
                             hint="check the new pods' readiness")
    lines: list[str] = []
    with httpx.Client(timeout=timeout_s, transport=transport, verify=verified_context()) as http:
        for pod in pods:
            ip = (pod.status or k8s.V1PodStatus()).pod_ip
            pod_name = (pod.metadata or k8s.V1ObjectMeta()).name
            for path in paths:
                url = f"http://{ip}:{port}{path}"
                last = "no answer"
                for attempt in range(1, attempts + 1):
                    if attempt > 1:
                        sleeper(backoff_s * (attempt - 1))
                    try:
                        code = http.get(url).status_code
                    except httpx.HTTPError as exc:
                        last = type(exc).__name__
                        continue
                    last = str(code)
                    if code < 500:
                        break
                else:
                    raise SmokeTestError(
                        f"smoke test of pod {pod_name}: GET {path} -> {last}",
                        hint="the new version does not answer; it received no traffic",
                    )
                lines.append(f"GET {url} -> {last}")
    return lines
