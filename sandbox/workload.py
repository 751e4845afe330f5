"""The stand-in service run for every container image in the sandbox.

``python -m sandbox.workload --host IP --port PORT --image IMAGE --behaviour JSON`` serves
``/health`` (liveness), ``/ready`` (readiness), ``/metrics`` (Prometheus text) and a few API
paths chosen from the image repository, answering JSON that names the image and the pod so a
test can tell which colour served it. Behaviour (error rate, added latency, never ready,
crash on start) comes from the sandbox image registry entry of the image; with ``follow``
the running process keeps following that entry (``$VEZA_SANDBOX_REGISTRY``), so a later push
changes pods already running.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sandbox.procs import serve_until_terminated
from sandbox.registry import REGISTRY_ENV, Behaviour, ImageRegistry

API_PATHS: dict[str, tuple[str, ...]] = {
    "veza/backend-api": ("/api/v1/tracks", "/api/v1/users/me"),
    "veza/chat-server": ("/api/v1/rooms",),
    "veza/stream-server": ("/api/v1/streams",),
    "veza/web": ("/", "/index.html"),
}
DEFAULT_PATHS: tuple[str, ...] = ("/api/v1/echo",)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PROBE_PATHS = frozenset({"/health", "/healthz", "/ready", "/readyz", "/metrics"})


def repository_of(image: str) -> str:
    """Return the repository part of an image reference, without registry host, tag or digest.

    Args:
        image: e.g. ``registry.local:5000/veza/backend-api:1.2.3``.

    Returns:
        e.g. ``veza/backend-api``.
    """
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name = name[:colon]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    return "/".join(parts)


def api_paths_for(image: str) -> tuple[str, ...]:
    """Return the API paths a container of ``image`` serves.

    Args:
        image: full image reference.

    Returns:
        The paths (``/api/v1/echo`` for images that are not Veza services).
    """
    return API_PATHS.get(repository_of(image), DEFAULT_PATHS)


@dataclass
class Workload:
    """What one stand-in process serves, and its metrics."""

    image: str
    behaviour: Behaviour
    pod: str
    namespace: str
    registry_path: Path | None = None
    _seen: tuple[int, int, int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.follows = self.behaviour.follow
        # Imported here, once the port is bound: pods must open their port fast.
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.paths = frozenset(api_paths_for(self.image))
        self.is_web = repository_of(self.image) == "veza/web"
        self.metrics = CollectorRegistry()
        self.requests = Counter(
            "http_requests",
            "API requests served, by method, path and status.",
            ["method", "path", "status"],
            registry=self.metrics,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "API request duration in seconds, by method and path.",
            ["method", "path"],
            buckets=BUCKETS,
            registry=self.metrics,
        )

    def current(self) -> Behaviour:
        """The behaviour now: the one it started with, or its image's registry entry.

        With ``follow`` (at start), the registry file's identity (inode, modification time,
        size: a push replaces the file, so the inode changes even within one timestamp tick)
        is checked on each call and the entry re-read when it changed; an unreadable file or
        a missing entry keeps the behaviour in force.

        Returns:
            The behaviour to apply to this request.
        """
        if not self.follows or self.registry_path is None:
            return self.behaviour
        try:
            st = self.registry_path.stat()
        except OSError:
            return self.behaviour
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen != self._seen:
            self._seen = seen
            found = ImageRegistry(self.registry_path).lookup(self.image)
            if found is not None:
                self.behaviour = found
        return self.behaviour

    def describe(self, path: str) -> dict[str, str]:
        """The JSON body of a successful API answer.

        Args:
            path: the request path.

        Returns:
            Image, repository, pod, namespace and path.
        """
        return {
            "image": self.image,
            "service": repository_of(self.image),
            "pod": self.pod,
            "namespace": self.namespace,
            "path": path,
        }


class _Handler(BaseHTTPRequestHandler):
    """Routes probes, metrics and API paths of one :class:`Workload`."""

    protocol_version = "HTTP/1.1"
    server_version = "veza-sandbox-workload/1"
    workload: Workload

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: pods serve many requests and their logs are files."""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: object) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _handle(self) -> None:
        self._drain()
        path = self.path.split("?", 1)[0]
        wl = self.workload
        if path in ("/health", "/healthz"):
            self._send(200, b"ok", "text/plain")
            return
        if path in ("/ready", "/readyz"):
            if wl.current().never_ready:
                self._send(503, b"not ready", "text/plain")
            else:
                self._send(200, b"ready", "text/plain")
            return
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            self._send(200, generate_latest(wl.metrics), CONTENT_TYPE_LATEST)
            return
        self._api(path)

    def _api(self, path: str) -> None:
        wl = self.workload
        started = time.monotonic()
        label = path if path in wl.paths else "unmatched"
        behaviour = wl.current()
        if behaviour.latency_ms > 0:
            # The injected latency is the behaviour under test, not a synchronisation.
            time.sleep(behaviour.latency_ms / 1000)
        if label == "unmatched":
            status = 404
            self._json(status, {"error": f"no route {path}", "pod": wl.pod, "image": wl.image})
        elif random.random() < behaviour.error_rate:
            status = 500
            self._json(status, {"error": "injected failure", "pod": wl.pod, "image": wl.image})
        elif wl.is_web:
            status = 200
            info = wl.describe(path)
            html = (
                "<!doctype html><html><head><title>Veza</title></head><body>"
                f"<h1>Veza</h1><p id='image'>{info['image']}</p><p id='pod'>{info['pod']}</p>"
                "</body></html>"
            )
            self._send(status, html.encode(), "text/html; charset=utf-8")
        else:
            status = 200
            self._json(status, wl.describe(path))
        method = self.command
        wl.requests.labels(method=method, path=label, status=str(status)).inc()
        wl.duration.labels(method=method, path=label).observe(time.monotonic() - started)

    def do_GET(self) -> None:
        """Serve a GET."""
        self._handle()

    def do_HEAD(self) -> None:
        """Serve a HEAD."""
        self._handle()

    def do_POST(self) -> None:
        """Serve a POST."""
        self._handle()

    def do_PUT(self) -> None:
        """Serve a PUT."""
        self._handle()

    def do_DELETE(self) -> None:
        """Serve a DELETE."""
        self._handle()


