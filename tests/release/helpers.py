"""Helpers of the release tests: a per-test catalogue, blocks, images and cluster reads."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config

SERVICES = {
    "veza-backend-api": ("veza/backend-api", 8080, ["/health", "/api/v1/tracks"]),
    "veza-chat-server": ("veza/chat-server", 8081, ["/health", "/api/v1/rooms"]),
    "veza-stream-server": ("veza/stream-server", 8082, ["/health", "/api/v1/streams"]),
    "veza-web": ("veza/web", 80, ["/health", "/"]),
}
ORDER = list(SERVICES)


_SAVED: dict[tuple[str, str, float], str] = {}


def register_blocks(sandbox: Any, *, request_timeout_s: float = 30.0, own: bool = False) -> str:
    """Save the blocks pointing at the sandbox; returns their common name.

    Saved once per Prefect API, sandbox and timeout in a worker, then shared by its tests: they
    read them only (a block save is several requests). ``own=True``: blocks of the test's own,
    for a test that adds a block under their name (e.g. Slack).
    """
    from prefect.settings import PREFECT_API_URL

    from blocks.kubernetes import KubernetesCluster
    from blocks.prometheus import PrometheusServer
    from blocks.vault import VaultServer

    key = (str(PREFECT_API_URL.value()), str(sandbox.kubeconfig), request_timeout_s)
    if not own and key in _SAVED:
        return _SAVED[key]
    name = f"l2-{uuid.uuid4().hex[:8]}"
    KubernetesCluster(kubeconfig_path=str(sandbox.kubeconfig), context="sandbox",
                      request_timeout_s=request_timeout_s).save(name, overwrite=True)
    PrometheusServer(url=sandbox.prometheus_url).save(name, overwrite=True)
    VaultServer(address=sandbox.vault_addr, token=sandbox.vault_token).save(name, overwrite=True)
    if not own:
        _SAVED[key] = name
    return name


def write_catalogue(
    path: Path, *, staging_ns: str, production_ns: str, blocks: str,
    interval_s: float = 1.0, intervals: int = 2, failure_limit: int = 0, max_no_data: int = 6,
    window_s: float | None = 3.0, min_requests: int = 0,
    keep_old_colour_s: float = 0.0, rollout_timeout_s: float = 25.0, lock_ttl_s: int = 15,
    lock_wait_s: float = 0.0, build: dict[str, Any] | None = None,
    e2e_command: list[str] | None = None, staging: bool = True,
) -> Path:
    """Write a catalogue YAML for one test's namespace pair (``staging_ns=""``: no staging).

    The analysis defaults are as short as the sandbox's 1 s scrape allows: two healthy
    1 s intervals promote; a 3 s rate window (three scrapes; the product's floor of 5 s would
    keep the first switched service silent until its new series are 5 s old); up to 6 silent
    intervals are tolerated while a new colour's series appear (silence never promotes).
    ``window_s=None``: the product's default window. ``min_requests``: fewer requests in a
    window make the interval no data (a loaded machine's load generator can fall far below
    its rate). ``staging=False``: production only,
    released without staging (``staging_ns`` is then unused).
    """
    analysis = {"success_rate_min": 0.99, "p99_max_ms": 500, "interval_s": interval_s,
                "intervals": intervals, "failure_limit": failure_limit,
                "max_no_data": max_no_data, "min_requests": min_requests,
                **({"window_s": window_s} if window_s is not None else {})}
    common = {"kubernetes_block": blocks, "prometheus_block": blocks, "vault_block": blocks,
              "rollout_timeout_s": rollout_timeout_s, "lock_ttl_s": lock_ttl_s,
              "lock_wait_s": lock_wait_s, "required_alerts": ["VezaHighErrorRate"]}
    data: dict[str, Any] = {
        "environments": {
            "staging": {"namespace": staging_ns, "strategy": "rolling", **common},
            "production": {"namespace": production_ns, "strategy": "blue-green",
                           "keep_old_colour_s": keep_old_colour_s,
                           "staging_environment": "staging", **common},
        },
        "services": {
            name: {"image_repository": repo, "port": port, "smoke_paths": smoke,
                   "analysis": analysis, **({"build": build} if build else {})}
            for name, (repo, port, smoke) in SERVICES.items()
        },
        "switch_order": ORDER,
    }
    if not staging:
        del data["environments"]["staging"]
        del data["environments"]["production"]["staging_environment"]
    if e2e_command:
        data["e2e_command"] = e2e_command
    if not staging_ns:  # production alone: the release skips staging and E2E
        del data["environments"]["staging"]
        del data["environments"]["production"]["staging_environment"]
    path.write_text(yaml.safe_dump(data))
    return path


def apis(sandbox: Any) -> tuple[Any, Any]:
    """Apps and core APIs of the sandbox."""
    api = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(sandbox.kubeconfig), context="sandbox")
    return k8s.AppsV1Api(api), k8s.CoreV1Api(api)


def selectors(core: Any, namespace: str) -> dict[str, Any]:
    """Service name -> colour it selects."""
    return {name: selected(core, namespace, name) for name in ORDER}


def selected(core: Any, namespace: str, service: str) -> Any:
    """The colour one Service selects: one read (a wait polling at 0.1 s reads it ten times a
    second, ~3 ms of CPU each between the client and the emulator)."""
    return core.read_namespaced_service(service, namespace).spec.selector.get("color")


def catalogue_without_cluster(path: Path, blocks: str = "no-such-block") -> Path:
    """A catalogue whose namespaces do not exist (for inputs refused before any request)."""
    suffix = uuid.uuid4().hex[:6]
    return write_catalogue(path, staging_ns=f"nowhere-s-{suffix}",
                           production_ns=f"nowhere-p-{suffix}", blocks=blocks)


def images(apps: Any, namespace: str, colour: str) -> dict[str, tuple[Any, Any]]:
    """Service name -> (image, replicas) of its colour's Deployment."""
    out = {}
    for name in ORDER:
        dep = apps.read_namespaced_deployment(f"{name}-{colour}", namespace)
        out[name] = (dep.spec.template.spec.containers[0].image, dep.spec.replicas)
    return out


