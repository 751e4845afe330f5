"""Launch a real Prefect server (SQLite, UI included) and a process worker (demo, tests)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sandbox.procs import SandboxError, free_port, pid_alive, spawn, stop_pid, wait_until

WORK_POOL = "veza-ops"


def _prefect_exe() -> str:
    exe = Path(sys.executable).with_name("prefect")
    if not exe.exists():
        raise SandboxError("the prefect command is missing: install the project (pip install -e .)")
    return str(exe)


@dataclass
class PrefectServer:
    """A running Prefect server, and the environment a client needs to use it."""

    api_url: str
    ui_url: str
    pid: int
    home: Path
    auth_string: str | None = None
    worker_pids: list[int] = field(default_factory=list)

    def client_env(self, *, with_auth: bool = True) -> dict[str, str]:
        """Environment for a client process (CLI, worker, tests).

        Args:
            with_auth: include PREFECT_API_AUTH_STRING when the server has basic auth.

        Returns:
            A copy of os.environ with the Prefect settings for this server.
        """
        env = dict(os.environ)
        for key in ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "PREFECT_PROFILE"):
            env.pop(key, None)
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_UI_URL=self.ui_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        if with_auth and self.auth_string:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string
        return env

    def start_worker(self, *, cwd: Path, log_dir: Path, extra_env: dict[str, str] | None = None,
                     heartbeat_s: int = 30) -> int:
        """Start a process worker on the ``veza-ops`` pool.

        Args:
            cwd: working directory of the worker (the project checkout).
            log_dir: folder for its log.
            extra_env: more environment for the flow runs (e.g. the sandbox's).
            heartbeat_s: flow-run heartbeat frequency (zombie detection).

        Returns:
            The worker's pid.
        """
        env = {**self.client_env(), **(extra_env or {})}
        env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(heartbeat_s)
        proc = spawn(
            [_prefect_exe(), "worker", "start", "--pool", WORK_POOL, "--type", "process"],
            log_path=log_dir / "prefect-worker.log",
            env=env,
            cwd=cwd,
        )
        self.worker_pids.append(proc.pid)
        return proc.pid

    def stop(self) -> None:
        """Stop the workers, then the server."""
        for pid in self.worker_pids:
            stop_pid(pid)
        stop_pid(self.pid)


EVENT_PERSISTER = {
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
}
"""Events written once a second, all queued ones in one transaction, instead of one write per
20 events or 5 s (Prefect's defaults): with several flows running at once, writing events was
the largest part of the server's CPU (py-spy), and an event reaches the API within a second
rather than five. The environment may override either."""


def start_prefect_server(
    home: Path,
    *,
    port: int | None = None,
    auth_string: str | None = None,
    ui: bool = True,
    timeout: float = 120,
    database_url: str | None = None,
    encryption_key: str | None = None,
) -> PrefectServer:
    """Start ``prefect server start`` on a free loopback port and wait until it is healthy.

    Args:
        home: PREFECT_HOME for the server (its SQLite database lives there).
        port: the port (a free one when None).
        auth_string: ``user:password`` to require HTTP basic auth on the API.
        ui: serve the UI.
        timeout: seconds to wait for health.
        database_url: a SQLAlchemy URL of the server's database (e.g. PostgreSQL through
            asyncpg, for many concurrent clients); SQLite under ``home`` when None.
        encryption_key: the Fernet key the server encrypts block documents with, given in
            its environment. When None, the server creates one in its database on the first
            block document saved, and two clients saving their first documents at the same
            moment then race to insert it: the loser gets 409 "Data integrity conflict"
            (Prefect 3.9), which ``Block.save(overwrite=True)`` turns into a 404.

    Returns:
        The running server.
    """
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ)
    for key in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "PREFECT_PROFILE"):
        env.pop(key, None)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=database_url or f"sqlite+aiosqlite:///{home}/prefect.db",
        PREFECT_UI_API_URL=api_url,
        # Task-run events recorded 100 to a statement, at most 1 s late, instead of one
        # statement each (Prefect's default): that was a fifth of the suite's server CPU.
        # Whole seconds only: Prefect 3.9 truncates the interval to an int, and 0 spins.
        PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE="100",
        PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL="1",
    )
    for key, value in EVENT_PERSISTER.items():
        env.setdefault(key, value)
    if auth_string:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
    if encryption_key:
        env["PREFECT_SERVER_ENCRYPTION_KEY"] = encryption_key
    argv = [_prefect_exe(), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    argv.append("--ui" if ui else "--no-ui")
    proc = spawn(argv, log_path=home / "server.log", env=env)
    auth = tuple(auth_string.split(":", 1)) if auth_string else None

    def _healthy() -> bool:
        if not pid_alive(proc.pid):
            raise SandboxError(f"prefect server exited; see {home}/server.log")
        try:
            return httpx.get(f"{api_url}/health", timeout=2, auth=auth).status_code == 200  # type: ignore[arg-type]
        except httpx.HTTPError:
            return False

    try:
        wait_until(_healthy, timeout=timeout, what=f"the Prefect server on {api_url}", interval=0.5)
    except BaseException:
        stop_pid(proc.pid)
        raise
    return PrefectServer(
        api_url=api_url,
        ui_url=f"http://127.0.0.1:{port}",
        pid=proc.pid,
        home=home,
        auth_string=auth_string,
    )
