"""The real Prometheus launched by the sandbox scrapes a workload found through file_sd."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.launchers.prometheus import PrometheusServer, start_prometheus, targets_path
from sandbox.procs import free_port, port_open, spawn, stop_pid, wait_until
from sandbox.registry import Behaviour

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusServer, str]]:
    """One workload pod, listed in targets.json the way the K8s emulator lists pods."""
    sandbox_dir = tmp_path_factory.mktemp("prom")
    port = free_port()
    pod = spawn(
        [sys.executable, "-m", "sandbox.workload", "--host", "127.0.0.1", "--port", str(port),
         "--image", "veza/backend-api:1.0.0", "--behaviour", Behaviour().to_json()],
        log_path=sandbox_dir / "pod.log", cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "POD_NAME": "veza-backend-api-blue-abc",
             "POD_NAMESPACE": "veza-staging-t1"},
    )
    targets = targets_path(sandbox_dir)
    targets.parent.mkdir(parents=True)
    targets.write_text(json.dumps([{
        "targets": [f"127.0.0.1:{port}"],
        "labels": {"namespace": "veza-staging-t1", "pod": "veza-backend-api-blue-abc",
                   "app": "veza-backend-api", "color": "blue", "pod_template_hash": "abc"},
    }]))
    prometheus = start_prometheus(sandbox_dir)
    try:
        wait_until(lambda: port_open(port), timeout=15, what="workload port")
        yield prometheus, f"http://127.0.0.1:{port}"
    finally:
        prometheus.stop()
        stop_pid(pod.pid)


def _query(prometheus: PrometheusServer, promql: str) -> list[dict]:
    answer = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": promql}, timeout=5)
    answer.raise_for_status()
    return answer.json()["data"]["result"]


def test_requests_counter_is_scraped_with_pod_labels(scraped):
    prometheus, pod_url = scraped
    for _ in range(3):
        assert httpx.get(f"{pod_url}/api/v1/tracks").status_code == 200
    query = 'http_requests_total{namespace="veza-staging-t1",app="veza-backend-api",color="blue"}'
    result = wait_until(lambda: _query(prometheus, query), timeout=30, what="scraped series")
    series = result[0]["metric"]
    assert series["path"] == "/api/v1/tracks" and series["status"] == "200"
    assert series["pod"] == "veza-backend-api-blue-abc" and series["job"] == "veza-pods"
    assert float(result[0]["value"][1]) >= 3


def test_alert_rules_are_loaded(scraped):
    prometheus, _ = scraped
    groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    alerts = {r["name"]: r for g in groups if g["name"].startswith("veza-") for r in g["rules"]}
    assert {"VezaHighErrorRate", "VezaHighLatencyP99", "VezaPodNotReady"} <= set(alerts)
    assert all(r["type"] == "alerting" and "severity" in r["labels"] for r in alerts.values())


def test_stop_and_start_again(scraped):
    prometheus, _ = scraped
    prometheus.stop()
    assert not prometheus.running()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{prometheus.url}/-/ready", timeout=2)
    prometheus.start()
    assert prometheus.ready()
    wait_until(lambda: _query(prometheus, 'up{job="veza-pods"} == 1'), timeout=30,
               what="scrapes to resume")
