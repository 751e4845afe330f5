"""The stand-in workload: probes, per-image API paths, metrics and injected behaviour."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandbox.procs import free_port, port_open, spawn, stop_pid, wait_until
from sandbox.registry import REGISTRY_ENV, Behaviour, ImageRegistry
from sandbox.workload import api_paths_for, repository_of

HOST = "127.0.0.1"


def _start(tmp_path: Path, image: str, behaviour: Behaviour,
           registry: Path | None = None) -> Generator[str, None, None]:
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "sandbox.workload", "--host", HOST, "--port", str(port),
         "--image", image, "--behaviour", behaviour.to_json()],
        log_path=tmp_path / f"workload-{port}.log",
        env={"PATH": "/usr/bin:/bin", "POD_NAME": "pod-x", "POD_NAMESPACE": "ns-y",
             "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
             **({REGISTRY_ENV: str(registry)} if registry else {})},
    )
    try:
        wait_until(lambda: port_open(port, HOST), timeout=15, what="workload port")
        yield f"http://{HOST}:{port}"
    finally:
        stop_pid(proc.pid)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[str]:
    yield from _start(tmp_path, "veza/backend-api:1.0.0", Behaviour())


def _samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{base}/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_repository_and_paths():
    assert repository_of("registry.local:5000/veza/web:2.0@sha256:abc") == "veza/web"
    assert repository_of("veza/chat-server:1.2.3") == "veza/chat-server"
    assert api_paths_for("veza/stream-server:9") == ("/api/v1/streams",)
    assert api_paths_for("busybox:latest") == ("/api/v1/echo",)


def test_probes_api_and_metrics(backend: str):
    assert httpx.get(f"{backend}/health").text == "ok"
    assert httpx.get(f"{backend}/ready").status_code == 200
    answer = httpx.get(f"{backend}/api/v1/tracks")
    assert answer.status_code == 200
    assert answer.json() == {
        "image": "veza/backend-api:1.0.0", "service": "veza/backend-api", "pod": "pod-x",
        "namespace": "ns-y", "path": "/api/v1/tracks",
    }
    assert httpx.get(f"{backend}/api/v1/users/me").status_code == 200
    assert httpx.get(f"{backend}/api/v1/rooms").status_code == 404
    samples = _samples(backend)
    ok = ("http_requests_total", (("method", "GET"), ("path", "/api/v1/tracks"), ("status", "200")))
    assert samples[ok] == 1
    missing = ("http_requests_total",
               (("method", "GET"), ("path", "unmatched"), ("status", "404")))
    assert samples[missing] == 1
    # probes and metrics are not counted
    assert not any(dict(labels).get("path") in ("/health", "/ready", "/metrics")
                   for (_, labels) in samples)
    bucket = ("http_request_duration_seconds_bucket",
              (("le", "0.05"), ("method", "GET"), ("path", "/api/v1/tracks")))
    assert bucket in samples


def test_web_serves_html(tmp_path: Path):
    for base in _start(tmp_path, "veza/web:3.1.0", Behaviour()):
        page = httpx.get(f"{base}/")
        assert page.headers["content-type"].startswith("text/html")
        assert "veza/web:3.1.0" in page.text and "pod-x" in page.text
        assert httpx.get(f"{base}/index.html").status_code == 200


def test_error_rate_latency_and_never_ready(tmp_path: Path):
    broken = Behaviour(error_rate=1.0, latency_ms=300, never_ready=True)
    for base in _start(tmp_path, "veza/chat-server:6.6.6", broken):
        assert httpx.get(f"{base}/ready").status_code == 503
        assert httpx.get(f"{base}/health").status_code == 200
        answer = httpx.get(f"{base}/api/v1/rooms")
        assert answer.status_code == 500
        assert answer.json()["image"] == "veza/chat-server:6.6.6"
        samples = _samples(base)
        labels = (("method", "GET"), ("path", "/api/v1/rooms"))
        assert samples[("http_requests_total", (*labels, ("status", "500")))] == 1
        # the added 300 ms put the one observation above the 0.25 s bucket
        assert samples[("http_request_duration_seconds_bucket", (("le", "0.25"), *labels))] == 0
        assert samples[("http_request_duration_seconds_count", labels)] == 1


def test_crash_on_start_exits_1():
    done = subprocess.run(
        [sys.executable, "-m", "sandbox.workload", "--port", str(free_port()),
         "--image", "veza/web:bad", "--behaviour", Behaviour(crash_on_start=True).to_json()],
        capture_output=True, text=True, timeout=30, check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 1
    assert "crash_on_start" in done.stderr


def test_a_following_pod_takes_a_later_push_of_its_image(tmp_path: Path):
    """``follow``: a running pod turns bad when its image is pushed again (a canary going bad
    at a chosen step); without it, a pod keeps the behaviour it started with."""
    registry = ImageRegistry(tmp_path / "registry.json")
    registry.push("veza/chat-server:7.0.0", Behaviour(follow=True))
    registry.push("veza/chat-server:7.0.1", Behaviour())
    following = _start(tmp_path, "veza/chat-server:7.0.0", Behaviour(follow=True), registry.path)
    fixed = _start(tmp_path, "veza/chat-server:7.0.1", Behaviour(), registry.path)
    base, other = next(following), next(fixed)
    try:
        assert httpx.get(f"{base}/api/v1/rooms").status_code == 200
        registry.push("veza/chat-server:7.0.0", Behaviour(error_rate=1.0, follow=True))
        registry.push("veza/chat-server:7.0.1", Behaviour(error_rate=1.0))
        assert httpx.get(f"{base}/api/v1/rooms").status_code == 500  # the very next request
        assert httpx.get(f"{other}/api/v1/rooms").status_code == 200
        registry.push("veza/chat-server:7.0.0", Behaviour(never_ready=True, follow=True))
        assert httpx.get(f"{base}/ready").status_code == 503
        assert httpx.get(f"{base}/api/v1/rooms").status_code == 200
    finally:
        for started in (following, fixed):
            started.close()
