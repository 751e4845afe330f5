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
from multiprocessing import connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from sandbox.k8s.controllers.forking import (
    FORK_LOCK,
    fork_context,
    run_container,
    workload_args,
)
from sandbox.procs import spawn
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
    """One running container, in the emulator's process group.

    A container that runs the sandbox workload is forked from the fork server (``forking.py``);
    any other command is exec'd as a child of the kubelet.
    """

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
        self._lock = threading.Lock()
        self.popen: subprocess.Popen[bytes] | None = None
        self.forked: BaseProcess | None = None
        args = workload_args(argv)
        if args is None:
            # The kubelet's own process group: stopping the emulator's group stops its pods.
            self.popen = spawn(argv, log_path=log_path, env=env, cwd=cwd, new_session=False)
        else:
            title = " ".join(argv)
            log_path.touch(exist_ok=True)  # created here, where an error is seen, not in the child
            # daemon: at the kubelet's exit multiprocessing terminates what is left, not joins it
            self.forked = fork_context().Process(
                target=run_container,
                args=(title, args, env, str(log_path), str(cwd)),
                daemon=True,
            )
            with FORK_LOCK:  # start() polls the other forked children (multiprocessing's cleanup)
                self.forked.start()
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()

    @property
    def pid(self) -> int:
        """The process id."""
        pid = self.popen.pid if self.popen is not None else self.forked.pid  # type: ignore[union-attr]
        assert pid is not None
        return pid

    def _poll(self) -> int | None:
        """The raw status (negative: killed by that signal), or None while it runs."""
        if self.popen is not None:
            with self._lock:
                return self.popen.poll()
        assert self.forked is not None
        # One reader of each status pipe at a time: a second concurrent read sees EOF, which
        # multiprocessing reports as status 255.
        with FORK_LOCK:
            return self.forked.exitcode

    def exit_code(self) -> int | None:
        """The exit status, or None while it runs (a signal death gives 128 + signal).

        Returns:
            The status or None.
        """
        code = self._poll()
        if code is None:
            return None
        return 128 - code if code < 0 else code

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self._poll() is None:
                os.kill(self.pid, sig)

    def _wait(self, timeout: float | None) -> bool:
        """Wait until the process has exited (at most ``timeout`` seconds); True when it has."""
        if self.popen is not None:
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        assert self.forked is not None
        # Waits on the fork server's status pipe without reading it (``_poll`` reads it).
        return bool(connection.wait([self.forked.sentinel], timeout)) and self._poll() is not None

    def stop(self, grace: float) -> int:
        """SIGTERM, then SIGKILL once ``grace`` seconds (capped) have passed; reap the child.

        Args:
            grace: terminationGracePeriodSeconds of the pod.

        Returns:
            The exit status.
        """
        grace = max(0.0, min(grace, MAX_GRACE_SECONDS))
        self._signal(signal.SIGTERM)
        if not self._wait(grace):
            self._signal(signal.SIGKILL)
            self._wait(None)
        code = self.exit_code()
        return 137 if code is None else code
