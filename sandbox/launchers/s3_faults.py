"""A fault-injecting reverse proxy in front of moto: per-S3-operation errors, resets, delays."""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import struct
import sys
import threading
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from sandbox.procs import serve_until_terminated

CONTROL_PATH = "/_sandbox/faults"
CHUNK = 64 * 1024
_ROUTES = (  # (method, on an object (not a bucket)?, query parameter ("": any), operation)
    ("GET", False, "list-type", "ListObjectsV2"), ("GET", False, "uploads", "ListMultipartUploads"),
    ("GET", False, "", "ListObjects"), ("PUT", False, "", "CreateBucket"),
    ("DELETE", False, "", "DeleteBucket"), ("HEAD", False, "", "HeadBucket"),
    ("POST", False, "delete", "DeleteObjects"), ("POST", True, "uploads", "CreateMultipartUpload"),
    ("POST", True, "uploadId", "CompleteMultipartUpload"),
    ("PUT", True, "partNumber", "UploadPart"), ("PUT", True, "", "PutObject"),
    ("DELETE", True, "uploadId", "AbortMultipartUpload"), ("DELETE", True, "", "DeleteObject"),
    ("HEAD", True, "", "HeadObject"), ("GET", True, "uploadId", "ListParts"),
    ("GET", True, "", "GetObject"),
)  # the first match wins
_COPIES = {"UploadPart": "UploadPartCopy", "PutObject": "CopyObject"}
OPERATIONS = frozenset({"*", "ListBuckets", "Other", *_COPIES.values(), *(r[3] for r in _ROUTES)})
DEFAULT_CODES = {400: "BadRequest", 403: "AccessDenied", 404: "NoSuchKey", 409: "OperationAborted",
                 500: "InternalError", 501: "NotImplemented", 503: "SlowDown"}
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "upgrade",
                         "expect", "transfer-encoding"})


def classify(method: str, path: str, query: str, headers: Any = None) -> str:
    """Name the S3 operation of a path-style request.

    Args:
        method: the HTTP method.
        path: the request path (``/bucket/key``).
        query: the raw query string.
        headers: the request headers (``x-amz-copy-source`` tells copies from uploads).

    Returns:
        Such as ``UploadPart`` (a bucket's other sub-resources count as ListObjects).
    """
    params = parse_qs(query, keep_blank_values=True)
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket:
        return "ListBuckets"
    for verb, on_object, param, operation in _ROUTES:
        if verb == method and on_object == bool(key) and (not param or param in params):
            copy = headers is not None and headers.get("x-amz-copy-source")
            return _COPIES.get(operation, operation) if copy else operation
    return "Other"


@dataclass
class S3Fault:
    """One rule: requests of ``operation`` fail, reset, stall or slow down (docs/sandbox.md)."""

    operation: str = "*"
    error_rate: float = 0.0
    status: int = 500
    code: str = "InternalError"
    reset_rate: float = 0.0
    latency_ms: int = 0
    stall_s: float = 0.0
    count: int | None = None
    part_numbers: list[int] | None = None
    id: int = 0

    @classmethod
    def from_json(cls, body: Any) -> S3Fault:
        """Parse and check a rule posted to the control path.

        Args:
            body: the decoded JSON object.

        Returns:
            The rule (its ``id`` is assigned when added to a table).

        Raises:
            ValueError: naming the bad field.
        """
        names = [f.name for f in fields(cls) if f.name != "id"]
        if not isinstance(body, dict) or set(body) - set(names):
            raise ValueError(f"fault: a JSON object with some of the fields {names}")
        rule = cls(**body)
        if "status" not in body and rule.code == "SlowDown":
            rule.status = 503
        if "code" not in body:
            rule.code = DEFAULT_CODES.get(rule.status, "InternalError")
        parts = rule.part_numbers
        bad = [name for name, ok in (
            ("operation", rule.operation in OPERATIONS), ("code", isinstance(rule.code, str)),
            ("error_rate", _number(rule.error_rate, 1.0)), ("stall_s", _number(rule.stall_s)),
            ("reset_rate", _number(rule.reset_rate, 1.0)), ("count", rule.count is None or (
                isinstance(rule.count, int) and _number(rule.count - 1))),
            ("status", isinstance(rule.status, int) and 400 <= rule.status <= 599),
            ("latency_ms", isinstance(rule.latency_ms, int) and _number(rule.latency_ms)),
            ("part_numbers", parts is None or (rule.operation == "UploadPart" and isinstance(
                parts, list) and all(isinstance(p, int) for p in parts)))) if not ok]
        if bad:
            raise ValueError(f"fault.{bad[0]}: invalid (operation in {sorted(OPERATIONS)}; rates "
                             "0..1; status 400..599; count >= 1; part_numbers for UploadPart)")
        return rule