def make_server(host: str, port: int, workload: Workload | None = None) -> ThreadingHTTPServer:
    """Build (and bind) the HTTP server of ``workload``.

    Args:
        host: address to listen on.
        port: port to listen on (0 picks one).
        workload: what to serve; may be set later with :func:`attach` (before serving).

    Returns:
        The bound server; call ``serve_forever``.
    """
    handler = type("WorkloadHandler", (_Handler,), {})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    if workload is not None:
        attach(server, workload)
    return server


def attach(server: ThreadingHTTPServer, workload: Workload) -> None:
    """Give a server built by :func:`make_server` the workload it serves.

    Args:
        server: the server.
        workload: what to serve.
    """
    handler: Any = server.RequestHandlerClass
    handler.workload = workload


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in service until SIGTERM/SIGINT.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Exit status (1 at once when the behaviour says ``crash_on_start``).
    """
    parser = argparse.ArgumentParser(prog="python -m sandbox.workload")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--behaviour", default="{}", help="JSON of sandbox.registry.Behaviour")
    args = parser.parse_args(argv)
    behaviour = Behaviour.from_json(args.behaviour)
    if behaviour.crash_on_start:
        print(f"{args.image}: crash_on_start, exiting with status 1", file=sys.stderr)
        return 1
    server = make_server(args.host, args.port)
    attach(
        server,
        Workload(
            image=args.image,
            behaviour=behaviour,
            pod=os.environ.get("POD_NAME", "local"),
            namespace=os.environ.get("POD_NAMESPACE", "default"),
            registry_path=Path(os.environ[REGISTRY_ENV]) if os.environ.get(REGISTRY_ENV) else None,
        ),
    )

    return serve_until_terminated(server, banner=f"serving {args.image} on {args.host}:{args.port}")


if __name__ == "__main__":
    raise SystemExit(main())