def push_all(sandbox: Any, version: str, **behaviour: Any) -> None:
    """Register every service's image of a version with a behaviour."""
    from sandbox.registry import Behaviour

    for repo, _, _ in SERVICES.values():
        sandbox.registry.push(f"{repo}:{version}", Behaviour(**behaviour))


def snapshot(apps: Any, core: Any, namespace: str) -> dict[str, Any]:
    """Spec-level state of a namespace's Deployments, Services, Secrets and ConfigMaps."""
    deps = {d.metadata.name: (d.metadata.generation, d.spec.replicas,
                              [c.image for c in d.spec.template.spec.containers])
            for d in apps.list_namespaced_deployment(namespace).items}
    svcs = {s.metadata.name: (dict(s.spec.selector or {}), dict(s.metadata.annotations or {}))
            for s in core.list_namespaced_service(namespace).items}
    secrets = sorted(s.metadata.name for s in core.list_namespaced_secret(namespace).items)
    maps = sorted(m.metadata.name for m in core.list_namespaced_config_map(namespace).items)
    return {"deployments": deps, "services": svcs, "secrets": secrets, "configmaps": maps}


KILL_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from flows.release import release
release(version=sys.argv[2], environment="production", catalogue_path=sys.argv[3],
        skip_build=True, services=json.loads(sys.argv[4]))
"""


def release_killed_after_first_switch(sandbox: Any, *, production: str, catalogue: Path,
                                      version: str, workdir: Path) -> None:
    """Run a release in its own process and SIGKILL it once the first Service is switched."""
    _, core = apis(sandbox)
    release_killed_when(
        lambda: selected(core, production, "veza-backend-api") == "green",
        what="the first switch", catalogue=catalogue, version=version, workdir=workdir)


def release_killed_when(when: Any, *, what: str, catalogue: Path, version: str,
                        workdir: Path, services: list[str] | None = None,
                        signum: int = signal.SIGKILL) -> int:
    """Run a release (of ``services``, default all) in its own process; send it ``signum``
    (default SIGKILL) as soon as ``when()`` is true. Returns the process's exit status (a
    process that can still run its hooks is given 120 s to end)."""
    import json
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    from sandbox.procs import wait_until

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "PREFECT_HOME": str(workdir / "prefect-home")}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, root, version, str(catalogue),
         json.dumps(services)],
        env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(when, timeout=300, what=what, interval=0.1)
        os.kill(proc.pid, signum)
        return proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def api_faults(apps: Any, method: str, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Call the emulator's fault hooks (``/sandbox/faults``) with the client's own credentials."""
    import httpx

    cfg = apps.api_client.configuration
    token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
    token = token if token.lower().startswith("bearer ") else f"Bearer {token}"
    answer = httpx.request(method, f"{cfg.host}/sandbox/faults", json=body, timeout=10,
                           headers={"Authorization": token},
                           verify=cfg.ssl_ca_cert if cfg.verify_ssl else False)
    answer.raise_for_status()
    return list(answer.json()["faults"])


def in_thread(fn: Any) -> tuple[Any, list[Any]]:
    """Run ``fn`` in a started thread; its result or the exception it raised lands in the list."""
    import threading

    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out
