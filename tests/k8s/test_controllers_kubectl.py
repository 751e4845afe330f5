"""The controllers through the whole emulator, driven by real kubectl: rollout status and undo."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from sandbox.registry import Behaviour, ImageRegistry


def _manifest(name: str, image: str) -> str:
    probe = {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 60,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "api",
                            "image": image,
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": probe,
                        }
                    ]
                },
            },
        },
    }
    return json.dumps(deployment)


def _deployment(kubectl: Any, ns: str, name: str) -> dict[str, Any]:
    out = kubectl("get", "deployment", name, "-n", ns, "-o", "json").stdout
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def test_kubectl_rollout_status_set_image_undo_and_deadline(
    k8s_server: Any, kubectl: Any, k8s_namespace: str
):
    ns = k8s_namespace
    registry = ImageRegistry(Path(k8s_server.kubeconfig).parent / "registry.json")
    for tag in ("1", "2"):
        registry.push(f"veza/backend-api:kubectl-{tag}", Behaviour())
    kubectl(
        "create",
        "-n",
        ns,
        "--validate=false",
        "-f",
        "-",
        input=_manifest("api", "veza/backend-api:kubectl-1"),
    )
    done = kubectl("rollout", "status", "deployment/api", "-n", ns, "--timeout=60s")
    assert 'deployment "api" successfully rolled out' in done.stdout

    kubectl("set", "image", "deployment/api", "api=veza/backend-api:kubectl-2", "-n", ns)
    kubectl("rollout", "status", "deployment/api", "-n", ns, "--timeout=60s")
    assert (
        _deployment(kubectl, ns, "api")["metadata"]["annotations"][
            "deployment.kubernetes.io/revision"
        ]
        == "2"
    )

    kubectl("rollout", "undo", "deployment/api", "-n", ns)
    kubectl("rollout", "status", "deployment/api", "-n", ns, "--timeout=60s")
    d = _deployment(kubectl, ns, "api")
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "veza/backend-api:kubectl-1"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    history = kubectl("rollout", "history", "deployment/api", "-n", ns).stdout
    assert "2" in history and "3" in history

    kubectl("scale", "deployment/api", "--replicas=3", "-n", ns)
    kubectl("rollout", "status", "deployment/api", "-n", ns, "--timeout=60s")
    pods = json.loads(kubectl("get", "pods", "-n", ns, "-l", "app=api", "-o", "json").stdout)
    assert len(pods["items"]) == 3

    bad = {
        "spec": {
            "progressDeadlineSeconds": 3,
            "template": {
                "spec": {"containers": [{"name": "api", "image": "veza/backend-api:never-pushed"}]}
            },
        }
    }
    kubectl("patch", "deployment/api", "-n", ns, "-p", json.dumps(bad))
    failed = kubectl("rollout", "status", "deployment/api", "-n", ns, "--timeout=60s", check=False)
    assert failed.returncode != 0
    assert "exceeded its progress deadline" in failed.stderr


def _children(pid: int) -> list[int]:
    """Child pids of every thread of ``pid`` (pods are started from kubelet worker threads)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue  # the thread ended meanwhile
    return out


def test_stopping_the_emulator_kills_every_pod_process(tmp_path: Path):
    from sandbox.k8s.launcher import start_k8s
    from sandbox.procs import pid_alive, wait_until

    registry = ImageRegistry(tmp_path / "registry.json")
    registry.push("veza/web:stop", Behaviour())
    server = start_k8s(
        tmp_path,
        registry_path=tmp_path / "registry.json",
        file_sd_path=tmp_path / "targets.json",
        ip_prefix=f"127.250.{os.getpid() % 100 * 2}",
    )
    children: list[int] = []
    try:
        run = ["kubectl", "--kubeconfig", str(server.kubeconfig), "--cache-dir", str(tmp_path)]
        manifest = _manifest("stop", "veza/web:stop").replace("8080", "80")
        subprocess.run(
            [*run, "create", "--validate=false", "-f", "-"],
            input=manifest,
            text=True,
            check=True,
            capture_output=True,
            timeout=60,
        )
        subprocess.run(
            [*run, "rollout", "status", "deployment/stop", "--timeout=60s"],
            check=True,
            capture_output=True,
            timeout=90,
        )
        children = _children(server.pid)
        assert len(children) == 2 and all(pid_alive(p) for p in children)
    finally:
        server.stop()
    wait_until(
        lambda: not any(pid_alive(p) for p in children), timeout=15, what="pod processes to exit"
    )
