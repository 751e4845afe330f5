"""httpGet probes executed for real, with the kubelet's thresholds and timing."""

from __future__ import annotations

import contextlib
import http.client
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def resolve_port(port: int | str | None, ports: Mapping[str, int], default: int) -> int:
    """Resolve a probe or Service target port given by number, numeric string or name.

    Args:
        port: the port as written in the spec.
        ports: the container's named ports.
        default: used when ``port`` is None or a name nobody declares.

    Returns:
        The port number.
    """
    if port is None:
        return default
    if isinstance(port, int):
        return port
    if str(port).isdigit():
        return int(port)
    return ports.get(str(port), default)


def http_get(host: str, port: int, path: str, *, timeout: float,
             kept: dict[str, http.client.HTTPConnection] | None = None) -> tuple[bool, str]:
    """One probe request: success is a status in 200..399, as the kubelet counts it.

    Args:
        host: address.
        port: port.
        path: request path.
        timeout: seconds for connect and read.
        kept: where the probe keeps its connection between runs (one entry, key ``conn``).
            Pods speak HTTP/1.1: a kept-alive connection spares a TCP handshake and a server
            thread per probe. A kept connection the pod closed meanwhile is replaced once
            (that is not a failure); a timeout or a refused connection is.

    Returns:
        ``(success, detail)`` where detail explains a failure.
    """
    kept = {} if kept is None else kept
    while True:
        old = kept.pop("conn", None)
        reused = old is not None and (old.host, old.port) == (host, port)
        if old is not None and reused:
            conn = old
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
        else:
            if old is not None:
                with contextlib.suppress(OSError):
                    old.close()
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path or "/", headers={"User-Agent": "kube-probe/1.32"})
            response = conn.getresponse()
            response.read()
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
                http.client.CannotSendRequest) as exc:
            with contextlib.suppress(OSError):
                conn.close()
            if reused:
                continue
            return False, f'Get "http://{host}:{port}{path}": {exc}'
        except (OSError, http.client.HTTPException) as exc:
            with contextlib.suppress(OSError):
                conn.close()
            return False, f'Get "http://{host}:{port}{path}": {exc}'
        if response.will_close:
            conn.close()
        else:
            kept["conn"] = conn
        if 200 <= response.status < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {response.status}"


@dataclass
class Prober:
    """The state of one probe of one running container.

    The result starts as ``initial`` (False for readiness, True for liveness) and flips after
    ``successThreshold`` consecutive successes or ``failureThreshold`` consecutive failures.
    """

    spec: dict[str, Any]
    host: str
    ports: Mapping[str, int]
    default_port: int
    started_at: float
    initial: bool
    result: bool = field(init=False)
    last_detail: str = field(init=False, default="")
    _successes: int = field(init=False, default=0)
    _failures: int = field(init=False, default=0)
    _next_at: float = field(init=False)
    _kept: dict[str, http.client.HTTPConnection] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.result = self.initial
        self._next_at = self.started_at + float(self.spec.get("initialDelaySeconds") or 0)

    @property
    def period(self) -> float:
        """Seconds between two probes (periodSeconds, default 10)."""
        return float(self.spec.get("periodSeconds") or 10)

    def due(self, now: float) -> bool:
        """Tell whether the next probe should run.

        Args:
            now: ``time.monotonic()``.

        Returns:
            True when its time has come.
        """
        return now >= self._next_at

    def run(self) -> bool:
        """Execute the probe once and update the result.

        Returns:
            True when the result changed.
        """
        self._next_at = time.monotonic() + self.period
        action = self.spec.get("httpGet")
        if not isinstance(action, dict):
            # Only httpGet is executed; other probe kinds count as succeeding.
            success, detail = True, ""
        else:
            port = resolve_port(action.get("port"), self.ports, self.default_port)
            host = str(action.get("host") or self.host)
            timeout = float(self.spec.get("timeoutSeconds") or 1)
            success, detail = http_get(host, port, str(action.get("path") or "/"),
                                       timeout=timeout, kept=self._kept)
        self.last_detail = detail
        before = self.result
        if success:
            self._failures = 0
            self._successes += 1
            if self._successes >= int(self.spec.get("successThreshold") or 1):
                self.result = True
        else:
            self._successes = 0
            self._failures += 1
            if self._failures >= int(self.spec.get("failureThreshold") or 3):
                self.result = False
        return self.result != before

    def close(self) -> None:
        """Close the probe's kept-alive connection (the container stopped)."""
        conn = self._kept.pop("conn", None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

    @property
    def failing(self) -> bool:
        """True when the last probe failed (even below the failure threshold)."""
        return self._failures > 0
