"""The sandbox kubelet: environment resolution, config errors, probes, restarts, process cleanup."""

from __future__ import annotations

import base64
import json
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sandbox.k8s.controllers import ControllerManager
from sandbox.k8s.controllers.envs import ContainerConfigError, resolve_env
from sandbox.k8s.controllers.forking import FORK_ENV
from sandbox.k8s.resources import CONFIGMAPS, EVENTS, NAMESPACES, PODS, SECRETS
from sandbox.k8s.store import Store
from sandbox.procs import pid_alive
from sandbox.registry import Behaviour, ImageRegistry
from tests.k8s.controller_harness import Cluster, cluster, probe, wait_for

__all__ = ["cluster"]


def _pod(name: str, image: str, *, port: int = 8080, **container: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "main",
                "image": image,
                "ports": [{"containerPort": port, "name": "web"}],
                **container,
            }
        ]
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec,
    }


def _container_status(c: Cluster, ns: str, name: str) -> dict[str, Any]:
    statuses = (c.store.get(PODS, ns, name).get("status") or {}).get("containerStatuses") or [{}]
    first: dict[str, Any] = statuses[0]
    return first


def _ready_pid(c: Cluster, ns: str, name: str) -> int:
    """Wait until the pod's one container is ready; return its process id."""
    wait_for(lambda: _container_status(c, ns, name).get("ready"), what="pod ready")
    [pid] = c.manager.kubelet.pids()[(ns, name)]
    return pid


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_resolve_env_reads_secrets_configmaps_and_env_from():
    store = Store()
    store.create(NAMESPACES, None, {"metadata": {"name": "envs"}})
    store.create(SECRETS, "envs", {"metadata": {"name": "db"}, "stringData": {"url": "pg://x"}})
    store.create(CONFIGMAPS, "envs", {"metadata": {"name": "cfg"}, "data": {"mode": "fast"}})
    container = {
        "envFrom": [
            {"secretRef": {"name": "db"}, "prefix": "DB_"},
            {"configMapRef": {"name": "cfg"}},
        ],
        "env": [
            {"name": "URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "GREETING", "value": "mode=$(MODE)"},
            {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "OPT",
                "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
            },
        ],
    }
    env = resolve_env(store, "envs", container, fields={"metadata.name": "pod-1"})
    assert env == {
        "DB_url": "pg://x",
        "mode": "fast",
        "URL": "pg://x",
        "MODE": "fast",
        "GREETING": "mode=fast",
        "ME": "pod-1",
    }
    with pytest.raises(ContainerConfigError, match='secret "missing" not found'):
        resolve_env(store, "envs", {"envFrom": [{"secretRef": {"name": "missing"}}]})
    with pytest.raises(ContainerConfigError, match="couldn't find key nokey in Secret envs/db"):
        resolve_env(
            store,
            "envs",
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nokey"}}}]},
        )


def test_missing_secret_gives_create_container_config_error_until_it_exists(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
):
    # Exec'd, not forked: a forked container's /proc/PID/environ is its fork server's.
    monkeypatch.setenv(FORK_ENV, "0")
    ns = cluster.namespace()
    image = cluster.push("veza/backend-api:env")
    cluster.store.create(
        PODS, ns, _pod("needs-secret", image, envFrom=[{"secretRef": {"name": "api-secrets"}}])
    )
    wait_for(
        lambda: (
            _container_status(cluster, ns, "needs-secret")
            .get("state", {})
            .get("waiting", {})
            .get("reason")
            == "CreateContainerConfigError"
        ),
        what="config error",
    )
    waiting = _container_status(cluster, ns, "needs-secret")["state"]["waiting"]
    assert waiting["message"] == 'secret "api-secrets" not found'
    assert cluster.store.get(PODS, ns, "needs-secret")["status"]["phase"] == "Pending"

    cluster.store.create(
        SECRETS,
        ns,
        {
            "metadata": {"name": "api-secrets"},
            "data": {"jwt_secret": base64.b64encode(b"s3cr3t").decode()},
        },
    )
    pid = _ready_pid(cluster, ns, "needs-secret")
    env = _environ(pid)
    assert env["jwt_secret"] == "s3cr3t"
    assert env["POD_NAME"] == "needs-secret" and env["POD_NAMESPACE"] == ns
    assert "s3cr3t" not in Path(f"/proc/{pid}/cmdline").read_bytes().decode()


def test_a_forked_workload_container_is_the_pod_it_stands_for(cluster: Cluster):
    ns = cluster.namespace()
    image = cluster.push("veza/backend-api:forked")
    cluster.store.create(PODS, ns, _pod("forked", image, readinessProbe=probe("/ready")))
    pid = _ready_pid(cluster, ns, "forked")
    ip = cluster.store.get(PODS, ns, "forked")["status"]["podIP"]
    # A child of the fork server, not of this process (the kubelet): no interpreter start.
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert ppid != os.getpid()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert f"-m sandbox.workload --host {ip} --port 8080 --image {image}" in cmdline
    # The container's environment: the workload names its pod and namespace from it.
    with urllib.request.urlopen(f"http://{ip}:8080/api/v1/tracks", timeout=10) as answer:
        body = json.loads(answer.read())
    assert (body["pod"], body["namespace"], body["image"]) == ("forked", ns, image)
    log = cluster.manager.kubelet.ctx.workdir / "pods" / ns / "forked_main.log"
    assert f"serving {image} on {ip}:8080" in log.read_text()
    # The fork server reaps it and hands back its status: SIGKILL reads as 137, as exec'd.
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: _container_status(cluster, ns, "forked").get("restartCount", 0) >= 1,
        what="a restart after SIGKILL",
    )
    last = _container_status(cluster, ns, "forked")["lastState"]["terminated"]
    assert last["exitCode"] == 137


