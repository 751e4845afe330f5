"""Launch ``moto_server`` (the S3 protocol over HTTP) as a local stand-in for AWS S3."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from sandbox.procs import SandboxError, free_port, spawn, stop_pid, wait_until

MOTO_ACCESS_KEY = "sandbox-access-key"
MOTO_SECRET_KEY = "sandbox-secret-key"  # noqa: S105 - moto accepts any credentials


@dataclass
class S3Server:
    """A running moto server."""

    endpoint_url: str
    pid: int
    access_key: str = MOTO_ACCESS_KEY
    secret_key: str = MOTO_SECRET_KEY
    region: str = "us-east-1"

    def stop(self) -> None:
        """Stop the server."""
        stop_pid(self.pid)


def _moto_argv(port: int) -> list[str]:
    # This interpreter's own moto first (the locked version, from the sandbox extra): one found
    # first on PATH may be another Python's moto, of another version.
    own = Path(sys.executable).with_name("moto_server")
    exe = str(own) if own.exists() else shutil.which("moto_server")
    if exe is None:
        raise SandboxError(
            "moto_server not found: install the sandbox: `pip install -e ./sandbox` or `make setup`"
        )
    return [exe, "-H", "127.0.0.1", "-p", str(port)]


def start_s3(workdir: Path, *, port: int | None = None, timeout: float = 60) -> S3Server:
    """Start moto in server mode on a free loopback port and wait until it answers.

    Args:
        workdir: folder for its log.
        port: the port (a free one when None).
        timeout: seconds to wait for it to answer.

    Returns:
        The running server.
    """
    port = port or free_port()
    proc: subprocess.Popen[bytes] = spawn(_moto_argv(port), log_path=workdir / "moto.log")
    url = f"http://127.0.0.1:{port}"

    def _ready() -> bool:
        if proc.poll() is not None:
            raise SandboxError(f"moto_server exited with {proc.returncode}; see {workdir}/moto.log")
        try:
            return httpx.get(f"{url}/moto-api/", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    wait_until(_ready, timeout=timeout, what=f"moto_server on {url}")
    return S3Server(endpoint_url=url, pid=proc.pid)
