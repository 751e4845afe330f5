"""The whole sandbox: Kubernetes emulator, Prometheus, Vault emulator and load generator.

``up(DIR)`` starts each as its own background process (pids and ports in ``DIR/state.json``),
waits until all are ready, seeds ``veza-staging`` and ``veza-production`` and writes
``DIR/env`` (shell ``export`` lines). ``load(DIR)`` gives the :class:`Sandbox` of a running
stack; ``down(DIR)`` stops every process it started, by pid, and is idempotent.

``DIR/state.json`` is the one record of running processes: whoever starts more processes beside
the sandbox (the demo's PostgreSQL, S3, Prefect server and worker) adds them with
:func:`record_process`, and ``down(DIR)`` stops them too, last recorded first, before the
sandbox's own parts (also after a crash: the next ``down`` reads the same file).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from sandbox.ipclaims import claim_prefix, release_prefix
from sandbox.launchers.prometheus import PrometheusServer, configure_prometheus, targets_path
from sandbox.procs import (
    SandboxError,
    child_pids,
    free_port,
    pid_alive,
    spawn,
    start_ticks,
    stop_pid,
    wait_until,
)
from sandbox.registry import REGISTRY_ENV, ImageRegistry
from sandbox.seeding import ENVIRONMENTS, SERVICES, seed_environment, url_variable

if TYPE_CHECKING:
    import hvac

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = PROJECT_ROOT / ".sandbox"
STATE_FILE = "state.json"
ENV_FILE = "env"
# Stopped last to first: the load generator, then what it and the pods talk to.
COMPONENTS = ("loadgen", "prometheus", "vault", "k8s")




def _ours(entry: dict[str, Any]) -> bool:
    pid = int(entry.get("pid") or 0)
    return pid > 0 and pid_alive(pid) and start_ticks(pid) == entry.get("ticks")


def read_state(dir: Path) -> dict[str, Any] | None:
    """The recorded state of the sandbox in ``dir``.

    Args:
        dir: the sandbox directory.

    Returns:
        The state, or None when no sandbox was started there.
    """
    path = Path(dir) / STATE_FILE
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def _write_state(dir: Path, state: dict[str, Any]) -> None:
    _write_private(Path(dir) / STATE_FILE, json.dumps(state, indent=2, sort_keys=True))


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


def _record(state: dict[str, Any], name: str, pid: int, **extra: Any) -> None:
    state["processes"][name] = {"pid": pid, "ticks": start_ticks(pid), **extra}
    _write_state(Path(state["dir"]), state)


def record_process(
    dir: Path,
    name: str,
    pid: int,
    *,
    stop_children: bool = False,
    remove: Sequence[Path] = (),
    **extra: Any,
) -> None:
    """Record a process started beside the sandbox in ``dir`` so that :func:`down` stops it.

    The pid is kept with its start time, so a recycled pid is never signalled. Processes
    recorded this way are stopped last recorded first, before the sandbox's own parts. A
    record is created when no sandbox was started in ``dir`` yet.

    Args:
        dir: the sandbox directory.
        name: a name for the process (unique in ``dir``; not one of the sandbox's parts).
        pid: its pid (it leads its own process group, which is stopped with it).
        stop_children: also stop its direct children first, each as its own group (a Prefect
            worker's flow runs run in sessions of their own).
        remove: folders to delete once it is stopped (e.g. a throwaway database cluster).
        **extra: more fields to keep (port, url...).

    Raises:
        SandboxError: when ``name`` is one of the sandbox's own parts.
    """
    if name in COMPONENTS:
        raise SandboxError(f"{name!r} is a part of the sandbox itself")
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    state = read_state(dir) or {"dir": str(dir), "processes": {}, "services": {}}
    extras: list[str] = state.setdefault("extras", [])
    if name not in extras:
        extras.append(name)
    _record(state, name, pid, stop_children=stop_children,
            remove=[str(path) for path in remove], **extra)


def _stop_entry(entry: dict[str, Any], timeout: float) -> None:
    if _ours(entry):
        pid = int(entry["pid"])
        if entry.get("stop_children"):
            for child in child_pids(pid):
                stop_pid(child, timeout=timeout)
        stop_pid(pid, timeout=timeout)
    for path in entry.get("remove", []):
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Sandbox:
    """A running sandbox and the handles tests, the CLI and the demo need."""

    dir: Path
    kubeconfig: Path
    api_url: str
    token: str
    vault_addr: str
    vault_token: str
    prometheus_url: str
    registry: ImageRegistry
    ip_prefix: str = ""
    services: dict[str, dict[str, str]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """Environment variables that point clients at this sandbox.

        Returns:
            KUBECONFIG, VAULT_ADDR, VAULT_TOKEN, PROMETHEUS_URL, the registry, the directory
            and one ``VEZA_<ENV>_<SERVICE>_URL`` per service seeded in ``veza-<env>``.
        """
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "VAULT_ADDR": self.vault_addr,
            "VAULT_TOKEN": self.vault_token,
            "PROMETHEUS_URL": self.prometheus_url,
            REGISTRY_ENV: str(self.registry.path),
            "VEZA_SANDBOX_DIR": str(self.dir),
        }
        for environment in ENVIRONMENTS:
            urls = self.services.get(environment, {})
            for service in SERVICES:
                if service.name in urls:
                    env[url_variable(environment, service)] = urls[service.name]
        return env

    def write_env_file(self) -> Path:
        """Write ``DIR/env`` (mode 0600: it holds the Vault token).

        Returns:
            Its path.
        """
        lines = [f"export {k}={shlex.quote(v)}" for k, v in self.env().items()]
        path = self.dir / ENV_FILE
        _write_private(path, "\n".join(["# . this file to use the sandbox", *lines]) + "\n")
        return path

    def vault_client(self) -> hvac.Client:
        """A root-token client of the Vault emulator.

        Returns:
            The client.
        """
        import hvac

        return hvac.Client(url=self.vault_addr, token=self.vault_token)

    def seed_environment(
        self, namespace: str, environment: str, version: str = "1.0.0", traffic: bool = True,
        replicas: int = 2, *, traffic_rate: float | None = None,
    ) -> None:
        """Seed ``namespace`` with the four Veza services (see :mod:`sandbox.seeding`).

        Args:
            namespace: namespace to create.
            environment: ``staging`` or ``production``.
            version: image tag of every service.
            traffic: let the load generator send it traffic.
            replicas: replicas of each Deployment (each one is a process).
            traffic_rate: requests a second per Service (default: the load generator's).
        """
        urls = seed_environment(
            kubeconfig=self.kubeconfig,
            vault=self.vault_client(),
            registry=self.registry,
            namespace=namespace,
            environment=environment,
            version=version,
            traffic=traffic,
            traffic_rate=traffic_rate,
            replicas=replicas,
        )
        if namespace == f"veza-{environment}":
            self.services[environment] = urls
            state = read_state(self.dir)
            if state is not None:
                state["services"] = self.services
                _write_state(self.dir, state)
            self.write_env_file()

    def _prometheus(self) -> tuple[dict[str, Any], PrometheusServer]:
        state = read_state(self.dir)
        if state is None:
            raise SandboxError(f"no sandbox runs in {self.dir}")
        entry = state["processes"]["prometheus"]
        pid = entry["pid"] if _ours(entry) else None
        return state, PrometheusServer(self.dir / "prometheus", int(entry["port"]), pid)

    def stop_prometheus(self) -> None:
        """Stop Prometheus (fault tests); :meth:`start_prometheus` brings it back."""
        state, server = self._prometheus()
        server.stop()
        state["processes"]["prometheus"].update(pid=0, ticks=None)
        _write_state(self.dir, state)

    def start_prometheus(self) -> None:
        """Start Prometheus again on the same port and wait until it is ready."""
        state, server = self._prometheus()
        server.start()
        assert server.pid is not None
        _record(state, "prometheus", server.pid, port=server.port, url=server.url)

    def seal_vault(self) -> None:
        """Seal the Vault emulator: every secret call answers 503 until unsealed."""
        self.vault_client().sys.seal()

    def unseal_vault(self) -> None:
        """Unseal the Vault emulator with the key it wrote in ``DIR``."""
        key = (self.dir / "vault-unseal-key").read_text().strip()
        self.vault_client().sys.submit_unseal_key(key)

    def set_api_faults(
        self, verb: str = "*", resource: str = "*", error_rate: float = 0.0, latency_ms: int = 0
    ) -> None:
        """Make the Kubernetes API fail or slow down for matching requests.

        Args:
            verb: get, list, watch, create, update, patch, delete or ``*``.
            resource: plural resource name or ``*``.
            error_rate: fraction (0..1) of matching requests answered 500.
            latency_ms: delay added to matching requests.
        """
        body = {"verb": verb, "resource": resource, "error_rate": error_rate,
                "latency_ms": latency_ms}
        answer = httpx.post(f"{self.api_url}/sandbox/faults", json=body, timeout=10,
                            headers={"Authorization": f"Bearer {self.token}"})
        if answer.status_code >= 300:
            raise SandboxError(f"fault injection refused: {answer.status_code} {answer.text}")

    def clear_api_faults(self) -> None:
        """Remove every injected API fault."""
        answer = httpx.delete(f"{self.api_url}/sandbox/faults", timeout=10,
                              headers={"Authorization": f"Bearer {self.token}"})
        if answer.status_code >= 300:
            raise SandboxError(f"clearing faults failed: {answer.status_code} {answer.text}")

    def down(self) -> None:
        """Stop every process of this sandbox."""
        down(self.dir)


def load(dir: Path) -> Sandbox:
    """The :class:`Sandbox` recorded in ``dir``.

    Args:
        dir: the sandbox directory.

    Returns:
        The sandbox.

    Raises:
        SandboxError: when no sandbox was started there.
    """
    dir = Path(dir).resolve()
    state = read_state(dir)
    if state is None:
        raise SandboxError(f"no sandbox in {dir}: run `veza-ops sandbox up --dir {dir}`")
    procs = state["processes"]
    return Sandbox(
        dir=dir,
        kubeconfig=dir / "kubeconfig",
        api_url=procs["k8s"]["url"],
        token=state["k8s_token"],
        vault_addr=procs["vault"]["url"],
        vault_token=(dir / "vault-token").read_text().strip(),
        prometheus_url=procs["prometheus"]["url"],
        registry=ImageRegistry(dir / "registry.json"),
        ip_prefix=state["ip_prefix"],
        services=state.get("services", {}),
    )


def status(dir: Path) -> list[dict[str, Any]]:
    """What runs in the sandbox of ``dir``.

    Args:
        dir: the sandbox directory.

    Returns:
        One row per component: name, pid, alive, url (empty when nothing was started).
    """
    state = read_state(Path(dir).resolve())
    if state is None:
        return []
    return [
        {"name": name, "pid": entry.get("pid"), "alive": _ours(entry), "url": entry.get("url")}
        for name, entry in state["processes"].items()
    ]


def _vault_healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/sys/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _start_processes(dir: Path, state: dict[str, Any]) -> None:
    from sandbox.k8s.launcher import start_k8s

    vault_port = free_port()
    vault = spawn(
        [sys.executable, "-m", "sandbox.vault.server", "--port", str(vault_port),
         "--state", str(dir / "vault.json")],
        log_path=dir / "vault.log", env=_child_env(), cwd=dir,
    )
    vault_url = f"http://127.0.0.1:{vault_port}"
    _record(state, "vault", vault.pid, port=vault_port, url=vault_url)
    prometheus = configure_prometheus(dir)
    k8s = start_k8s(dir, registry_path=dir / "registry.json", file_sd_path=targets_path(dir),
                    ip_prefix=state["ip_prefix"], timeout=60)
    state["k8s_token"] = k8s.token
    _record(state, "k8s", k8s.pid, url=k8s.url)
    prometheus.start()
    assert prometheus.pid is not None
    _record(state, "prometheus", prometheus.pid, port=prometheus.port, url=prometheus.url)
    wait_until(lambda: vault.poll() is None and _vault_healthy(vault_url), timeout=30,
               what=f"the vault emulator at {vault_url} (see {dir / 'vault.log'})")
    loadgen = spawn(
        [sys.executable, "-m", "sandbox.loadgen", "--kubeconfig", str(k8s.kubeconfig)],
        log_path=dir / "loadgen.log", env=_child_env(), cwd=dir,
    )
    _record(state, "loadgen", loadgen.pid)


def up(dir: Path = DEFAULT_DIR, *, seed: bool = True) -> Sandbox:
    """Start a sandbox in ``dir`` and return once every part is ready (and seeded).

    Args:
        dir: the sandbox directory (created).
        seed: seed ``veza-staging`` and ``veza-production`` with the four services.

    Returns:
        The running sandbox.

    Raises:
        SandboxError: when a sandbox already runs there, or a part fails to start (every
            part started so far is stopped again).
    """
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    previous = read_state(dir)
    if previous is not None:
        if any(_ours(entry) for entry in previous["processes"].values()):
            raise SandboxError(
                f"a sandbox already runs in {dir}: use it, or stop it with "
                f"`veza-ops sandbox down --dir {dir}`"
            )
        down(dir)
    state: dict[str, Any] = {"dir": str(dir), "ip_prefix": claim_prefix(dir), "processes": {},
                             "services": {}, "started_at": time.time()}
    _write_state(dir, state)
    try:
        _start_processes(dir, state)
        sandbox = load(dir)
        sandbox.write_env_file()
        if seed:
            for environment in ENVIRONMENTS:
                sandbox.seed_environment(f"veza-{environment}", environment)
    except BaseException:
        down(dir)
        raise
    return sandbox


def down(dir: Path = DEFAULT_DIR) -> None:
    """Stop every process the sandbox in ``dir`` started or recorded (by pid); idempotent.

    Args:
        dir: the sandbox directory.
    """
    dir = Path(dir).resolve()
    state = read_state(dir)
    if state is None:
        return
    processes = state.get("processes", {})
    extras = list(reversed(state.get("extras", [])))
    for name in [*extras, *COMPONENTS]:
        entry = processes.get(name)
        if entry:
            _stop_entry(entry, timeout=20 if name in extras else 15)
    if state.get("ip_prefix"):
        release_prefix(state["ip_prefix"], dir)
    for name in (STATE_FILE, ENV_FILE):
        with contextlib.suppress(FileNotFoundError):
            (dir / name).unlink()