def _number(value: Any, top: float | None = None) -> bool:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    return ok and (top is None or value <= top)


class FaultTable:
    """The active rules and per-operation counters, shared by every request thread."""

    def __init__(self) -> None:
        self.rules: list[S3Fault] = []
        self.counters: dict[str, Counter[str]] = defaultdict(Counter)
        self.max_chunk_bytes = 0
        self._next_id = 1
        self._lock = threading.Lock()

    def add(self, rule: S3Fault) -> S3Fault:
        """Activate ``rule`` and return it with its ``id``."""
        with self._lock:
            rule.id, self._next_id = self._next_id, self._next_id + 1
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule and zero the counters."""
        with self._lock:
            self.rules.clear()
            self.counters.clear()
            self.max_chunk_bytes = 0

    def snapshot(self) -> dict[str, Any]:
        """The ``rules``, the per-operation ``counters`` and ``max_chunk_bytes``, as JSON."""
        with self._lock:
            return {"rules": [asdict(r) for r in self.rules],
                    "counters": {op: dict(c) for op, c in self.counters.items()},
                    "max_chunk_bytes": self.max_chunk_bytes}

    def decide(self, operation: str, part_number: int | None) -> tuple[float, bool, S3Fault | None]:
        """Count a request, decide its (seconds to wait, reset?, rule whose error to answer).

        A rule with ``count`` applies to the next ``count`` matching requests, its non-zero
        rates acting as on/off (no randomness), then disappears; one without draws each rate.
        """
        delay, stall, reset, error = 0.0, 0.0, False, None
        with self._lock:
            stats = self.counters[operation]
            stats["requests"] += 1
            for rule in [r for r in self.rules if r.operation in ("*", operation) and (
                    r.part_numbers is None or part_number in r.part_numbers)]:
                sure = rule.count is not None
                rule.count = None if rule.count is None else rule.count - 1
                if rule.count == 0:
                    self.rules.remove(rule)
                delay, stall = delay + rule.latency_ms / 1000.0, max(stall, rule.stall_s)
                reset = reset or _fires(rule.reset_rate, sure)
                error = error or (rule if _fires(rule.error_rate, sure) else None)
            for name, hit in (("delayed", delay > 0), ("stalls", stall > 0), ("resets", reset),
                              ("errors", error is not None and not reset)):
                stats[name] += int(hit)
                stats["faults"] += int(hit)
        return delay + stall, reset, error

    def note_chunk(self, size: int) -> None:
        """Record the size of a relayed body chunk (the proxy holds one at a time)."""
        self.max_chunk_bytes = max(self.max_chunk_bytes, size)  # a race only loses a smaller one


def _fires(rate: float, sure: bool) -> bool:
    return rate > 0 and (sure or random.random() < rate)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer
    _unread = True

    def log_message(self, format: str, *args: Any) -> None:
        """Keep quiet (tests run many requests)."""

    def do_GET(self) -> None:
        """Serve any request."""
        url, self._unread = urlsplit(self.path), True
        if url.path.rstrip("/") == CONTROL_PATH:
            self._control()
            return
        operation = classify(self.command, url.path, url.query, self.headers)
        part = parse_qs(url.query).get("partNumber", [""])[0]
        delay, reset, rule = self.server.table.decide(
            operation, int(part) if part.isdigit() else None)
        if delay:
            self.server.stopping.wait(delay)
        if reset:
            self._reset()
        elif rule is not None:
            self._xml_error(rule.status, rule.code, f"sandbox fault injected on {operation}")
        else:
            self._forward()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _body(self, limit: int | None = None) -> Iterator[bytes]:
        """Yield the request body as sent (chunked framing kept), CHUNK bytes at most a piece."""
        if not self._unread:
            return
        self._unread = False
        if self.headers.get("transfer-encoding", "").lower() != "chunked":
            length = int(self.headers.get("content-length") or 0)
            yield from self._copy(length if limit is None else min(limit, length))
            return
        while line := self.rfile.readline(1024):
            yield line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (trailer := self.rfile.readline(8192)) not in (b"\r\n", b"\n", b""):
                    yield trailer
                yield b"\r\n"
                return
            yield from self._copy(size + 2)

    def _copy(self, remaining: int) -> Iterator[bytes]:
        while remaining > 0 and (data := self.rfile.read(min(CHUNK, remaining))):
            remaining -= len(data)
            self.server.table.note_chunk(len(data))
            yield data

    def _reset(self) -> None:
        """Read half of the body, then close with SO_LINGER 0: the client sees a reset."""
        deque(self._body(limit=int(self.headers.get("content-length") or 0) // 2), maxlen=0)
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _xml_error(self, status: int, code: str, message: str) -> None:
        self._reply(status, "application/xml", (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(code)}</Code><Message>'
            f"{escape(message)}</Message><Resource>{escape(urlsplit(self.path).path)}</Resource>"
            "<RequestId>sandbox-s3-faults</RequestId></Error>").encode())

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        """Read the request's body, then answer with ``body``."""
        deque(self._body(), maxlen=0)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self) -> None:
        conn = http.client.HTTPConnection(self.server.upstream, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP or name.lower() == "transfer-encoding":
                    conn.putheader(name, value)
            conn.putheader("Connection", "close")
            conn.endheaders()
            for data in self._body():
                conn.send(data)
            response = conn.getresponse()
        except OSError as exc:
            conn.close()
            self.close_connection = True
            self._xml_error(502, "BadGateway", f"upstream: {exc}")
            return
        with response:
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            bodiless = self.command == "HEAD" or response.status in (204, 304)
            chunked = not bodiless and response.getheader("content-length") is None
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while not bodiless and (data := response.read(CHUNK)):
                self.server.table.note_chunk(len(data))
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")

    def _control(self) -> None:
        table, status, payload = self.server.table, 200, None
        if self.command == "POST":
            try:
                rule = S3Fault.from_json(json.loads(b"".join(self._body()) or b"null"))
                payload = asdict(table.add(rule))
            except ValueError as exc:
                status, payload = 400, {"error": str(exc)}
        elif self.command == "DELETE":
            table.clear()
        elif self.command != "GET":
            status, payload = 405, {"error": "use GET, POST or DELETE"}
        self._reply(status, "application/json", json.dumps(payload or table.snapshot()).encode())


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], upstream: str) -> None:
        super().__init__(address, _Handler)
        self.upstream = urlsplit(upstream).netloc
        self.table = FaultTable()
        self.stopping = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that went away (timeouts, injected resets); report anything else."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class S3FaultProxy:
    """The proxy in a background thread: ``with S3FaultProxy(moto_url) as proxy: ...``."""

    def __init__(self, upstream: str, *, port: int = 0) -> None:
        """Bind the proxy on loopback (it serves once started).

        Args:
            upstream: moto's URL, e.g. ``http://127.0.0.1:5000``.
            port: the port to listen on (0: a free one).
        """
        self._server = _ProxyServer(("127.0.0.1", port), upstream)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="s3-fault-proxy", daemon=True)
        self.table: FaultTable = self._server.table  # the object the control path serves

    @property
    def url(self) -> str:
        """The proxy's endpoint URL (boto3's ``endpoint_url``)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_fault(self, **rule: Any) -> S3Fault:
        """Activate a rule (``**rule``: the JSON fields of ``POST /_sandbox/faults``)."""
        return self.table.add(S3Fault.from_json(rule))

    def counters(self, operation: str) -> dict[str, int]:
        """The counters of ``operation``: requests, faults, errors, resets, stalls, delayed."""
        counts: dict[str, int] = self.table.snapshot()["counters"].get(operation, {})
        return counts

    def start(self) -> S3FaultProxy:
        """Serve in a daemon thread, and return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed and stalled requests, close the socket."""
        self._server.stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()

    def __enter__(self) -> S3FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM: ``python -m sandbox.launchers.s3_faults --upstream URL --port P``.

    Args:
        argv: the arguments (``sys.argv[1:]`` when None).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True, help="moto's URL, http://127.0.0.1:PORT")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (see the banner)")
    args = parser.parse_args(argv)
    server = _ProxyServer(("127.0.0.1", args.port), args.upstream)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    return serve_until_terminated(server, banner=f"s3 fault proxy on {url} -> {args.upstream}")


if __name__ == "__main__":
    raise SystemExit(main())
