"""The assembled sandbox: `veza-ops sandbox up|status|down`, real kubectl, fixtures, faults."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import hvac
import hvac.exceptions
import pytest
from kubernetes import client, config

from sandbox.procs import pid_alive, wait_until
from sandbox.registry import Behaviour, ImageRegistry

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEZA_SANDBOX_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def veza_ops(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "veza_ops", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig),
                           "--cache-dir", str(kubeconfig.parent / "kube-cache"), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def _processes_on(prefix: str) -> list[int]:
    """Pids of live processes whose command line names an address of ``prefix``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f" {prefix}." in cmdline and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def cli_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("cli-sandbox")
    started = veza_ops("sandbox", "up", "--dir", str(directory))
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield directory
    finally:
        veza_ops("sandbox", "down", "--dir", str(directory))


def _state(directory: Path) -> dict:
    return json.loads((directory / "state.json").read_text())


def test_kubectl_sees_seeded_deployments(cli_sandbox: Path):
    kubeconfig = cli_sandbox / "kubeconfig"
    listed = kubectl(kubeconfig, "get", "deploy", "-A")
    assert listed.returncode == 0, listed.stderr
    for namespace in ("veza-staging", "veza-production"):
        for service in ("backend-api", "chat-server", "stream-server", "web"):
            assert any(line.split()[:2] == [namespace, f"veza-{service}-blue"]
                       and line.split()[2] == "2/2" for line in listed.stdout.splitlines())
    rolled = kubectl(kubeconfig, "rollout", "status", "deploy/veza-backend-api-blue",
                     "-n", "veza-staging", "--timeout=60s")
    assert rolled.returncode == 0, rolled.stderr
    assert "successfully rolled out" in rolled.stdout


def test_env_file_points_shell_clients_at_the_sandbox(cli_sandbox: Path, tmp_path: Path):
    script = (f". {cli_sandbox / 'env'} && kubectl get svc veza-web -n veza-production -o name"
              " && python -c 'import os,urllib.request;"
              "print(urllib.request.urlopen(os.environ[\"VEZA_STAGING_BACKEND_API_URL\"]"
              "+\"/api/v1/tracks\").read().decode())'")
    ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                         env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                              "HOME": str(tmp_path)},
                         cwd=tmp_path, check=False)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == "service/veza-web"
    answer = json.loads(lines[1])
    assert answer["namespace"] == "veza-staging" and answer["image"] == "veza/backend-api:1.0.0"
    env_text = (cli_sandbox / "env").read_text()
    for name in ("KUBECONFIG", "VAULT_ADDR", "VAULT_TOKEN", "PROMETHEUS_URL",
                 "VEZA_SANDBOX_REGISTRY", "VEZA_PRODUCTION_WEB_URL"):
        assert f"export {name}=" in env_text
    assert (cli_sandbox / "env").stat().st_mode & 0o077 == 0


def test_seeded_secrets_come_from_vault(cli_sandbox: Path):
    env = dict(line.removeprefix("export ").split("=", 1)
               for line in (cli_sandbox / "env").read_text().splitlines()
               if line.startswith("export "))
    vault = hvac.Client(url=env["VAULT_ADDR"], token=env["VAULT_TOKEN"].strip("'"))
    stored = vault.secrets.kv.v2.read_secret_version(
        path="veza/production/veza-backend-api", raise_on_deleted_version=True)["data"]["data"]
    secret = kubectl(cli_sandbox / "kubeconfig", "get", "secret", "veza-backend-api-secrets",
                     "-n", "veza-production", "-o", "json")
    data = json.loads(secret.stdout)["data"]
    assert base64.b64decode(data["DATABASE_URL"]).decode() == stored["database_url"]
    assert base64.b64decode(data["JWT_SECRET"]).decode() == stored["jwt_secret"]