def test_deleting_a_pod_kills_its_process(cluster: Cluster):
    ns = cluster.namespace()
    image = cluster.push("veza/backend-api:del")
    cluster.store.create(PODS, ns, _pod("doomed", image, readinessProbe=probe("/ready")))
    pid = _ready_pid(cluster, ns, "doomed")
    assert pid_alive(pid)
    cluster.store.delete(PODS, ns, "doomed")
    wait_for(lambda: not pid_alive(pid), what="the container process to exit")


def test_failing_liveness_probe_restarts_the_container(cluster: Cluster):
    ns = cluster.namespace()
    image = cluster.push("veza/backend-api:live")
    cluster.store.create(
        PODS,
        ns,
        _pod(
            "unhealthy",
            image,
            livenessProbe={
                "httpGet": {"path": "/no-such-path", "port": "web"},
                "periodSeconds": 1,
                "failureThreshold": 1,
            },
        ),
    )
    wait_for(
        lambda: _container_status(cluster, ns, "unhealthy").get("restartCount", 0) >= 1,
        what="a liveness restart",
    )
    events = {
        e["reason"]
        for e in cluster.store.list(EVENTS, ns)[0]
        if e["involvedObject"]["name"] == "unhealthy"
    }
    assert {"Unhealthy", "Killing", "Started", "Created"} <= events


def test_readiness_follows_the_probe_and_never_ready_stays_unready(cluster: Cluster):
    ns = cluster.namespace()
    image = cluster.push("veza/web:never", never_ready=True)
    cluster.store.create(PODS, ns, _pod("shy", image, readinessProbe=probe("/ready")))
    wait_for(
        lambda: any(
            e["reason"] == "Unhealthy" and "Readiness" in e["message"]
            for e in cluster.store.list(EVENTS, ns)[0]
        ),
        what="readiness failures",
    )
    pod = cluster.store.get(PODS, ns, "shy")
    assert pod["status"]["phase"] == "Running"
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ContainersNotReady"
    assert pod["status"]["containerStatuses"][0]["ready"] is False


def test_restart_policy_never_ends_in_failed(cluster: Cluster):
    ns = cluster.namespace()
    image = cluster.push("veza/web:crash-once", crash_on_start=True)
    body = _pod("one-shot", image)
    body["spec"]["restartPolicy"] = "Never"
    cluster.store.create(PODS, ns, body)
    wait_for(
        lambda: cluster.store.get(PODS, ns, "one-shot")["status"]["phase"] == "Failed",
        what="phase Failed",
    )
    terminated = _container_status(cluster, ns, "one-shot")["state"]["terminated"]
    assert terminated["exitCode"] == 1 and terminated["reason"] == "Error"


def test_stopping_the_manager_kills_every_pod_process(tmp_path: Path):
    store = Store()
    store.create(NAMESPACES, None, {"metadata": {"name": "stop"}})
    registry = ImageRegistry(tmp_path / "registry.json")
    registry.push("veza/web:stop", Behaviour())
    manager = ControllerManager(
        store,
        registry_path=tmp_path / "registry.json",
        file_sd_path=tmp_path / "targets.json",
        ip_prefix="127.231.8",
        workdir=tmp_path / "work",
    )
    manager.start()
    try:
        for i in range(2):
            store.create(PODS, "stop", _pod(f"p{i}", "veza/web:stop"))
        pids = wait_for(
            lambda: (
                [p for ps in manager.kubelet.pids().values() for p in ps]
                if len(manager.kubelet.pids()) == 2
                else None
            ),
            what="two processes",
        )
        assert all(pid_alive(p) for p in pids)
    finally:
        manager.stop()
    assert not any(pid_alive(p) for p in pids)
