"""Process helpers shared by the sandbox launchers: free ports, waiting, stopping by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import HTTPServer
from pathlib import Path
from types import FrameType


class SandboxError(RuntimeError):
    """A sandbox component failed to start or stop."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now.

    Args:
        host: the address to bind.

    Returns:
        A port number chosen by the kernel.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether something accepts TCP connections on ``host:port``.

    Args:
        port: the port.
        host: the address.

    Returns:
        True when a connection succeeds.
    """
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_until(
    predicate: Callable[[], object],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> object:
    """Poll ``predicate`` until it returns a truthy value or the deadline passes.

    Args:
        predicate: called repeatedly; its first truthy result is returned.
        timeout: seconds before giving up.
        what: description used in the timeout error.
        interval: seconds between polls.

    Returns:
        The first truthy value of ``predicate``.

    Raises:
        SandboxError: when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise SandboxError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a background process whose output goes to ``log_path``.

    Args:
        argv: the command, never a shell string.
        log_path: file receiving stdout and stderr.
        env: environment (defaults to the current one).
        cwd: working directory.
        new_session: put the process in its own session so it can be stopped as a group.

    Returns:
        The started process.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=new_session,
        )


def pid_alive(pid: int) -> bool:
    """Tell whether a process with ``pid`` exists (and is not a zombie we own).

    Args:
        pid: the process id.

    Returns:
        True when the process is running.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def start_ticks(pid: int) -> int | None:
    """Start time of a process (clock ticks since boot), to tell a recycled pid from ours.

    Args:
        pid: the process id.

    Returns:
        The start time, or None when the process is gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (e.g. a Prefect worker's flow runs, each in its own session).

    Args:
        pid: the parent's process id.

    Returns:
        The children's pids (empty when there are none or the parent is gone).
    """
    found: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def stop_pid(pid: int, *, timeout: float = 10.0, group: bool = True) -> None:
    """Stop a process (and its process group) with SIGTERM, then SIGKILL after ``timeout``.

    Args:
        pid: the process id.
        timeout: seconds to wait after SIGTERM.
        group: signal the whole process group led by ``pid``.
    """

    def _signal(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    if not pid_alive(pid):
        return
    _signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    _signal(signal.SIGKILL)
    with contextlib.suppress(SandboxError):
        wait_until(lambda: not pid_alive(pid), timeout=5, what=f"pid {pid} to exit")


def serve_until_terminated(server: HTTPServer, *, banner: str) -> int:
    """Serve HTTP until SIGTERM or SIGINT, then close the server (sandbox daemons' main loop).

    Args:
        server: the bound server.
        banner: line printed to stderr once serving.

    Returns:
        Exit status 0.
    """

    def _stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(banner, file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0
