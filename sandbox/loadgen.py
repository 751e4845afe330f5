"""Traffic generator of the sandbox, so Prometheus has real requests to judge releases by.

``python -m sandbox.loadgen --kubeconfig DIR/kubeconfig`` lists, every second, the Services of
the namespaces labelled ``sandbox.veza.io/traffic=on`` and keeps one worker thread per Service
sending about ``--rate`` requests a second (or the namespace's ``sandbox.veza.io/traffic-rate``
annotation) to the Service's ``sandbox.veza.io/url`` on that service's API paths. Only loopback
URLs are called; the number of workers is bounded; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import itertools
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from sandbox.workload import API_PATHS, DEFAULT_PATHS

TRAFFIC_LABEL = "sandbox.veza.io/traffic=on"
URL_ANNOTATION = "sandbox.veza.io/url"
RATE_ANNOTATION = "sandbox.veza.io/traffic-rate"
MAX_RATE = 50.0
MAX_WORKERS = 64


def paths_for_service(name: str) -> tuple[str, ...]:
    """API paths of a Veza Service, from its name (``veza-backend-api`` -> backend paths).

    Args:
        name: the Service name.

    Returns:
        The paths its pods serve.
    """
    return API_PATHS.get("veza/" + name.removeprefix("veza-"), DEFAULT_PATHS)


def is_loopback_url(url: str) -> bool:
    """Tell whether ``url`` points at a loopback address.

    Args:
        url: an http URL.

    Returns:
        True for 127.0.0.0/8 hosts.
    """
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServiceWorker(threading.Thread):
    """Sends paced requests to one Service URL until stopped."""

    def __init__(self, url: str, paths: tuple[str, ...], rate: float, stats: Counter[str]) -> None:
        super().__init__(daemon=True, name=f"load-{url}")
        self.url = url.rstrip("/")
        self.paths = paths
        self.rate = rate
        self.interval = 1.0 / rate
        self.stats = stats
        self.halt = threading.Event()

    def run(self) -> None:
        """Loop over the paths, one request per interval (back to back when slower).

        One kept-alive ``http.client`` connection, replaced after any error: a third of
        httpx's CPU per request (0.29 against 0.94 ms measured), and the load generators of
        the suite's sandboxes send thousands.
        """
        parts = urlsplit(self.url)
        base = parts.path.rstrip("/")
        conn: http.client.HTTPConnection | None = None
        try:
            for path in itertools.cycle(self.paths):
                started = time.monotonic()
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80,
                                                          timeout=5.0)
                    conn.request("GET", f"{base}{path}")
                    answer = conn.getresponse()
                    answer.read()
                    status = str(answer.status)
                    if answer.will_close:
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException) as error:
                    status = type(error).__name__
                    if conn is not None:
                        conn.close()
                        conn = None
                self.stats[f"{self.url} {status}"] += 1
                if self.halt.wait(max(0.0, self.interval - (time.monotonic() - started))):
                    return
        finally:
            if conn is not None:
                conn.close()


class LoadGenerator:
    """Keeps one :class:`ServiceWorker` per traffic-enabled Service."""

    def __init__(self, kubeconfig: Path, *, rate: float) -> None:
        from kubernetes import client, config

        api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig)
        )
        self.core = client.CoreV1Api(api_client)
        self.rate = rate
        self.workers: dict[str, ServiceWorker] = {}
        self.stats: Counter[str] = Counter()

    def namespace_rate(self, annotations: dict[str, str] | None) -> float:
        """Requests a second per Service of a namespace: its annotation, else ``--rate``.

        Args:
            annotations: the namespace's annotations.

        Returns:
            The rate, within (0, 50]; an unreadable annotation falls back to the default.
        """
        try:
            rate = float((annotations or {}).get(RATE_ANNOTATION, self.rate))
        except ValueError:
            return self.rate
        return rate if 0 < rate <= MAX_RATE else self.rate

    def wanted(self) -> dict[str, tuple[tuple[str, ...], float]]:
        """Service URLs to load, with their paths and rate, from the cluster's current state.

        Returns:
            URL to (paths, requests a second).
        """
        found: dict[str, tuple[tuple[str, ...], float]] = {}
        namespaces = self.core.list_namespace(label_selector=TRAFFIC_LABEL, _request_timeout=5)
        for namespace in namespaces.items:
            if namespace.metadata is None or not namespace.metadata.name:
                continue
            rate = self.namespace_rate(namespace.metadata.annotations)
            services = self.core.list_namespaced_service(
                namespace.metadata.name, _request_timeout=5
            )
            for service in services.items:
                meta = service.metadata
                if meta is None or not meta.name:
                    continue
                url = (meta.annotations or {}).get(URL_ANNOTATION)
                if url and is_loopback_url(url):
                    found[url] = (paths_for_service(meta.name), rate)
        return dict(itertools.islice(found.items(), MAX_WORKERS))

    def refresh(self) -> None:
        """Start workers for new Services and stop those of vanished ones."""
        wanted = self.wanted()
        for url in list(self.workers):
            if url not in wanted or self.workers[url].rate != wanted[url][1]:
                self.workers.pop(url).halt.set()
        for url, (paths, rate) in wanted.items():
            if url not in self.workers:
                worker = ServiceWorker(url, paths, rate, self.stats)
                self.workers[url] = worker
                worker.start()

    def stop(self) -> None:
        """Stop every worker and wait for them."""
        for worker in self.workers.values():
            worker.halt.set()
        for worker in self.workers.values():
            worker.join(timeout=10)
        self.workers.clear()


def main(argv: list[str] | None = None) -> int:
    """Run the load generator until SIGTERM/SIGINT.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m sandbox.loadgen")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s per Service")
    args = parser.parse_args(argv)
    if not 0 < args.rate <= MAX_RATE:
        parser.error("--rate must be in (0, 50] requests per second")
    generator = LoadGenerator(args.kubeconfig, rate=args.rate)
    halt = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        halt.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"load generator: {args.rate} req/s per Service", file=sys.stderr, flush=True)
    ticks = 0
    while not halt.is_set():
        try:
            generator.refresh()
        except Exception as error:  # the API may be faulty on purpose; keep going
            print(f"refresh failed: {type(error).__name__}", file=sys.stderr, flush=True)
        ticks += 1
        if ticks % 30 == 0:
            with contextlib.suppress(RuntimeError):
                summary = ", ".join(f"{k}={v}" for k, v in sorted(generator.stats.items()))
                print(f"sent: {summary}", file=sys.stderr, flush=True)
        halt.wait(1.0)
    generator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
