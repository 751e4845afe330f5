"""Container processes of the kubelet: start, watch, stop (SIGTERM then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sandbox.registry import REGISTRY_ENV, Behaviour

CommandFor = Callable[[str, Behaviour, str, int], Sequence[str]]
"""``command_for(image, behaviour, ip, port) -> argv`` builds a container's command line."""

PROJECT_ROOT = Path(__file__).resolve().parents[3]
MAX_GRACE_SECONDS = 3.0


def workload_command(image: str, behaviour: Behaviour, ip: str, port: int) -> list[str]:
    """The default container command: the sandbox stand-in workload.

    Args:
        image: image reference.
        behaviour: the image's behaviour from the registry.
        ip: the pod IP to listen on.
        port: the container port.

    Returns:
        The argv.
    """
    return [
        sys.executable, "-m", "sandbox.workload",
        "--host", ip, "--port", str(port), "--image", image,
        "--behaviour", behaviour.to_json(),
    ]  # fmt: skip


def container_env(extra: dict[str, str], *, registry_path: Path) -> dict[str, str]:
    """The environment of a container process: a minimal base plus the container's own env.

    Args:
        extra: POD_NAME, POD_NAMESPACE and the resolved container env.
        registry_path: the sandbox image registry file.

    Returns:
        The environment.
    """
    env = {
        key: os.environ[key]
        for key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PROMETHEUS_MULTIPROC_DIR")
        if key in os.environ
    }
    pythonpath = [str(PROJECT_ROOT)]
    if os.environ.get("PYTHONPATH"):
        pythonpath.append(os.environ["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    env["PYTHONUNBUFFERED"] = "1"
    env[REGISTRY_ENV] = str(registry_path)
    env.update(extra)
    return env


class ContainerProcess:
    """One running container: a child process in the emulator's own process group."""

    def __init__(
        self, argv: Sequence[str], *, env: dict[str, str], log_path: Path, cwd: Path
    ) -> None:
        """Start the process.

        Args:
            argv: command line (never a shell string).
            env: full environment.
            log_path: file receiving stdout and stderr (appended).
            cwd: working directory.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cwd.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
            )
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def exit_code(self) -> int | None:
        """The exit status, or None while it runs (a signal death gives 128 + signal).

        Returns:
            The status or None.
        """
        with self._lock:
            code = self.popen.poll()
        if code is None:
            return None
        return 128 - code if code < 0 else code

    def stop(self, grace: float) -> int:
        """SIGTERM, then SIGKILL once ``grace`` seconds (capped) have passed; reap the child.

        Args:
            grace: terminationGracePeriodSeconds of the pod.

        Returns:
            The exit status.
        """
        grace = max(0.0, min(grace, MAX_GRACE_SECONDS))
        with contextlib.suppress(ProcessLookupError):
            if self.popen.poll() is None:
                self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            self.popen.wait()
        code = self.exit_code()
        return 137 if code is None else code
