"""The HTTP layer of the API server: auth, discovery, fault injection, JSON and watch streams."""

from __future__ import annotations

import hmac
import json
import logging
import select
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sandbox.k8s import discovery
from sandbox.k8s.errors import ApiError, Unauthorized
from sandbox.k8s.faults import Fault, Faults
from sandbox.k8s.handlers import Request, Response, handle, verb_of
from sandbox.k8s.resources import Registry
from sandbox.k8s.routing import route, split_group_version
from sandbox.k8s.store import Store

log = logging.getLogger(__name__)
_NOT_FOUND = ApiError(404, "NotFound", "the server could not find the requested resource")


class ApiHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server holding the store, the token and the fault rules."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], *, store: Store, token: str,
                 faults: Faults | None = None, tls: ssl.SSLContext | None = None,
                 logs_dir: Path | None = None) -> None:
        super().__init__(address, ApiRequestHandler)
        self.logs_dir = logs_dir
        self.store = store
        self.token = token
        self.faults = faults or Faults()
        self.tls = tls
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of this server (plain HTTP)."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def https_url(self) -> str:
        """``https://127.0.0.1:PORT``: the same port speaks TLS (kubectl needs it)."""
        host, port = self.server_address[:2]
        return f"https://{host!s}:{port}"

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection, in TLS when its first byte is a TLS handshake."""
        if self.tls is None:
            ApiRequestHandler(request, client_address, self)
            return
        try:
            request.settimeout(10)  # a silent client (a port probe) does not hold a thread
            if request.recv(1, socket.MSG_PEEK) != b"\x16":
                request.settimeout(None)
                ApiRequestHandler(request, client_address, self)
                return
            wrapped = self.tls.wrap_socket(request, server_side=True)
            wrapped.settimeout(None)
        except (OSError, ssl.SSLError):
            return
        try:
            ApiRequestHandler(wrapped, client_address, self)
        finally:
            wrapped.close()


def _discovery(registry: Registry, parts: list[str], address: str) -> Any:
    """Answer discovery paths; None when ``parts`` is not one."""
    if parts == ["version"]:
        return discovery.version()
    if parts == ["api"]:
        return discovery.core_versions(address)
    if parts == ["apis"]:
        return discovery.group_list(registry)
    if len(parts) == 2 and parts[0] == "apis":
        return discovery.group(registry, parts[1]) or False
    if parts[:1] in (["healthz"], ["livez"], ["readyz"]):
        return "ok"
    if parts == ["openapi", "v3"]:
        return discovery.openapi_v3_root(registry)
    if parts[:2] == ["openapi", "v3"]:
        return discovery.openapi_v3(registry, "/".join(parts[2:])) or False
    gv = split_group_version(parts)
    if gv is not None and not gv[2]:
        return discovery.resource_list(registry, gv[0], gv[1]) or False
    return None


class ApiRequestHandler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection to the API server."""

    protocol_version = "HTTP/1.1"
    server: ApiHTTPServer
    server_version = "veza-sandbox-apiserver"

    def log_message(self, format: str, *args: Any) -> None:
        """Send access logs to the logger at debug level."""
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        """Serve GET."""
        self._serve()

    def do_POST(self) -> None:
        """Serve POST."""
        self._serve()

    def do_PUT(self) -> None:
        """Serve PUT."""
        self._serve()

    def do_PATCH(self) -> None:
        """Serve PATCH."""
        self._serve()

    def do_DELETE(self) -> None:
        """Serve DELETE."""
        self._serve()

    # ----------------------------------------------------------------- plumbing
    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return b""
        if length:
            return self.rfile.read(length)
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send_json(self, code: int, body: Any, *, content_type: str = "application/json") -> None:
        if isinstance(body, str):
            data, ctype = body.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = json.dumps(body).encode(), content_type
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization") or ""
        given = header[7:].strip() if header.lower().startswith("bearer ") else ""
        return bool(given) and hmac.compare_digest(given.encode(), self.server.token.encode())

    def _serve(self) -> None:
        body = self._read_body()
        split = urlsplit(self.path)
        parts = [p for p in split.path.split("/") if p]
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            if not self._authorized():
                raise Unauthorized()
            headers = {k.title(): v for k, v in self.headers.items()}  # case-insensitive
            req = Request(self.command, split.path, query, headers, body)
            if parts[:2] == ["sandbox", "faults"]:
                self._send_json(*self._faults(req))
                return
            if self.command == "GET" and parts in (["api"], ["apis"]) and \
                    discovery.wants_aggregated(req.headers.get("Accept")):
                self._send_json(200, discovery.aggregated(self.server.store.resources,
                                                          core=parts == ["api"]),
                                content_type=discovery.AGGREGATED_V2)
                return
            if self.command == "GET":
                host, port = self.server.server_address[:2]
                answer = _discovery(self.server.store.resources, parts, f"{host!s}:{port}")
                if answer is False:
                    raise _NOT_FOUND
                if answer is not None:
                    self._send_json(200, answer)
                    return
            gv = split_group_version(parts)
            if gv is None or not gv[2]:
                raise _NOT_FOUND
            where = route(self.server.store.resources, split.path, *gv)
            fault = self.server.faults.decide(verb_of(req, where), where.res.plural)
            if fault.latency_s:
                time.sleep(fault.latency_s)  # injected latency, on purpose
            if fault.error is not None and not fault.after_apply:
                raise fault.error
            response = handle(self.server.store, req, where, logs_dir=self.server.logs_dir)
            if fault.error is not None:
                raise fault.error  # applied, then the answer is lost
        except ApiError as exc:
            self._send_json(exc.code, exc.status())
            return
        except Exception as exc:
            log.exception("internal error on %s %s", self.command, self.path)
            error = ApiError(500, "InternalError", f"internal error: {type(exc).__name__}")
            self._send_json(500, error.status())
            return
        if response.stream is None:
            self._send_json(response.code, response.body)
        else:
            self._stream(response, req)

    def _faults(self, req: Request) -> tuple[int, Any]:
        faults = self.server.faults
        if req.method == "POST":
            faults.add(Fault.from_json(req.json()))
        elif req.method == "DELETE":
            faults.clear()
        elif req.method != "GET":
            raise ApiError(405, "MethodNotAllowed", "use GET, POST or DELETE on /sandbox/faults")
        return 200, {"faults": faults.rules()}

    def _watch_disconnects(self, stop: threading.Event) -> None:
        """Set ``stop`` when the client closes the connection or the server stops."""
        sock: socket.socket = self.connection
        while not stop.is_set():
            if self.server.stopping.is_set():
                stop.set()
                return
            try:
                readable, _, _ = select.select([sock], [], [], 0.5)
                # A watch client sends nothing more: readable means it closed (or TLS
                # close_notify); plain sockets can be peeked to be sure.
                if readable and (isinstance(sock, ssl.SSLSocket)
                                 or not sock.recv(1, socket.MSG_PEEK)):
                    stop.set()
            except (OSError, ValueError):
                stop.set()

    def _stream(self, response: Response, req: Request) -> None:
        assert response.stream is not None
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()
        threading.Thread(target=self._watch_disconnects, args=(req.stop,), daemon=True,
                         name="watch-disconnect").start()
        try:
            for event in response.stream:
                data = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            log.debug("watch client went away")
        finally:
            req.stop.set()