def test_status_lists_running_pids(cli_sandbox: Path):
    shown = veza_ops("sandbox", "status", "--dir", str(cli_sandbox), timeout=60)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for name, entry in _state(cli_sandbox)["processes"].items():
        assert any(line.split()[:3] == [name, "pid", str(entry["pid"])] and "running" in line
                   for line in shown.stdout.splitlines()), shown.stdout
    assert f". {cli_sandbox / 'env'}" in shown.stdout


def test_second_up_in_the_same_dir_is_refused(cli_sandbox: Path):
    again = veza_ops("sandbox", "up", "--dir", str(cli_sandbox), "--no-seed", timeout=60)
    assert again.returncode == 1
    assert "already runs" in again.stderr and "sandbox down" in again.stderr
    assert all(row_alive for row_alive in _alive(cli_sandbox))


def _alive(directory: Path) -> list[bool]:
    return [pid_alive(e["pid"]) for e in _state(directory)["processes"].values()]


def test_push_records_an_image_behaviour(tmp_path: Path):
    pushed = veza_ops("sandbox", "push", "veza/web:9.9.9", "--error-rate", "0.5",
                      "--latency-ms", "700", "--never-ready", "--dir", str(tmp_path), timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    found = ImageRegistry(tmp_path / "registry.json").lookup("veza/web:9.9.9")
    assert found == Behaviour(error_rate=0.5, latency_ms=700, never_ready=True)


def test_two_sandboxes_do_not_collide(cli_sandbox: Path, sandbox_stack):
    other = _state(cli_sandbox)
    assert other["ip_prefix"] != sandbox_stack.ip_prefix
    assert other["processes"]["k8s"]["url"] != sandbox_stack.api_url
    assert other["processes"]["vault"]["url"] != sandbox_stack.vault_addr
    assert other["processes"]["prometheus"]["url"] != sandbox_stack.prometheus_url
    for url in (sandbox_stack.prometheus_url, other["processes"]["prometheus"]["url"]):
        assert httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
    # the fixture's sandbox is not seeded: no Veza deployment appears in it
    listed = kubectl(sandbox_stack.kubeconfig, "get", "deploy", "-n", "veza-staging", "-o", "name")
    assert listed.stdout.strip() == ""


def test_down_stops_every_process(cli_sandbox: Path):
    state = _state(cli_sandbox)
    pids = [entry["pid"] for entry in state["processes"].values()]
    assert _processes_on(state["ip_prefix"]), "pods should run before down"
    stopped = veza_ops("sandbox", "down", "--dir", str(cli_sandbox), timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert not [pid for pid in pids if pid_alive(pid)]
    assert _processes_on(state["ip_prefix"]) == []
    assert not (cli_sandbox / "state.json").exists()
    assert veza_ops("sandbox", "down", "--dir", str(cli_sandbox)).returncode == 0
    assert veza_ops("sandbox", "status", "--dir", str(cli_sandbox)).returncode == 1


def test_sandbox_namespaces_fixture_seeds_a_fresh_pair_with_traffic(sandbox_stack,
                                                                    sandbox_namespaces):
    staging, production = sandbox_namespaces
    assert staging.startswith("veza-staging-") and production.startswith("veza-production-")
    api = config.new_client_from_config(config_file=str(sandbox_stack.kubeconfig),
                                        context="sandbox")
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    assert core.read_namespace(production).metadata.labels["sandbox.veza.io/traffic"] == "on"
    # staging is never judged by Prometheus: no load there
    assert (core.read_namespace(staging).metadata.labels or {}).get(
        "sandbox.veza.io/traffic") != "on"
    deployment = apps.read_namespaced_deployment("veza-chat-server-blue", production)
    assert deployment.status.available_replicas == 1  # the fixture seeds one replica
    service = core.read_namespaced_service("veza-chat-server", production)
    url = service.metadata.annotations["sandbox.veza.io/url"]
    answer = httpx.get(f"{url}/api/v1/rooms", timeout=10).json()
    assert answer["namespace"] == production
    assert answer["pod"].startswith("veza-chat-server-blue-")

    # the load generator found the traffic-labelled namespace; Prometheus scraped its pods
    query = f'sum by (app, color) (http_requests_total{{namespace="{production}"}})'

    def apps_with_traffic() -> set[str] | None:
        answer = httpx.get(f"{sandbox_stack.prometheus_url}/api/v1/query",
                           params={"query": query}, timeout=10).json()
        found = {r["metric"]["app"] for r in answer["data"]["result"]
                 if r["metric"].get("color") == "blue" and float(r["value"][1]) > 0}
        return found if len(found) == 4 else None

    found = wait_until(apps_with_traffic, timeout=60, what="load generator traffic in Prometheus")
    assert found == {"veza-backend-api", "veza-chat-server", "veza-stream-server", "veza-web"}

    # the fixture's rate is carried by the namespace, and the load generator follows it
    from sandbox.loadgen import LoadGenerator
    from tests.fixtures.sandbox import TEST_RATE

    assert core.read_namespace(production).metadata.annotations[
        "sandbox.veza.io/traffic-rate"] == f"{TEST_RATE:g}"
    generator = LoadGenerator(sandbox_stack.kubeconfig, rate=10.0)
    assert generator.wanted()[url][1] == TEST_RATE
    assert generator.namespace_rate({"sandbox.veza.io/traffic-rate": "x"}) == 10.0
    assert generator.namespace_rate({"sandbox.veza.io/traffic-rate": "500"}) == 10.0
    assert generator.namespace_rate(None) == 10.0


def test_fault_helpers(sandbox_stack):
    api = config.new_client_from_config(config_file=str(sandbox_stack.kubeconfig),
                                        context="sandbox")
    core = client.CoreV1Api(api)
    sandbox_stack.set_api_faults(verb="list", resource="namespaces", error_rate=1.0)
    try:
        with pytest.raises(client.exceptions.ApiException) as failed:
            core.list_namespace(_request_timeout=10)
        assert failed.value.status >= 500
    finally:
        sandbox_stack.clear_api_faults()
    assert core.list_namespace(_request_timeout=10).items

    vault = sandbox_stack.vault_client()
    sandbox_stack.seal_vault()
    try:
        with pytest.raises(hvac.exceptions.VaultDown):
            vault.secrets.kv.v2.read_secret_version(path="veza/x", raise_on_deleted_version=True)
    finally:
        sandbox_stack.unseal_vault()
    assert not vault.sys.is_sealed()

    sandbox_stack.stop_prometheus()
    try:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{sandbox_stack.prometheus_url}/-/ready", timeout=5)
    finally:
        sandbox_stack.start_prometheus()
    assert httpx.get(f"{sandbox_stack.prometheus_url}/-/ready", timeout=5).status_code == 200


def test_down_stops_processes_recorded_beside_the_sandbox(tmp_path: Path):
    from sandbox.stack import down, read_state, record_process, status

    # A "worker" whose child leads its own session (like a Prefect flow run), and a "server".
    worker = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.Popen([sys.executable, '-c', "
         "'import time; time.sleep(300)'], start_new_session=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, start_new_session=True)
    server = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                              stdin=subprocess.PIPE, start_new_session=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    try:
        from sandbox.procs import child_pids

        children = wait_until(lambda: child_pids(worker.pid), timeout=30, what="the flow run")
        record_process(tmp_path, "server", server.pid, remove=[scratch], url="http://x")
        record_process(tmp_path, "worker", worker.pid, stop_children=True)
        with pytest.raises(Exception, match="part of the sandbox"):
            record_process(tmp_path, "vault", server.pid)
        assert read_state(tmp_path)["extras"] == ["server", "worker"]
        assert {row["name"]: row["alive"] for row in status(tmp_path)} == {
            "server": True, "worker": True}
        down(tmp_path)
        assert worker.poll() is not None and server.poll() is not None
        assert not any(pid_alive(child) for child in children)
        assert not scratch.exists() and read_state(tmp_path) is None
    finally:
        for proc in (worker, server):
            proc.kill()
