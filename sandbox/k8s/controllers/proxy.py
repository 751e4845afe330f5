"""The Service proxy: an HTTP reverse proxy on clusterIP:port, round-robin over its backends."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sandbox.k8s.controllers.mesh import Backends

logger = logging.getLogger(__name__)

Targets = Callable[[], Backends]
"""Returns where a request may go at the moment it arrives (endpoints and their pool)."""

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailers", "transfer-encoding", "upgrade", "content-length",
}  # fmt: skip
UPSTREAM_TIMEOUT = 30.0


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], targets: Targets, name: str) -> None:
        super().__init__(address, _ProxyHandler)
        self.targets = targets
        self.name = name
        self.counters: dict[str, itertools.count[int]] = {}

    def next_index(self, pool: str) -> int:
        """The round-robin position for the next request to ``pool``."""
        return next(self.counters.setdefault(pool, itertools.count()))


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("proxy %s: " + format, self.server.name, *args)

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        chosen = self.server.targets()
        targets = chosen.targets
        if not targets:
            self._answer(503, {"error": chosen.empty or f"no ready endpoints for service "
                               f"{self.server.name}"})
            return
        start = self.server.next_index(chosen.pool)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        for attempt in range(len(targets)):
            target = targets[(start + attempt) % len(targets)]
            try:
                response, payload = self._exchange(target, body, headers)
            except ConnectionError:
                continue  # the pod went away between the read and the request: try the next
            except (OSError, http.client.HTTPException) as exc:
                self._answer(502, {"error": f"upstream {target[0]}:{target[1]} failed: {exc}"})
                return
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        self._answer(503, {"error": f"no endpoint of service {self.server.name} answered"})

    def _exchange(self, target: tuple[str, int], body: bytes | None,
                  headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
        """One request to one pod, on this client connection's kept-alive upstream connection.

        Reusing the upstream connection (pods speak HTTP/1.1) spares a TCP handshake and a
        server thread per request. A reused connection the pod closed meanwhile is replaced
        once; a failure on a new connection is raised as it came.
        """
        pool = self._upstream
        while True:
            conn = pool.pop(target, None)
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection(*target, timeout=UPSTREAM_TIMEOUT)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (ConnectionError, http.client.CannotSendRequest, http.client.BadStatusLine):
                with contextlib.suppress(OSError):
                    conn.close()
                if reused:
                    continue
                raise
            except BaseException:
                with contextlib.suppress(OSError):
                    conn.close()
                raise
            if response.will_close:
                conn.close()
            else:
                pool[target] = conn
            return response, payload

    def setup(self) -> None:
        """Start the client connection with no upstream connection kept yet."""
        self._upstream: dict[tuple[str, int], http.client.HTTPConnection] = {}
        super().setup()

    def finish(self) -> None:
        """Close the kept-alive upstream connections with the client's."""
        for conn in self._upstream.values():
            with contextlib.suppress(OSError):
                conn.close()
        super().finish()

    def _answer(self, status: int, doc: dict[str, str]) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _relay


class ServiceProxy:
    """One listening proxy for one Service port."""

    def __init__(self, *, host: str, port: int, targets: Targets, name: str) -> None:
        """Bind and start serving in a daemon thread.

        Args:
            host: the clusterIP.
            port: the Service port.
            targets: called on every request for where it may go.
            name: ``namespace/service:port`` for messages.

        Raises:
            OSError: when the address cannot be bound.
        """
        self.host, self.port, self.name = host, port, name
        self._server = _ProxyServer((host, port), targets, name)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            name=f"proxy {name}", daemon=True,
        )  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
